"""Training loops: autoencoder, sequence classifier and the calibrated stacker.

All three models of a run share one normaliser fitted on the training rows, so the
bundle manifest's normalisation statistics hold for every graph.

Deterministic on CPU: every loop seeds torch and draws its batches from its own seeded
generator. The stacker never sees sequence probabilities of rows the sequence model was
trained on: they come from cross-fitting (models trained on the other customers); its
Platt scaling and the decision threshold come from the last ``calibration_share`` of the
training rows (in time), which the stacker itself does not train on.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from stream_app.errors import InputDataError
from training.cnn import SequenceCNN
from training.datasets import Dataset, TensorView
from training.gan import GanDetector, train_gan
from training.models import (
    Autoencoder,
    FeatureNormaliser,
    SequenceClassifier,
    SequenceEnsemble,
    Stacker,
    log_columns,
)

AnomalyModel = Literal["autoencoder", "gan"]
SequenceModel = Literal["lstm", "cnn", "lstm+cnn"]
ANOMALY_MODELS: Final[tuple[str, ...]] = get_args(AnomalyModel)
SEQUENCE_MODELS: Final[tuple[str, ...]] = get_args(SequenceModel)
"""``lstm+cnn``: an ensemble alternating LSTM and CNN members (LSTM first)."""
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]
THRESHOLD_RULE = (
    "maximum F1 of the calibrated combined score on the calibration window (the last "
    "{share:.0%} of the training rows in time, unseen by the stacker's weights)"
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the defaults are the product's run)."""

    seed: int = 0
    anomaly_model: AnomalyModel = "autoencoder"
    """Model in the ``autoencoder`` role: the dense autoencoder or the GANomaly generator."""
    sequence_model: SequenceModel = "lstm"
    """Architecture of the sequence members (``training.cnn`` for the 1-D CNN)."""
    threads: int = 1
    """Intra-op threads: the models are small, and one thread per process avoids
    oversubscription on a shared 2-core machine (benchmarks/bench_training.py)."""
    batch_size: int = 256
    rows_per_epoch: int = 200_000
    """Each epoch draws at most this many training rows (all rows when fewer)."""
    autoencoder_epochs: int = 8
    autoencoder_hidden: int = 32
    autoencoder_code: int = 8
    sequence_epochs: int = 8
    sequence_hidden: int = 32
    sequence_members: int = 1
    """Served sequence model: the mean logit of this many LSTMs (seeds seed, seed+1, ...)."""
    learning_rate: float = 1e-3
    cross_fit_folds: int = 2
    stacker_epochs: int = 20
    stacker_hidden: int = 16
    calibration_share: float = 0.25
    inference_batch: int = 8192

    def __post_init__(self) -> None:
        if not 0.0 < self.calibration_share < 1.0:
            raise InputDataError(
                f"calibration_share={self.calibration_share} must be strictly between 0 and 1"
            )
        if self.anomaly_model not in ANOMALY_MODELS:
            raise InputDataError(f"anomaly_model={self.anomaly_model!r}; choose one of "
                                 f"{', '.join(ANOMALY_MODELS)}")
        if self.sequence_model not in SEQUENCE_MODELS:
            raise InputDataError(f"sequence_model={self.sequence_model!r}; choose one of "
                                 f"{', '.join(SEQUENCE_MODELS)}")
        if self.sequence_members < 1:
            raise InputDataError(f"sequence_members={self.sequence_members} must be at least 1")
        if self.cross_fit_folds < 2:
            raise InputDataError(f"cross_fit_folds={self.cross_fit_folds} must be at least 2")


@dataclass
class FittedModels:
    """The three trained models, the decision threshold and how it was chosen."""

    columns: tuple[str, ...]
    normaliser: FeatureNormaliser
    autoencoder: Autoencoder | GanDetector
    sequence: SequenceClassifier | SequenceCNN | SequenceEnsemble
    stacker: Stacker
    threshold: float
    threshold_rule: str
    architecture: dict[str, str | int] = field(default_factory=dict)
    """What fills each role (for the manifest's ``metrics``)."""
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each training stage."""


def configure_torch(config: TrainConfig) -> None:
    """Thread count and deterministic kernels for reproducible CPU training."""
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _chunks(rows: Tensor, size: int) -> list[Tensor]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _epoch_batches(
    rows: Tensor, config: TrainConfig, generator: torch.Generator
) -> list[Tensor]:
    order = torch.randperm(len(rows), generator=generator)[: config.rows_per_epoch]
    return _chunks(rows[order], config.batch_size)


def _train_epochs(
    optimiser: torch.optim.Optimizer, rows: IntArray, batch_loss: Callable[[Tensor], Tensor],
    epochs: int, config: TrainConfig, on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Minimise ``batch_loss`` over shuffled batches of ``rows``; the mean loss per epoch."""
    generator = _generator(config.seed)
    row_tensor = torch.from_numpy(rows)
    losses: list[float] = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for batch in _epoch_batches(row_tensor, config, generator):
            loss = batch_loss(batch)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += loss.item() * len(batch)
            count += len(batch)
        losses.append(total / count)
        if on_epoch:
            on_epoch(epoch, losses[-1])
    return losses


