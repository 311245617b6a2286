"""Event-time alignment of transactions across the partitions a worker owns.

Terminal windows are shared by customers of every partition, so a transaction may only be
applied once no owned partition can still deliver an earlier one. The watermark is the
smallest newest-fetched event time over the partitions that are behind (position below
the fetch high watermark); caught-up partitions hold nothing back. Records newer than the
watermark stay buffered, and a partition's committable offset never passes its oldest
buffered record. A bound on the buffered count and on the wait releases the oldest
records anyway, so a stalled partition cannot stop the worker.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka import TopicPartition

T = TypeVar("T")


@dataclass(order=True, frozen=True, slots=True)
class _Held(Generic[T]):
    event_time_us: int
    partition: int
    offset: int
    topic: str
    added_at: float = field(compare=False)
    item: T = field(compare=False)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """Items released in (event time, partition, offset) order, and the offsets now safe
    to commit for the partitions whose state changed."""

    items: list[T]
    offsets: dict[TopicPartition, int]
    forced: int


class EventTimeAligner(Generic[T]):
    """Buffers transactions until every owned partition has reached their event time."""

    def __init__(self, max_buffered: int, max_wait_s: float) -> None:
        self._max_buffered = max_buffered
        self._max_wait_s = max_wait_s
        self._held: list[_Held[T]] = []
        self._newest_us: dict[TopicPartition, int] = {}
        self._fetched_end: dict[TopicPartition, int] = {}
        self._dirty: set[TopicPartition] = set()

    @property
    def buffered(self) -> int:
        """How many records wait for the watermark."""
        return len(self._held)

    def add(self, tp: TopicPartition, offset: int, event_time_us: int, item: T, now: float) -> None:
        """Buffer one fetched transaction of ``tp``."""
        self._held.append(_Held(event_time_us, tp.partition, offset, tp.topic, now, item))
        self._newest_us[tp] = max(event_time_us, self._newest_us.get(tp, event_time_us))
        self._dirty.add(tp)

    def fetched(self, tp: TopicPartition, end_offset: int) -> None:
        """Record that every record of ``tp`` below ``end_offset`` was fetched."""
        self._fetched_end[tp] = max(end_offset, self._fetched_end.get(tp, 0))
        self._dirty.add(tp)

    def release(self, behind: Collection[TopicPartition], now: float) -> Released[T]:
        """Release what no partition in ``behind`` (not caught up) can still precede."""
        watermark = self._watermark(behind)
        held = sorted(self._held)
        ready = sum(1 for h in held if h.event_time_us <= watermark)
        cut = max(ready, len(held) - self._max_buffered)
        overdue = [i + 1 for i, h in enumerate(held) if now - h.added_at >= self._max_wait_s]
        if overdue:
            cut = max(cut, overdue[-1])
        released, self._held = held[:cut], held[cut:]
        for h in released:
            self._dirty.add(h.tp)
        return Released([h.item for h in released], self._safe_offsets(), cut - ready)

    def clear(self) -> None:
        """Forget everything (new generation: uncommitted records are redelivered)."""
        self._held.clear()
        self._newest_us.clear()
        self._fetched_end.clear()
        self._dirty.clear()

    def _watermark(self, behind: Collection[TopicPartition]) -> float:
        newest = [self._newest_us.get(tp, -1) for tp in behind]
        return min(newest, default=float("inf"))

    def _safe_offsets(self) -> dict[TopicPartition, int]:
        oldest: dict[TopicPartition, int] = {}
        for h in self._held:
            tp = h.tp
            oldest[tp] = min(h.offset, oldest.get(tp, h.offset))
        offsets = {
            tp: oldest.get(tp, self._fetched_end[tp])
            for tp in self._dirty
            if tp in oldest or tp in self._fetched_end
        }
        self._dirty.clear()
        return offsets
