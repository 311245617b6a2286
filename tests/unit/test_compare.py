"""``fraudstream compare``: overlaps, catches and time to detection on a hand-built history;
the scoring and the CLI on a simulated history with small bundles."""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from stream_app.cli import main
from stream_app.compare.figures import Comparison, compare, detection_hours, summarise_detection
from stream_app.compare.report import PLOTS, markdown
from stream_app.compare.scored import ModelRun, score_models
from stream_app.scoring import Scorer, load_bundle
from stream_app.scoring.backtest import backtest
from stream_app.scoring.policy import AlertPolicy, kth_highest, load_policy
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY, MICROS_PER_HOUR

BASE_US = (dt.date(2018, 8, 1) - dt.date(1970, 1, 1)).days * MICROS_PER_DAY

# (hour from 2018-08-01 00:00, customer, terminal, is_fraud, scenario, serving alert,
#  challenger alert). The first two rows come before the window (day 1 = 2018-08-02).
HAND_BUILT = (
    (1.0, "C9", "T9", 1, 3, False, False),   # C9 compromised before the window
    (2.0, "C1", "T2", 0, 0, False, False),
    (25.0, "C1", "T1", 1, 2, False, True),   # tx2: first fraud of C1 and of terminal T1
    (25.5, "C2", "T1", 1, 2, False, False),  # tx3: first fraud of C2, alerted by neither
    (26.0, "C1", "T1", 1, 2, True, False),   # tx4: serving catches C1 and T1 after 1 h
    (30.0, "C9", "T3", 1, 3, True, True),    # tx5: both; C9 was compromised earlier
    (31.0, "C3", "T4", 0, 0, True, False),   # tx6: a false alert of the serving model
    (49.0, "C2", "T5", 1, 1, True, False),   # tx7: serving catches C2 after 23.5 h
    (50.0, "C1", "T1", 1, 2, False, True),   # tx8
    (51.0, "C4", "T6", 0, 0, False, True),   # tx9: a false alert of the challenger
)


def _hand_built(scenarios_known: bool = True) -> tuple[TransactionHistory, list[ModelRun]]:
    n = len(HAND_BUILT)
    column = list(zip(*HAND_BUILT, strict=True))
    history = TransactionHistory(
        transaction_id=np.array([f"tx{i}" for i in range(n)], dtype=object),
        customer_id=np.array(column[1], dtype=object),
        terminal_id=np.array(column[2], dtype=object),
        event_time_us=BASE_US + (np.array(column[0]) * MICROS_PER_HOUR).astype(np.int64),
        amount=np.full(n, 10.0),
        currency="EUR",
        is_fraud=np.array(column[3], dtype=np.int8),
        label_time_us=np.full(n, NO_LABEL_US, dtype=np.int64),
        fraud_scenario=np.array(column[4] if scenarios_known else [-1] * n, dtype=np.int8),
    )
    runs = [
        ModelRun(name=name, role="serving" if name == "serving" else "challenger",
                 model_version=f"{name}-v1", bundle_threshold=0.5, training="..",
                 scores=np.where(np.array(column[i][2:]), 0.9, 0.1),
                 thresholds=np.full(n - 2, 0.5))
        for name, i in (("serving", 5), ("challenger", 6))
    ]
    return history, runs


def _compare_hand_built(scenarios_known: bool = True) -> Comparison:
    history, runs = _hand_built(scenarios_known)
    return compare(history, np.arange(2, len(HAND_BUILT), dtype=np.int64), runs,
                   command="fraudstream compare ...", policy="policy 'bundle'", settle_days=1)


def test_alert_overlap_and_the_frauds_each_model_alone_caught() -> None:
    c = _compare_hand_built()
    assert c.days == ["2018-08-02", "2018-08-03"]
    assert (c.transactions, c.frauds, c.frauds_per_day) == (8, 6, [4, 2])
    (o,) = c.overlaps
    assert (o.alerts_both, o.alerts_serving_only, o.alerts_challenger_only) == (1, 3, 3)
    assert o.alert_jaccard == pytest.approx(1 / 7)
    k = o.catches
    assert (k.frauds, k.both, k.serving_only, k.challenger_only, k.neither) == (6, 1, 2, 2, 1)
    assert o.serving_only_frauds == ["tx4", "tx7"]
    assert o.challenger_only_frauds == ["tx2", "tx8"]
    by = {name: (s.frauds, s.both, s.serving_only, s.challenger_only, s.neither)
          for name, s in o.catches_by_scenario.items()}
    assert by == {"amount > 220": (1, 0, 1, 0, 0), "compromised terminal": (4, 0, 1, 2, 1),
                  "leaked card credentials": (1, 1, 0, 0, 0)}
    serving, challenger = c.models
    assert (serving.alerts, serving.alerted_frauds, serving.alerts_per_day) == (4, 3, [3, 1])
    assert (challenger.alerts, challenger.alerted_frauds) == (4, 3)
    assert challenger.alerts_per_day == [2, 2]
    assert serving.alerted_frauds_per_day == [2, 1]
    assert serving.alert_precision == pytest.approx(3 / 4)
    assert serving.fraud_recall == pytest.approx(3 / 6)


