"""The Fraud Detection Handbook's prequential protocol, generalised to any date range.

Fold ``i`` (0 = latest) trains on ``train_days`` days starting ``i * test_days`` days
before the latest training start, skips ``delay_days`` (labels not yet known), then tests
on the next ``test_days`` days. The latest training start defaults to the day that makes
the latest test window end on the last day of the data; on the handbook data this gives
the published starts 2018-08-15, 08-08, 08-01 and 07-25.

Each test day drops the customers already known to be compromised, exactly as the
handbook's ``get_train_test_set``: a fraud in the training window, or a fraud on a day
from the end of the training window up to ``delay_days + 1`` days before the test day.

``all_history`` folds keep the same test rows but train on every transaction before the
delay window, so both variants are scored on identical test sets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_app.errors import InputDataError
from stream_app.time import MICROS_PER_DAY

IntArray = npt.NDArray[np.int64]
Training = Literal["handbook", "all_history"]
TRAININGS: tuple[Training, ...] = ("handbook", "all_history")
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class PrequentialParams:
    """Fold geometry in whole days (UTC)."""

    n_folds: int = 4
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    latest_train_start: dt.date | None = None
    """None: the latest test window ends on the last day of the data."""

    def __post_init__(self) -> None:
        for name in ("n_folds", "train_days", "test_days"):
            if getattr(self, name) < 1:
                raise InputDataError(f"{name}={getattr(self, name)} must be at least 1")
        if self.delay_days < 0:
            raise InputDataError(f"delay_days={self.delay_days} must be 0 or more")


@dataclass(frozen=True)
class Fold:
    """One prequential fold: row indices into the dataset and its day boundaries."""

    index: int
    training: Training
    train_start: dt.date
    train_end: dt.date
    """First day after the training window (exclusive)."""
    test_start: dt.date
    test_end: dt.date
    """First day after the test window (exclusive)."""
    train_rows: IntArray
    test_rows: IntArray


def day_number(event_time_us: npt.NDArray[np.int64]) -> IntArray:
    """Whole UTC days since 1970-01-01 of each event time."""
    return np.floor_divide(event_time_us, MICROS_PER_DAY).astype(np.int64)


def _date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


def _day(date: dt.date) -> int:
    return (date - _EPOCH).days


def fold_train_starts(days: IntArray, params: PrequentialParams) -> list[int]:
    """Training start day numbers, latest fold first; refuses folds outside the data."""
    if len(days) == 0:
        raise InputDataError("the history is empty; the protocol needs transactions")
    first, last = int(days.min()), int(days.max())
    span = params.train_days + params.delay_days + params.test_days
    latest = (
        _day(params.latest_train_start) if params.latest_train_start is not None
        else last - span + 1
    )
    starts = [latest - i * params.test_days for i in range(params.n_folds)]
    if starts[-1] < first or latest + span - 1 > last:
        raise InputDataError(
            f"{params.n_folds} folds of {params.train_days}+{params.delay_days}+"
            f"{params.test_days} days starting {_date(starts[-1])}..{_date(latest)} do not fit "
            f"the data's days {_date(first)}..{_date(last)}; "
            f"pass fewer folds or shorter windows, or more data (needs "
            f"{span + (params.n_folds - 1) * params.test_days} days)"
        )
    return starts


def rows_without_known_compromised(
    days: IntArray, customer: IntArray, is_fraud: npt.NDArray[np.integer],
    train_start: int, params: PrequentialParams,
) -> IntArray:
    """Test-window rows minus, per test day, the customers already known compromised."""
    train_end = train_start + params.train_days
    test_start = train_end + params.delay_days
    frauds = np.asarray(is_fraud) != 0
    kept: list[IntArray] = []
    for offset in range(params.test_days):
        test_day = test_start + offset
        known_window = frauds & (days >= train_start) & (days <= train_end + offset - 1)
        known = np.unique(customer[known_window])
        rows = np.flatnonzero((days == test_day) & ~np.isin(customer, known))
        kept.append(rows.astype(np.int64))
    return np.concatenate(kept)


def prequential_folds(
    days: IntArray, customer: IntArray, is_fraud: npt.NDArray[np.integer],
    params: PrequentialParams, training: Training,
) -> list[Fold]:
    """The folds of one training variant, latest first (rows in history order)."""
    folds: list[Fold] = []
    for index, start in enumerate(fold_train_starts(days, params)):
        end = start + params.train_days
        first_train_day = start if training == "handbook" else int(days.min())
        train_rows = np.flatnonzero((days >= first_train_day) & (days < end)).astype(np.int64)
        test_rows = rows_without_known_compromised(days, customer, is_fraud, start, params)
        folds.append(
            Fold(
                index=index,
                training=training,
                train_start=_date(first_train_day),
                train_end=_date(end),
                test_start=_date(end + params.delay_days),
                test_end=_date(end + params.delay_days + params.test_days),
                train_rows=train_rows,
                test_rows=test_rows,
            )
        )
    return folds
