"""The window-store contract: checks every :class:`WindowStore` passes, and drivers for them.

The unit tests run :data:`CONTRACT` against the in-memory store, in process and in a window
process; the integration tests against the Redis store, in process and in a window process.
Each check takes a new, empty store (and, for Redis, an empty database).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import numpy.testing as npt

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.batch import compute_features
from stream_app.features.spec import feature_set
from stream_app.features.store import FeatureBatch, WindowStore, WindowStoreConfig
from stream_app.sources.history import TransactionHistory
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff
from stream_app.worker.window_process import WindowProcess
from tests.unit.feature_histories import (
    DAY,
    T0,
    label_events,
    random_history,
    transaction_events,
)

FS = feature_set("default")
S = TypeVar("S", bound=WindowStore[Any])


@asynccontextmanager
async def closing(store: S) -> AsyncIterator[S]:
    """``store``, closed on leaving the block."""
    try:
        yield store
    finally:
        await store.close()


async def window_process(
    config: WindowStoreConfig, metrics: WorkerMetrics | None = None
) -> WindowProcess:
    """A window process on ``config``; its Redis retries go to ``metrics``' counters."""
    return await WindowProcess.start(config, Backoff("redis", metrics or WorkerMetrics()))


async def stored(
    store: WindowStore[Any],
    transactions: Sequence[TransactionEvent],
    labels: Sequence[LabelEvent] = (),
) -> FeatureBatch:
    """Compute a batch and write it at once (as the worker does once its outputs are
    acknowledged); its rows."""
    computed = await store.compute(transactions, labels)
    await store.write_all([computed])
    return computed.features


async def drive(
    store: WindowStore[Any],
    history: TransactionHistory,
    seed: int,
    start: int = 0,
    stop: int = -1,
) -> list[FeatureBatch]:
    """Transactions ``start:stop`` in random batch sizes, each computed and written; each
    label (genuine ones too) in the first batch starting at or after its label time, as the
    stream delivers them (labels due before ``start`` are delivered again with the first
    batch)."""
    stop = len(history) if stop < 0 else stop
    rng = np.random.default_rng(seed)
    labels = label_events(history)
    label_times = np.array([label.label_time_us for label in labels], dtype=np.int64)
    released = np.searchsorted(label_times, history.event_time_us, "right")
    cuts = set((np.flatnonzero(np.diff(released)) + 1).tolist())
    cuts |= set(np.cumsum(rng.integers(1, 60, len(history))).tolist())
    bounds = sorted(c for c in cuts | {start, stop} if start <= c <= stop)
    batches, sent = [], 0
    for lo, hi in itertools.pairwise(bounds):
        due = int(released[lo])
        events = transaction_events(history, range(lo, hi))
        batches.append(await stored(store, events, labels[sent:due]))
        sent = due
    return batches


# -- the contract ----------------------------------------------------------------------------


async def random_batches_give_the_batch_features_row_for_row(store: WindowStore[Any]) -> None:
    """Rows, sequences and masks of random batches equal the batch features'."""
    history = random_history(21, n=900)
    expected = compute_features(history, FS)
    batches = await drive(store, history, seed=21)
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values, rtol=1e-9, atol=1e-9
    )
    index = expected.sequence_index
    want = np.where((index >= 0)[..., None], expected.values[index], 0.0).astype(np.float32)
    sequences = np.concatenate([b.sequences for b in batches])
    npt.assert_allclose(sequences, want, rtol=1e-6)
    assert sequences.dtype == np.float32 and sequences.shape == (len(history), 5, len(FS.columns))
    npt.assert_array_equal(
        np.concatenate([b.mask for b in batches]), (index >= 0).astype(np.float32)
    )
    assert not np.concatenate([b.duplicate for b in batches]).any()
    assert batches[0].columns == FS.columns


async def redelivered_events_are_flagged_and_keep_their_first_rows(
    store: WindowStore[Any],
) -> None:
    events = [TransactionEvent(f"t{i}", "c", f"k{i % 2}", T0 + i * 3_600_000_000, 10.0 + i)
              for i in range(7)]  # fmt: skip
    label = LabelEvent("t1", "c", "k1", events[1].event_time_us, T0 + 5 * 3_600_000_000, True)
    first = await stored(store, events[:5], [label])
    rest = await stored(store, events[5:])
    again = await stored(store, events[3:], [label])
    assert again.duplicate.all()
    npt.assert_array_equal(again.values[:2], first.values[3:5])
    npt.assert_array_equal(again.values[2:], rest.values)
    npt.assert_array_equal(again.sequences[-1], rest.sequences[-1])