def _epoch_reporter(
    progress: Progress | None, label: str, epochs: int
) -> Callable[[int, float], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda epoch, loss: report(f"{label} epoch {epoch + 1}/{epochs} loss {loss:.4f}")


def fit_normaliser(dataset: Dataset, rows: IntArray) -> FeatureNormaliser:
    """The normaliser every model of a run shares (statistics of the training rows)."""
    _require_rows(rows, "normaliser")
    values = dataset.values[rows]
    return FeatureNormaliser.fit(values, log_columns(values))


def _require_rows(rows: IntArray, what: str) -> None:
    if len(rows) == 0:
        raise InputDataError(f"no training rows for the {what}; widen the training window")


def fit_autoencoder(
    dataset: Dataset, rows: IntArray, normaliser: FeatureNormaliser, config: TrainConfig,
    progress: Progress | None = None,
) -> tuple[Autoencoder | GanDetector, list[float]]:
    """Train ``config.anomaly_model`` on the genuine transactions among ``rows`` (the
    autoencoder on mean squared error, the GAN adversarially: ``training.gan``)."""
    genuine = rows[dataset.is_fraud[rows] == 0]
    _require_rows(genuine, f"{config.anomaly_model} (genuine transactions)")
    torch.manual_seed(config.seed)
    if config.anomaly_model == "gan":
        generator = _generator(config.seed)
        genuine_tensor = torch.from_numpy(genuine)
        return train_gan(
            normaliser, TensorView(dataset).features,
            lambda: [_epoch_batches(genuine_tensor, config, generator)
                     for _ in range(config.autoencoder_epochs)],
            config.autoencoder_hidden, config.autoencoder_code, config.learning_rate,
            _epoch_reporter(progress, "gan", config.autoencoder_epochs),
        )
    model = Autoencoder(
        copy.deepcopy(normaliser), config.autoencoder_hidden, config.autoencoder_code
    )
    view = TensorView(dataset)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    def batch_loss(batch: Tensor) -> Tensor:
        error, _ = model(view.features(batch))
        loss: Tensor = error.mean()
        return loss

    losses = _train_epochs(
        optimiser, genuine, batch_loss, config.autoencoder_epochs, config,
        _epoch_reporter(progress, "autoencoder", config.autoencoder_epochs),
    )
    model.eval()
    return model, losses


def fit_sequence(
    dataset: Dataset, rows: IntArray, normaliser: FeatureNormaliser, config: TrainConfig,
    progress: Progress | None = None, label: str = "sequence", architecture: str = "lstm",
) -> tuple[SequenceClassifier | SequenceCNN, list[float]]:
    """Train an LSTM (or with ``architecture="cnn"`` a 1-D CNN) on ``rows`` (binary
    cross-entropy on the latest transaction)."""
    _require_rows(rows, "sequence model")
    torch.manual_seed(config.seed)
    model: SequenceClassifier | SequenceCNN = (
        SequenceCNN(copy.deepcopy(normaliser), config.sequence_hidden) if architecture == "cnn"
        else SequenceClassifier(copy.deepcopy(normaliser), config.sequence_hidden)
    )
    view = TensorView(dataset)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()

    def batch_loss(batch: Tensor) -> Tensor:
        sequence, mask = view.sequences(batch)
        loss: Tensor = loss_fn(model.logits(sequence, mask), view.labels[batch])
        return loss

    losses = _train_epochs(
        optimiser, rows, batch_loss, config.sequence_epochs, config,
        _epoch_reporter(progress, label, config.sequence_epochs),
    )
    model.eval()
    return model, losses


def _batched(rows: IntArray, size: int) -> list[Tensor]:
    return _chunks(torch.from_numpy(rows), size)


@torch.no_grad()
def autoencoder_errors(
    model: Autoencoder | GanDetector, dataset: Dataset, rows: IntArray, config: TrainConfig
) -> FloatArray:
    """Reconstruction errors of ``rows``."""
    view = TensorView(dataset)
    parts = [model(view.features(b))[0] for b in _batched(rows, config.inference_batch)]
    return torch.cat(parts).double().numpy() if parts else np.empty(0)


@torch.no_grad()
def sequence_probabilities(
    model: SequenceClassifier | SequenceCNN | SequenceEnsemble, dataset: Dataset, rows: IntArray,
    config: TrainConfig,
) -> FloatArray:
    """Fraud probabilities of ``rows``."""
    view = TensorView(dataset)
    parts = [model(*view.sequences(b)) for b in _batched(rows, config.inference_batch)]
    return torch.cat(parts).double().numpy() if parts else np.empty(0)


@torch.no_grad()
def combined_scores(
    models: FittedModels, dataset: Dataset, rows: IntArray, config: TrainConfig
) -> dict[str, FloatArray]:
    """``autoencoder`` error, ``lstm`` probability and ``combined`` score of ``rows``."""
    error = autoencoder_errors(models.autoencoder, dataset, rows, config)
    probability = sequence_probabilities(models.sequence, dataset, rows, config)
    features = torch.from_numpy(dataset.values[rows])
    score = models.stacker(features, torch.from_numpy(error).float(),
                           torch.from_numpy(probability).float())
    return {"autoencoder": error, "lstm": probability, "combined": score.double().numpy()}


def fit_sequence_members(
    dataset: Dataset, rows: IntArray, normaliser: FeatureNormaliser, config: TrainConfig,
    progress: Progress | None = None,
) -> tuple[SequenceClassifier | SequenceCNN | SequenceEnsemble, list[float]]:
    """The served sequence model: one member, or an ensemble of ``sequence_members``."""
    members: list[SequenceClassifier | SequenceCNN] = []
    losses: list[float] = []
    for i in range(config.sequence_members):
        member_config = dataclasses.replace(config, seed=config.seed + i)
        label = "sequence" if config.sequence_members == 1 else (
            f"sequence member {i + 1}/{config.sequence_members}")
        model, member_losses = fit_sequence(dataset, rows, normaliser, member_config,
                                            progress, label, member_architecture(config, i))
        members.append(model)
        losses.append(member_losses[-1])
    if len(members) == 1:
        return members[0], member_losses
    return SequenceEnsemble(members), losses


def member_architecture(config: TrainConfig, index: int) -> str:
    """``lstm`` or ``cnn``: the architecture of sequence member ``index``."""
    if config.sequence_model == "lstm+cnn":
        return "lstm" if index % 2 == 0 else "cnn"
    return config.sequence_model


def cross_fitted_probabilities(
    dataset: Dataset, rows: IntArray, normaliser: FeatureNormaliser, config: TrainConfig,
    progress: Progress | None = None,
) -> FloatArray:
    """Sequence probabilities of ``rows``, each from a model trained on other customers."""
    customers = np.unique(dataset.customer[rows])
    shuffled = np.random.default_rng(config.seed).permutation(customers)
    group_of = dict(zip(shuffled.tolist(), (np.arange(len(shuffled)) % config.cross_fit_folds)
                        .tolist(), strict=True))
    group = np.array([group_of[c] for c in dataset.customer[rows].tolist()], dtype=np.int64)
    out = np.empty(len(rows), dtype=np.float64)
    for g in range(config.cross_fit_folds):
        held_out = group == g
        model, _ = fit_sequence(dataset, rows[~held_out], normaliser, config, progress,
                                f"cross-fit {g + 1}/{config.cross_fit_folds}",
                                member_architecture(config, 0))
        out[held_out] = sequence_probabilities(model, dataset, rows[held_out], config)
    return out


def fit_platt(logits: FloatArray, labels: npt.NDArray[np.integer]) -> tuple[float, float]:
    """Platt scaling: ``(scale, bias)`` of the logistic regression of labels on logits.

    Newton's method on the (slightly L2-regularised) log-loss, from the identity map.
    """
    y = (np.asarray(labels) != 0).astype(np.float64)
    design = np.column_stack([logits, np.ones_like(logits)])
    params = np.array([1.0, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ params)))
        gradient = design.T @ (p - y) + 1e-6 * params
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if float(np.abs(step).max()) < 1e-9:
            break
    return float(params[0]), float(params[1])


