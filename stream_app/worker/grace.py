"""The idle grace: how long a caught-up partition may still have records in flight.

A partition whose position is at the broker's high watermark may still have a producer
batch on its way, so the aligner and the label barrier wait for it to be *quiet* for the
grace before they stop counting it. A fixed grace (:class:`FixedGrace`) must cover the
slowest producer, and at low traffic every transaction waits that long.
:class:`ArrivalSkew` sizes the grace from what arrives instead: how much later than the
other partitions' records of the same event time a partition's records show up.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class Grace(Protocol):
    """How long a caught-up partition may still have records in flight."""

    def observe(self, oldest_us: Iterable[int], newest_us: int, now: float) -> None:
        """Records arrived at ``now``: the oldest event time of each partition's run, and
        the newest of them all."""
        ...

    def seconds(self, now: float) -> float:
        """The grace at ``now``."""
        ...


@dataclass(frozen=True)
class FixedGrace:
    """The same grace whatever arrives."""

    idle_s: float

    def observe(self, oldest_us: Iterable[int], newest_us: int, now: float) -> None:
        """Nothing to learn."""

    def seconds(self, now: float) -> float:
        """``idle_s``."""
        return self.idle_s


class ArrivalSkew:
    """A grace sized by how late records arrive compared with the others of their time.

    The *frontier* is the newest event time seen on any partition, with the moment it was
    first reached. A record at event time t that arrives after the frontier passed t is
    late by ``now`` minus the moment it did: a partition quiet for less than that could still
    deliver it. The grace is ``factor`` times the largest lateness of the last
    ``window_s``, at least ``floor_s`` and at most ``cap_s``; ``cap_s`` until ``warmup``
    runs of records were seen.
    """

    def __init__(
        self,
        *,
        floor_s: float,
        cap_s: float,
        window_s: float = 30.0,
        factor: float = 2.0,
        warmup: int = 20,
    ) -> None:
        self._floor_s = min(floor_s, cap_s)
        self._cap_s = cap_s
        self._window_s = window_s
        self._factor = factor
        self._warmup = warmup
        self._seen = 0
        self._frontier_us: list[int] = []  # rising event times, and when each was reached
        self._reached_at: list[float] = []
        self._late: deque[tuple[float, float]] = deque()  # (at, lateness), lateness falling

    def observe(self, oldest_us: Iterable[int], newest_us: int, now: float) -> None:
        """Measure each run's lateness, then move the frontier."""
        late = self._late
        for t in oldest_us:
            self._seen += 1
            lateness = self._lateness(t, now)
            while late and late[-1][1] <= lateness:
                late.pop()
            late.append((now, lateness))
        if not self._frontier_us or newest_us > self._frontier_us[-1]:
            self._frontier_us.append(newest_us)
            self._reached_at.append(now)
        self._forget(now)

    def seconds(self, now: float) -> float:
        """The grace at ``now``."""
        if self._seen < self._warmup:
            return self._cap_s
        self._forget(now)
        peak = self._late[0][1] if self._late else 0.0
        return min(self._cap_s, max(self._floor_s, self._factor * peak))

    def _lateness(self, t: int, now: float) -> float:
        """Since when a later event time than ``t`` was seen (ties are not late: no feature
        depends on the order of same-time transactions of different partitions)."""
        frontier = self._frontier_us
        if not frontier or t >= frontier[-1]:
            return 0.0
        return now - self._reached_at[bisect_right(frontier, t)]

    def _forget(self, now: float) -> None:
        """Drop what is older than the window (the frontier keeps one older point: a record
        older than it is at least that late)."""
        since = now - self._window_s
        late = self._late
        while late and late[0][0] < since:
            late.popleft()
        reached = self._reached_at
        old = bisect_left(reached, since) - 1
        if old > 64 and old * 2 > len(reached):
            del reached[:old], self._frontier_us[:old]


class ActivityClock:
    """When each partition last delivered a record, to tell a quiet partition from one
    whose next records may be in flight.

    A partition is quiet once the grace passed since its last record and since the last
    *wake-up* (a record on a partition that was quiet or new): when traffic starts or
    resumes on one partition, the others are given the grace to show theirs.
    """

    def __init__(self, grace: Grace, now: float) -> None:
        self.grace = grace
        self._active_at: dict[int, float] = {}
        self._woke_at = now

    def touch(self, partition: int, now: float) -> None:
        """``partition`` delivered a record at ``now``."""
        last = self._active_at.get(partition)
        if last is None or now - last >= self.grace.seconds(now):
            self._woke_at = now
        self._active_at[partition] = now

    def quiet(self, partition: int, now: float) -> bool:
        """Nothing from ``partition``, nor a wake-up, for the grace."""
        return self.quiet_in(partition, now) <= 0

    def quiet_in(self, partition: int, now: float) -> float:
        """Seconds until ``partition`` is quiet if nothing arrives (0 or less: it is)."""
        woke = self._woke_at
        return max(self._active_at.get(partition, woke), woke) + self.grace.seconds(now) - now

    def clear(self, now: float) -> None:
        """Forget every partition; the clock starts again at ``now``."""
        self._active_at.clear()
        self._woke_at = now
