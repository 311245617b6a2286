"""Event-time alignment of transactions across the partitions a worker owns.

Terminal windows are shared by customers of every partition, so a transaction may only be
applied once no owned partition can still deliver an earlier one. A partition *holds
back* while it is behind (records on the broker not fetched yet) or not yet quiet (see
:class:`ActivityClock`): a caught-up partition may still have a producer batch in flight,
so only a quiet one stops counting. The watermark is the smallest newest-fetched event
time over the partitions holding back. Each partition's records wait in fetch (offset)
order; those up to the watermark are released, merged across partitions in (event time,
partition, offset) order, and a partition's committable offset never passes its oldest
waiting record. A partition releases in offset order (as Kafka Streams processes it): a
record written out of event-time order waits behind the earlier offsets.

:meth:`EventTimeAligner.crowded` names partitions with ``max_per_partition`` or more
records buffered, for the consumer to pause: a fetch returns one partition's records in a
long run, and without pausing one partition could run days ahead of the others. Bounds on
the buffered count and on the wait release the oldest records anyway, so a stalled
partition cannot stop the worker; those releases are counted as forced.

How long a caught-up partition stays "not yet quiet" is the *idle grace*
(:mod:`stream_app.worker.grace`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka import TopicPartition

from stream_app.contracts import Transaction
from stream_app.contracts.events import TransactionEvent
from stream_app.worker.batches import Batch, Source
from stream_app.worker.fetch import Fetcher
from stream_app.worker.grace import ActivityClock, Grace, Run
from stream_app.worker.metrics import WorkerMetrics

T = TypeVar("T")

_PARTITION_SHIFT = 48
_TIME_SHIFT = 64
_OFFSET_MASK = (1 << _PARTITION_SHIFT) - 1
# A record's key: (event time, partition, offset) as one int that sorts the same way (cheap
# compares): (event_time_us << _TIME_SHIFT) + (partition << _PARTITION_SHIFT) + offset.


def _time_bound(event_time_us: float) -> float:
    """The largest key of a record at ``event_time_us`` (inf and -inf pass through)."""
    if event_time_us in (float("inf"), float("-inf")):
        return event_time_us
    return ((int(event_time_us) + 1) << _TIME_SHIFT) - 1


@dataclass(eq=False, slots=True)
class _Partition(Generic[T]):
    """One partition's waiting records (key, arrival, item) in fetch order from ``head``."""

    pending: list[tuple[int, float, T]] = field(default_factory=list)
    head: int = 0
    newest_us: int | None = None
    fetched_end: int | None = None

    @property
    def held(self) -> int:
        return len(self.pending) - self.head

    def take_until(self, bound: float) -> list[tuple[int, float, T]]:
        """Remove and return the waiting records from the head with key <= ``bound``."""
        pending, start = self.pending, self.head
        end = start
        while end < len(pending) and pending[end][0] <= bound:
            end += 1
        taken = pending[start:end]
        if end >= len(pending):
            pending.clear()
            self.head = 0
        elif end > 1024 and end * 2 > len(pending):
            del pending[:end]
            self.head = 0
        else:
            self.head = end
        return taken


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """Items released in (event time, partition, offset) order, and the offsets now safe
    to commit for the partitions whose state changed."""

    items: list[T]
    offsets: dict[TopicPartition, int]
    forced: int


