"""Window stores for the integration tests: the asyncio Redis store and the store in a
child process behind the synchronous WindowStore protocol, and drivers for them."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import redis
import redis.asyncio as redis_asyncio

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.redis_store import RedisWindowStore
from stream_app.features.spec import feature_set
from stream_app.features.store import FeatureBatch, WindowStore
from stream_app.sources.history import TransactionHistory
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff
from stream_app.worker.window_process import WindowProcess, WindowStoreConfig
from tests.unit.feature_histories import label_events, transaction_events

FS = feature_set("default")
PREFIX = "fraudstream:test:"
TTL_DAYS = 45


class BlockingRedisStore:
    """The async RedisWindowStore behind the synchronous WindowStore protocol (own loop)."""

    def __init__(self, url: str, *, threaded_writes: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = redis_asyncio.Redis.from_url(url)
        self.writer = redis.Redis.from_url(url) if threaded_writes else None
        self.store = RedisWindowStore(
            self.client, FS, key_prefix=PREFIX, ttl_days=TTL_DAYS, writer=self.writer
        )

    @property
    def feature_set(self) -> Any:
        return self.store.feature_set

    def process(
        self, transactions: list[TransactionEvent], labels: list[LabelEvent]
    ) -> FeatureBatch:
        return self.loop.run_until_complete(self.store.process_async(transactions, labels))

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        if self.writer is not None:
            self.writer.close()


class BlockingProcessStore:
    """A :class:`WindowProcess` (the store in a child process) behind the WindowStore
    protocol, on its own loop; ``metrics`` holds its Redis retries."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.metrics = WorkerMetrics()
        config = WindowStoreConfig(url, FS, PREFIX, TTL_DAYS, redis_timeout_s=1.0)
        backoff = Backoff("redis", self.metrics)
        self.store = self.run(WindowProcess.start(config, backoff))

    @property
    def feature_set(self) -> Any:
        return FS

    def process(
        self, transactions: list[TransactionEvent], labels: list[LabelEvent]
    ) -> FeatureBatch:
        return self.run(self.process_async(transactions, labels))

    async def process_async(
        self, transactions: list[TransactionEvent], labels: list[LabelEvent]
    ) -> FeatureBatch:
        computed = await self.store.compute(transactions, labels)
        await self.store.write_all([computed])
        return computed.features

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


def drive(
    store: WindowStore, history: TransactionHistory, seed: int, start: int = 0, stop: int = -1
) -> list[FeatureBatch]:
    """Transactions ``start:stop`` in random batch sizes; each label (genuine ones too) in
    the first batch starting at or after its label time, as the stream delivers them
    (labels due before ``start`` are delivered again with the first batch)."""
    stop = len(history) if stop < 0 else stop
    rng = np.random.default_rng(seed)
    labels = label_events(history)
    label_times = np.array([label.label_time_us for label in labels], dtype=np.int64)
    released = np.searchsorted(label_times, history.event_time_us, "right")
    cuts = set((np.flatnonzero(np.diff(released)) + 1).tolist())
    cuts |= set(np.cumsum(rng.integers(1, 60, len(history))).tolist())
    bounds = sorted(c for c in cuts | {start, stop} if start <= c <= stop)
    batches, sent = [], 0
    for lo, hi in itertools.pairwise(bounds):
        due = int(released[lo])
        batches.append(store.process(transaction_events(history, range(lo, hi)), labels[sent:due]))
        sent = due
    return batches


def redis_state(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in sorted(client.scan_iter(f"{PREFIX}*"))}
