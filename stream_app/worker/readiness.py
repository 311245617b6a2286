"""The checks behind ``/ready``: Redis answers, the broker answers, partitions are assigned,
batches get through.

Each check is a real signal and cheap enough to run on every request: a Redis PING (short
timeout, its answer kept for a second), the age of the newest fetch response of an owned
partition (the consumer fetches each owned partition again at most the fetch wait after
its last response, so a broker that stops answering shows within
:data:`~stream_app.worker.fetch.POLL_STALE_S`; the lag probe's answers count too: a stalled
worker's consumer fetches nothing), the consumer's assignment, and progress: no batch got
through for ``stall_s`` while batches are in flight and the consumer lag is above 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis
from aiokafka import AIOKafkaConsumer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from stream_app.connections import Redis, redis_connection
from stream_app.worker.fetch import POLL_STALE_S
from stream_app.worker.lag import ConsumerLag

REDIS_TIMEOUT_S = 0.5
"""A PING not answered within this long fails the check."""
REDIS_CHECK_EVERY_S = 1.0
"""A PING's answer is reused for this long (``/ready`` polled often costs Redis nothing)."""

Failing = dict[str, str]
"""Each failing check by name (``redis``, ``kafka``, ``partitions``, ``progress``,
``worker``): why."""


class RedisPing:
    """PINGs Redis (``connection``: its URL, login, TLS files) on a client of its own, at
    most every ``every_s``."""

    def __init__(
        self,
        connection: Redis,
        timeout_s: float = REDIS_TIMEOUT_S,
        every_s: float = REDIS_CHECK_EVERY_S,
    ) -> None:
        self._client = redis_connection(connection).async_client(
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # one answer per check; the next check retries
        )
        self._timeout_s = timeout_s
        self._every_s = every_s
        self._checked_at = -float("inf")
        self._failure: str | None = None
        self._lock = asyncio.Lock()

    async def failure(self) -> str | None:
        """None while Redis answers, else why not."""
        async with self._lock:  # requests at the same time share one PING
            if time.monotonic() - self._checked_at >= self._every_s:
                self._failure = await self._ping()
                self._checked_at = time.monotonic()
            return self._failure

    async def _ping(self) -> str | None:
        try:
            await self._client.ping()
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
            return f"no PING reply within {self._timeout_s} s ({type(exc).__name__})"
        return None

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()


class Readiness:
    """The dependency checks of a started worker; ``consumer`` is set once it exists."""

    def __init__(
        self,
        redis_ping: RedisPing,
        topic: str,
        stale_s: float = POLL_STALE_S,
        stall_s: float = 20.0,
    ) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self._redis = redis_ping
        self._topic = topic
        self._stale_s = stale_s
        self._stall_s = stall_s
        self._lags: ConsumerLag | None = None
        self._stalled_s: Callable[[], float] = lambda: 0.0

    def watch_progress(self, lags: ConsumerLag, stalled_s: Callable[[], float]) -> None:
        """Judge progress by ``lags`` and ``stalled_s`` (seconds without a batch through
        while batches are in flight)."""
        self._lags = lags
        self._stalled_s = stalled_s

    async def failing(self) -> Failing:
        """The checks that fail now: empty when the worker is ready."""
        failing: Failing = {}
        redis_failure = await self._redis.failure()
        if redis_failure is not None:
            failing["redis"] = redis_failure
        if self.consumer is None:
            failing["kafka"] = "no consumer yet"
            return failing
        owned = self.consumer.assignment()
        if not any(tp.topic == self._topic for tp in owned):
            failing["partitions"] = f"no partition of {self._topic} assigned to this worker"
        polled_ms = [self.consumer.last_poll_timestamp(tp) for tp in owned]
        if self._lags is not None:
            polled_ms.append(self._lags.probed_ms)
        newest_ms = max((ms for ms in polled_ms if ms is not None), default=None)
        if newest_ms is None:
            if owned:
                failing["kafka"] = "no fetch response yet"
        elif (age_s := time.time() - newest_ms / 1000) >= self._stale_s:
            failing["kafka"] = f"no fetch response from the broker for {age_s:.1f} s"
        stalled_s = self._stalled_s()
        behind = 0 if self._lags is None else self._lags.total
        if stalled_s >= self._stall_s and behind > 0:
            failing["progress"] = (
                f"no batch got through for {stalled_s:.0f} s while {behind} records wait "
                f"(consumer lag; FRAUDSTREAM_READY_STALL_S={self._stall_s:g})"
            )
        return failing

    async def close(self) -> None:
        """Close the Redis client of the checks."""
        await self._redis.close()
