"""Backtests: score a recorded history the way the stream would, or with batch features.

:func:`backtest` replays a history in process through the *incremental* feature code (an
:class:`~stream_app.features.store.InMemoryWindowStore` fed in event-time order, fraud
labels released at their ``label_time``) and scores the rows with the bundle's
:class:`~stream_app.scoring.scorer.Scorer`, in batches. The events of the window horizon
before ``start_us`` (:func:`~stream_app.features.horizon.warmup_us`, 37 days with a 7-day
label delay) only warm the windows, older ones are not read: what ``fraudstream replay
--from`` publishes as warm-up. Events at or after ``stop_us`` are not read.

:func:`score_history_batch` computes the same rows with the vectorised batch features
(``compute_features``, sequences gathered through ``sequence_index``) and the same
scorer; both must agree (``tests/unit/test_backtest.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from tqdm import tqdm

from stream_app.contracts.events import LabelEvent
from stream_app.features.batch import compute_features
from stream_app.features.horizon import warmup_us
from stream_app.features.spec import FeatureSet, feature_set
from stream_app.features.store import FeatureBatch, InMemoryWindowStore, transaction_events
from stream_app.scoring.policy import DEFAULT_POLICY, AlertPolicy, history_thresholds
from stream_app.scoring.scorer import Explanation, FloatArray, ScoreBatch, Scorer
from stream_app.sources.history import NO_LABEL_US, TransactionHistory

DEFAULT_BATCH: Final = 4096
Rows = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class ScoredHistory:
    """Scores of the history rows ``rows`` (ascending), with their ids and event times."""

    rows: Rows
    transaction_id: npt.NDArray[np.object_]
    event_time_us: npt.NDArray[np.int64]
    is_fraud: npt.NDArray[np.int8]
    scores: ScoreBatch
    """Their scores; ``scores.is_alert`` is the alert policy's decision, and the alerts
    are the explained rows."""
    thresholds: npt.NDArray[np.float64]
    """The threshold the alert policy held each score to."""
    policy: str
    warmed: int
    """Rows applied to the windows before the first scored one (the warm-up of ``--from``)."""
    seconds: float

    def __len__(self) -> int:
        return len(self.rows)

    def to_arrow(self) -> pa.Table:
        """transaction_id, event_time (UTC, µs), score, threshold, policy, is_alert,
        autoencoder_error, sequence_probability, reasons (list of {feature, contribution,
        value}: the alerts' explanations, empty for other rows), reasons_baseline (the score
        the contributions are measured from)."""
        s = self.scores
        explained = s.explained
        reasons = s.reasons_for(explained.rows)
        counts = np.zeros(len(s), dtype=np.int32)
        counts[explained.rows] = [len(r) for r in reasons]
        flat = [reason for row in reasons for reason in row]
        column = pa.ListArray.from_arrays(
            pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32)),
            pa.StructArray.from_arrays(
                [
                    pa.array([r[0] for r in flat], type=pa.string()),
                    pa.array([r[1] for r in flat], type=pa.float32()),
                    pa.array([r[2] for r in flat], type=pa.float32()),
                ],
                names=["feature", "contribution", "value"],
            ),
        )
        return pa.table(
            {
                "transaction_id": pa.array(self.transaction_id, type=pa.string()),
                "event_time": pa.array(self.event_time_us, type=pa.timestamp("us", tz="UTC")),
                "score": pa.array(s.score),
                "threshold": pa.array(self.thresholds),
                "policy": pa.array([self.policy] * len(s), type=pa.string()),
                "is_alert": pa.array(s.is_alert),
                "autoencoder_error": pa.array(s.autoencoder_error),
                "sequence_probability": pa.array(s.sequence_probability),
                "reasons": column,
                "reasons_baseline": pa.array(np.full(len(s), s.baseline_score)),
            }
        )

    def summary(self, model_version: str) -> str:
        """One line: how much was scored, alerts, labelled frauds alerted, speed."""
        alerts = int(self.scores.is_alert.sum())
        frauds = self.is_fraud == 1
        caught = int(np.count_nonzero(frauds & self.scores.is_alert))
        rate = alerts / len(self) if len(self) else 0.0
        speed = (len(self) + self.warmed) / self.seconds if self.seconds > 0 else 0.0
        span = (
            f"{_iso(int(self.event_time_us[0]))}..{_iso(int(self.event_time_us[-1]))}"
            if len(self) else "nothing in range"
        )
        return (
            f"backtest {model_version}: scored {len(self):,} transactions ({span}) after "
            f"{self.warmed:,} warm-up; {alerts:,} alerts ({rate:.2%}); "
            f"{caught:,} of {int(np.count_nonzero(frauds)):,} labelled frauds alerted; "
            f"{speed:,.0f} events/s"
        )


def bundle_feature_set(scorer: Scorer) -> FeatureSet:
    """The feature set the scorer's bundle was trained on."""
    manifest = scorer.bundle.manifest
    return feature_set(manifest.feature_set, manifest.label_delay_days)


