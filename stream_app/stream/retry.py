"""Retry calls to Redis or the broker with exponential backoff while they are down.

An outage is logged once when it starts and once when it ends (not per attempt); the
``fraudstream_dependency_up`` gauge and the retry counter record it. The retried calls
must be idempotent: they are repeated whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stream_app.stream.metrics import WorkerMetrics

T = TypeVar("T")

log = logging.getLogger(__name__)


class Backoff:
    """Retries one dependency's calls: delays double from ``first_s`` up to ``max_s``."""

    def __init__(
        self,
        dependency: str,
        failures: tuple[type[BaseException], ...],
        metrics: WorkerMetrics,
        *,
        first_s: float = 0.05,
        max_s: float = 5.0,
    ) -> None:
        self.dependency = dependency
        self.failures = failures
        self._metrics = metrics
        self._first_s = first_s
        self._max_s = max_s
        self._down_since: float | None = None

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()``, again after a growing pause for as long as it fails."""
        delay = self._first_s
        while True:
            try:
                result = await attempt()
            except self.failures as exc:
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_s)
                continue
            self._succeeded()
            return result

    def _failed(self, exc: BaseException) -> None:
        self._metrics.dependency_retries.labels(self.dependency).inc()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._metrics.dependency_up.labels(self.dependency).set(0)
            log.warning("%s unavailable (%r); retrying with backoff", self.dependency, exc)

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.warning(
                "%s available again after %.1f s",
                self.dependency,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self._metrics.dependency_up.labels(self.dependency).set(1)
