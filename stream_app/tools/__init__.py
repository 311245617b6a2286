"""Operator tools: replay, alerts consumer, topic reader, demo, worker process."""
