"""The torch models and training loops: shapes, normalisation, calibration, determinism."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import torch

from stream_app.sources.simulator import simulate
from training.datasets import Dataset, TensorView, build_dataset
from training.fit import (
    TrainConfig,
    combined_scores,
    fit_models,
    fit_platt,
    fit_sequence,
    max_f1_threshold,
)
from training.models import Autoencoder, FeatureNormaliser, SequenceClassifier, Stacker, log_columns

pytestmark = pytest.mark.train

TINY = TrainConfig(
    threads=1, batch_size=128, autoencoder_epochs=1, sequence_epochs=1, stacker_epochs=2,
    autoencoder_hidden=8, autoencoder_code=4, sequence_hidden=8, stacker_hidden=4,
    sequence_members=1,
)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    history = simulate(150, 300, 24, dt.date(2018, 4, 1), seed=3)
    return build_dataset(history, "default")


def test_log_columns_flags_counts_and_amounts_but_not_flags_or_fractions() -> None:
    values = np.array([[0.0, 0.2, 3.0, -1.0], [1.0, 0.9, 40.0, 5.0]])
    assert log_columns(values).tolist() == [False, False, True, False]


def test_normaliser_logs_flagged_columns_then_standardises() -> None:
    values = np.array([[0.0, 1.0], [np.e - 1, 3.0]], dtype=np.float32)
    normaliser = FeatureNormaliser.fit(values, np.array([True, False]))
    out = normaliser(torch.from_numpy(values))
    assert torch.allclose(out.mean(dim=0), torch.zeros(2), atol=1e-6)
    assert normaliser.statistics(("a", "b"))["a"] == {
        "log1p": True, "mean": pytest.approx(0.5), "std": pytest.approx(2 ** -0.5)
    }
    # a constant column keeps std 1 instead of dividing by zero
    constant = FeatureNormaliser.fit(np.ones((3, 1), dtype=np.float32), np.array([False]))
    assert float(constant.std[0]) == 1.0


def test_models_follow_the_onnx_contract_shapes(dataset: Dataset) -> None:
    n_features = len(dataset.columns)
    normaliser = FeatureNormaliser.fit(dataset.values, log_columns(dataset.values))
    view = TensorView(dataset)
    rows = torch.arange(10)
    error, feature_errors = Autoencoder(normaliser)(view.features(rows))
    assert error.shape == (10,) and feature_errors.shape == (10, n_features)
    assert torch.allclose(error, feature_errors.mean(dim=1))
    sequence, mask = view.sequences(rows)
    assert sequence.shape == (10, 5, n_features) and mask.shape == (10, 5)
    assert bool((mask[:, -1] == 1).all())  # the current transaction is the last step
    probability = SequenceClassifier(normaliser)(sequence, mask)
    assert probability.shape == (10,) and bool(((probability > 0) & (probability < 1)).all())
    score = Stacker(normaliser)(view.features(rows), error, probability)
    assert score.shape == (10,) and bool(((score >= 0) & (score <= 1)).all())


def test_sequence_model_ignores_what_padding_steps_hold(dataset: Dataset) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(FeatureNormaliser.fit(dataset.values, log_columns(dataset.values)))
    sequence, mask = TensorView(dataset).sequences(torch.arange(20))
    assert bool((mask == 0).any())
    garbage = torch.where(mask.unsqueeze(-1) == 0, torch.full_like(sequence, 1e6), sequence)
    assert torch.equal(model(sequence, mask), model(garbage, mask))


def test_platt_scaling_recovers_a_known_logistic_map() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(2.0 * logits - 1.0)))).astype(np.int64)
    scale, bias = fit_platt(logits, labels)
    assert scale == pytest.approx(2.0, abs=0.1) and bias == pytest.approx(-1.0, abs=0.1)


def test_max_f1_threshold_picks_the_best_cut() -> None:
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    # flag top 2: F1 = 2*2/(2+3) = 0.8; top 4: 2*3/(4+3) = 0.857 -> cut at 0.6
    assert max_f1_threshold(labels, scores) == 0.6


def test_training_is_deterministic_for_a_seed(dataset: Dataset) -> None:
    rows = np.arange(len(dataset), dtype=np.int64)
    first = fit_models(dataset, rows, TINY)
    second = fit_models(dataset, rows, TINY)
    for name in ("autoencoder", "sequence", "stacker"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    scores_a = combined_scores(first, dataset, rows[-50:], TINY)
    scores_b = combined_scores(second, dataset, rows[-50:], TINY)
    assert all(np.array_equal(scores_a[m], scores_b[m]) for m in scores_a)
    assert first.threshold == second.threshold
    assert isinstance(first.sequence, SequenceClassifier)
    other, _ = fit_sequence(dataset, rows, first.normaliser, dataclasses.replace(TINY, seed=1))
    key = "lstm.weight_ih_l0"
    assert not torch.equal(other.state_dict()[key], first.sequence.state_dict()[key])