def max_f1_threshold(labels: npt.NDArray[np.integer], scores: FloatArray) -> float:
    """The score threshold (decision ``score >= threshold``) with the highest F1."""
    y = np.asarray(labels) != 0
    if not y.any():
        return 1.0
    order = np.argsort(-scores, kind="mergesort")
    s, hits = scores[order], np.cumsum(y[order])
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    flagged = np.arange(1, len(s) + 1)
    f1 = 2 * hits / (flagged + y.sum())
    best = int(np.argmax(np.where(last_of_tie, f1, -1.0)))
    return float(s[best])


def fit_stacker(
    dataset: Dataset, rows: IntArray, error: FloatArray, probability: FloatArray,
    normaliser: FeatureNormaliser, config: TrainConfig, progress: Progress | None = None,
) -> tuple[Stacker, float, list[float]]:
    """Stacker on the earlier rows, Platt scaling and threshold on the later ones."""
    split = int(len(rows) * (1.0 - config.calibration_share))
    fit_part, calibration = np.arange(split), np.arange(split, len(rows))
    labels = torch.from_numpy(dataset.is_fraud[rows].astype(np.float32))
    if labels[fit_part].sum() == 0 or labels[calibration].sum() == 0:
        raise InputDataError(
            "the stacker needs frauds both before and after the calibration split of the "
            f"training window ({len(rows)} rows); widen the training window"
        )
    torch.manual_seed(config.seed)
    stacker = Stacker(copy.deepcopy(normaliser), config.stacker_hidden)
    features = torch.from_numpy(dataset.values[rows])
    error_t = torch.from_numpy(error).float()
    probability_t = torch.from_numpy(probability).float()
    stacker.set_error_statistics(error_t[fit_part])
    stacker.set_sequence_baseline(probability_t[fit_part])
    optimiser = torch.optim.Adam(stacker.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()

    def batch_loss(batch: Tensor) -> Tensor:
        logits = stacker.logits(features[batch], error_t[batch], probability_t[batch])
        loss: Tensor = loss_fn(logits, labels[batch])
        return loss

    losses = _train_epochs(optimiser, fit_part, batch_loss, config.stacker_epochs, config)
    stacker.eval()
    with torch.no_grad():
        held = torch.from_numpy(calibration)
        logits = stacker.logits(features[held], error_t[held], probability_t[held])
    held_labels = dataset.is_fraud[rows][calibration]
    scale, bias = fit_platt(logits.double().numpy(), held_labels)
    stacker.platt_scale.fill_(scale)
    stacker.platt_bias.fill_(bias)
    with torch.no_grad():
        calibrated = torch.sigmoid(scale * logits + bias).double().numpy()
    threshold = max_f1_threshold(held_labels, calibrated)
    if progress:
        progress(f"stacker loss {losses[-1]:.4f}, Platt scale {scale:.3f} bias {bias:.3f}, "
                 f"threshold {threshold:.4f}")
    return stacker, threshold, losses


def fit_models(
    dataset: Dataset, rows: IntArray, config: TrainConfig, progress: Progress | None = None
) -> FittedModels:
    """Train the autoencoder, the sequence model and the stacker on ``rows`` (history order)."""
    configure_torch(config)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    normaliser = fit_normaliser(dataset, rows)
    autoencoder, ae_losses = fit_autoencoder(dataset, rows, normaliser, config, progress)
    error = autoencoder_errors(autoencoder, dataset, rows, config)
    lap("autoencoder")
    probability = cross_fitted_probabilities(dataset, rows, normaliser, config, progress)
    lap("cross_fit")
    sequence, seq_losses = fit_sequence_members(dataset, rows, normaliser, config, progress)
    lap("sequence")
    stacker, threshold, stack_losses = fit_stacker(
        dataset, rows, error, probability, normaliser, config, progress
    )
    lap("stacker")
    return FittedModels(
        columns=dataset.columns,
        normaliser=normaliser,
        autoencoder=autoencoder,
        sequence=sequence,
        stacker=stacker,
        threshold=threshold,
        threshold_rule=THRESHOLD_RULE.format(share=config.calibration_share),
        architecture={"anomaly_model": config.anomaly_model,
                      "sequence_model": config.sequence_model,
                      "sequence_members": config.sequence_members},
        losses={"autoencoder": ae_losses, "sequence": seq_losses, "stacker": stack_losses},
        seconds=seconds,
    )
