"""How far ahead an event time may be: events beyond a reference clock plus a skew are refused.

One event time far in the future would otherwise make every later event of its customer
and terminal look late. The reference is the worker's clock (``wall``, live streams) or the
stream's watermark (``watermark``, replays of recorded histories, whose event times are
all in the past): the newest event time accepted so far. Before the first accepted event
a watermark has no reference, so the first event is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stream_app.contracts.records import from_epoch_us
from stream_app.errors import ContractError
from stream_app.time import MICROS_PER_SECOND

_NO_LIMIT = 1 << 62


class AheadLimit:
    """Refuses event times more than ``max_ahead_s`` ahead of the reference clock."""

    def __init__(
        self, clock: str, max_ahead_s: float, wall: Callable[[], float] = time.time
    ) -> None:
        """``clock``: ``wall`` or ``watermark`` (``Settings.event_clock``)."""
        self._wall = wall if clock == "wall" else None
        self._max_ahead_us = int(max_ahead_s * MICROS_PER_SECOND)
        self._watermark_us = -_NO_LIMIT
        self._limit_us = _NO_LIMIT
        self.read_clock()

    def read_clock(self) -> None:
        """Take the worker clock's time now as the reference (once a fetch: the records of a
        fetch arrived together)."""
        if self._wall is not None:
            self._limit_us = int(self._wall() * MICROS_PER_SECOND) + self._max_ahead_us

    def check(self, field: str, moment_us: int) -> None:
        """Raise :class:`ContractError` if ``moment_us`` is too far ahead; else accept it
        (it moves the watermark)."""
        if moment_us > self._limit_us:
            raise self._refusal(field, moment_us)
        if moment_us > self._watermark_us:
            self._watermark_us = moment_us
            if self._wall is None:
                self._limit_us = moment_us + self._max_ahead_us

    def _refusal(self, field: str, moment_us: int) -> ContractError:
        reference = self._limit_us - self._max_ahead_us
        return ContractError(
            f"$.{field}",
            f"{field} {_iso(moment_us)} is {(moment_us - reference) / MICROS_PER_SECOND:,.0f} s "
            f"ahead of the {'worker clock' if self._wall else 'stream watermark'} "
            f"{_iso(reference)}, more than FRAUDSTREAM_MAX_EVENT_AHEAD_S="
            f"{self._max_ahead_us / MICROS_PER_SECOND:g}; fix the producer's clock, or raise "
            "the limit if the skew is expected",
            "far_future",
        )


def _iso(moment_us: int) -> str:
    try:
        return from_epoch_us(moment_us).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{moment_us} µs since the epoch"
