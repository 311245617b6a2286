"""Small histories for the feature tests: hand-written rows and seeded random ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.testing as npt

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.batch import FeatureTable, compute_features
from stream_app.features.spec import FeatureSet
from stream_app.features.store import replay_history
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.time import MICROS_PER_DAY

DAY = MICROS_PER_DAY
HOUR = 3_600 * 1_000_000
T0 = 1_522_540_800 * 1_000_000  # 2018-04-01 00:00:00 UTC, a Sunday

Row = tuple[str, str, int, float, int, int]
"""(customer, terminal, event_time_us, amount, is_fraud, label_time_us)."""


def history_of(rows: Sequence[Row]) -> TransactionHistory:
    """A history with ids t0, t1, ... in the given (time-sorted) order."""
    n = len(rows)
    return TransactionHistory(
        transaction_id=np.array([f"t{i}" for i in range(n)], dtype=object),
        customer_id=np.array([r[0] for r in rows], dtype=object),
        terminal_id=np.array([r[1] for r in rows], dtype=object),
        event_time_us=np.array([r[2] for r in rows], dtype=np.int64),
        amount=np.array([r[3] for r in rows], dtype=np.float64),
        currency="EUR",
        is_fraud=np.array([r[4] for r in rows], dtype=np.int8),
        label_time_us=np.array([r[5] for r in rows], dtype=np.int64),
        fraud_scenario=np.full(n, -1, dtype=np.int8),
    )


def random_history(seed: int, n: int = 1500, days: int = 75) -> TransactionHistory:
    """Random customers, terminals and amounts with time ties, exact N-day gaps and frauds
    whose labels come early, on time, late or never."""
    rng = np.random.default_rng(seed)
    times = T0 + rng.integers(0, days * 24, n) * HOUR  # whole hours: many ties
    exact = rng.random(n) < 0.2  # some events exactly whole days after another one
    gaps = rng.choice([1, 7, 8, 30], exact.sum()) * DAY
    times[exact] = times[rng.integers(0, n, exact.sum())] + gaps
    times = np.sort(times)
    is_fraud = (rng.random(n) < 0.15).astype(np.int8)
    delay = rng.choice([0, 3 * DAY, 7 * DAY, 7 * DAY, 10 * DAY, 40 * DAY], n)
    label_time = np.where(rng.random(n) < 0.1, NO_LABEL_US, times + delay)
    amounts = np.round(rng.gamma(2.0, 40.0, n), 2)
    amounts[rng.random(n) < 0.05] = 0.0
    return TransactionHistory(
        transaction_id=np.array([f"tx-{i}" for i in range(n)], dtype=object),
        customer_id=np.array([f"c{c}" for c in rng.integers(0, 12, n)], dtype=object),
        terminal_id=np.array([f"k{k}" for k in rng.integers(0, 8, n)], dtype=object),
        event_time_us=times.astype(np.int64),
        amount=amounts,
        currency="EUR",
        is_fraud=is_fraud,
        label_time_us=label_time.astype(np.int64),
        fraud_scenario=np.full(n, -1, dtype=np.int8),
    )


def both_executions(history: TransactionHistory, fs: FeatureSet) -> FeatureTable:
    """Batch features, after checking the incremental replay gives the same rows."""
    batch = compute_features(history, fs)
    replay = replay_history(history, fs)
    assert replay.columns == batch.columns == fs.columns
    npt.assert_array_equal(replay.transaction_id, batch.transaction_id)
    npt.assert_allclose(replay.values, batch.values, rtol=1e-9, atol=1e-9)
    npt.assert_array_equal(replay.sequence_index, batch.sequence_index)
    return batch


def column(table: FeatureTable, name: str) -> list[float]:
    """One column of a feature table as a list."""
    values: list[float] = table.values[:, table.columns.index(name)].tolist()
    return values


def transaction_events(history: TransactionHistory, rows: range) -> list[TransactionEvent]:
    """The store events of ``history``'s rows ``rows``."""
    return [
        TransactionEvent(
            str(history.transaction_id[i]), str(history.customer_id[i]),
            str(history.terminal_id[i]), int(history.event_time_us[i]), float(history.amount[i]),
        )
        for i in rows
    ]  # fmt: skip


def label_events(history: TransactionHistory) -> list[LabelEvent]:
    """Every label of the history, in label time order."""
    rows = np.flatnonzero(history.label_time_us != NO_LABEL_US)
    rows = rows[np.argsort(history.label_time_us[rows], kind="stable")]
    return [
        LabelEvent(
            str(history.transaction_id[i]), str(history.customer_id[i]),
            str(history.terminal_id[i]), int(history.event_time_us[i]),
            int(history.label_time_us[i]), bool(history.is_fraud[i]),
        )
        for i in rows
    ]  # fmt: skip


def clock_history(
    event_times_s: Sequence[float],
    label_delay_s: float | None = None,
    amounts: Sequence[float] | None = None,
) -> TransactionHistory:
    """Transactions tx0, tx1, ... at ``event_times_s`` seconds after 2018-06-26 08:00 UTC
    (customers c0..c2, terminals k0..k1, every fourth a fraud), each labelled
    ``label_delay_s`` later (never when None)."""
    n = len(event_times_s)
    times = np.array([round(t * 1_000_000) for t in event_times_s], dtype=np.int64)
    times += 1_530_000_000 * 1_000_000
    labels = (
        np.full(n, NO_LABEL_US, dtype=np.int64)
        if label_delay_s is None
        else times + round(label_delay_s * 1_000_000)
    )
    return TransactionHistory(
        transaction_id=np.array([f"tx{i}" for i in range(n)], dtype=object),
        customer_id=np.array([f"c{i % 3}" for i in range(n)], dtype=object),
        terminal_id=np.array([f"k{i % 2}" for i in range(n)], dtype=object),
        event_time_us=times,
        amount=np.array(amounts, dtype=np.float64)
        if amounts is not None
        else np.round(np.linspace(1.0, 99.0, n), 2),
        currency="EUR",
        is_fraud=np.array([i % 4 == 0 for i in range(n)], dtype=np.int8),
        label_time_us=labels,
        fraud_scenario=np.zeros(n, dtype=np.int8),
    )