def test_time_to_detection_per_card_and_terminal() -> None:
    serving, challenger = _compare_hand_built().models
    # C9's first fraud came before the window: not counted
    assert serving.cards.hours == {"C1": 1.0, "C2": 23.5}
    assert challenger.cards.hours == {"C1": 0.0, "C2": None}
    s = serving.cards
    assert (s.compromised, s.detected, s.median_hours, s.p90_hours) == (2, 2, 1.0, 23.5)
    assert (s.within_1h, s.within_1d) == (0.5, 1.0)
    h = challenger.cards
    assert (h.compromised, h.detected, h.median_hours, h.p90_hours) == (2, 1, 0.0, None)
    assert (h.within_1h, h.within_1d) == (0.5, 0.5)
    # terminals: only the compromised-terminal scenario's frauds (T3 and T5 had others)
    assert serving.terminals.hours == {"T1": 1.0}
    assert challenger.terminals.hours == {"T1": 0.0}
    assert serving.cards.first_fraud == {"C1": "2018-08-02T01:00:00Z",
                                         "C2": "2018-08-02T01:30:00Z"}
    # the window ends 2018-08-04 00:00: both cards were compromised over a day before it
    assert (s.settle_days, s.settled, s.settled_detected) == (1, 2, 2)
    assert (h.settled, h.settled_detected) == (2, 1)


def test_without_scenarios_every_fraud_compromises_its_terminal() -> None:
    c = _compare_hand_built(scenarios_known=False)
    serving, challenger = c.models
    assert serving.terminals.hours == {"T1": 1.0, "T3": 0.0, "T5": 0.0}
    assert challenger.terminals.hours == {"T1": 0.0, "T3": 0.0, "T5": None}
    assert c.frauds_by_scenario == {}
    assert c.overlaps[0].catches_by_scenario == {}


def test_detection_quantiles_count_missed_entities_as_never() -> None:
    hours: dict[str, float | None] = {"a": 0.5, "b": 2.0, "c": 30.0, "d": None, "e": None}
    first = {"a": 0, "b": 0, "c": 0, "d": 0, "e": 2 * MICROS_PER_DAY}
    d = summarise_detection(hours, first, end_us=3 * MICROS_PER_DAY, settle_days=2)
    assert (d.compromised, d.detected) == (5, 3)
    assert (d.settled, d.settled_detected) == (4, 3)  # "e": compromised a day before the end
    assert d.median_hours == 30.0
    assert d.p90_hours is None
    assert (d.within_1h, d.within_1d) == (0.2, 0.4)
    empty = summarise_detection({}, {}, end_us=0, settle_days=8)
    assert (empty.compromised, empty.median_hours, empty.within_1h) == (0, None, None)


def test_detection_ignores_alerts_on_genuine_transactions() -> None:
    entity = np.array(["k", "k", "k"], dtype=object)
    times = np.array([0, MICROS_PER_HOUR, 3 * MICROS_PER_HOUR], dtype=np.int64)
    fraud = np.array([True, False, True])
    alert = np.array([False, True, True])
    assert detection_hours(entity, times, fraud, alert, set()) == ({"k": 3.0}, {"k": 0})
    assert detection_hours(entity, times, fraud, alert, {"k"}) == ({}, {})


def test_report_shows_the_figures() -> None:
    text = markdown(_compare_hand_built())
    assert text.startswith("# Model comparison: serving vs challenger\n")
    assert "| all | 6 | 1 | 2 | 2 | 1 |" in text
    assert "| serving | 2 | 2 | 1.0 h | 23.5 h | 50% | 100% | 2 of 2 |" in text
    assert "| challenger | 2 | 1 | 0 min | missed | 50% | 50% | 1 of 2 |" in text
    assert "| 2018-08-03 | 2 | 1 (1) | 2 (1) |" in text


# -- with small bundles on a simulated history (torch exports the bundles) ---------------

START = dt.date(2018, 4, 1)
FROM_US = (dt.date(2018, 4, 20) - dt.date(1970, 1, 1)).days * MICROS_PER_DAY
UNTIL_US = FROM_US + 6 * MICROS_PER_DAY


