"""``fraudstream evaluate`` and ``fraudstream train`` end to end on a small simulated history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_app.cli import main

pytestmark = pytest.mark.train

MODELS = {"autoencoder", "lstm", "combined"}
TRAININGS = {"handbook", "all_history"}
METRICS = {"auc_roc", "average_precision", "card_precision_at_100"}


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.parquet"
    assert main(["simulate", "--customers", "200", "--terminals", "400", "--days", "30",
                 "--seed", "5", "--output", str(path)]) == 0
    return path


def test_evaluate_writes_metrics_report_and_plots(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evaluation"
    code = main(["evaluate", "--data", str(history_file), "--protocol", "handbook",
                 "--folds", "2", "--epochs", "1", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == MODELS
    for model in MODELS:
        assert set(metrics[model]) == TRAININGS
        for training in TRAININGS:
            assert set(metrics[model][training]) == METRICS
            for entry in metrics[model][training].values():
                assert set(entry) == {"mean", "std", "folds"} and len(entry["folds"]) == 2
                assert 0.0 <= entry["mean"] <= 1.0
    protocol = json.loads((out / "protocol.json").read_text())
    assert [f["train"][0] for f in protocol["folds"]["all_history"]] == [
        "2018-04-01", "2018-04-01"
    ]
    report = (out / "report.md").read_text()
    assert "| XGBoost | 0.869 | 0.687 | 0.303 |" in report
    assert "ours: Combined" in report
    for name in ("precision_recall_handbook.png", "score_distribution_all_history.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "combined" in printed and "all_history" in printed


def test_evaluate_refuses_folds_that_do_not_fit(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--data", str(history_file), "--folds", "4", "--train-days", "14",
                 "--out", str(tmp_path / "e")])
    assert code == 2
    assert "do not fit the data's days 2018-04-01..2018-04-30" in capsys.readouterr().err


def test_train_writes_a_bundle(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    code = main(["train", "--data", str(history_file), "--until", "2018-05-01",
                 "--epochs", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_data"] == {"from": "2018-04-01", "to": "2018-04-24"}
    assert 0.0 < manifest["threshold"] < 1.0
    assert "maximum F1" in manifest["threshold_rule"]
    assert {"autoencoder.onnx", "sequence.onnx", "combined.onnx"} <= {
        p.name for p in out.iterdir()
    }
    assert "wrote model bundle" in capsys.readouterr().out


def test_evaluate_adds_the_gan_and_cnn_challengers_before_the_served_score(
    history_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "challengers"
    code = main(["evaluate", "--data", str(history_file), "--folds", "2", "--epochs", "1",
                 "--training", "handbook", "--sequence-members", "1",
                 "--challengers", "gan", "cnn", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["autoencoder", "lstm", "gan", "cnn", "combined"]
    assert all(len(metrics[m]["handbook"]["auc_roc"]["folds"]) == 2 for m in metrics)
    rows = [line for line in (out / "report.md").read_text().splitlines()
            if line.startswith("| **ours:")]
    assert "GAN anomaly detector" in rows[2] and "1-D CNN" in rows[3]
    assert "the served score" in rows[4]
    assert json.loads((out / "protocol.json").read_text())["challengers"] == ["gan", "cnn"]


def test_train_records_the_chosen_architectures_in_the_manifest(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    code = main(["train", "--data", str(history_file), "--until", "2018-05-01", "--epochs", "1",
                 "--anomaly-model", "gan", "--sequence-model", "lstm+cnn",
                 "--sequence-members", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["architecture"] == {
        "anomaly_model": "gan", "sequence_model": "lstm+cnn", "sequence_members": 2
    }


def test_train_refuses_an_ensemble_of_zero(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(history_file), "--sequence-members", "0",
                 "--out", str(tmp_path / "b")])
    assert code == 2
    assert "--sequence-members 0: use 1 or more" in capsys.readouterr().err
