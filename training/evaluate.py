"""Run the prequential protocol for every model and training variant; write the results.

``metrics.json`` maps model (``autoencoder``, ``lstm``, any challengers: ``gan``, ``cnn``,
then ``combined``) -> training variant
(``handbook``, ``all_history``) -> metric (``auc_roc``, ``average_precision``,
``card_precision_at_100``) -> ``{"mean", "std", "folds": [...]}`` (folds latest first,
std over folds with ``ddof=0``). ``autoencoder`` and ``lstm`` name the roles: they hold
the GAN or the CNN when the configuration says so. A challenger is trained alone on each
fold's training rows and scored on its test rows: ``gan`` the GANomaly score
(``training.gan``), ``cnn`` one 1-D CNN's probability (``training.cnn``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.datasets import Dataset
from training.fit import (
    FittedModels,
    FloatArray,
    IntArray,
    Progress,
    TrainConfig,
    autoencoder_errors,
    combined_scores,
    fit_autoencoder,
    fit_models,
    fit_normaliser,
    fit_sequence,
    sequence_probabilities,
)
from training.metrics import fraud_metrics
from training.protocol import TRAININGS, Fold, PrequentialParams, Training, prequential_folds

MODELS = ("autoencoder", "lstm", "combined")
CHALLENGERS = ("gan", "cnn")
METRICS = ("auc_roc", "average_precision", "card_precision_at_100")
METRICS_FILE = "metrics.json"
PROTOCOL_FILE = "protocol.json"


@dataclass
class FoldResult:
    """One fold of one training variant: its dates, test labels and every model's scores."""

    fold: Fold
    labels: npt.NDArray[np.int8]
    scores: dict[str, npt.NDArray[np.float64]]
    metrics: dict[str, dict[str, float]]
    threshold: float
    train_seconds: float


@dataclass
class Evaluation:
    """All folds of every training variant, and the settings that produced them."""

    feature_set: str
    params: PrequentialParams
    config: TrainConfig
    challengers: tuple[str, ...] = ()
    folds: dict[Training, list[FoldResult]] = field(default_factory=dict)

    @property
    def models(self) -> tuple[str, ...]:
        """Every scored model: the two roles, the challengers, then the served score."""
        return MODELS[:2] + self.challengers + MODELS[2:]

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, object]]]]:
        """The ``metrics.json`` mapping (see the module docstring)."""
        out: dict[str, dict[str, dict[str, dict[str, object]]]] = {}
        for model in self.models:
            out[model] = {}
            for training, results in self.folds.items():
                out[model][training] = {}
                for metric in METRICS:
                    values = [r.metrics[model][metric] for r in results]
                    out[model][training][metric] = {
                        "mean": float(np.mean(values)),
                        "std": float(np.std(values)),
                        "folds": values,
                    }
        return out


def challenger_scores(
    dataset: Dataset, fold: Fold, config: TrainConfig, challenger: str,
    progress: Progress | None = None,
) -> FloatArray:
    """Train one challenger (``gan`` or ``cnn``) alone on the fold; its test-row scores."""
    train: IntArray = fold.train_rows
    normaliser = fit_normaliser(dataset, train)
    if challenger == "gan":
        gan, _ = fit_autoencoder(dataset, train, normaliser,
                                 dataclasses.replace(config, anomaly_model="gan"), progress)
        return autoencoder_errors(gan, dataset, fold.test_rows, config)
    cnn, _ = fit_sequence(dataset, train, normaliser, config, progress, "cnn", "cnn")
    return sequence_probabilities(cnn, dataset, fold.test_rows, config)


def evaluate_fold(
    dataset: Dataset, fold: Fold, config: TrainConfig, progress: Progress | None = None,
    challengers: tuple[str, ...] = (),
) -> tuple[FoldResult, FittedModels]:
    """Train on the fold's training rows, score its test rows, compute every metric.

    ``train_seconds`` covers the bundle's models only, not the challengers."""
    started = time.perf_counter()
    models = fit_models(dataset, fold.train_rows, config, progress)
    seconds = time.perf_counter() - started
    rows = fold.test_rows
    scores = combined_scores(models, dataset, rows, config)
    for challenger in challengers:
        scores[challenger] = challenger_scores(dataset, fold, config, challenger, progress)
    labels = dataset.is_fraud[rows]
    metrics = {
        model: fraud_metrics(dataset.day[rows], dataset.customer[rows], labels, scores[model])
        for model in scores
    }
    result = FoldResult(fold, labels, scores, metrics, models.threshold, seconds)
    return result, models


def evaluate(
    dataset: Dataset, params: PrequentialParams, config: TrainConfig,
    trainings: tuple[Training, ...] = TRAININGS, progress: Progress | None = None,
    challengers: tuple[str, ...] = (),
) -> Evaluation:
    """Every fold of every training variant in ``trainings``, with ``challengers``."""
    evaluation = Evaluation(dataset.feature_set, params, config, challengers)
    for training in trainings:
        folds = prequential_folds(dataset.day, dataset.customer, dataset.is_fraud, params, training)
        evaluation.folds[training] = []
        for fold in folds:
            if progress:
                progress(f"[{training} fold {fold.index + 1}/{len(folds)}] train "
                         f"{fold.train_start}..{fold.train_end} ({len(fold.train_rows)} rows), "
                         f"test {fold.test_start}..{fold.test_end} ({len(fold.test_rows)} rows)")
            result, _ = evaluate_fold(dataset, fold, config, progress, challengers)
            evaluation.folds[training].append(result)
            if progress:
                figures = ", ".join(
                    f"{m} AUC {result.metrics[m]['auc_roc']:.3f} "
                    f"AP {result.metrics[m]['average_precision']:.3f}" for m in evaluation.models
                )
                progress(f"[{training} fold {fold.index + 1}] {figures} "
                         f"({result.train_seconds:.0f}s training)")
    return evaluation


def write_metrics(evaluation: Evaluation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (the summary) and ``protocol.json`` (fold dates, settings)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, protocol_path = out_dir / METRICS_FILE, out_dir / PROTOCOL_FILE
    metrics_path.write_text(json.dumps(evaluation.summary(), indent=2) + "\n")
    protocol = {
        "feature_set": evaluation.feature_set,
        "params": {
            "n_folds": evaluation.params.n_folds,
            "train_days": evaluation.params.train_days,
            "delay_days": evaluation.params.delay_days,
            "test_days": evaluation.params.test_days,
        },
        "folds": {
            training: [
                {
                    "train": [str(r.fold.train_start), str(r.fold.train_end)],
                    "test": [str(r.fold.test_start), str(r.fold.test_end)],
                    "train_rows": len(r.fold.train_rows),
                    "test_rows": len(r.fold.test_rows),
                    "test_frauds": int(np.count_nonzero(r.labels)),
                    "threshold": r.threshold,
                    "train_seconds": round(r.train_seconds, 1),
                }
                for r in results
            ]
            for training, results in evaluation.folds.items()
        },
        "config": dataclasses.asdict(evaluation.config),
        "challengers": list(evaluation.challengers),
    }
    protocol_path.write_text(json.dumps(protocol, indent=2) + "\n")
    return metrics_path, protocol_path
