"""Terminal windows shared by workers: transactions and labels inserted ahead of their rows
(another worker's, or later ones) leave every row equal to the batch computation."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from stream_app.contracts.events import LabelEvent
from stream_app.features.batch import compute_features
from stream_app.features.incremental import CustomerWindow, IncrementalFeatures, TerminalWindow
from stream_app.features.spec import feature_set
from stream_app.features.store import apply_batch, insert_terminals
from tests.unit.feature_histories import label_events, random_history, transaction_events

CHUNK = 40


@pytest.mark.parametrize("name", ["handbook", "default"])
@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize("lead", [1, 3])
def test_rows_on_terminals_holding_later_events_equal_the_batch_rows(
    name: str, seed: int, lead: int
) -> None:
    """Chunks of the history are inserted into the terminal windows ``lead`` chunks ahead
    of their rows, pruned only behind the chunk whose rows are computed."""
    history = random_history(seed)
    fs = feature_set(name)
    expected = compute_features(history, fs)
    features = IncrementalFeatures(fs)
    horizon_us = fs.terminal_horizon_days * 86_400_000_000
    fraud_labels = [label for label in label_events(history) if label.is_fraud]
    customers: dict[str, CustomerWindow] = {}
    terminals: dict[str, TerminalWindow] = {}
    chunks = [range(i, min(i + CHUNK, len(history))) for i in range(0, len(history), CHUNK)]
    ends = [int(history.event_time_us[rows[-1]]) for rows in chunks]
    rows: list[np.ndarray] = []

    def labels_until(t: float, after: float) -> list[LabelEvent]:
        return [label for label in fraud_labels if after < label.label_time_us <= t]

    def insert(k: int) -> None:
        before = ends[k - 1] if k else float("-inf")
        cutoff = (int(history.event_time_us[chunks[k - lead][0]]) if k >= lead else 0) - horizon_us
        insert_terminals(
            features, terminals, transaction_events(history, chunks[k]),
            labels_until(ends[k], before), cutoff,
        )  # fmt: skip

    for k in range(min(lead, len(chunks))):
        insert(k)
    applied = float("-inf")
    for k, chunk in enumerate(chunks):
        if k + lead < len(chunks):
            insert(k + lead)
        for i in chunk:  # labels due before each transaction, as the label barrier does
            t = int(history.event_time_us[i])
            batch = apply_batch(
                features, customers, terminals, transaction_events(history, range(i, i + 1)),
                labels_until(t, applied), terminals_inserted=True,
            )  # fmt: skip
            applied = max(applied, t)
            rows.append(batch.values[0])
    npt.assert_allclose(np.array(rows), expected.values, rtol=1e-9, atol=1e-9)


def test_inserting_again_changes_nothing() -> None:
    history = random_history(5, n=300)
    fs = feature_set("handbook")
    features = IncrementalFeatures(fs)
    terminals: dict[str, TerminalWindow] = {}
    events = transaction_events(history, range(len(history)))
    first = insert_terminals(features, terminals, events, [], float("-inf"))
    before = {t: (bytes(w.times), w.id_text) for t, w in terminals.items()}
    assert first and not insert_terminals(features, terminals, events, [], float("-inf"))
    assert {t: (bytes(w.times), w.id_text) for t, w in terminals.items()} == before
