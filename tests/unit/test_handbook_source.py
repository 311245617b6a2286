"""Reading handbook-layout Parquet and CSV files into a TransactionHistory."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from stream_app.errors import InputDataError
from stream_app.sources.handbook import read_handbook
from stream_app.time import MICROS_PER_DAY

T0_US = 1_522_540_831_000_000  # 2018-04-01 00:00:31 UTC


def _table(**replace: pa.Array) -> pa.Table:
    columns = {
        "TRANSACTION_ID": pa.array([10, 11, 12], pa.int64()),
        "TX_DATETIME": pa.array(
            [datetime(2018, 4, 1, 0, 2, 10), datetime(2018, 4, 1, 0, 0, 31),
             datetime(2018, 4, 1, 0, 2, 10)], pa.timestamp("ns"),
        ),
        "CUSTOMER_ID": pa.array([596, 4961, 2], pa.int64()),
        "TERMINAL_ID": pa.array([3156, 3412, 1365], pa.int64()),
        "TX_AMOUNT": pa.array([57.16, 81.51, 146.0]),
        "TX_FRAUD": pa.array([0, 1, 0], pa.int64()),
        "TX_FRAUD_SCENARIO": pa.array([0, 2, 0], pa.int64()),
    }
    columns.update(replace)
    return pa.table({k: v for k, v in columns.items() if v is not None})


def test_parquet_becomes_a_history_sorted_by_time_with_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    pq.write_table(_table(), path)
    history = read_handbook(path)
    assert history.transaction_id.tolist() == ["11", "10", "12"]  # stable: 10 before 12
    assert history.customer_id.tolist() == ["4961", "596", "2"]
    assert history.terminal_id.tolist() == ["3412", "3156", "1365"]
    assert history.event_time_us.tolist() == [T0_US, T0_US + 99_000_000, T0_US + 99_000_000]
    assert history.amount.tolist() == [81.51, 57.16, 146.0]
    assert history.is_fraud.tolist() == [1, 0, 0]
    assert history.fraud_scenario.tolist() == [2, 0, 0]
    assert (history.label_time_us - history.event_time_us == 7 * MICROS_PER_DAY).all()
    assert history.currency == "EUR"
    assert history.event_time_us.dtype == np.int64 and history.transaction_id.dtype == object


def test_csv_reads_the_same_and_the_delay_and_scenario_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    pa_csv.write_csv(_table(TX_FRAUD_SCENARIO=None), path)
    history = read_handbook(path, label_delay_days=3)
    assert history.transaction_id.tolist() == ["11", "10", "12"]
    assert history.event_time_us[0] == T0_US
    assert (history.label_time_us - history.event_time_us == 3 * MICROS_PER_DAY).all()
    assert history.fraud_scenario.tolist() == [-1, -1, -1]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"nope\.parquet does not exist"):
        read_handbook(tmp_path / "nope.parquet")


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputDataError, match=r"cannot read handbook file .*broken\.parquet"):
        read_handbook(path)


def test_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tx.json"
    path.write_text("{}")
    with pytest.raises(InputDataError, match=r"use \.parquet or \.csv"):
        read_handbook(path)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    pq.write_table(_table(TX_FRAUD=None), path)
    with pytest.raises(InputDataError, match=r"missing column.*TX_FRAUD"):
        read_handbook(path)


@pytest.mark.parametrize(
    ("column", "values", "match"),
    [
        ("TX_AMOUNT", pa.array(["a", "b", "c"]), "TX_AMOUNT has type string, expected numbers"),
        ("TX_DATETIME", pa.array([1, 2, 3]), "TX_DATETIME has type int64, expected timestamps"),
        ("CUSTOMER_ID", pa.array([1.5, 2.0, 3.0]), "CUSTOMER_ID has type double, expected int"),
        ("TX_FRAUD", pa.array([0, 2, 0]), "TX_FRAUD row 1 has 2"),
        ("TX_AMOUNT", pa.array([1.0, -2.0, 3.0]), "TX_AMOUNT row 1 has -2.0"),
        ("TERMINAL_ID", pa.array([1, None, 3], pa.int64()), "TERMINAL_ID has 1 empty value"),
    ],
)
def test_wrong_columns_are_named_with_what_was_expected(
    tmp_path: Path, column: str, values: pa.Array, match: str
) -> None:
    path = tmp_path / "tx.parquet"
    pq.write_table(_table(**{column: values}), path)
    with pytest.raises(InputDataError, match=match):
        read_handbook(path)


def test_a_negative_delay_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    pq.write_table(_table(), path)
    with pytest.raises(InputDataError, match="label_delay_days=-1"):
        read_handbook(path, label_delay_days=-1)
