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
from typing import NamedTuple, Protocol


class Run(NamedTuple):
    """One partition's records of a fetch: when the consumer received them (seconds, the
    fetch response's wall-clock time), their oldest and newest event time, and whether the
    partition was caught up before (its late records were in flight, not merely unread)."""

    arrived_s: float
    oldest_us: int
    newest_us: int
    caught_up: bool


class Grace(Protocol):
    """How long a caught-up partition may still have records in flight."""

    def observe(self, runs: Iterable[Run]) -> None:
        """Learn from the runs of a fetch."""
        ...

    def seconds(self) -> float:
        """The grace now."""
        ...


@dataclass(frozen=True)
class FixedGrace:
    """The same grace whatever arrives."""

    idle_s: float

    def observe(self, runs: Iterable[Run]) -> None:
        """Nothing to learn."""

    def seconds(self) -> float:
        """``idle_s``."""
        return self.idle_s


class ArrivalSkew:
    """A grace sized by how late records arrive compared with the others of their time.

    The *frontier* is the newest event time received on any partition, with the moment it
    was first reached. A record at event time t of a caught-up partition that arrives after
    the frontier passed t is late by its arrival minus the moment the frontier did: a
    partition quiet for less than that could still deliver it. Arrivals are the consumer's
    fetch-response times, not when the worker got round to reading them, so the worker's own
    pauses (a busy event loop, the label barrier) do not count as lateness. The grace is
    ``factor`` times the largest lateness of the last ``window_s``, at least ``floor_s`` and
    at most ``cap_s``; ``cap_s`` until ``warmup`` runs of caught-up partitions were seen or
    ``warmup_s`` passed since the first (a sparse stream, labels say, would otherwise keep
    the cap for hours).
    """

    def __init__(
        self,
        *,
        floor_s: float,
        cap_s: float,
        window_s: float = 30.0,
        factor: float = 2.0,
        warmup: int = 20,
        warmup_s: float = 5.0,
    ) -> None:
        self._floor_s = min(floor_s, cap_s)
        self._cap_s = cap_s
        self._window_s = window_s
        self._factor = factor
        self._warmup = warmup
        self._warmup_s = warmup_s
        self._seen = 0
        self._first_at: float | None = None
        self._warm = warmup <= 0
        self._frontier_us: list[int] = []  # rising event times, and when each was reached
        self._reached_at: list[float] = []
        self._late: deque[tuple[float, float]] = deque()  # (at, lateness), lateness falling

    def observe(self, runs: Iterable[Run]) -> None:
        """In arrival order: measure each caught-up run's lateness, then move the frontier."""
        late, frontier, reached = self._late, self._frontier_us, self._reached_at
        at = reached[-1] if reached else float("-inf")
        for run in sorted(runs):
            at = max(at, run.arrived_s)  # the frontier's times rise
            if run.caught_up:
                self._seen += 1
                if self._first_at is None:
                    self._first_at = at
                self._warm = self._warm or (
                    self._seen >= self._warmup or at - self._first_at >= self._warmup_s
                )
                lateness = self._lateness(run.oldest_us, at)
                while late and late[-1][1] <= lateness:
                    late.pop()
                late.append((at, lateness))
            if not frontier or run.newest_us > frontier[-1]:
                frontier.append(run.newest_us)
                reached.append(at)
        self._forget(at)

    def seconds(self) -> float:
        """The grace as of the last runs observed."""
        if not self._warm:
            return self._cap_s
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
        if last is None or now - last >= self.grace.seconds():
            self._woke_at = now
        self._active_at[partition] = now

    def quiet(self, partition: int, now: float) -> bool:
        """Nothing from ``partition``, nor a wake-up, for the grace."""
        return self.quiet_in(partition, now) <= 0

    def quiet_in(self, partition: int, now: float) -> float:
        """Seconds until ``partition`` is quiet if nothing arrives (0 or less: it is)."""
        woke = self._woke_at
        return max(self._active_at.get(partition, woke), woke) + self.grace.seconds() - now

    def clear(self, now: float) -> None:
        """Forget every partition; the clock starts again at ``now``."""
        self._active_at.clear()
        self._woke_at = now
