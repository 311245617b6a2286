"""Consumer lag per partition: records behind the high watermark of the latest fetch response.

tansu's ListOffsets is wrong (it ignores all but the first record of the last batch), so
the lag is read from fetch responses: aiokafka keeps each partition's high watermark from
its latest one (``consumer.highwater(tp)``), and the lag is that minus the next offset to
consume. While the fetch loop is blocked (a stage stalled, its queues full) the consumer
fetches nothing more: a partition with records waiting to be read is not fetched again.
:class:`HighwaterProbe` then fetches such partitions itself, on a group-less consumer of its
own, about once a second, so the lag of a stalled worker keeps growing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from stream_app.worker.metrics import WorkerMetrics

PROBE_EVERY_S = 1.0
"""How often partitions without a fresh fetch response are probed."""
_PROBE_TIMEOUT_S = 2.0


def lag(highwater: int | None, next_offset: int | None) -> int | None:
    """Records of a partition not consumed yet (None while either offset is unknown)."""
    if highwater is None or next_offset is None:
        return None
    return max(0, highwater - next_offset)


class ConsumerLag:
    """Keeps ``fraudstream_consumer_lag{topic,partition}`` of the owned partitions: the
    newest high watermark seen (by the consumer or the probe) minus the next offset."""

    def __init__(self, consumer: Any, metrics: WorkerMetrics) -> None:
        self._consumer = consumer
        self._gauge = metrics.consumer_lag
        self._next: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}
        self._lags: dict[TopicPartition, int] = {}
        self._children: dict[TopicPartition, Any] = {}
        self.probed_ms: float | None = None
        """Wall time (ms) of the probe's newest answer from the broker."""

    @property
    def total(self) -> int:
        """Records behind over every owned partition (those with a known lag)."""
        return sum(self._lags.values())

    def assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """A new assignment: forget the offsets; partitions no longer owned lose their
        series."""
        owned = set(assigned)
        for tp in [tp for tp in self._children if tp not in owned]:
            self._gauge.remove(tp.topic, str(tp.partition))
            del self._children[tp]
        self._next.clear()
        self._highwater.clear()
        self._lags.clear()

    async def fetched(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """After a fetch: the delivered partitions' next offsets, every owned partition's
        high watermark (a partition with no delivery yet asks the consumer its position)."""
        for tp, records in fetched.items():
            if records:
                self._next[tp] = records[-1].offset + 1
        consumer = self._consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            if tp not in self._next:
                try:
                    self._next[tp] = await consumer.position(tp)
                except (IllegalStateError, AssertionError):
                    continue
            self.seen(tp, highwater)

    def seen(self, tp: TopicPartition, highwater: int) -> None:
        """A fetch response said ``tp``'s high watermark is ``highwater``."""
        newest = max(highwater, self._highwater.get(tp, highwater))
        self._highwater[tp] = newest
        behind = lag(newest, self._next.get(tp))
        if behind is None:
            return
        self._lags[tp] = behind
        child = self._children.get(tp)
        if child is None:
            child = self._children[tp] = self._gauge.labels(tp.topic, str(tp.partition))
        child.set(behind)

    def probe_from(self, stale: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to probe ``stale`` partitions: from their newest known high watermark (only
        what arrived since is fetched), else their next offset."""
        starts = {}
        for tp in stale:
            start = self._highwater.get(tp, self._next.get(tp))
            if start is not None:
                starts[tp] = start
        return starts


class HighwaterProbe:
    """Reads high watermarks with a fetch of its own (a group-less consumer, started at the
    first probe): one record at most per partition, then the consumer stops fetching."""

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer]) -> None:
        self._make_consumer = make_consumer
        self._consumer: AIOKafkaConsumer | None = None

    async def highwaters(self, starts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The high watermark of each partition of ``starts`` (fetched from its offset
        there), those the broker answered for within 2 s."""
        if self._consumer is None:
            consumer = self._make_consumer()
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        try:
            while time.monotonic() < deadline and any(
                consumer.highwater(tp) is None for tp in starts
            ):
                await consumer.getmany(timeout_ms=100, max_records=1)
            return {tp: hw for tp in starts if (hw := consumer.highwater(tp)) is not None}
        finally:
            consumer.unsubscribe()

    async def close(self) -> None:
        """Stop the probe's consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def probe_loop(
    consumer: Any, lags: ConsumerLag, probe: HighwaterProbe, stale_s: float
) -> None:
    """About every second, probe the owned partitions whose latest fetch response is
    ``stale_s`` old or older (the fetch loop is blocked, or the partition is paused) and
    update their lag. A broker that does not answer is the readiness check's business: the
    probe tries again next time."""
    while True:
        await asyncio.sleep(PROBE_EVERY_S)
        now_ms = time.time() * 1000
        stale = []
        for tp in consumer.assignment():
            polled_ms = consumer.last_poll_timestamp(tp)
            if polled_ms is None or now_ms - polled_ms >= stale_s * 1000:
                stale.append(tp)
        starts = lags.probe_from(stale)
        if not starts:
            continue
        try:
            highwaters = await probe.highwaters(starts)
        except (KafkaError, OSError):
            continue
        if highwaters:
            lags.probed_ms = time.time() * 1000
        for tp, highwater in highwaters.items():
            lags.seen(tp, highwater)
