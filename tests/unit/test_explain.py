"""Reasons that explain the served score, on a bundle trained on a simulated history.

The explainer's contributions (DeepLIFT rescale, ``training.models.StackerExplainer``)
must sum to ``score - baseline_score`` within 1e-4 on real rows, in PyTorch and in the
exported graph the scorer runs; an explainer with a wrong multiplier must not.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import Tensor

from stream_app.scoring import Scorer, load_bundle
from stream_app.sources.simulator import simulate
from training.datasets import TensorView
from training.export import torch_outputs
from training.fit import TrainConfig
from training.models import Stacker, StackerExplainer
from training.pipeline import TrainedRun, train_run, write_run

pytestmark = pytest.mark.train

COMPLETENESS = 1e-4
"""The largest accepted ``|Σ contributions - (score - baseline_score)|``."""
TINY = TrainConfig(
    threads=1, batch_size=128, autoencoder_epochs=1, sequence_epochs=2, stacker_epochs=4,
    autoencoder_hidden=8, autoencoder_code=4, sequence_hidden=8, stacker_hidden=8,
)


@cache
def _run() -> TrainedRun:
    history = simulate(150, 300, 24, dt.date(2018, 4, 1), seed=3)
    return train_run(history, "default", None, TINY)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    path = write_run(_run(), tmp_path_factory.mktemp("trained") / "bundle", "default", 7)
    return Scorer(load_bundle(path))


def _rows() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Every 7th row of the trained history: values, sequences, mask."""
    run = _run()
    picked = torch.arange(0, len(run.dataset), 7)
    sequences, mask = TensorView(run.dataset).sequences(picked)
    return run.dataset.values[picked.numpy()], sequences.numpy(), mask.numpy()


def _completeness_gap(explainer: StackerExplainer) -> float:
    """Largest ``|Σ contributions - (score - baseline)|`` of the PyTorch explainer."""
    run = _run()
    values, sequences, mask = _rows()
    (error, _) = torch_outputs(run.models.autoencoder, "autoencoder", [values])
    (probability,) = torch_outputs(run.models.sequence, "sequence", [sequences, mask])
    inputs = [values, error, probability]
    (contributions,) = torch_outputs(explainer, "explainer", inputs)
    (score,) = torch_outputs(run.models.stacker, "combined", inputs)
    expected = score.astype(np.float64) - explainer.baseline_score()
    return float(np.abs(contributions.astype(np.float64).sum(axis=1) - expected).max())


class _GradientTimesInput(StackerExplainer):
    """A wrong multiplier: the ReLU's slope at the row instead of the rescale ratio."""

    def _multipliers(self, h: Tensor, h0: Tensor) -> Tensor:
        return (h > 0).to(h.dtype)


class _SlopeAtTheRow(StackerExplainer):
    """A wrong Platt step: the sigmoid's slope at the row instead of the secant."""

    def _sigmoid_slope(self, z: Tensor, z0: Tensor) -> Tensor:
        stacker = self.stacker
        score = stacker.calibrate(z)
        return stacker.platt_scale * score * (1 - score)


def test_the_trained_stacker_has_a_training_baseline() -> None:
    stacker = _run().models.stacker
    assert float(stacker.sequence_logit_mean) < 0.0  # set by fit_stacker; frauds are rare
    baseline = stacker.baseline_inputs()
    assert baseline.shape == (len(_run().dataset.columns) + 2,)
    assert bool((baseline[:-1] == 0).all())


def test_contributions_sum_to_score_minus_baseline_in_pytorch() -> None:
    assert _completeness_gap(StackerExplainer(_run().models.stacker)) <= COMPLETENESS


@pytest.mark.parametrize("wrong", [_GradientTimesInput, _SlopeAtTheRow])
def test_a_wrong_rule_breaks_completeness(wrong: type[StackerExplainer]) -> None:
    assert _completeness_gap(wrong(_run().models.stacker)) > 100 * COMPLETENESS


def test_served_contributions_sum_to_served_score_minus_manifest_baseline(
    scorer: Scorer,
) -> None:
    values, sequences, mask = _rows()
    scored = scorer.score_batch(values, sequences, mask)
    contributions = scorer.contributions(
        values.astype(np.float32), scored.autoencoder_error, scored.sequence_probability
    )
    assert contributions.shape == (len(values), len(scorer.columns) + 2)
    baseline = scorer.bundle.manifest.explanation.baseline_score
    gap = contributions.astype(np.float64).sum(axis=1) - (scored.score - baseline)
    assert float(np.abs(gap).max()) <= COMPLETENESS
    # the sequence term and the features both carry weight somewhere
    assert np.abs(contributions[:, -1]).max() > 1e-3
    assert np.abs(contributions[:, :-2]).max() > 1e-3


def test_onnx_explainer_matches_pytorch_on_trained_rows(scorer: Scorer) -> None:
    run = _run()
    values, sequences, mask = _rows()
    scored = scorer.score_batch(values, sequences, mask)
    inputs = [values.astype(np.float32), scored.autoencoder_error, scored.sequence_probability]
    (expected,) = torch_outputs(StackerExplainer(run.models.stacker), "explainer", inputs)
    np.testing.assert_allclose(scorer.contributions(*inputs), expected, rtol=0, atol=1e-5)


def test_alert_reasons_explain_a_high_score(scorer: Scorer) -> None:
    values, sequences, mask = _rows()
    scored = scorer.score_batch(values, sequences, mask)
    alerts = np.flatnonzero(scored.is_alert)
    assert len(alerts) > 0
    for i, reasons in zip(alerts, scored.reasons_for(alerts), strict=True):
        assert reasons, "an alert scores above the baseline, so something raised it"
        assert sum(r[1] for r in reasons) > 0
        assert [r[1] for r in reasons] == sorted((r[1] for r in reasons), reverse=True)
        named = dict((r[0], r[2]) for r in reasons)
        if "sequence_probability" in named:
            assert named["sequence_probability"] == pytest.approx(
                float(scored.sequence_probability[i]))


def test_explainer_refuses_a_stacker_it_cannot_explain() -> None:
    stacker = Stacker(_run().models.normaliser)
    stacker.net = torch.nn.Sequential(torch.nn.Linear(len(_run().dataset.columns) + 2, 1))
    with pytest.raises(TypeError, match="extend the rescale rule"):
        StackerExplainer(stacker)


def test_write_run_records_the_baseline_score(scorer: Scorer) -> None:
    explanation = scorer.bundle.manifest.explanation
    explainer = StackerExplainer(_run().models.stacker)
    assert explanation.baseline_score == pytest.approx(explainer.baseline_score(), abs=1e-7)
    assert Path(scorer.bundle.path / "explainer.onnx").is_file()