@cache
def _history() -> TransactionHistory:
    return simulate(n_customers=80, n_terminals=60, n_days=30, start_date=START, seed=3)


def _scorer(threshold: float | None = None) -> Scorer:
    from tests.unit.model_bundles import tiny_bundle

    return Scorer(load_bundle(tiny_bundle(threshold).path))


@cache
def _stricter_threshold() -> float:
    """The 90th percentile of the served bundle's window scores: a challenger alerting less."""
    scored = backtest(_history(), _scorer(), start_us=FROM_US, stop_us=UNTIL_US)
    return float(np.quantile(scored.scores.score, 0.9))


@pytest.mark.train
def test_score_models_applies_each_bundles_threshold_to_the_backtest_scores() -> None:
    history = _history()
    serving, challenger = _scorer(), _scorer(_stricter_threshold())
    rows, runs = score_models(history, [("a", "serving", serving), ("b", "challenger",
                                                                     challenger)],
                              AlertPolicy(), start_us=FROM_US, stop_us=UNTIL_US,
                              batch_size=512)
    scored = backtest(history, serving, start_us=FROM_US, stop_us=UNTIL_US)
    np.testing.assert_array_equal(rows, scored.rows)
    times = history.event_time_us[rows]
    assert times[0] >= FROM_US and times[-1] < UNTIL_US
    score = scored.scores.score.astype(np.float64)
    np.testing.assert_array_equal(runs[0].alerts, score >= serving.threshold)
    np.testing.assert_array_equal(runs[1].alerts, score >= _stricter_threshold())
    assert 0 < runs[1].alerts.sum() < runs[0].alerts.sum()
    (o,) = compare(history, rows, runs, command="c", policy="p", settle_days=8).overlaps
    assert o.alerts_challenger_only == 0
    assert o.alerts_both == int(runs[1].alerts.sum())
    assert o.alerts_serving_only == int(runs[0].alerts.sum() - runs[1].alerts.sum())
    assert o.catches.challenger_only == 0


@pytest.mark.train
def test_a_daily_budget_takes_the_first_days_threshold_from_the_day_before(
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_text('{"schema": "policy.v1", "name": "top-5", "daily_budget": 5}')
    history, scorer = _history(), _scorer()
    rows, (run,) = score_models(history, [("a", "serving", scorer)], load_policy(policy_file),
                                start_us=FROM_US, stop_us=UNTIL_US, batch_size=512)
    assert history.event_time_us[rows[0]] >= FROM_US
    day_before = backtest(history, scorer, start_us=FROM_US - MICROS_PER_DAY,
                          stop_us=FROM_US)
    expected = kth_highest(day_before.scores.score.astype(np.float64), 5)
    assert expected is not None and expected != scorer.threshold
    first_day = history.event_time_us[rows] < FROM_US + MICROS_PER_DAY
    np.testing.assert_array_equal(run.thresholds[first_day], expected)


@pytest.mark.train
def test_cli_writes_the_report_json_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.model_bundles import tiny_bundle

    data = tmp_path / "history.jsonl"
    write_jsonl(_history(), data)
    out = tmp_path / "report"
    stricter = tiny_bundle(_stricter_threshold()).path
    code = main([
        "compare", "--data", str(data), "--serving", str(tiny_bundle().path),
        "--challenger", str(stricter), "--from", "2018-04-20", "--until", "2018-04-26",
        "--out", str(out), "--no-progress",
    ])
    assert code == 0
    figures = json.loads((out / "comparison.json").read_text())
    assert [m["role"] for m in figures["models"]] == ["serving", "challenger"]
    assert figures["days"] == [f"2018-04-{d}" for d in range(20, 26)]
    serving, challenger = figures["models"]
    assert sum(serving["alerts_per_day"]) == serving["alerts"] > challenger["alerts"] > 0
    assert figures["overlaps"][0]["alerts_challenger_only"] == 0
    report = (out / "report.md").read_text()
    assert f"--challenger {stricter}" in report.splitlines()[2]
    assert f"| alerts | {serving['alerts']:,} | {challenger['alerts']:,} |" in report
    for plot in PLOTS:
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
        assert f"]({plot})" in report
    assert f"{serving['alerts']:,} alerts" in capsys.readouterr().out


@pytest.mark.train
def test_cli_refuses_a_window_that_ends_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.model_bundles import tiny_bundle

    code = main([
        "compare", "--data", str(tmp_path / "h.jsonl"), "--serving", str(tiny_bundle().path),
        "--challenger", str(tiny_bundle().path), "--from", "2018-05-01",
        "--until", "2018-04-01", "--out", str(tmp_path / "out"),
    ])
    assert code == 2
    assert "--from 2018-05-01 is not before --until 2018-04-01" in capsys.readouterr().err
