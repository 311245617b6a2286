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

_NO_WATERMARK = -(1 << 62)


class AheadLimit:
    """Refuses event times more than ``max_ahead_s`` ahead of the reference clock."""

    def __init__(
        self, clock: str, max_ahead_s: float, wall: Callable[[], float] = time.time
    ) -> None:
        """``clock``: ``wall`` or ``watermark`` (``Settings.event_clock``)."""
        self._wall = wall if clock == "wall" else None
        self._max_ahead_us = int(max_ahead_s * MICROS_PER_SECOND)
        self._watermark_us = _NO_WATERMARK

    def check(self, field: str, moment_us: int) -> None:
        """Raise :class:`ContractError` if ``moment_us`` is too far ahead; else accept it
        (it moves the watermark)."""
        reference = self._reference_us()
        if reference is not None and moment_us > reference + self._max_ahead_us:
            ahead_s = (moment_us - reference) / MICROS_PER_SECOND
            raise ContractError(
                f"$.{field}",
                f"{field} {_iso(moment_us)} is {ahead_s:,.0f} s ahead of the "
                f"{'worker clock' if self._wall else 'stream watermark'} {_iso(reference)}, "
                f"more than FRAUDSTREAM_MAX_EVENT_AHEAD_S={self._max_ahead_us / 1e6:g}; fix "
                "the producer's clock, or raise the limit if the skew is expected",
            )
        if moment_us > self._watermark_us:
            self._watermark_us = moment_us

    def _reference_us(self) -> int | None:
        if self._wall is not None:
            return int(self._wall() * MICROS_PER_SECOND)
        return None if self._watermark_us == _NO_WATERMARK else self._watermark_us


def _iso(moment_us: int) -> str:
    try:
        return from_epoch_us(moment_us).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{moment_us} µs since the epoch"
