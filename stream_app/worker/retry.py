"""Retry calls to Redis or the broker with exponential backoff while they are down.

Whether an error is worth retrying is decided in one place, :func:`retriable`: a
:class:`~stream_app.errors.FraudstreamError` says so itself (``retriable``), a broker,
Redis or network error is a dependency being down, except a refused login or an untrusted
TLS certificate. The worker
builds one :class:`Backoff` per dependency at start-up and hands it to every stage that
calls that dependency.

An outage is logged once when it starts and once when it ends (not per attempt); the
``fraudstream_dependency_up`` gauge and the retry counter record it. The retried calls
must be idempotent: they are repeated whole.

Several calls to one dependency run at once (the worker's stages, its commits) through
one shared :class:`Backoff` per dependency, whose
outage ends only when no call is failing any more: a call that merely queues work (a
producer ``send``) must not end an outage while an acknowledgement is still retried.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
)

from stream_app.connections import tls_failure
from stream_app.errors import FraudstreamError
from stream_app.worker.metrics import WorkerMetrics

T = TypeVar("T")

_REFUSED = (
    AuthenticationError,
    NoPermissionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

log = logging.getLogger(__name__)


def retriable(exc: BaseException) -> bool:
    """Whether trying the same call again can help."""
    if isinstance(exc, FraudstreamError):
        return exc.retriable
    if isinstance(exc, _REFUSED) or isinstance(tls_failure(exc), ssl.SSLCertVerificationError):
        return False  # wrong credentials stay wrong, an untrusted certificate untrusted
    # a Redis Cluster client's own errors (no node reachable, a slot not covered) are not
    # RedisErrors; during a failover they pass
    return isinstance(exc, KafkaError | RedisError | RedisClusterException | OSError)


@dataclass(eq=False)
class _Outage:
    """One dependency's state: calls failing right now, and since when it is down."""

    failing: int = 0
    down_since: float | None = None


class Backoff:
    """Retries one dependency's calls: delays double from ``first_s`` up to ``max_s``."""

    def __init__(
        self,
        dependency: str,
        metrics: WorkerMetrics,
        *,
        is_retriable: Callable[[BaseException], bool] = retriable,
        first_s: float = 0.05,
        max_s: float = 5.0,
    ) -> None:
        self.dependency = dependency
        self._is_retriable = is_retriable
        self._metrics = metrics
        self._first_s = first_s
        self._max_s = max_s
        self._outage = _Outage()
        self._failing_elsewhere = False

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()``, again after a growing pause for as long as it fails."""
        delay = self._first_s
        failing = False
        try:
            while True:
                try:
                    result = await attempt()
                    break
                except Exception as exc:
                    if not self._is_retriable(exc):
                        raise
                    if not failing:
                        failing = True
                        self._outage.failing += 1
                    self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_s)
        finally:
            if failing:
                self._outage.failing -= 1
        self._succeeded()
        return result

    def failed_elsewhere(self, exc: BaseException) -> None:
        """An attempt of a call that another process retries failed (the window process):
        counted and logged as if it were one of this process's calls."""
        if not self._failing_elsewhere:
            self._failing_elsewhere = True
            self._outage.failing += 1
        self._failed(exc)

    def succeeded_elsewhere(self) -> None:
        """The call another process retried succeeded."""
        if self._failing_elsewhere:
            self._failing_elsewhere = False
            self._outage.failing -= 1
        self._succeeded()

    def _failed(self, exc: BaseException) -> None:
        """Record a failed attempt (the window process overrides this and
        :meth:`_succeeded` to relay them to the worker's Backoff)."""
        self._metrics.dependency_retries.labels(self.dependency).inc()
        if self._outage.down_since is None:
            self._outage.down_since = time.monotonic()
            self._metrics.dependency_up.labels(self.dependency).set(0)
            log.warning("%s unavailable (%r); retrying with backoff", self.dependency, exc)

    def _succeeded(self) -> None:
        outage = self._outage
        if outage.down_since is not None and outage.failing == 0:
            log.warning(
                "%s available again after %.1f s",
                self.dependency,
                time.monotonic() - outage.down_since,
            )
            outage.down_since = None
            self._metrics.dependency_up.labels(self.dependency).set(1)
