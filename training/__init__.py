"""Offline training of the fraud models (torch lives only here, never in ``stream_app``)."""
