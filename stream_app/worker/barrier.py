"""The label barrier: every label due before a batch's transactions is applied with them.

Before a batch whose newest transaction is at t goes on, each owned labels partition must
have delivered a label with ``label_time > t``, or be caught up (position at the high
watermark of the last fetch response; tansu's ListOffsets is wrong) and quiet for the
labels' grace (a caught-up partition may still have a producer batch in flight). The
barrier reads more labels until then, at most ``timeout_s``
(``fraudstream_label_barrier_timeouts`` counts give-ups).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from aiokafka import TopicPartition

from stream_app.topics import StreamTopics
from stream_app.worker.batches import Batch
from stream_app.worker.fetch import Fetched, Fetcher
from stream_app.worker.grace import ActivityClock, Grace, Run
from stream_app.worker.metrics import WorkerMetrics


class LabelBarrier:
    """Holds transaction batches until the labels due before them are read."""

    def __init__(
        self,
        fetcher: Fetcher,
        decode: Callable[[Fetched, int], Batch],
        topics: StreamTopics,
        metrics: WorkerMetrics,
        *,
        timeout_s: float,
        poll_s: float,
        grace: Grace,
    ) -> None:
        self._fetcher = fetcher
        self._decode = decode
        self._topic = topics.labels
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._label_time_us: dict[TopicPartition, int] = {}
        self._activity = ActivityClock(grace, fetcher.broker_time())
        self._grace_seconds = metrics.idle_grace.labels("label")
        self._passed_us = -1
        # caught up at the last check: a late label of theirs was in flight, and sizes the
        # grace (one of a partition behind was merely not fetched yet)
        self._caught_up: set[TopicPartition] = set()

    def clear(self) -> None:
        """Forget label progress (a new generation)."""
        self._label_time_us.clear()
        self._caught_up.clear()
        self._activity.clear(self._fetcher.broker_time())
        self._passed_us = -1

    def seen(self, batch: Batch) -> None:
        """Note the labels a decoded batch brought, per partition."""
        if not batch.last_label_time_us:
            return
        now = self._fetcher.broker_time()
        self._label_time_us.update(batch.last_label_time_us)
        arrived, last = self._fetcher.arrived_s, batch.last_label_time_us
        self._activity.grace.observe(
            Run(arrived(tp), t, last[tp], tp in self._caught_up)
            for tp, t in batch.oldest_label_time_us.items()
        )
        for tp in batch.last_label_time_us:
            self._activity.touch(tp.partition, now)
        self._grace_seconds.set(self._activity.grace.seconds())

    async def __call__(self, batch: Batch) -> Batch:
        """``batch`` with the labels read for it; counts labels that came too late."""
        if batch.transactions:
            batch = await self._wait(batch)
        passed = self._passed_us
        late = sum(1 for label in batch.labels if label.label_time_us <= passed)
        if late:
            self._metrics.out_of_order.labels("label").inc(late)
        self._passed_us = max(passed, batch.max_event_time_us)
        return batch

    async def _wait(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        deadline = start + self._timeout_s
        t = batch.max_event_time_us
        while not await self.ready(t):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                self._metrics.label_barrier_timeouts.inc()
                break
            partitions = self._fetcher.owned(self._topic)
            more = await self._fetcher.fetch(min(remaining, self._poll_s), *partitions)
            if more:
                labels = self._decode(more, batch.generation)
                self.seen(labels)
                batch = merge_labels(batch, labels)
        self._metrics.stage_seconds.labels("barrier").observe(time.perf_counter() - start)
        return batch

    async def ready(self, t: float) -> bool:
        """Each owned labels partition delivered a label after ``t``, or is caught up and
        quiet (a caught-up partition may have labels in flight)."""
        now = self._fetcher.broker_time()
        ready = True
        self._caught_up.clear()
        for tp in self._fetcher.owned(self._topic):
            if await self._fetcher.is_behind(tp):
                ready = ready and self._label_time_us.get(tp, -1) > t
                continue
            self._caught_up.add(tp)
            if self._label_time_us.get(tp, -1) <= t and not self._activity.quiet(tp.partition, now):
                ready = False
        return ready


def merge_labels(batch: Batch, more: Batch) -> Batch:
    """``batch`` with the labels (and dead letters, offsets) of the label-only ``more``
    (their label times are noted by :meth:`LabelBarrier.seen`, not carried on)."""
    return dataclasses.replace(
        batch,
        labels=batch.labels + more.labels,
        dead_letters=batch.dead_letters + more.dead_letters,
        offsets={**batch.offsets, **more.offsets},
    )
