"""The in-memory window store: batches, sequences, re-deliveries and state bytes."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.testing as npt
import pytest

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import InputDataError
from stream_app.features.batch import compute_features
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
from stream_app.features.store import FeatureBatch, InMemoryWindowStore, WindowStore, replay_history
from stream_app.sources.history import TransactionHistory
from tests.unit.feature_histories import (
    DAY,
    T0,
    label_events,
    random_history,
    transaction_events,
)

FS = feature_set("default")
WIDTH = len(FS.columns)
_ARRAY_FIELDS = (
    "transaction_id", "customer_id", "terminal_id", "event_time_us", "amount", "is_fraud",
    "label_time_us", "fraud_scenario",
)  # fmt: skip


def _drive(store: WindowStore, history: TransactionHistory, seed: int) -> list[FeatureBatch]:
    """Random batch sizes; every label (genuine ones too) sent in the first batch that
    starts at or after its label time, as a stream would deliver them."""
    rng = np.random.default_rng(seed)
    labels = label_events(history)
    label_times = np.array([label.label_time_us for label in labels], dtype=np.int64)
    released = np.searchsorted(label_times, history.event_time_us, "right")
    cuts = set((np.flatnonzero(np.diff(released)) + 1).tolist())
    cuts |= set(np.cumsum(rng.integers(1, 40, len(history))).tolist())
    bounds = sorted(c for c in cuts | {0, len(history)} if c <= len(history))
    batches, sent = [], 0
    for start, stop in itertools.pairwise(bounds):
        due = int(released[start])
        events = transaction_events(history, range(start, stop))
        batches.append(store.process(events, labels[sent:due]))
        sent = due
    return batches


def _state(store: InMemoryWindowStore) -> dict[str, bytes]:
    return {
        **{f"c:{k}": encode_window(w) for k, w in store.customers.items()},
        **{f"k:{k}": encode_window(w) for k, w in store.terminals.items()},
    }


def test_random_batches_give_the_batch_rows_and_sequences() -> None:
    history = random_history(11)
    expected = compute_features(history, FS)
    batches = _drive(InMemoryWindowStore(FS), history, seed=11)
    values = np.concatenate([b.values for b in batches])
    npt.assert_allclose(values, expected.values, rtol=1e-9, atol=1e-9)
    sequences = np.concatenate([b.sequences for b in batches])
    mask = np.concatenate([b.mask for b in batches])
    index = expected.sequence_index
    npt.assert_array_equal(mask, (index >= 0).astype(np.float32))
    want = np.where((index >= 0)[..., None], expected.values[index], 0.0).astype(np.float32)
    npt.assert_allclose(sequences, want, rtol=1e-6)
    assert sequences.dtype == np.float32 and sequences.shape == (len(history), 5, len(FS.columns))
    assert not np.concatenate([b.duplicate for b in batches]).any()
    assert batches[0].columns == FS.columns


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
    again = store.process(transaction_events(history, tail), delivered)
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


def test_the_latest_transaction_redelivered_gets_its_first_row_and_sequence() -> None:
    store = InMemoryWindowStore(FS)
    events = [TransactionEvent(f"t{i}", "c", "k", T0 + i * 3_600_000_000, 10.0 + i)
              for i in range(7)]  # fmt: skip
    first = store.process(events, [])
    again = store.process(events[-1:], [])
    assert again.duplicate.tolist() == [True]
    npt.assert_array_equal(again.values[0], first.values[-1])
    npt.assert_array_equal(again.sequences[0], first.sequences[-1])
    npt.assert_array_equal(again.mask[0], first.mask[-1])


def test_windows_forget_what_no_window_can_reach() -> None:
    store = InMemoryWindowStore(FS)
    store.process([TransactionEvent("a", "c", "k", T0, 1.0),
                   TransactionEvent("b", "c", "k", T0 + 20 * DAY, 2.0)], [])  # fmt: skip
    store.process([], [LabelEvent("a", "c", "k", T0, T0 + 7 * DAY, True)])
    assert store.customers["c"].fraud_labels == [("a", T0, T0 + 7 * DAY)]
    store.process([TransactionEvent("x", "c", "k", T0 + 30 * DAY, 3.0)], [])
    assert store.customers["c"].transaction_ids == ["b", "x"]  # T0 is exactly 30 days back
    assert store.customers["c"].fraud_labels == []
    assert store.terminals["k"].transaction_ids == ["a", "b", "x"]  # kept for D + 30 days
    store.process([TransactionEvent("y", "d", "k", T0 + 37 * DAY, 3.0)], [])
    assert store.terminals["k"].transaction_ids == ["b", "x", "y"]
    assert store.customers["c"].recent_ids == ["a", "b", "x"]  # sequences outlive windows


def test_ids_longer_than_a_window_keeps_are_refused_before_any_change() -> None:
    store = InMemoryWindowStore(FS)
    with pytest.raises(InputDataError, match="has 256 characters; windows keep ids of at most 255"):
        store.process([TransactionEvent("x" * 256, "c", "k", T0, 1.0)], [])
    assert store.customers["c"] == CustomerWindow() and store.terminals["k"] == TerminalWindow()


def test_a_genuine_label_withdraws_a_fraud_label() -> None:
    store = InMemoryWindowStore(FS)
    store.process([], [LabelEvent("a", "c", "k", T0, T0 + DAY, True)])
    store.process([], [LabelEvent("a", "c", "k", T0, T0 + 2 * DAY, False)])
    assert store.customers["c"].fraud_labels == store.terminals["k"].fraud_labels == []


def test_state_bytes_round_trip_and_processing_continues_identically() -> None:
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
    a = _drive(original, tail, seed=1)
    b = _drive(restored, tail, seed=1)
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