def backtest(
    history: TransactionHistory,
    scorer: Scorer,
    *,
    start_us: int | None = None,
    stop_us: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
    policy: AlertPolicy = DEFAULT_POLICY,
) -> ScoredHistory:
    """Replay ``history`` through the incremental features and score ``[start_us, stop_us)``;
    ``policy`` decides the alerts, as in the stream.

    Re-delivered transaction ids (``FeatureBatch.duplicate``) and ids seen with other
    content (``conflict``) change no window and are not scored; late transactions are
    scored against the windows as they are, as the stream does. ``progress`` shows a bar on
    stderr when it is a terminal.
    """
    started = time.perf_counter()
    times = history.event_time_us
    end = len(history) if stop_us is None else int(np.searchsorted(times, stop_us, "left"))
    first = 0 if start_us is None else int(np.searchsorted(times[:end], start_us, "left"))
    begin = 0
    if start_us is not None:
        horizon_us = warmup_us(scorer.bundle.manifest.label_delay_days)
        begin = int(np.searchsorted(times[:first], start_us - horizon_us, "left"))
    store = InMemoryWindowStore(bundle_feature_set(scorer))
    rows: list[Rows] = []
    parts: list[FeatureBatch] = []
    pending = 0
    scored: list[tuple[ScoreBatch, FloatArray]] = []
    with tqdm(total=end - begin, unit="tx", desc="backtest", file=sys.stderr,
              disable=None if progress else True) as bar:
        for start, stop, labels in _segments(history, begin, end, batch_size):
            batch = store.apply(transaction_events(history.slice(start, stop)), labels)
            bar.update(stop - start)
            offset = max(first - start, 0)
            keep = batch.to_score[batch.to_score >= offset]
            if len(keep) == 0:
                continue
            rows.append(keep + start)
            parts.append(_take(batch, keep))
            pending += len(keep)
            if pending >= batch_size:
                scored.append(_score(scorer, parts))
                parts, pending = [], 0
    if parts:
        scored.append(_score(scorer, parts))
    scored_rows = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    return _scored_history(
        history, scored_rows, scorer, scored, policy, first - begin,
        time.perf_counter() - started,
    )


def score_history_batch(
    history: TransactionHistory,
    scorer: Scorer,
    batch_size: int = DEFAULT_BATCH,
    policy: AlertPolicy = DEFAULT_POLICY,
) -> ScoredHistory:
    """Score every row of ``history`` with the batch feature code and the same scorer."""
    started = time.perf_counter()
    table = compute_features(history, bundle_feature_set(scorer))
    n, width = table.values.shape
    pool = np.vstack([table.values, np.zeros((1, width))]).astype(np.float32)
    padded = np.where(table.sequence_index >= 0, table.sequence_index, n)
    mask = (table.sequence_index >= 0).astype(np.float32)
    scored = [
        (
            scorer.score_batch(table.values[i : i + batch_size], pool[padded[i : i + batch_size]],
                               mask[i : i + batch_size]),
            table.values[i : i + batch_size].astype(np.float32),
        )
        for i in range(0, n, batch_size)
    ]
    return _scored_history(
        history, np.arange(n, dtype=np.int64), scorer, scored, policy, 0,
        time.perf_counter() - started,
    )


