"""Time arguments of the stream commands: moments, --since durations, --speed."""

from __future__ import annotations

import datetime as dt

import pytest

from stream_app.contracts import to_epoch_us
from stream_app.errors import ConfigError
from stream_app.tools.timeargs import parse_moment_us, parse_rate, parse_since_us, parse_speed

NOW_US = to_epoch_us(dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-08-01", dt.datetime(2018, 8, 1, tzinfo=dt.UTC)),
        ("2018-08-01T06:30:00", dt.datetime(2018, 8, 1, 6, 30, tzinfo=dt.UTC)),
        ("2018-08-01T06:30:00+02:00", dt.datetime(2018, 8, 1, 4, 30, tzinfo=dt.UTC)),
        ("2018-08-01T06:30:00Z", dt.datetime(2018, 8, 1, 6, 30, tzinfo=dt.UTC)),
    ],
)
def test_moments_are_utc_unless_an_offset_is_given(text: str, expected: dt.datetime) -> None:
    assert parse_moment_us(text, "--from") == to_epoch_us(expected)


def test_bad_moment_names_the_flag_and_value() -> None:
    with pytest.raises(ConfigError, match=r"--to 'yesterday' is not a date"):
        parse_moment_us("yesterday", "--to")


@pytest.mark.parametrize(
    ("text", "back_s"), [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1.5h", 5400)]
)
def test_since_durations_count_back_from_now(text: str, back_s: int) -> None:
    assert parse_since_us(text, NOW_US) == NOW_US - back_s * 1_000_000


def test_since_also_takes_a_moment() -> None:
    assert parse_since_us("2018-09-01", NOW_US) == to_epoch_us(
        dt.datetime(2018, 9, 1, tzinfo=dt.UTC))


def test_bad_since_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--since '5 minutes'"):
        parse_since_us("5 minutes", NOW_US)


@pytest.mark.parametrize(("text", "expected"), [("max", None), ("MAX", None), ("1", 1.0),
                                                 ("3600", 3600.0), ("0.5", 0.5)])
def test_speed_is_max_or_a_positive_multiple(text: str, expected: float | None) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "fast", "nan", "inf", ""])
def test_bad_speed_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=f"--speed {text!r}"):
        parse_speed(text)


@pytest.mark.parametrize(("text", "expected"), [("50", 50.0), ("0.5", 0.5), (" 200 ", 200.0)])
def test_rate_is_a_positive_number_per_second(text: str, expected: float) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "max", "nan", "inf", ""])
def test_bad_rate_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=f"--rate {text!r}"):
        parse_rate(text)
