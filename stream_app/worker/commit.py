"""The last stages: records handed to the producer (publish), the broker's
acknowledgements awaited (acknowledge), and, once the windows are stored, the offsets
committed (:class:`Committer`).

Offsets are committed only after the broker and Redis acknowledged a batch
(at-least-once); every effect is idempotent, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from stream_app.worker.batches import Batch, Scored, Sent
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.publisher import BatchPublisher
from stream_app.worker.retry import Backoff

log = logging.getLogger(__name__)


class Publish:
    """Hands a scored batch's records to the producer without waiting for the broker."""

    def __init__(self, publisher: BatchPublisher, kafka: Backoff, metrics: WorkerMetrics) -> None:
        self._publisher = publisher
        self._kafka = kafka
        self._in_worker = metrics.stage_seconds.labels("fetch_to_acknowledged")

    async def __call__(self, scored: Scored) -> Sent:
        """``scored`` with one future per record batch handed over."""
        futures = await self._kafka.call(lambda: self._publisher.send(scored.records))
        return Sent(scored, tuple(futures))

    async def acknowledge(self, sent: Sent) -> Sent:
        """Wait until the broker acknowledged ``sent``'s records, re-sending while it fails."""
        futures: tuple[asyncio.Future[Any], ...] | None = sent.futures

        async def acknowledged() -> None:
            nonlocal futures
            if futures is None:
                futures = tuple(await self._publisher.send(sent.scored.records))
            results = await asyncio.gather(*futures, return_exceptions=True)
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is not None:
                futures = None
                raise failure

        await self._kafka.call(acknowledged)
        self._in_worker.observe(time.perf_counter() - sent.scored.batch.fetched_at)
        return sent


class Committer:
    """Commits the offsets of stored batches at most every ``interval_s`` (each commit is a
    broker request; what waits is only redelivered after a crash, and changes nothing), and
    on demand before partitions move or the worker stops."""

    def __init__(
        self, consumer: Any, kafka: Backoff, metrics: WorkerMetrics, *, interval_s: float
    ) -> None:
        self._consumer = consumer
        self._kafka = kafka
        self._metrics = metrics
        self._interval_s = interval_s
        self._committable: dict[TopicPartition, int] = {}
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()
        self.generation = 0
        """Offsets of batches of an older generation are not committed."""

    @property
    def pending(self) -> bool:
        """Whether offsets wait to be committed."""
        return bool(self._committable)

    def stored(self, batch: Batch) -> None:
        """``batch`` is stored: its offsets may be committed."""
        if batch.generation == self.generation:
            for tp, offset in batch.offsets.items():
                self._committable[tp] = max(offset, self._committable.get(tp, 0))
            self._due.set()

    async def loop(self) -> None:
        """Commit whenever something is due, then rest for the interval."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self.commit()
            await asyncio.sleep(self._interval_s)

    async def commit(self) -> None:
        """Commit every stored offset not committed yet (one commit at a time)."""
        async with self._lock:
            offsets, self._committable = self._committable, {}
            if not offsets:
                return
            start = time.perf_counter()

            async def commit() -> None:
                try:
                    await self._consumer.commit(offsets)
                except (CommitFailedError, IllegalStateError) as exc:  # retrying cannot help
                    self._metrics.commit_failures.inc()
                    log.warning("commit refused (%r); the records will be redelivered", exc)

            await self._kafka.call(commit)
            self._metrics.stage_seconds.labels("commit").observe(time.perf_counter() - start)
