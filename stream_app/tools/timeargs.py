"""Parse the time arguments of the stream commands: moments, look-back durations, speeds,
rates."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from stream_app.contracts.records import to_epoch_us
from stream_app.errors import ConfigError

_DURATION = re.compile(r"(?P<amount>[0-9]+(?:\.[0-9]+)?)(?P<unit>s|m|h|d)")
_UNIT_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


def parse_moment_us(text: str, flag: str) -> int:
    """``text`` (ISO date or date-time; no offset means UTC) as microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not a date or time; use ISO 8601 such as 2018-08-01 or "
            "2018-08-01T12:00:00 (UTC unless an offset like +02:00 is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_epoch_us(moment)


def parse_window_us(
    start: str | None, stop: str | None, stop_flag: str
) -> tuple[int | None, int | None]:
    """``--from`` and ``stop_flag`` (``--to`` / ``--until``) as µs, either may be absent; a
    :class:`ConfigError` when both are given and the first is not before the second."""
    start_us = None if start is None else parse_moment_us(start, "--from")
    stop_us = None if stop is None else parse_moment_us(stop, stop_flag)
    if start_us is not None and stop_us is not None and start_us >= stop_us:
        raise ConfigError(f"--from {start} is not before {stop_flag} {stop}; swap them")
    return start_us, stop_us


def parse_since_us(text: str, now_us: int, flag: str = "--since") -> int:
    """``text`` as a moment, or as a look-back duration (``90s``, ``15m``, ``2h``, ``7d``)."""
    duration = _DURATION.fullmatch(text.strip())
    if duration is None:
        return parse_moment_us(text, flag)
    return now_us - round(float(duration["amount"]) * _UNIT_US[duration["unit"]])


def parse_speed(text: str) -> float | None:
    """``max`` as None (no pacing), else a positive multiple of real time."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed) or speed <= 0:
        raise ConfigError(
            f"--speed {text!r} is not valid; use 'max' (as fast as possible) or a positive "
            "multiple of real time such as 1, 60 or 3600"
        )
    return speed


def parse_rate(text: str) -> float:
    """A positive number of transactions per second (``replay --rate``)."""
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(
            f"--rate {text!r} is not valid; use a positive number of transactions per second "
            "such as 50 or 200"
        )
    return rate