class EventTimeAligner(Generic[T]):
    """Buffers transactions until every owned partition has reached their event time."""

    def __init__(
        self,
        topic: str,
        *,
        max_buffered: int,
        max_per_partition: int,
        max_wait_s: float,
        grace: Grace,
        now: float,
    ) -> None:
        self._topic = topic
        self._max_buffered = max_buffered
        self._max_per_partition = max_per_partition
        self._max_wait_s = max_wait_s
        self._activity = ActivityClock(grace, now)
        self._partitions: dict[int, _Partition[T]] = {}
        self._buffered = 0
        self._dirty: set[int] = set()
        # caught up at the last release: a late record of theirs was in flight, and sizes
        # the grace (one of a partition behind was merely not fetched yet)
        self._caught_up: set[int] = set()

    @property
    def buffered(self) -> int:
        """How many records wait for the watermark."""
        return self._buffered

    def add(
        self,
        records: Iterable[tuple[int, int, int, T]],
        now: float,
        arrived_s: Mapping[int, float] | None = None,
    ) -> None:
        """Buffer fetched transactions, each as (event time µs, partition, offset, item);
        ``arrived_s``: when each partition's records reached the consumer (default ``now``)."""
        partitions = self._partitions
        oldest: dict[int, int] = {}
        added = 0
        for event_time_us, partition, offset, item in records:
            state = partitions.get(partition) or self._state(partition)
            key = (event_time_us << _TIME_SHIFT) + (partition << _PARTITION_SHIFT) + offset
            state.pending.append((key, now, item))
            if state.newest_us is None or event_time_us > state.newest_us:
                state.newest_us = event_time_us
            if event_time_us < oldest.get(partition, event_time_us + 1):
                oldest[partition] = event_time_us
            added += 1
        if not added:
            return
        self._buffered += added
        arrived, caught_up = arrived_s or {}, self._caught_up
        self._activity.grace.observe(
            # a partition's newest ever: if older than this fetch, the frontier has it
            Run(arrived.get(p, now), t, partitions[p].newest_us or t, p in caught_up)
            for p, t in oldest.items()
        )
        for partition in oldest:
            self._activity.touch(partition, now)
        self._dirty |= oldest.keys()

    def fetched(self, partition: int, end_offset: int) -> None:
        """Record that every record of ``partition`` below ``end_offset`` was fetched."""
        state = self._state(partition)
        state.fetched_end = max(end_offset, state.fetched_end or 0)
        self._dirty.add(partition)

    def next_release_in(self, owned: Collection[int], behind: Collection[int], now: float) -> float:
        """Seconds until a partition holding records back only for the grace turns quiet
        (inf when none does, nothing waits, or a partition is behind: its fetch comes)."""
        if not self._buffered or behind:
            return float("inf")
        waits = [self._activity.quiet_in(p, now) for p in owned if p not in behind]
        return max(0.0, min((w for w in waits if w > 0), default=float("inf")))

    def crowded(self) -> set[int]:
        """Partitions with ``max_per_partition`` or more records buffered."""
        return {p for p, s in self._partitions.items() if s.held >= self._max_per_partition}

    def release(self, owned: Collection[int], behind: Collection[int], now: float) -> Released[T]:
        """Release what no owned partition holding back can still precede; ``behind`` are
        the owned partitions with records on the broker not fetched yet."""
        self._caught_up = set(owned).difference(behind)
        strict = _time_bound(self.watermark(owned, behind, now))
        bound = max(strict, self._overdue_bound(now), self._overflow_bound())
        taken: list[tuple[int, float, T]] = []
        for p, state in self._partitions.items():
            if state.held and state.pending[state.head][0] <= bound:
                taken += state.take_until(bound)
                self._dirty.add(p)
        taken.sort(key=_first)  # runs in key order: a merge of the partitions
        self._buffered -= len(taken)
        forced = sum(1 for key, _, _ in taken if key > strict) if bound > strict else 0
        return Released([item for _, _, item in taken], self._safe_offsets(), forced)

    def clear(self, now: float) -> None:
        """Forget everything (new generation: uncommitted records are redelivered)."""
        self._partitions.clear()
        self._buffered = 0
        self._dirty.clear()
        self._caught_up.clear()
        self._activity.clear(now)

    def _state(self, partition: int) -> _Partition[T]:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        return state

    def watermark(self, owned: Collection[int], behind: Collection[int], now: float) -> float:
        """The smallest newest-fetched event time over the owned partitions holding back
        (-inf for one that delivered nothing yet; inf when none holds back)."""
        newest: list[float] = []
        for p in owned:
            if p in behind or not self._activity.quiet(p, now):
                state = self._partitions.get(p)
                known = None if state is None else state.newest_us
                newest.append(float("-inf") if known is None else known)
        return min(newest, default=float("inf"))

    def _overdue_bound(self, now: float) -> float:
        """The largest key of the records that waited ``max_wait_s`` or longer."""
        bound = float("-inf")
        for state in self._partitions.values():
            pending, end = state.pending, state.head
            while end < len(pending) and now - pending[end][1] >= self._max_wait_s:
                end += 1
            if end > state.head:
                bound = max(bound, max(key for key, _, _ in pending[state.head : end]))
        return bound

    def _overflow_bound(self) -> float:
        """The key up to which releasing leaves at most ``max_buffered`` waiting."""
        excess = self._buffered - self._max_buffered
        if excess <= 0:
            return float("-inf")
        keys = sorted(key for s in self._partitions.values() for key, _, _ in s.pending[s.head :])
        return keys[excess - 1]

    def _safe_offsets(self) -> dict[TopicPartition, int]:
        offsets = {}
        for p in self._dirty:
            state = self._partitions[p]
            if state.held:  # the oldest waiting record, else the fetch end
                offsets[TopicPartition(self._topic, p)] = (
                    state.pending[state.head][0] & _OFFSET_MASK
                )
            elif state.fetched_end is not None:
                offsets[TopicPartition(self._topic, p)] = state.fetched_end
        self._dirty.clear()
        return offsets


