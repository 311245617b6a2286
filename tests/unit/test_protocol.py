"""Prequential folds: dates, known-compromised removal, the all-history variant."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from stream_app.errors import InputDataError
from stream_app.time import MICROS_PER_DAY
from training.protocol import (
    PrequentialParams,
    day_number,
    prequential_folds,
    rows_without_known_compromised,
)

EPOCH = dt.date(1970, 1, 1)


def _day(date: dt.date) -> int:
    return (date - EPOCH).days


def _one_row_a_day(first: dt.date, last: dt.date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    days = np.arange(_day(first), _day(last) + 1, dtype=np.int64)
    return days, np.arange(len(days), dtype=np.int64), np.zeros(len(days), dtype=np.int8)


def test_day_number_floors_microseconds_to_utc_days() -> None:
    times = np.array([0, MICROS_PER_DAY - 1, MICROS_PER_DAY, 3 * MICROS_PER_DAY + 5])
    assert day_number(times).tolist() == [0, 0, 1, 3]


def test_folds_on_the_handbook_range_match_the_published_dates() -> None:
    days, customer, fraud = _one_row_a_day(dt.date(2018, 4, 1), dt.date(2018, 9, 4))
    folds = prequential_folds(days, customer, fraud, PrequentialParams(), "handbook")
    assert [f.train_start for f in folds] == [
        dt.date(2018, 8, 15), dt.date(2018, 8, 8), dt.date(2018, 8, 1), dt.date(2018, 7, 25)
    ]
    latest = folds[0]
    assert (latest.train_end, latest.test_start, latest.test_end) == (
        dt.date(2018, 8, 22), dt.date(2018, 8, 29), dt.date(2018, 9, 5)
    )
    assert days[latest.train_rows].tolist() == list(range(_day(dt.date(2018, 8, 15)),
                                                         _day(dt.date(2018, 8, 22))))
    assert days[latest.test_rows].tolist() == list(range(_day(dt.date(2018, 8, 29)),
                                                        _day(dt.date(2018, 9, 5))))


def test_all_history_trains_on_everything_before_the_delay_and_keeps_the_test_rows() -> None:
    days, customer, fraud = _one_row_a_day(dt.date(2018, 4, 1), dt.date(2018, 9, 4))
    params = PrequentialParams()
    short = prequential_folds(days, customer, fraud, params, "handbook")
    full = prequential_folds(days, customer, fraud, params, "all_history")
    for a, b in zip(short, full, strict=True):
        assert b.train_start == dt.date(2018, 4, 1)
        assert b.train_end == a.train_end
        assert days[b.train_rows].max() == _day(a.train_end) - 1
        assert np.array_equal(a.test_rows, b.test_rows)


def test_explicit_fold_parameters_shift_the_windows() -> None:
    days, customer, fraud = _one_row_a_day(dt.date(2018, 4, 1), dt.date(2018, 5, 31))
    params = PrequentialParams(n_folds=2, train_days=3, delay_days=2, test_days=4,
                               latest_train_start=dt.date(2018, 5, 1))
    folds = prequential_folds(days, customer, fraud, params, "handbook")
    assert [(f.train_start, f.test_start, f.test_end) for f in folds] == [
        (dt.date(2018, 5, 1), dt.date(2018, 5, 6), dt.date(2018, 5, 10)),
        (dt.date(2018, 4, 27), dt.date(2018, 5, 2), dt.date(2018, 5, 6)),
    ]
    assert len(folds[1].train_rows) == 3 and len(folds[1].test_rows) == 4


def test_known_compromised_customers_leave_each_test_day_as_in_the_handbook() -> None:
    # train days 0-1, delay days 2-3, test days 4-6 (train 2, delay 2, test 3)
    params = PrequentialParams(n_folds=1, train_days=2, delay_days=2, test_days=3)
    rows = [  # (day, customer, fraud)
        (0, 10, 1),  # fraud in training: customer 10 gone from every test day
        (2, 11, 1),  # fraud on the first delay day: known from test day 5 (= 2 + delay + 1)
        (3, 12, 1),  # fraud on the last delay day: known from test day 6
        (4, 13, 1),  # fraud on a test day: never known within this test window
        (4, 10, 0), (4, 11, 0), (4, 12, 0), (4, 13, 0),
        (5, 10, 0), (5, 11, 0), (5, 12, 0), (5, 13, 0),
        (6, 10, 0), (6, 11, 0), (6, 12, 0), (6, 13, 0),
    ]
    days = np.array([r[0] for r in rows], dtype=np.int64) + 1000
    customer = np.array([r[1] for r in rows], dtype=np.int64)
    fraud = np.array([r[2] for r in rows], dtype=np.int8)
    kept = rows_without_known_compromised(days, customer, fraud, 1000, params)
    kept_pairs = [(int(days[i]) - 1000, int(customer[i])) for i in kept]
    assert kept_pairs == [
        (4, 13), (4, 11), (4, 12), (4, 13),  # the test-day fraud itself stays
        (5, 12), (5, 13),
        (6, 13),
    ]


def test_folds_that_do_not_fit_the_data_are_refused_with_the_days_needed() -> None:
    days, customer, fraud = _one_row_a_day(dt.date(2018, 4, 1), dt.date(2018, 4, 30))
    with pytest.raises(InputDataError, match="needs 42 days"):
        prequential_folds(days, customer, fraud, PrequentialParams(), "handbook")


def test_bad_fold_parameters_are_refused() -> None:
    with pytest.raises(InputDataError, match="train_days=0"):
        PrequentialParams(train_days=0)
