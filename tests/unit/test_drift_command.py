"""``fraudstream drift`` on a small simulated history with the tests' tiny bundle, and the
worker's PSI gauges; both against PSIs computed here from the stream's own scores."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from stream_app.cli import main
from stream_app.drift.periods import period_start
from stream_app.drift.psi import psi
from stream_app.drift.report import PLOTS
from stream_app.scoring import Scorer, load_bundle
from stream_app.scoring.backtest import backtest
from stream_app.scoring.manifest import MANIFEST_FILE, model_version
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY
from stream_app.worker.metrics import WorkerMetrics

pytestmark = pytest.mark.train

EPOCH = dt.date(1970, 1, 1)
FROM = dt.date(2018, 4, 20)
UNTIL = dt.date(2018, 4, 26)


@cache
def _history() -> TransactionHistory:
    return simulate(n_customers=80, n_terminals=60, n_days=30, start_date=dt.date(2018, 4, 1),
                    seed=3)


def _us(day: dt.date) -> int:
    return (day - EPOCH).days * MICROS_PER_DAY


def test_weeks_start_on_monday() -> None:
    days = np.array([(dt.date(2018, 4, d) - EPOCH).days for d in (15, 16, 20, 22, 23)])
    starts = [str(EPOCH + dt.timedelta(days=int(d))) for d in period_start(days, "week")]
    assert starts == ["2018-04-09", "2018-04-16", "2018-04-16", "2018-04-16", "2018-04-23"]
    assert period_start(days, "day").tolist() == days.tolist()


def test_cli_reports_each_days_psi_against_the_bundles_training_bins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.model_bundles import tiny_bundle

    data = tmp_path / "history.jsonl"
    write_jsonl(_history(), data)
    out = tmp_path / "drift"
    bundle_dir = tiny_bundle().path
    code = main(["drift", "--data", str(data), "--models", str(bundle_dir), "--from",
                 FROM.isoformat(), "--until", UNTIL.isoformat(), "--out", str(out),
                 "--no-progress"])
    assert code == 0
    figures = json.loads((out / "drift.json").read_text())
    days = [p["start"] for p in figures["periods"]]
    assert days == [f"2018-04-{d}" for d in range(20, 26)]
    # the stream's scores of the same window (the backtest), binned on the manifest's edges
    bundle = load_bundle(bundle_dir)
    reference = bundle.manifest.distributions
    assert reference is not None
    scored = backtest(_history(), Scorer(bundle), start_us=_us(FROM), stop_us=_us(UNTIL))
    day = scored.event_time_us // MICROS_PER_DAY
    for period in figures["periods"]:
        mine = scored.scores.score[day == (dt.date.fromisoformat(period["start"]) - EPOCH).days]
        assert period["transactions"] == len(mine)
        counts = reference.score.counts(mine)
        assert period["score_psi"] == pytest.approx(psi(reference.score.proportions, counts))
        assert set(period["feature_psi"]) == set(bundle.feature_columns)
        assert all(np.isfinite(v) and v >= 0 for v in period["feature_psi"].values())
    assert sum(p["transactions"] for p in figures["periods"]) == len(scored.scores.score)
    report = (out / "report.md").read_text()
    for plot in PLOTS:
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
        assert f"]({plot})" in report
    assert "| 2018-04-20 |" in report and "--models" in report.splitlines()[2]
    assert "6 days" in capsys.readouterr().out


def test_cli_refuses_a_bundle_without_training_distributions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.model_bundles import tiny_bundle

    old = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundle().path, old)
    document = json.loads((old / MANIFEST_FILE).read_text())
    del document["distributions"]
    document["model_version"] = model_version(document)
    (old / MANIFEST_FILE).write_text(json.dumps(document))
    data = tmp_path / "history.jsonl"
    write_jsonl(_history(), data)
    code = main(["drift", "--data", str(data), "--models", str(old), "--out",
                 str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "records no training distributions" in capsys.readouterr().err


def test_worker_psi_gauges_cover_every_feature_and_restart_with_a_new_model() -> None:
    from tests.unit.model_bundles import random_rows, tiny_bundle

    bundle = load_bundle(tiny_bundle().path)
    reference = bundle.manifest.distributions
    assert reference is not None
    metrics = WorkerMetrics(drift_window=200)
    get = metrics.registry.get_sample_value
    rows = random_rows(tiny_bundle().feature_set, 300, seed=9)
    scores = Scorer(bundle).score_batch(rows.values, rows.sequences, rows.mask).score
    metrics.drift.observe(bundle, rows.values[:150], scores[:150])
    assert get("fraudstream_score_psi") is None  # fewer rows than the window
    metrics.drift.observe(bundle, rows.values[150:], scores[150:])
    last = slice(100, 300)  # the window keeps the last 200
    assert get("fraudstream_score_psi") == pytest.approx(
        psi(reference.score.proportions, reference.score.counts(scores[last]))
    )
    for i, column in enumerate(bundle.feature_columns):
        binned = reference.features[column]
        assert get("fraudstream_feature_psi", {"feature": column}) == pytest.approx(
            psi(binned.proportions, binned.counts(rows.values[last, i]))
        ), column
    other = load_bundle(tiny_bundle(0.9).path)  # another model_version: a new window
    metrics.drift.observe(other, rows.values[:10], scores[:10])
    assert get("fraudstream_score_psi") is None
