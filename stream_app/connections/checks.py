"""What the Kafka and Redis connections share: the settings they are built from, the
checks' timeout, and the TLS error behind a failure."""

from __future__ import annotations

import ssl
from dataclasses import fields
from typing import Any

from stream_app.settings import Settings

CHECK_TIMEOUT_S = 10.0


def settings_for(connection_type: Any, settings: Settings, prefix: str) -> dict[str, Any]:
    """Each field ``x`` of the dataclass ``connection_type`` from the setting ``prefix + x``."""
    return {f.name: getattr(settings, prefix + f.name) for f in fields(connection_type)}


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (itself, its cause or context), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