async def the_latest_transaction_redelivered_gets_its_first_row_and_sequence(
    store: WindowStore[Any],
) -> None:
    events = [TransactionEvent(f"t{i}", "c", "k", T0 + i * 3_600_000_000, 10.0 + i)
              for i in range(7)]  # fmt: skip
    first = await stored(store, events)
    again = await stored(store, events[-1:])
    assert again.duplicate.tolist() == [True]
    npt.assert_array_equal(again.values[0], first.values[-1])
    npt.assert_array_equal(again.sequences[0], first.sequences[-1])
    npt.assert_array_equal(again.mask[0], first.mask[-1])


async def a_genuine_label_withdraws_a_fraud_label(store: WindowStore[Any]) -> None:
    fraud_column = FS.columns.index("customer_nb_fraud_known_30d")
    await stored(store, [TransactionEvent("a", "c", "k", T0, 5.0)])
    await stored(store, [], [LabelEvent("a", "c", "k", T0, T0 + DAY, True)])
    counted = await stored(store, [TransactionEvent("b", "c", "k", T0 + 2 * DAY, 5.0)])
    await stored(store, [], [LabelEvent("a", "c", "k", T0, T0 + 3 * DAY, False)])
    withdrawn = await stored(store, [TransactionEvent("d", "c", "k", T0 + 4 * DAY, 5.0)])
    assert counted.values[0, fraud_column] == 1.0
    assert withdrawn.values[0, fraud_column] == 0.0


async def a_late_transaction_gets_a_row_without_joining_the_windows(
    store: WindowStore[Any],
) -> None:
    count_1d = FS.columns.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")
    await stored(store, [TransactionEvent("new", "c", "k", T0 + 40 * DAY, 5.0)])
    late = await stored(store, [TransactionEvent("old", "c2", "k", T0, 7.0)])  # k's horizon
    again = await stored(store, [TransactionEvent("old", "c2", "k", T0, 7.0)])
    after = await stored(store, [TransactionEvent("next", "c2", "k2", T0 + DAY // 2, 5.0)])
    assert late.late.tolist() == [True] and not late.duplicate.any()
    assert late.values[0, FS.columns.index("TX_AMOUNT")] == 7.0
    assert late.values[0, count_1d] == 1.0
    assert again.late.tolist() == [True] and not again.duplicate.any(), "not held: not known"
    assert not after.late.any() and after.values[0, count_1d] == 1.0, "old was not added"


async def a_reused_id_with_other_content_is_a_conflict(store: WindowStore[Any]) -> None:
    first = TransactionEvent("t", "c", "k", T0, 5.0)
    await stored(store, [first])
    batch = await stored(
        store,
        [
            first,  # a re-delivery
            TransactionEvent("t", "c", "k", T0, 6.0),  # another amount
            TransactionEvent("t", "c", "k", T0 + DAY, 5.0),  # another time
            TransactionEvent("t", "c2", "k", T0, 5.0),  # another customer, same terminal and time
            TransactionEvent("t", "c", "k2", T0 + 2 * DAY, 5.0),  # another time and terminal
            TransactionEvent("t", "c3", "k", T0 + DAY, 5.0),  # another customer and time: unseen
        ],
    )
    assert batch.duplicate.tolist() == [True, False, False, False, False, False]
    assert batch.conflict.tolist() == [False, True, True, True, True, False]
    assert np.isnan(batch.values[1:5]).all()
    count = await stored(store, [TransactionEvent("u", "c", "k", T0 + 3 * DAY, 5.0)])
    assert count.values[0, FS.columns.index("CUSTOMER_ID_NB_TX_7DAY_WINDOW")] == 2.0


async def the_store_has_the_feature_set_it_was_opened_with(store: WindowStore[Any]) -> None:
    assert store.feature_set == FS


CONTRACT: list[Callable[[WindowStore[Any]], Awaitable[None]]] = [
    random_batches_give_the_batch_features_row_for_row,
    redelivered_events_are_flagged_and_keep_their_first_rows,
    the_latest_transaction_redelivered_gets_its_first_row_and_sequence,
    a_genuine_label_withdraws_a_fraud_label,
    a_late_transaction_gets_a_row_without_joining_the_windows,
    a_reused_id_with_other_content_is_a_conflict,
    the_store_has_the_feature_set_it_was_opened_with,
]
