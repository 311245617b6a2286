"""The warm-up horizon: the events it spans before a date are all the windows need there."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from stream_app.features.batch import compute_features
from stream_app.features.horizon import horizon_days, warmup_us
from stream_app.features.spec import FEATURE_SET_NAMES, feature_set
from stream_app.sources.history import TransactionHistory
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY

START = dt.date(2018, 4, 1)
FROM_US = (START - dt.date(1970, 1, 1)).days * MICROS_PER_DAY + 45 * MICROS_PER_DAY


def test_the_warmup_is_the_longest_reach_of_the_windows() -> None:
    assert warmup_us(7) == 37 * MICROS_PER_DAY  # label delay + the 30-day terminal window
    assert warmup_us(0) == 30 * MICROS_PER_DAY  # the 30-day customer window
    assert horizon_days(feature_set("handbook", 3)) == 33


def _window_features_from(history: TransactionHistory, name: str, warmup: int) -> np.ndarray:
    """The features of the rows from FROM_US on, computed from ``warmup`` µs before it."""
    fs = feature_set(name, 7)
    lo, first = np.searchsorted(history.event_time_us, [FROM_US - warmup, FROM_US])
    values = compute_features(history.slice(int(lo), len(history)), fs).values
    return values[int(first - lo) :]


@pytest.mark.parametrize("name", FEATURE_SET_NAMES)
def test_features_from_a_date_need_only_the_horizon_before_it(name: str) -> None:
    history = simulate(60, 40, 60, START, seed=5, label_delay_days=7)
    full = _window_features_from(history, name, FROM_US)  # the whole history
    assert len(full) > 100
    # (the batch path's running sums round differently from another first row: ~1e-13)
    warmed = _window_features_from(history, name, warmup_us(7))
    np.testing.assert_allclose(warmed, full, rtol=1e-9, atol=1e-9)
    short = _window_features_from(history, name, warmup_us(7) - MICROS_PER_DAY)
    assert not np.allclose(short, full, rtol=1e-9, atol=1e-9)  # misses what windows hold
