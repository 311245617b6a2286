"""History rows as contract events: the replay clock order and the exact amounts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.contracts import decode_label, decode_transaction
from stream_app.errors import InputDataError
from stream_app.sources.events import RecordEncoder, format_amount, replay_order
from stream_app.sources.history import TransactionHistory
from tests.unit.feature_histories import clock_history

US = 1_000_000
DAY_US = 86_400 * US
T0 = 1_530_000_000 * US


def _published(history: TransactionHistory, **kwargs: bool) -> list[str]:
    order = replay_order(history, **kwargs)
    return [
        ("L" if lab else "T") + str(row)
        for row, lab in zip(order.row.tolist(), order.is_label.tolist(), strict=True)
    ]


def test_labels_are_merged_on_the_replay_clock_before_transactions_of_the_same_instant() -> None:
    # Transactions at 0, 10, 20, 30 s; labels known 10 s after each event.
    history = clock_history([0, 10, 20, 30], label_delay_s=10)
    order = replay_order(history)
    assert _published(history) == ["T0", "L0", "T1", "L1", "T2", "L2", "T3", "L3"]
    assert np.all(np.diff(order.clock_us) >= 0)
    assert (order.transactions, order.labels) == (4, 4)


def test_without_labels_the_order_is_the_transactions_in_history_order() -> None:
    history = clock_history([0, 10, 10, 30], label_delay_s=10)
    assert _published(history, labels=False) == ["T0", "T1", "T2", "T3"]
    assert _published(history) == ["T0", "L0", "T1", "T2", "L1", "L2", "T3", "L3"]


def test_an_empty_range_is_an_input_error_naming_both_ends() -> None:
    history = clock_history([0, 10])
    with pytest.raises(
        InputDataError,
        match=r"--to 2018-06-26T08:00:00Z is not after --from "
        r"2018-06-26T08:00:00Z",
    ):
        replay_order(history, T0, T0)


@given(st.integers(0, 10**12 - 1), st.integers(0, 9999), st.integers(0, 4))
def test_every_amount_the_contract_carries_reads_back_as_the_same_float(
    units: int, fraction: int, places: int
) -> None:
    text = f"{units}.{fraction % 10**places:0{places}d}" if places else str(units)
    history = clock_history([0], amounts=[float(text)])
    decoded = decode_transaction(RecordEncoder(history).payload(0, is_label=False))
    assert decoded.amount_float == float(text)


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        (12.5, "12.5"),
        (3.0, "3"),
        (0.0, "0"),
        (57.16, "57.16"),
        (0.0001, "0.0001"),
        (999999999999.9999, "999999999999.9999"),
        (2.3000000000000003, "2.3"),
        (4.050000000000001, "4.05"),
        (0.12345, "0.1235"),
    ],
)
def test_amounts_are_shortest_decimals_rounded_to_the_contracts_four_places(
    amount: float, written: str
) -> None:
    assert format_amount(amount) == written


def test_labels_repeat_their_transaction_and_carry_the_label_time() -> None:
    history = clock_history([0, 10], label_delay_s=7 * 86_400)
    label = decode_label(RecordEncoder(history).payload(1, is_label=True))
    assert (label.transaction_id, label.customer_id, label.terminal_id) == ("tx1", "c1", "k1")
    assert (label.event_time_us, label.label_time_us) == (T0 + 10 * US, T0 + 10 * US + 7 * DAY_US)
    assert label.is_fraud is False


@pytest.mark.parametrize(("amount", "shown"), [(-3.5, '"-3.5"'), (1e13, '"10000000000000"')])
def test_an_amount_the_contract_rejects_names_the_transaction_and_row(
    amount: float, shown: str
) -> None:
    history = clock_history([0, 10], amounts=[1.0, amount])
    with pytest.raises(
        InputDataError,
        match=(
            r"transaction 'tx1' \(row 1\) cannot be encoded as transaction\.v1: "
            rf"\$\.amount: got {shown}; expected a non-negative decimal"
        ),
    ):
        RecordEncoder(history).payload(1, is_label=False)
