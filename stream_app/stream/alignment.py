"""Event-time alignment of transactions across the partitions a worker owns.

Terminal windows are shared by customers of every partition, so a transaction may only be
applied once no owned partition can still deliver an earlier one. A partition *holds
back* while it is behind (records on the broker not fetched yet) or not yet quiet (see
:class:`ActivityClock`): a caught-up partition may still have a producer batch in flight,
so only a quiet one stops counting. The watermark is the smallest
newest-fetched event time over the partitions holding back; records newer than it stay
buffered, in a heap keyed by (event time, partition, offset), and a partition's
committable offset never passes its oldest buffered record.

:meth:`EventTimeAligner.crowded` names partitions with ``max_per_partition`` or more
records buffered, for the consumer to pause: a fetch returns one partition's records in a
long run, and without pausing one partition could run days ahead of the others. Bounds on
the buffered count and on the wait release the oldest records anyway, so a stalled
partition cannot stop the worker; those releases are counted as forced.
"""

from __future__ import annotations

import heapq
import sys
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka import TopicPartition

T = TypeVar("T")

_Key = tuple[int, int, int]  # (event time µs, partition, offset): unique within one topic
_LAST = sys.maxsize  # sorts after every partition and offset


@dataclass(eq=False, slots=True)
class _Partition:
    """What one partition has buffered, and how far it was fetched."""

    pending: deque[_Key] = field(default_factory=deque)  # in fetch (offset) order
    held: int = 0
    newest_us: int = -1
    fetched_end: int | None = None


class ActivityClock:
    """When each partition last delivered a record, to tell a quiet partition from one
    whose next records may be in flight.

    A partition is quiet once ``idle_s`` passed since its last record and since the last
    *wake-up* (a record on a partition that was quiet or new): when traffic starts or
    resumes on one partition, the others are given ``idle_s`` to show theirs.
    """

    def __init__(self, idle_s: float, now: float) -> None:
        self._idle_s = idle_s
        self._active_at: dict[int, float] = {}
        self._woke_at = now

    def touch(self, partition: int, now: float) -> None:
        """``partition`` delivered a record at ``now``."""
        last = self._active_at.get(partition)
        if last is None or now - last >= self._idle_s:
            self._woke_at = now
        self._active_at[partition] = now

    def quiet(self, partition: int, now: float) -> bool:
        """Nothing from ``partition``, nor a wake-up, for ``idle_s``."""
        woke = self._woke_at
        return now - max(self._active_at.get(partition, woke), woke) >= self._idle_s

    def clear(self, now: float) -> None:
        """Forget every partition; the clock starts again at ``now``."""
        self._active_at.clear()
        self._woke_at = now


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
        idle_s: float,
        now: float,
    ) -> None:
        self._topic = topic
        self._max_buffered = max_buffered
        self._max_per_partition = max_per_partition
        self._max_wait_s = max_wait_s
        self._activity = ActivityClock(idle_s, now)
        self._heap: list[tuple[_Key, T]] = []
        self._held: set[_Key] = set()
        self._arrivals: deque[tuple[float, list[_Key]]] = deque()  # keys added together
        self._partitions: dict[int, _Partition] = {}
        self._dirty: set[int] = set()

    @property
    def buffered(self) -> int:
        """How many records wait for the watermark."""
        return len(self._heap)

    def add(self, records: Iterable[tuple[int, int, int, T]], now: float) -> None:
        """Buffer fetched transactions, each as (event time µs, partition, offset, item)."""
        heap, held, partitions = self._heap, self._held, self._partitions
        keys: list[_Key] = []
        touched: set[int] = set()
        for event_time_us, partition, offset, item in records:
            key = (event_time_us, partition, offset)
            heapq.heappush(heap, (key, item))
            held.add(key)
            keys.append(key)
            state = partitions.get(partition) or self._state(partition)
            state.pending.append(key)
            state.held += 1
            if event_time_us > state.newest_us:
                state.newest_us = event_time_us
            touched.add(partition)
        if keys:
            self._arrivals.append((now, keys))
        for partition in touched:
            self._activity.touch(partition, now)
        self._dirty |= touched

    def fetched(self, partition: int, end_offset: int) -> None:
        """Record that every record of ``partition`` below ``end_offset`` was fetched."""
        state = self._state(partition)
        state.fetched_end = max(end_offset, state.fetched_end or 0)
        self._dirty.add(partition)

    def crowded(self) -> set[int]:
        """Partitions with ``max_per_partition`` or more records buffered."""
        return {p for p, s in self._partitions.items() if s.held >= self._max_per_partition}

    def release(self, owned: Collection[int], behind: Collection[int], now: float) -> Released[T]:
        """Release what no owned partition holding back can still precede; ``behind`` are
        the owned partitions with records on the broker not fetched yet."""
        watermark = self._watermark(owned, behind, now)
        bound: tuple[float, int, int] = (watermark, _LAST, _LAST)
        arrivals, held = self._arrivals, self._held
        while arrivals and now - arrivals[0][0] >= self._max_wait_s:
            waited = [key for key in arrivals.popleft()[1] if key in held]
            if waited:
                bound = max(bound, max(waited))
        heap, items, forced = self._heap, [], 0
        while heap and (heap[0][0] <= bound or len(heap) > self._max_buffered):
            key, item = heapq.heappop(heap)
            held.remove(key)
            forced += key[0] > watermark
            items.append(item)
            self._partitions[key[1]].held -= 1
            self._dirty.add(key[1])
        return Released(items, self._safe_offsets(), forced)

    def clear(self, now: float) -> None:
        """Forget everything (new generation: uncommitted records are redelivered)."""
        self._heap.clear()
        self._held.clear()
        self._arrivals.clear()
        self._partitions.clear()
        self._dirty.clear()
        self._activity.clear(now)

    def _state(self, partition: int) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        return state

    def _watermark(self, owned: Collection[int], behind: Collection[int], now: float) -> float:
        newest = [
            -1 if (state := self._partitions.get(p)) is None else state.newest_us
            for p in owned
            if p in behind or not self._activity.quiet(p, now)
        ]
        return min(newest, default=float("inf"))

    def _safe_offsets(self) -> dict[TopicPartition, int]:
        offsets = {}
        for p in self._dirty:
            state = self._partitions[p]
            pending = state.pending
            while pending and pending[0] not in self._held:
                pending.popleft()
            offset = pending[0][2] if pending else state.fetched_end
            if offset is not None:  # the oldest buffered record, else the fetch end
                offsets[TopicPartition(self._topic, p)] = offset
        self._dirty.clear()
        return offsets
