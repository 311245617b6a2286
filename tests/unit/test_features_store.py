"""The in-memory window store: the window-store contract (in process and in a window
process), re-deliveries, horizons and state bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.testing as npt
import pytest

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import InputDataError
from stream_app.features.incremental import (
    CustomerWindow,
    TerminalWindow,
    decode_customer,
    decode_terminal,
    encode_window,
    float64s,
    id_lengths,
    int64s,
)
from stream_app.features.spec import feature_set
from stream_app.features.store import (
    InMemoryStoreConfig,
    InMemoryWindowStore,
    WindowStore,
    replay_history,
)
from tests.unit.feature_histories import (
    DAY,
    T0,
    label_events,
    random_history,
    transaction_events,
)
from tests.unit.window_store_contract import CONTRACT, closing, drive, window_process

FS = feature_set("default")
WIDTH = len(FS.columns)
_ARRAY_FIELDS = (
    "transaction_id", "customer_id", "terminal_id", "event_time_us", "amount", "is_fraud",
    "label_time_us", "fraud_scenario",
)  # fmt: skip


def _state(store: InMemoryWindowStore) -> dict[str, bytes]:
    return {
        **{f"c:{k}": encode_window(w) for k, w in store.customers.items()},
        **{f"k:{k}": encode_window(w) for k, w in store.terminals.items()},
    }


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
@pytest.mark.parametrize("kind", ["in-memory", "window process"])
async def test_the_window_store_contract(
    kind: str, check: Callable[[WindowStore[Any]], Awaitable[None]]
) -> None:
    config = InMemoryStoreConfig(FS)
    store = config.open() if kind == "in-memory" else await window_process(config)
    async with closing(store):
        await check(store)


def test_redelivered_transactions_and_labels_change_nothing() -> None:
    history = random_history(12, n=800)
    store = InMemoryWindowStore(FS)
    first = replay_history(history, FS, store)
    before = _state(store)
    tail = range(len(history) - 60, len(history))
    delivered = [
        label for label in label_events(history)
        if label.label_time_us <= history.event_time_us[-1]
    ]  # fmt: skip
    again = store.apply(transaction_events(history, tail), delivered)
    assert _state(store) == before
    assert again.duplicate.all()
    last_five: dict[str, list[int]] = {}
    for i, customer in enumerate(history.customer_id.tolist()):
        last_five[customer] = [*last_five.get(customer, []), i][-5:]
    recent = {i for rows in last_five.values() for i in rows}
    assert recent & set(tail) and set(tail) - recent, "the tail mixes cached and older rows"
    for j, i in enumerate(tail):
        if i in recent:
            npt.assert_array_equal(again.values[j], first.values[i])
        else:
            assert np.isnan(again.values[j]).all()
            assert again.mask[j].sum() == 0


async def test_compute_applies_at_once_and_leaves_nothing_to_write() -> None:
    store = InMemoryStoreConfig(FS).open()
    events = [TransactionEvent(f"t{i}", "c", "k", T0 + i * DAY, 1.0) for i in range(3)]
    computed = await store.compute(events, [])
    assert store.customers["c"].transaction_ids == ["t0", "t1", "t2"]
    assert not computed.features.late.any() and not computed.features.conflict.any()
    assert not computed.changed and store.computes_in_order
    before = _state(store)
    await store.write_all([computed])
    store.reset_cache(shared_terminals=True)
    await store.close()
    assert _state(store) == before


def test_windows_forget_what_no_window_can_reach() -> None:
    store = InMemoryWindowStore(FS)
    store.apply([TransactionEvent("a", "c", "k", T0, 1.0),
                   TransactionEvent("b", "c", "k", T0 + 20 * DAY, 2.0)], [])  # fmt: skip
    store.apply([], [LabelEvent("a", "c", "k", T0, T0 + 7 * DAY, True)])
    assert store.customers["c"].fraud_labels == [("a", T0, T0 + 7 * DAY)]
    store.apply([TransactionEvent("x", "c", "k", T0 + 30 * DAY, 3.0)], [])
    assert store.customers["c"].transaction_ids == ["b", "x"]  # T0 is exactly 30 days back
    assert store.customers["c"].fraud_labels == []
    assert store.terminals["k"].transaction_ids == ["a", "b", "x"]  # kept for D + 30 days
    store.apply([TransactionEvent("y", "d", "k", T0 + 37 * DAY, 3.0)], [])
    assert store.terminals["k"].transaction_ids == ["b", "x", "y"]
    assert store.customers["c"].recent_ids == ["a", "b", "x"]  # sequences outlive windows


def test_ids_longer_than_a_window_keeps_are_refused_before_any_change() -> None:
    store = InMemoryWindowStore(FS)
    with pytest.raises(InputDataError, match="has 256 characters; windows keep ids of at most 255"):
        store.apply([TransactionEvent("x" * 256, "c", "k", T0, 1.0)], [])
    assert store.customers["c"] == CustomerWindow() and store.terminals["k"] == TerminalWindow()


def test_a_genuine_label_withdraws_a_fraud_label() -> None:
    store = InMemoryWindowStore(FS)
    store.apply([], [LabelEvent("a", "c", "k", T0, T0 + DAY, True)])
    store.apply([], [LabelEvent("a", "c", "k", T0, T0 + 2 * DAY, False)])
    assert store.customers["c"].fraud_labels == store.terminals["k"].fraud_labels == []


async def test_state_bytes_round_trip_and_processing_continues_identically() -> None:
    history = random_history(13, n=1000)
    head, tail = history.slice(0, 700), history.slice(700, 1000)
    original = InMemoryWindowStore(FS)
    replay_history(head, FS, original)
    restored = InMemoryWindowStore(FS)
    for key, window in original.customers.items():
        restored.customers[key] = decode_customer(encode_window(window), WIDTH)
        assert restored.customers[key] == window
    for key, terminal in original.terminals.items():
        restored.terminals[key] = decode_terminal(encode_window(terminal))
        assert restored.terminals[key] == terminal
    a = await drive(original, tail, seed=1)
    b = await drive(restored, tail, seed=1)
    for x, y in zip(a, b, strict=True):
        npt.assert_array_equal(x.values, y.values)
        npt.assert_array_equal(x.sequences, y.sequences)


def test_state_bytes_are_compact() -> None:
    window = CustomerWindow(
        times=int64s([T0, T0 + 1]), id_text="1234567é", id_lengths=id_lengths([7, 1]),
        amounts=float64s([1.0, 2.0]), fraud_labels=[("1234567", T0, T0 + 7 * DAY)],
        recent_ids=["1234567"], recent_rows=bytearray(24),
    )  # fmt: skip
    assert window.transaction_ids == ["1234567", "é"]
    # msgpack, no field names: 1 B array headers; times, id lengths, amounts and rows each
    # a binary (2 B header); ids one string (1 B + UTF-8); a label an array
    times, ids, amounts = 2 + 16, (1 + 9) + (2 + 2), 2 + 16
    labels, recent, rows = 1 + (1 + (1 + 7) + 9 + 9), 1 + (1 + 7), 2 + 24
    assert len(encode_window(window)) == 1 + times + ids + amounts + labels + recent + rows
    terminal = _terminal()
    assert len(encode_window(terminal)) == 1 + (2 + 8) + (1 + 2) + (2 + 1) + 1
    assert decode_terminal(encode_window(terminal)) == terminal


def _terminal() -> TerminalWindow:
    return TerminalWindow(times=int64s([T0]), id_text="42", id_lengths=id_lengths([2]))


@pytest.mark.parametrize(
    ("kind", "data", "match"),
    [
        ("terminal", b"", "terminal window state of 0 bytes cannot be read"),
        ("terminal", encode_window(_terminal())[:-1], "cannot be read"),
        ("terminal", encode_window(_terminal())[:-4] + b"\xc4\x00\x90",
         "0 id lengths summing to 0 for 1 times and 2 characters of ids"),
        ("terminal", b"\x94\xc4\x03abc\xa0\xc4\x00\x90",
         "3 bytes of times, not a multiple of 8"),
        ("terminal", b"\x94\x90\xa0\xc4\x00\x90", r"Expected `bytes`, got `array`"),
        ("terminal", encode_window(CustomerWindow()),
         r"Expected `array`, got `bytes` - at `\$\[3\]`"),
        ("customer", encode_window(CustomerWindow()) + b"\x00", "cannot be read"),
        ("customer", encode_window(CustomerWindow(recent_ids=["a"], recent_rows=bytearray(8))),
         f"8 bytes of feature rows where 1 rows of {WIDTH} values take {WIDTH * 8}"),
    ],
)  # fmt: skip
def test_malformed_state_bytes_are_refused(kind: str, data: bytes, match: str) -> None:
    with pytest.raises(InputDataError, match=match):
        decode_customer(data, WIDTH) if kind == "customer" else decode_terminal(data)


def test_replay_without_a_store_equals_replay_through_one_with_redeliveries() -> None:
    history = random_history(13, n=400)
    n = len(history)
    again = np.r_[np.arange(6), 5, np.arange(6, n), n - 1]  # rows 5 and n-1 sent twice
    redelivered = dataclasses.replace(
        history,
        **{name: getattr(history, name)[again] for name in _ARRAY_FIELDS},
    )
    own = replay_history(redelivered, FS)
    through = replay_history(redelivered, FS, InMemoryWindowStore(FS))
    npt.assert_array_equal(own.values, through.values)
    npt.assert_array_equal(own.values[6], own.values[5])  # a re-delivery gets its first row
    npt.assert_array_equal(own.values[-1], own.values[-2])
