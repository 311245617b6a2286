"""Our JSONL event files: round trips, label joins, and errors that name the line."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from stream_app.errors import InputDataError
from stream_app.sources.events import replay_order
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.sources.jsonl import read_jsonl, write_jsonl
from stream_app.sources.simulator import simulate

COMPARED = ("transaction_id", "customer_id", "terminal_id", "event_time_us", "amount",
            "is_fraud", "label_time_us")


@pytest.fixture(scope="module")
def history() -> TransactionHistory:
    return simulate(60, 120, 10, dt.date(2018, 4, 1), seed=5, label_delay_days=3)


def _assert_same(read: TransactionHistory, written: TransactionHistory) -> None:
    assert read.currency == written.currency
    for name in COMPARED:
        np.testing.assert_array_equal(getattr(read, name), getattr(written, name), err_msg=name)
    np.testing.assert_array_equal(read.fraud_scenario, -1)


def _transaction(tid: str, when: str = "2018-04-01T10:00:00Z", **changes: str) -> str:
    event = {"schema": "transaction.v1", "transaction_id": tid, "customer_id": "c1",
             "terminal_id": "t1", "amount": "12.5", "currency": "EUR", "event_time": when}
    return json.dumps(event | changes)


def _label(tid: str, fraud: bool, when: str = "2018-04-01T10:00:00Z",
           known: str = "2018-04-08T10:00:00Z", **changes: str) -> str:
    event = {"schema": "label.v1", "transaction_id": tid, "customer_id": "c1",
             "terminal_id": "t1", "event_time": when, "label_time": known, "is_fraud": fraud}
    return json.dumps(event | changes)


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_write_then_read_gives_the_same_history(
    history: TransactionHistory, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    write_jsonl(history, path)
    _assert_same(read_jsonl(path), history)
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            assert json.loads(handle.readline())["schema"] == "transaction.v1"


def test_events_are_written_in_the_order_a_live_system_sees_them(
    history: TransactionHistory, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(history, path)
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(events) == 2 * len(history)
    clock = [e["event_time"] if e["schema"] == "transaction.v1" else e["label_time"]
             for e in events]
    assert clock == sorted(clock)
    first_label = next(i for i, e in enumerate(events) if e["schema"] == "label.v1")
    labelled = events[first_label]["transaction_id"]
    assert any(e["transaction_id"] == labelled for e in events[:first_label])
    # The very order a replay publishes.
    order = replay_order(history)
    assert [(e["schema"] == "label.v1", e["transaction_id"]) for e in events] == list(
        zip(order.is_label.tolist(), history.transaction_id[order.row].tolist(), strict=True))


def test_a_label_is_written_before_a_transaction_of_the_same_instant(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "source.jsonl",
        _transaction("b", when="2018-04-01T10:00:10Z"),
        _transaction("a", when="2018-04-01T10:00:00Z"),
        _label("a", False, when="2018-04-01T10:00:00Z", known="2018-04-01T10:00:10Z"),
    )
    path = tmp_path / "events.jsonl"
    write_jsonl(read_jsonl(source), path)
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(e["schema"], e["transaction_id"]) for e in events] == [
        ("transaction.v1", "a"), ("label.v1", "a"), ("transaction.v1", "b")]


def test_without_labels_every_transaction_reads_back_unlabelled(
    history: TransactionHistory, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(history, path, include_labels=False)
    read = read_jsonl(path)
    np.testing.assert_array_equal(read.event_time_us, history.event_time_us)
    np.testing.assert_array_equal(read.is_fraud, 0)
    np.testing.assert_array_equal(read.label_time_us, NO_LABEL_US)


def test_labels_before_their_transactions_still_join(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.jsonl",
        _label("b", True, when="2018-04-01T09:00:00+02:00", known="2018-04-02T00:00:00Z"),
        "",
        _transaction("a", when="2018-04-01T10:00:00Z"),
        _transaction("b", when="2018-04-01T07:00:00Z"),
        _transaction("c", when="2018-04-01T10:00:00Z"),
        _label("a", False),
    )
    read = read_jsonl(path)
    np.testing.assert_array_equal(read.transaction_id, ["b", "a", "c"])  # ties in file order
    np.testing.assert_array_equal(read.is_fraud, [1, 0, 0])
    assert read.label_time_us[0] == int(
        dt.datetime(2018, 4, 2, tzinfo=dt.UTC).timestamp() * 1_000_000)
    assert read.label_time_us[2] == NO_LABEL_US
    np.testing.assert_array_equal(read.amount, 12.5)


def test_a_bad_line_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.jsonl", _transaction("a"),
                  _transaction("b", amount="-3"))
    with pytest.raises(InputDataError, match=r"events\.jsonl line 2: \$\.amount: got \"-3\""):
        read_jsonl(path)


def test_a_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.jsonl", _transaction("a"), "", "{not json")
    with pytest.raises(InputDataError, match=r"line 3: \$: payload is not JSON"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((_transaction("a"), _transaction("a")), r"line 2: transaction 'a' repeats line 1"),
        ((_transaction("a"), _label("a", True), _label("a", False)),
         r"line 3: label for transaction 'a' repeats line 2"),
        ((_transaction("a"), _label("z", True)),
         r"line 2: label for transaction 'z', which is not in the file"),
        ((_label("a", True, customer_id="c9"), _transaction("a")),
         r"line 1: the label's customer_id 'c9' differs from 'c1' of transaction 'a' on line 2"),
        ((_transaction("a"), _label("a", True, when="2018-04-01T10:00:01Z")),
         r"line 2: the label's event_time '2018-04-01T10:00:01Z' differs from "
         r"'2018-04-01T10:00:00Z'"),
        ((_transaction("a"), _transaction("b", currency="USD")),
         r"line 2: currency 'USD' differs from 'EUR' on line 1"),
        ((_label("a", True),), r"holds no transaction\.v1 events"),
    ],
)
def test_inconsistent_files_raise_errors_naming_the_line(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    path = _write(tmp_path / "events.jsonl", *lines)
    with pytest.raises(InputDataError, match=message):
        read_jsonl(path)


def test_missing_and_damaged_files_raise_input_data_errors(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"cannot read .*nope\.jsonl: it does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    plain = _write(tmp_path / "plain.jsonl.gz", _transaction("a"))
    with pytest.raises(InputDataError, match=r"cannot read .*plain\.jsonl\.gz: Not a gzipped"):
        read_jsonl(plain)
    with pytest.raises(InputDataError, match=r"cannot write .*: its directory does not exist"):
        write_jsonl(simulate(2, 2, 1, dt.date(2018, 4, 1), 0), tmp_path / "no" / "x.jsonl")


def test_a_value_the_contract_rejects_is_not_written(
    history: TransactionHistory, tmp_path: Path
) -> None:
    bad = TransactionHistory(
        transaction_id=history.transaction_id, customer_id=history.customer_id,
        terminal_id=history.terminal_id, event_time_us=history.event_time_us,
        amount=-history.amount, currency=history.currency, is_fraud=history.is_fraud,
        label_time_us=history.label_time_us, fraud_scenario=history.fraud_scenario,
    )
    with pytest.raises(InputDataError, match=r"transaction '0' \(row 0\) cannot be encoded as "
                                             r"transaction\.v1: \$\.amount"):
        write_jsonl(bad, tmp_path / "bad.jsonl")
