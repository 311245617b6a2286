"""Read the Fraud Detection Handbook's transactions (Parquet or CSV) into a TransactionHistory.

Ids become decimal strings, the naive ``TX_DATETIME`` is read as UTC, and each label is
known ``label_delay_days`` after its transaction (the handbook's protocol uses 7 days).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from stream_app.errors import InputDataError
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY

HANDBOOK_CURRENCY = "EUR"
ID_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID")
REQUIRED_COLUMNS = (*ID_COLUMNS, "TX_DATETIME", "TX_AMOUNT", "TX_FRAUD")
SCENARIO_COLUMN = "TX_FRAUD_SCENARIO"

_G = TypeVar("_G", bound=np.generic)


def read_handbook(path: str | Path, label_delay_days: int = 7) -> TransactionHistory:
    """Read a handbook file (``.parquet`` or ``.csv``) as a history sorted by time (stable)."""
    if label_delay_days < 0:
        raise InputDataError(
            f"label_delay_days={label_delay_days} is negative; pass a delay of 0 days or more"
        )
    table = _read_table(Path(path))
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: missing column(s) {', '.join(missing)}; a handbook file needs "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally {SCENARIO_COLUMN})"
        )
    ids = {name: _id_strings(path, table, name) for name in ID_COLUMNS}
    event_time_us = _event_times(path, table)
    amount = _floats(path, table, "TX_AMOUNT")
    is_fraud = _fraud_flags(path, table)
    if SCENARIO_COLUMN in table.column_names:
        scenario = _integers(path, table, SCENARIO_COLUMN).astype(np.int8)
    else:
        scenario = np.full(len(amount), -1, dtype=np.int8)
    order = None
    if bool(np.any(np.diff(event_time_us) < 0)):
        order = np.argsort(event_time_us, kind="stable")
    label_time_us = event_time_us + np.int64(label_delay_days) * MICROS_PER_DAY
    return TransactionHistory(
        transaction_id=_take(ids["TRANSACTION_ID"], order),
        customer_id=_take(ids["CUSTOMER_ID"], order),
        terminal_id=_take(ids["TERMINAL_ID"], order),
        event_time_us=_take(event_time_us, order),
        amount=_take(amount, order),
        currency=HANDBOOK_CURRENCY,
        is_fraud=_take(is_fraud, order),
        label_time_us=_take(label_time_us, order),
        fraud_scenario=_take(scenario, order),
    )


def _take(values: npt.NDArray[_G], order: npt.NDArray[np.intp] | None) -> npt.NDArray[_G]:
    return values if order is None else values[order]


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise InputDataError(f"handbook file {path} does not exist; pass the path of a "
                             "transactions .parquet or .csv file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pa_csv.read_csv(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputDataError(f"cannot read handbook file {path}: {exc}; check that it is a "
                             f"valid {suffix[1:]} file") from exc
    raise InputDataError(f"handbook file {path} has suffix {suffix!r}; use .parquet or .csv")


def _column(path: str | Path, table: pa.Table, name: str) -> pa.ChunkedArray:
    column: pa.ChunkedArray = table.column(name)
    if column.null_count:
        raise InputDataError(f"{path}: column {name} has {column.null_count} empty value(s); "
                             "every row needs a value")
    return column


def _type_error(path: str | Path, name: str, found: pa.DataType, expected: str) -> InputDataError:
    return InputDataError(f"{path}: column {name} has type {found}, expected {expected}")


def _integers(path: str | Path, table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    column = _column(path, table, name)
    if not pa.types.is_integer(column.type):
        raise _type_error(path, name, column.type, "integers")
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _id_strings(path: str | Path, table: pa.Table, name: str) -> npt.NDArray[np.object_]:
    column = _column(path, table, name)
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)):
        raise _type_error(path, name, column.type, "integer ids (or strings)")
    strings = pc.cast(column, pa.string())
    return np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)


def _event_times(path: str | Path, table: pa.Table) -> npt.NDArray[np.int64]:
    column = _column(path, table, "TX_DATETIME")
    if not pa.types.is_timestamp(column.type):
        raise _type_error(path, "TX_DATETIME", column.type,
                          "timestamps like 2018-04-01 00:00:31 (read as UTC)")
    micros = pc.cast(column, pa.timestamp("us", tz=column.type.tz))
    return np.asarray(micros.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _floats(path: str | Path, table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    column = _column(path, table, name)
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise _type_error(path, name, column.type, "numbers")
    values = np.asarray(pc.cast(column, pa.float64()).to_numpy(), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        raise InputDataError(f"{path}: column {name} row {int(bad[0])} has {values[bad[0]]}; "
                             "amounts must be finite and >= 0")
    return values


def _fraud_flags(path: str | Path, table: pa.Table) -> npt.NDArray[np.int8]:
    column = _column(path, table, "TX_FRAUD")
    if pa.types.is_boolean(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int8)
    flags = _integers(path, table, "TX_FRAUD")
    bad = np.flatnonzero((flags != 0) & (flags != 1))
    if len(bad):
        raise InputDataError(f"{path}: column TX_FRAUD row {int(bad[0])} has {flags[bad[0]]}; "
                             "labels must be 0 (genuine) or 1 (fraud)")
    return flags.astype(np.int8)