def _first(entry: tuple[int, float, object]) -> int:
    return entry[0]


_Held = tuple[Transaction, TransactionEvent, Source, float]


class Alignment:
    """The align stage: a decoded batch keeps the transactions the watermark releases (of
    this fetch and earlier ones), and the offsets stop at the oldest one still waiting."""

    def __init__(
        self,
        fetcher: Fetcher,
        topic: str,
        metrics: WorkerMetrics,
        *,
        max_buffered: int,
        max_per_partition: int,
        max_wait_s: float,
        grace: Grace,
    ) -> None:
        self._fetcher = fetcher
        self._topic = topic
        self._metrics = metrics
        self._aligner: EventTimeAligner[_Held] = EventTimeAligner(
            topic,
            max_buffered=max_buffered,
            max_per_partition=max_per_partition,
            max_wait_s=max_wait_s,
            grace=grace,
            now=fetcher.broker_time(),
        )
        self._released_until_us = -1
        self._grace = grace
        self._grace_seconds = metrics.idle_grace.labels("transaction")
        self.release_in = float("inf")
        """Seconds until records held for the grace are released if nothing arrives."""

    @property
    def buffered(self) -> int:
        """How many transactions wait for the watermark."""
        return self._aligner.buffered

    @property
    def grace_s(self) -> float:
        """The idle grace now."""
        return self._grace.seconds()

    def clear(self) -> None:
        """Forget the waiting transactions (a new generation: they are redelivered)."""
        self._aligner.clear(self._fetcher.broker_time())
        self._released_until_us = -1

    async def caught_up(self) -> bool:
        """Nothing waits, and no owned partition holds back (behind, or not yet quiet)."""
        if self._aligner.buffered:
            return False
        owned = self._fetcher.owned(self._topic)
        behind = [tp.partition for tp in owned if await self._fetcher.is_behind(tp)]
        partitions = [tp.partition for tp in owned]
        return self._aligner.watermark(partitions, behind, self._fetcher.broker_time()) == math.inf

    async def __call__(self, batch: Batch) -> Batch | None:
        """``batch`` with the released transactions in event-time order; None if empty."""
        aligner, fetcher = self._aligner, self._fetcher
        now = fetcher.broker_time()
        fetched_at = batch.fetched_at
        ends = {tp: end for tp, end in batch.offsets.items() if tp.topic == self._topic}
        held = zip(batch.transactions, batch.events, batch.sources, strict=True)
        aligner.add(
            (
                (event.event_time_us, src.partition, src.offset, (tx, event, src, fetched_at))
                for tx, event, src in held
            ),
            now,
            {tp.partition: fetcher.arrived_s(tp) for tp in ends},
        )
        for tp, end in ends.items():
            aligner.fetched(tp.partition, end)
        owned = fetcher.owned(self._topic)
        behind = [tp.partition for tp in owned if await fetcher.is_behind(tp)]
        partitions = [tp.partition for tp in owned]
        released = aligner.release(partitions, behind, now)
        self.release_in = aligner.next_release_in(partitions, behind, now)
        self._grace_seconds.set(self._grace.seconds())
        fetcher.pause_only(owned, aligner.crowded())
        if released.forced:
            self._metrics.alignment_forced_releases.inc(released.forced)
        items = released.items
        if items:
            oldest_at = min(item[3] for item in items)
            self._metrics.stage_seconds.labels("align_hold").observe(
                time.perf_counter() - oldest_at
            )
            fetched_at = min(fetched_at, oldest_at)
            self._count_late(items)
        aligned = dataclasses.replace(
            batch,
            fetched_at=fetched_at,
            transactions=tuple(item[0] for item in items),
            events=tuple(item[1] for item in items),
            sources=tuple(item[2] for item in items),
            offsets={**batch.offsets, **released.offsets},
        )
        return None if aligned.empty else aligned

    def _count_late(self, items: list[_Held]) -> None:
        """Count transactions older than one released before (stream scores may then
        differ from a backtest)."""
        until = self._released_until_us
        late = sum(1 for item in items if item[1].event_time_us < until)
        if late:
            self._metrics.out_of_order.labels("transaction").inc(late)
        self._released_until_us = max(until, max(item[1].event_time_us for item in items))
