"""AheadLimit: event times too far ahead of the worker clock or the stream's watermark."""

from __future__ import annotations

import pytest

from stream_app.ahead import AheadLimit
from stream_app.errors import ContractError

S = 1_000_000  # µs
NOW = 1_700_000_000  # s, the fake worker clock


def test_the_wall_clock_is_read_once_a_fetch_and_bounds_event_times() -> None:
    clock = [float(NOW)]
    limit = AheadLimit("wall", max_ahead_s=300, wall=lambda: clock[0])
    limit.check("event_time", (NOW + 300) * S)  # at the limit: accepted
    with pytest.raises(ContractError) as refused:
        limit.check("event_time", (NOW + 301) * S)
    assert refused.value.field == "$.event_time"
    assert "is 301 s ahead of the worker clock 2023-11-14T22:13:20Z" in refused.value.problem
    assert "FRAUDSTREAM_MAX_EVENT_AHEAD_S=300" in refused.value.problem
    clock[0] += 10
    with pytest.raises(ContractError):  # the clock moved, but is read once a fetch
        limit.check("event_time", (NOW + 301) * S)
    limit.read_clock()
    limit.check("label_time", (NOW + 310) * S)


def test_the_watermark_is_the_newest_accepted_time_and_starts_with_the_first() -> None:
    limit = AheadLimit("watermark", max_ahead_s=60, wall=lambda: 0.0)
    limit.check("event_time", 1_000 * S)  # no watermark yet: accepted, starts it
    limit.check("event_time", 1_060 * S)
    limit.check("event_time", 500 * S)  # behind is never refused
    with pytest.raises(ContractError) as refused:
        limit.check("event_time", 1_121 * S)
    assert "61 s ahead of the stream watermark 1970-01-01T00:17:40Z" in refused.value.problem
    limit.check("event_time", 1_120 * S)  # the refused one did not move the watermark


def test_a_time_beyond_datetime_is_still_worded() -> None:
    limit = AheadLimit("wall", max_ahead_s=0, wall=lambda: float(NOW))
    with pytest.raises(ContractError) as refused:
        limit.check("event_time", 1 << 61)
    assert "µs since the epoch" in refused.value.problem
