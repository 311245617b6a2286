"""Backtest: the incremental replay scores exactly what the batch feature path scores."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_app.cli import main
from stream_app.features.horizon import warmup_us
from stream_app.scoring import Scorer, load_bundle
from stream_app.scoring.backtest import ScoredHistory, backtest, score_history_batch
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY
from tests.unit.model_bundles import tiny_bundle

pytestmark = pytest.mark.train

START = dt.date(2018, 4, 1)
START_US = (START - dt.date(1970, 1, 1)).days * MICROS_PER_DAY
ALERTING = 0.4
"""A threshold at which the tiny bundle alerts on ~10 % of the history (explained rows)."""


@cache
def _history() -> TransactionHistory:
    return simulate(n_customers=80, n_terminals=60, n_days=30, start_date=START, seed=3)


@cache
def _scorer() -> Scorer:
    return Scorer(load_bundle(tiny_bundle(ALERTING).path))


@cache
def _batch_path() -> ScoredHistory:
    return score_history_batch(_history(), _scorer())


def _assert_same_scores(replayed: ScoredHistory, batch: ScoredHistory) -> None:
    rows = replayed.rows
    np.testing.assert_array_equal(replayed.transaction_id, batch.transaction_id[rows])
    np.testing.assert_array_equal(replayed.event_time_us, batch.event_time_us[rows])
    a, b = replayed.scores, batch.scores
    for name in ("score", "sequence_probability"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name)[rows], rtol=0, atol=1e-6,
                                   err_msg=name)
    # an unbounded error of ~10 carries float32 rounding of ~1e-6 (a few ulps): relative
    np.testing.assert_allclose(a.autoencoder_error, b.autoencoder_error[rows], rtol=1e-6,
                               atol=1e-6)
    clear = np.abs(b.score[rows].astype(np.float64) - _scorer().threshold) > 1e-6
    np.testing.assert_array_equal(a.is_alert[clear], b.is_alert[rows][clear])
    np.testing.assert_array_equal(a.explained.rows, np.flatnonzero(a.is_alert))
    both = np.flatnonzero(a.is_alert & b.is_alert[rows])
    assert len(both) > 0
    for mine, theirs in zip(a.reasons_for(both), b.reasons_for(rows[both]), strict=True):
        np.testing.assert_allclose([r[1] for r in mine], [r[1] for r in theirs], atol=1e-5)
        if len(theirs) > 1 and theirs[0][1] - theirs[1][1] > 1e-5:
            assert mine[0][0] == theirs[0][0]


def test_history_has_fraud_labels_released_mid_history() -> None:
    history = _history()
    assert len(history) > 2000
    frauds = history.is_fraud == 1
    assert frauds.sum() >= 5
    assert np.any(history.label_time_us[frauds] < history.event_time_us[-1])


def test_backtest_scores_equal_batch_path_scores() -> None:
    replayed = backtest(_history(), _scorer(), batch_size=512)
    assert len(replayed) == len(_history())
    assert replayed.warmed == 0
    np.testing.assert_array_equal(replayed.rows, np.arange(len(_history())))
    _assert_same_scores(replayed, _batch_path())


def test_batch_size_does_not_change_scores() -> None:
    small = backtest(_history(), _scorer(), batch_size=37)
    large = backtest(_history(), _scorer(), batch_size=4096)
    np.testing.assert_allclose(small.scores.score, large.scores.score, rtol=0, atol=1e-6)


def test_events_before_from_only_warm_the_windows() -> None:
    start_us = START_US + 20 * MICROS_PER_DAY
    replayed = backtest(_history(), _scorer(), start_us=start_us, batch_size=300)
    before = int(np.count_nonzero(_history().event_time_us < start_us))
    assert replayed.warmed == before > 0
    np.testing.assert_array_equal(replayed.rows, np.arange(before, len(_history())))
    assert replayed.event_time_us.min() >= start_us
    _assert_same_scores(replayed, _batch_path())


def test_from_reads_only_the_warmup_horizon_before_it() -> None:
    """--from D warms the windows on [D - 37 days, D) (1/7/30-day windows, 7-day label
    delay), as a replay from D publishes them; older events are not read."""
    history = simulate(n_customers=40, n_terminals=30, n_days=50, start_date=START, seed=4)
    start_us = START_US + 45 * MICROS_PER_DAY
    warm_from = start_us - warmup_us(_scorer().bundle.manifest.label_delay_days)
    assert warm_from == start_us - 37 * MICROS_PER_DAY
    lo = int(np.searchsorted(history.event_time_us, warm_from))
    replayed = backtest(history, _scorer(), start_us=start_us, batch_size=256)
    from_horizon = backtest(history.slice(lo, len(history)), _scorer(), start_us=start_us)
    times = history.event_time_us
    assert lo > 0 and replayed.warmed == np.count_nonzero((times >= warm_from)
                                                          & (times < start_us))
    np.testing.assert_array_equal(replayed.rows, np.flatnonzero(times >= start_us))
    np.testing.assert_array_equal(replayed.transaction_id, from_horizon.transaction_id)
    np.testing.assert_allclose(replayed.scores.score, from_horizon.scores.score, rtol=0,
                               atol=1e-6)


def test_events_from_to_on_are_not_read() -> None:
    start_us, stop_us = START_US + 10 * MICROS_PER_DAY, START_US + 15 * MICROS_PER_DAY
    replayed = backtest(_history(), _scorer(), start_us=start_us, stop_us=stop_us)
    times = _history().event_time_us
    expected = np.flatnonzero((times >= start_us) & (times < stop_us))
    np.testing.assert_array_equal(replayed.rows, expected)
    _assert_same_scores(replayed, _batch_path())


def test_nothing_in_range_scores_nothing() -> None:
    replayed = backtest(_history(), _scorer(), start_us=START_US + 400 * MICROS_PER_DAY)
    assert len(replayed) == 0
    assert "scored 0 transactions (nothing in range)" in replayed.summary("v")
    assert replayed.to_arrow().num_rows == 0


def test_cli_backtest_writes_scores_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "history.jsonl"
    write_jsonl(_history(), data)
    out = tmp_path / "scores.parquet"
    code = main([
        "backtest", "--data", str(data), "--models", str(tiny_bundle(ALERTING).path),
        "--out", str(out), "--from", "2018-04-21", "--to", "2018-04-26", "--no-progress",
    ])
    assert code == 0
    table = pq.read_table(out)
    times = _history().event_time_us
    lo, hi = START_US + 20 * MICROS_PER_DAY, START_US + 25 * MICROS_PER_DAY
    expected = np.flatnonzero((times >= lo) & (times < hi))
    assert table.num_rows == len(expected)
    assert table.column_names == [
        "transaction_id", "event_time", "score", "threshold", "policy", "is_alert",
        "autoencoder_error", "sequence_probability", "reasons", "reasons_baseline",
    ]
    bundle_threshold = load_bundle(tiny_bundle(ALERTING).path).threshold
    assert set(table.column("threshold").to_pylist()) == {bundle_threshold}
    assert set(table.column("policy").to_pylist()) == {"bundle"}
    np.testing.assert_array_equal(
        table.column("is_alert").to_numpy(),
        table.column("score").to_numpy().astype(np.float64) >= bundle_threshold,
    )
    assert str(table.schema.field("event_time").type) == "timestamp[us, tz=UTC]"
    reasons_type = table.schema.field("reasons").type
    assert pa.types.is_list(reasons_type)
    assert reasons_type.value_type == pa.struct(
        [("feature", pa.string()), ("contribution", pa.float32()), ("value", pa.float32())]
    )
    np.testing.assert_allclose(
        table.column("score").to_numpy(), _batch_path().scores.score[expected], atol=1e-6
    )
    assert table.column("transaction_id").to_pylist() == list(_history().transaction_id[expected])
    reasons, alerts = table.column("reasons").to_pylist(), table.column("is_alert").to_pylist()
    assert 0 < sum(alerts) < len(alerts)
    for row, alert in zip(reasons, alerts, strict=True):
        assert 0 < len(row) <= 3 if alert else row == []  # only the alerts are explained
        contributions = [r["contribution"] for r in row]
        assert all(c > 0 for c in contributions) and contributions == sorted(contributions)[::-1]
        assert all(r["feature"] in _scorer().inputs for r in row)
    assert set(table.column("reasons_baseline").to_pylist()) == {_scorer().baseline_score}
    metadata = table.schema.metadata
    bundle = load_bundle(tiny_bundle(ALERTING).path)
    assert metadata[b"model_version"].decode() == bundle.model_version
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"backtest {metadata[b'model_version'].decode()}: scored "
                           f"{len(expected):,} transactions (2018-04-21")
    assert line.endswith(f"-> {out}")


def test_cli_refuses_from_not_before_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([
        "backtest", "--data", str(tmp_path / "h.jsonl"), "--models", str(tiny_bundle().path),
        "--out", str(tmp_path / "s.parquet"), "--from", "2018-05-01", "--to", "2018-04-01",
    ])
    assert code == 2
    assert "--from 2018-05-01 is not before --to 2018-04-01" in capsys.readouterr().err
