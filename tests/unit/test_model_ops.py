"""Alert policies, the model store's pointers and the swap between batches."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream_app.cli import main
from stream_app.errors import BundleError, ConfigError
from stream_app.scoring.bundle import ModelBundle, load_bundle
from stream_app.scoring.model_store import (
    CHALLENGERS,
    CURRENT,
    promote,
    read_selection,
    set_challengers,
)
from stream_app.scoring.policy import (
    AlertPolicy,
    DailyThresholds,
    InMemoryDayScores,
    history_thresholds,
    load_policy,
)
from stream_app.scoring.scorer import Scorer
from stream_app.time import MICROS_PER_DAY
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.models import Models, ServedModel
from tests.unit.model_bundles import tiny_bundle

pytestmark = pytest.mark.train


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_policy_file_is_validated_with_one_clear_message(tmp_path: Path) -> None:
    ok = load_policy(_policy(tmp_path, '{"schema": "policy.v1", "name": "p", "threshold": 0.7}'))
    assert (ok.name, ok.threshold, ok.daily_budget, len(ok.digest)) == ("p", 0.7, None, 64)
    budget = load_policy(_policy(tmp_path, '{"schema": "policy.v1", "name": "b", '
                                           '"daily_budget": 100}'))
    assert budget.daily_budget == 100 and budget.fixed_threshold(0.4) == 0.4
    with pytest.raises(ConfigError, match=r"breaks policy.v1 at \$\['threshold'\]: 1.5"):
        load_policy(_policy(tmp_path, '{"schema": "policy.v1", "name": "p", "threshold": 1.5}'))
    with pytest.raises(ConfigError, match=r"breaks policy.v1 at \$: .* is not valid under any"):
        load_policy(_policy(tmp_path, '{"schema": "policy.v1", "name": "p"}'))
    with pytest.raises(ConfigError, match="at \\$\\['name'\\]: 'bundle' does not match"):
        load_policy(_policy(tmp_path, '{"schema": "policy.v1", "name": "bundle", '
                                      '"threshold": 0.5}'))
    with pytest.raises(ConfigError, match="is not JSON"):
        load_policy(_policy(tmp_path, "threshold: 0.5"))
    with pytest.raises(ConfigError, match=r"cannot read the alert policy file .*missing\.json"):
        load_policy(tmp_path / "missing.json")


def test_a_daily_budget_holds_each_day_to_the_previous_days_kth_score() -> None:
    times = np.array([0, 1, 2, 3, MICROS_PER_DAY, MICROS_PER_DAY + 1, 2 * MICROS_PER_DAY])
    scores = np.array([0.9, 0.2, 0.7, 0.5, 0.8, 0.6, 0.1], dtype=np.float32)
    policy = AlertPolicy("top-2", daily_budget=2)
    thresholds = history_thresholds(policy, 0.3, scores, times)
    np.testing.assert_array_equal(
        thresholds, [0.3, 0.3, 0.3, 0.3, np.float32(0.7), np.float32(0.7), np.float32(0.6)]
    )
    fixed = history_thresholds(AlertPolicy("p", threshold=0.55), 0.3, scores, times)
    assert set(fixed.tolist()) == {0.55}


@pytest.mark.parametrize("seed", range(5))
def test_the_streams_batches_decide_as_the_backtest_does(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    times = np.sort(rng.integers(0, 6 * MICROS_PER_DAY, n))
    scores = rng.random(n).astype(np.float32)
    ids = [f"t{i}" for i in range(n)]
    policy = AlertPolicy("top-25", daily_budget=25, threshold=0.99)
    expected = history_thresholds(policy, 0.5, scores, times)
    days = InMemoryDayScores()
    decider = DailyThresholds(policy, 0.5, days)

    async def run() -> list[np.ndarray]:
        cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
        out = []
        for rows in np.split(np.arange(n), cuts):
            out.append(await decider.decide([ids[i] for i in rows], scores[rows],
                                            times[rows].tolist()))
            if rng.random() < 0.2:  # a redelivered batch changes nothing
                await decider.decide([ids[i] for i in rows], scores[rows], times[rows].tolist())
        return out

    np.testing.assert_array_equal(np.concatenate(asyncio.run(run())), expected)
    assert expected[0] == 0.99 and len(set(expected.tolist())) == 6


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "models"
    store.mkdir()
    shutil.copytree(tiny_bundle(0.5).path, store / "a")
    shutil.copytree(tiny_bundle(0.25).path, store / "b")
    return store


def test_promote_verifies_then_points_current_at_the_bundle(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert read_selection(store / "a").serving == store / "a"  # a plain bundle: itself
    promote(store, "a")
    assert read_selection(store).serving == store / "a"
    shutil.copytree(store / "a", store / "broken")
    (store / "broken" / "sequence.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError, match=r"sequence\.onnx' has sha256"):
        promote(store, "broken")
    assert (store / CURRENT).read_text() == "a\n"  # unchanged
    set_challengers(store, ("b",))
    assert read_selection(store).challengers == (store / "b",)
    (store / CHALLENGERS).write_text("../elsewhere\n")
    with pytest.raises(ConfigError, match=r"bundle name '\.\./elsewhere' is not a directory name"):
        read_selection(store)
    (store / CURRENT).write_text("a\nb\n")
    with pytest.raises(ConfigError, match="holds 2 names"):
        read_selection(store)


def test_a_swap_happens_on_refresh_and_a_bad_bundle_is_refused_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    promote(store, "a")
    metrics = WorkerMetrics()
    a = load_bundle(store / "a")

    def build(path: Path, bundle: ModelBundle, policy: AlertPolicy) -> ServedModel:
        scorer = Scorer(bundle)
        return ServedModel(path, scorer, DailyThresholds(policy, scorer.threshold,
                                                         InMemoryDayScores()))

    models = Models(
        Models.of(Scorer(a), metrics).serving, build, metrics,
        location=store, policy_file=None, poll_s=0.01,
    )  # fmt: skip

    async def refresh() -> bool:
        return await models.refresh()

    assert asyncio.run(refresh()) is False  # nothing changed
    promote(store, "b")
    assert asyncio.run(refresh()) is True
    assert models.serving.model.version == load_bundle(store / "b").model_version
    shutil.copytree(store / "a", store / "c")
    manifest = store / "c" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"threshold": 0.5', '"threshold": 0.6'))
    (store / CURRENT).write_text("c\n")
    with caplog.at_level("ERROR"):
        assert asyncio.run(refresh()) is False
        assert asyncio.run(refresh()) is False
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert "still serving" in refused[0] and "/c" in refused[0]
    assert models.serving.model.version == load_bundle(store / "b").model_version
    reg = metrics.registry
    assert reg.get_sample_value("fraudstream_model_refusals_total") == 1
    assert reg.get_sample_value("fraudstream_model_swaps_total") == 1
    assert reg.get_sample_value(
        "fraudstream_model_info",
        {"role": "serving", "model_version": models.serving.model.version, "policy": "bundle"},
    ) == 1


def test_the_models_command_promotes_and_sets_challengers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store(tmp_path)
    assert main(["models", "promote", "--models", str(store), "a"]) == 0
    assert main(["models", "challengers", "--models", str(store), "b"]) == 0
    out = capsys.readouterr().out
    assert "serving     a: " in out and "challenger  b: " in out
    assert (store / CURRENT).read_text() == "a\n" and (store / CHALLENGERS).read_text() == "b\n"
    assert main(["models", "clear-challengers", "--models", str(store)]) == 0
    assert (store / CHALLENGERS).read_text() == ""
    assert main(["models", "promote", "--models", str(store), "nope"]) == 2
    assert "model bundle directory" in capsys.readouterr().err
    assert (store / CURRENT).read_text() == "a\n"


def test_the_worker_refuses_a_bad_policy_or_challenger_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    promote(store, "a")
    monkeypatch.setenv("FRAUDSTREAM_ALERT_POLICY", str(_policy(tmp_path, '{"name": "x"}')))
    assert main(["worker", "--models", str(store)]) == 2
    assert "breaks policy.v1" in capsys.readouterr().err
    monkeypatch.delenv("FRAUDSTREAM_ALERT_POLICY")
    shutil.copytree(store / "a", store / "broken")
    (store / "broken" / "combined.onnx").write_bytes(b"")
    (store / CHALLENGERS).write_text("broken\n")
    assert main(["worker", "--models", str(store)]) == 2
    assert "combined.onnx' has sha256" in capsys.readouterr().err