def _segments(
    history: TransactionHistory, begin: int, end: int, batch_size: int
) -> Iterator[tuple[int, int, list[LabelEvent]]]:
    """Row ranges of ``[begin, end)``, at most ``batch_size`` each, within which no fraud
    label becomes known, each with the labels (of rows from ``begin`` on) to apply first
    (``label_time <= `` its first event time)."""
    label_times = history.label_time_us
    frauds = begin + np.flatnonzero(
        (history.is_fraud[begin:] == 1) & (label_times[begin:] != NO_LABEL_US)
    )
    frauds = frauds[np.argsort(label_times[frauds], kind="stable")]
    released = np.searchsorted(label_times[frauds], history.event_time_us[begin:end], "right")
    cuts = np.flatnonzero(np.diff(released)) + 1
    bounds = begin + np.unique(np.r_[0, cuts, np.arange(0, end - begin, batch_size), end - begin])
    applied = 0
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        due = int(released[start - begin])
        yield start, stop, [_label(history, int(row)) for row in frauds[applied:due]]
        applied = due


def _label(history: TransactionHistory, row: int) -> LabelEvent:
    return LabelEvent(
        str(history.transaction_id[row]), str(history.customer_id[row]),
        str(history.terminal_id[row]), int(history.event_time_us[row]),
        int(history.label_time_us[row]), bool(history.is_fraud[row]),
    )


def _take(batch: FeatureBatch, keep: npt.NDArray[np.intp]) -> FeatureBatch:
    if len(keep) == len(batch.values):
        return batch
    return FeatureBatch(
        transaction_id=tuple(batch.transaction_id[i] for i in keep.tolist()),
        columns=batch.columns,
        values=batch.values[keep],
        sequences=batch.sequences[keep],
        mask=batch.mask[keep],
        duplicate=batch.duplicate[keep],
        conflict=batch.conflict[keep],
        late=batch.late[keep],
    )


def _score(scorer: Scorer, parts: list[FeatureBatch]) -> tuple[ScoreBatch, FloatArray]:
    """The scores of ``parts`` and their feature rows (to explain other alerts later)."""
    values = np.concatenate([p.values for p in parts])
    scores = scorer.score_batch(
        values,
        np.concatenate([p.sequences for p in parts]),
        np.concatenate([p.mask for p in parts]),
    )
    return scores, values.astype(np.float32)


def _concat(batches: list[ScoreBatch], scorer: Scorer) -> ScoreBatch:
    if not batches:
        empty = np.empty((0, len(scorer.columns)))
        return scorer.score_batch(empty, np.empty((0, scorer.bundle.sequence_length,
                                                   len(scorer.columns))),
                                  np.empty((0, scorer.bundle.sequence_length)))
    if len(batches) == 1:
        return batches[0]
    joined: dict[str, Any] = {
        name: np.concatenate([getattr(b, name) for b in batches])
        for name in ("score", "is_alert", "autoencoder_error", "sequence_probability")
    }
    starts = np.cumsum([0, *(len(b) for b in batches[:-1])]).tolist()
    parts = [b.explained.shifted(start) for b, start in zip(batches, starts, strict=True)]
    explained = Explanation(
        *(np.concatenate([getattr(p, name) for p in parts])
          for name in ("rows", "inputs", "contributions", "values"))
    )
    first = batches[0]
    return ScoreBatch(**joined, explained=explained, inputs=first.inputs,
                      baseline_score=first.baseline_score)


def _scored_history(
    history: TransactionHistory,
    rows: Rows,
    scorer: Scorer,
    scored: list[tuple[ScoreBatch, FloatArray]],
    policy: AlertPolicy,
    warmed: int,
    seconds: float,
) -> ScoredHistory:
    """The scores under ``policy``: its thresholds over the whole history (a daily budget's
    from the previous day's scores), its alerts explained."""
    scores = _concat([s for s, _ in scored], scorer)
    times = history.event_time_us[rows]
    thresholds = history_thresholds(policy, scorer.threshold, scores.score, times)
    alerts = scores.score.astype(np.float64) >= thresholds
    if not np.array_equal(alerts, scores.is_alert):
        features = np.concatenate([f for _, f in scored]) if scored else np.empty((0, 0))
        scores = scorer.with_alerts(scores, features, alerts)
    return ScoredHistory(
        rows=rows,
        transaction_id=history.transaction_id[rows],
        event_time_us=times,
        is_fraud=history.is_fraud[rows],
        scores=scores,
        thresholds=thresholds,
        policy=policy.name,
        warmed=warmed,
        seconds=seconds,
    )


def _iso(event_time_us: int) -> str:
    return np.datetime_as_string(np.datetime64(event_time_us, "us"), unit="s") + "Z"
