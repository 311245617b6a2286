"""What the Kafka and Redis checks share: their timeout, and the TLS error behind a failure."""

from __future__ import annotations

import ssl

CHECK_TIMEOUT_S = 10.0


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
