"""The GAN anomaly detector and the 1-D CNN: they fill the autoencoder and sequence roles of
the ONNX contract, train on a tiny history, and their bundle loads and scores like any."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stream_app.commands import train as train_command
from stream_app.errors import InputDataError
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.contract import CONTRACTS
from stream_app.sources.simulator import simulate
from tests.unit.model_bundles import random_rows, tiny_bundle
from training import fit
from training.cnn import SequenceCNN
from training.datasets import Dataset, TensorView, build_dataset
from training.evaluate import challenger_scores
from training.export import DEFAULT_TOLERANCE, export_model
from training.fit import TrainConfig, fit_models
from training.gan import GanDetector
from training.models import FeatureNormaliser, SequenceEnsemble, log_columns
from training.pipeline import TrainedRun, write_run
from training.protocol import PrequentialParams, prequential_folds

pytestmark = pytest.mark.train

TINY = TrainConfig(
    threads=1, batch_size=128, autoencoder_epochs=2, sequence_epochs=1, stacker_epochs=2,
    autoencoder_hidden=8, autoencoder_code=4, sequence_hidden=8, stacker_hidden=4,
    anomaly_model="gan", sequence_model="cnn", sequence_members=1,
)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return build_dataset(simulate(150, 300, 24, dt.date(2018, 4, 1), seed=3), "default")


def _normaliser(dataset: Dataset) -> FeatureNormaliser:
    return FeatureNormaliser.fit(dataset.values, log_columns(dataset.values))


def test_gan_score_is_the_mean_feature_error_plus_the_latent_gap(dataset: Dataset) -> None:
    torch.manual_seed(0)
    model = GanDetector(_normaliser(dataset), hidden=8, code=4)
    features = TensorView(dataset).features(torch.arange(10))
    score, feature_errors = model(features)
    assert score.shape == (10,) and feature_errors.shape == (10, len(dataset.columns))
    z, z_hat, code, code_hat = model.generate(features)
    assert torch.allclose(feature_errors, (z - z_hat) ** 2)
    latent = ((code - code_hat) ** 2).mean(dim=1)
    assert bool((latent > 0).all())
    assert torch.allclose(score, feature_errors.mean(dim=1) + latent)


def test_cnn_ignores_padding_and_looks_only_backwards(dataset: Dataset) -> None:
    torch.manual_seed(0)
    model = SequenceCNN(_normaliser(dataset), channels=8, head=8)
    sequence, mask = TensorView(dataset).sequences(torch.arange(40))
    assert bool((mask == 0).any())
    garbage = torch.where(mask.unsqueeze(-1) == 0, torch.full_like(sequence, 1e6), sequence)
    probability = model(sequence, mask)
    assert probability.shape == (40,) and bool(((probability > 0) & (probability < 1)).all())
    assert torch.equal(probability, model(garbage, mask))
    # the current row matters
    changed = sequence.clone()
    changed[:, -1, 0] += 50.0
    assert not torch.equal(probability, model(changed, mask))


@pytest.mark.parametrize("role", ["autoencoder", "sequence"])
def test_gan_and_cnn_export_to_onnx_within_the_bound(role: str, tmp_path: Path) -> None:
    fs = tiny_bundle().feature_set
    fit_rows = random_rows(fs, 256, seed=1)
    normaliser = FeatureNormaliser.fit(fit_rows.values, log_columns(fit_rows.values))
    torch.manual_seed(3)
    rows = random_rows(fs, 48, seed=11)
    if role == "autoencoder":
        module: torch.nn.Module = GanDetector(normaliser, hidden=16, code=4)
        inputs = [rows.values]
    else:
        module = SequenceCNN(normaliser, channels=8, head=8)
        inputs = [rows.sequences, rows.mask]
    report = export_model(module, role, inputs, tmp_path / "m.onnx")  # type: ignore[arg-type]
    assert report.max_scaled_diff <= DEFAULT_TOLERANCE
    contract = CONTRACTS[role]  # type: ignore[index]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(contract.input_names)
    assert [o.name for o in session.get_outputs()] == list(contract.output_names)
    other = random_rows(fs, 7, seed=12)
    other_inputs = [other.values] if role == "autoencoder" else [other.sequences, other.mask]
    got = session.run(None, dict(zip(contract.input_names, other_inputs, strict=True)))
    with torch.no_grad():
        want = module(*(torch.from_numpy(a) for a in other_inputs))
    want_list = list(want) if isinstance(want, tuple) else [want]
    for a, b in zip(want_list, got, strict=True):
        np.testing.assert_allclose(b, a.numpy(), rtol=1e-4, atol=1e-5)


def test_gan_and_cnn_train_into_a_bundle_that_loads(dataset: Dataset, tmp_path: Path) -> None:
    rows = np.arange(len(dataset), dtype=np.int64)
    models = fit_models(dataset, rows, TINY)
    assert isinstance(models.autoencoder, GanDetector)
    assert isinstance(models.sequence, SequenceCNN)
    assert all(np.isfinite(v).all() for v in models.losses.values())
    assert models.architecture == {"anomaly_model": "gan", "sequence_model": "cnn",
                                   "sequence_members": 1}
    again = fit_models(dataset, rows, TINY)  # deterministic for a seed
    for name in ("autoencoder", "sequence", "stacker"):
        a, b = getattr(models, name).state_dict(), getattr(again, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    days = dataset.day[rows]
    run = TrainedRun(dataset, models, rows[: len(rows) * 3 // 4],
                     (dt.date(1970, 1, 1) + dt.timedelta(days=int(days[0])),
                      dt.date(1970, 1, 1) + dt.timedelta(days=int(days[-1]) + 1)))
    path = write_run(run, tmp_path / "bundle", "default", 7)
    bundle = load_bundle(path)
    assert bundle.manifest.metrics["architecture"]["anomaly_model"] == "gan"


def test_mixed_ensemble_alternates_lstm_and_cnn(dataset: Dataset) -> None:
    rows = np.arange(len(dataset), dtype=np.int64)
    config = dataclasses.replace(TINY, sequence_model="lstm+cnn", sequence_members=2)
    sequence, _ = fit.fit_sequence_members(dataset, rows, _normaliser(dataset), config)
    assert isinstance(sequence, SequenceEnsemble)
    assert [type(m).__name__ for m in sequence.members] == ["SequenceClassifier", "SequenceCNN"]


def test_challengers_score_every_test_row(dataset: Dataset) -> None:
    params = PrequentialParams(n_folds=1, train_days=7, delay_days=3, test_days=5)
    (fold,) = prequential_folds(dataset.day, dataset.customer, dataset.is_fraud, params,
                                "handbook")
    for challenger in ("gan", "cnn"):
        scores = challenger_scores(dataset, fold, TINY, challenger)
        assert scores.shape == fold.test_rows.shape and np.isfinite(scores).all()


def test_unknown_architectures_are_refused_with_the_choices() -> None:
    with pytest.raises(InputDataError, match=r"anomaly_model='vae'; choose one of autoencoder"):
        TrainConfig(anomaly_model="vae")  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"sequence_model='gru'; choose one of lstm"):
        TrainConfig(sequence_model="gru")  # type: ignore[arg-type]
    # the command line offers exactly the architectures training knows (without torch)
    assert train_command.ANOMALY_MODELS == fit.ANOMALY_MODELS
    assert train_command.SEQUENCE_MODELS == fit.SEQUENCE_MODELS
