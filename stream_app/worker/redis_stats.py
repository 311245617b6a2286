"""Window-key counts and Redis memory, sampled off the hot path (a task of its own).

Every sample reads ``INFO memory`` (``used_memory``) and goes on with a ``SCAN`` of the
namespace's window keys (``<prefix>v2:*``) for at most ``scan_calls`` calls of
``COUNT scan_count`` keys: a keyspace larger than one sample's budget is counted over
several samples, and ``fraudstream_window_keys{kind}`` is set when a pass ends. So each
sample costs Redis at most ``scan_calls * scan_count`` key visits, however large the
keyspace. Not run on a Redis Cluster (its keys are spread over the masters).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import redis

from stream_app.features.redis_store import KEY_LAYOUT
from stream_app.pseudonyms import CUSTOMER, TERMINAL
from stream_app.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

KINDS: Mapping[str, str] = {CUSTOMER: "customer", TERMINAL: "terminal"}
"""The window kinds by their key's part, as named in ``fraudstream_window_keys``."""


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisStats:
    """Samples one namespace's window-key counts and Redis's memory into ``metrics``."""

    def __init__(
        self,
        client: Any,
        key_prefix: str,
        metrics: WorkerMetrics,
        *,
        scan_calls: int = 100,
        scan_count: int = 1000,
    ) -> None:
        """``client``: an asyncio Redis client of its own; ``key_prefix``: the namespace's
        (``fraudstream:<namespace>:``)."""
        self._client = client
        self._metrics = metrics
        self._windows = f"{key_prefix}{KEY_LAYOUT}:"
        self._pattern = glob_escape(self._windows) + "*"
        self._scan_calls = scan_calls
        self._scan_count = scan_count
        self._kinds = {part.encode(): kind for part, kind in KINDS.items()}
        self._cursor = 0
        self._counts = dict.fromkeys(KINDS.values(), 0)
        self.passes = 0
        """Complete passes over the keyspace so far."""

    async def sample(self) -> None:
        """Read the memory figure and scan on; at the end of a pass, publish the counts."""
        info = await self._client.info("memory")
        self._metrics.redis_memory.set(float(info["used_memory"]))
        start = len(self._windows)
        for _ in range(self._scan_calls):
            self._cursor, keys = await self._client.scan(
                self._cursor, match=self._pattern, count=self._scan_count
            )
            for key in keys:
                kind = self._kinds.get(key[start:].partition(b":")[0])
                if kind is not None:
                    self._counts[kind] += 1
            if self._cursor == 0:
                for kind, count in self._counts.items():
                    self._metrics.window_keys.labels(kind).set(count)
                self._counts = dict.fromkeys(KINDS.values(), 0)
                self.passes += 1
                return

    async def loop(self, interval_s: float) -> None:
        """Sample every ``interval_s``; a Redis that does not answer skips a sample."""
        while True:
            try:
                await self.sample()
            except (redis.RedisError, OSError) as exc:
                log.debug("Redis stats not sampled: %r", exc)
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
