"""The product's training run: labelled history up to a date -> models -> model bundle."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from stream_app.errors import InputDataError
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY
from training.datasets import Dataset, TensorView, build_dataset
from training.fit import FittedModels, Progress, TrainConfig, fit_models
from training.protocol import day_number

SAMPLE_ROWS = 256
REFERENCE_ROWS = 100_000
"""Training rows the manifest's distributions are measured on (evenly spread)."""
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class SampleRows:
    """Rows for the export agreement check: ``values``, ``sequences`` and ``mask``."""

    values: npt.NDArray[np.float32]
    sequences: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]


@dataclass
class TrainedRun:
    """A finished training run and what the bundle manifest records about it."""

    dataset: Dataset
    models: FittedModels
    train_rows: npt.NDArray[np.int64]
    training_range: tuple[dt.date, dt.date]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Training figures for the manifest's ``metrics``."""
        labels = self.dataset.is_fraud[self.train_rows]
        return {
            "training_rows": len(self.train_rows),
            "training_frauds": int(np.count_nonzero(labels)),
            "threshold": self.models.threshold,
            "architecture": self.models.architecture,
            "final_losses": {name: values[-1] for name, values in self.models.losses.items()},
            "seconds": {name: round(value, 1) for name, value in self.seconds.items()},
        }


def labelled_rows(dataset: Dataset, until_us: int) -> npt.NDArray[np.int64]:
    """Rows before ``until_us`` whose label was known by then."""
    rows = np.flatnonzero(
        (dataset.event_time_us < until_us) & (dataset.label_time_us <= until_us)
    ).astype(np.int64)
    if len(rows) == 0 or not dataset.is_fraud[rows].any():
        raise InputDataError(
            f"no labelled frauds before {_EPOCH + dt.timedelta(microseconds=until_us)}; "
            "choose a later --until or a history with labelled frauds"
        )
    return rows


def sample_rows(
    dataset: Dataset, rows: npt.NDArray[np.int64], n: int = SAMPLE_ROWS
) -> SampleRows:
    """``n`` evenly spread rows (export check inputs, or the training distributions')."""
    picked = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(np.int64)]
    view = TensorView(dataset)
    index = torch.from_numpy(picked)
    sequences, mask = view.sequences(index)
    return SampleRows(dataset.values[picked], sequences.numpy(), mask.numpy())


def train_run(
    history: TransactionHistory, feature_set: str, until: dt.date | None,
    config: TrainConfig, progress: Progress | None = None,
) -> TrainedRun:
    """Features, then the three models on every label known at ``until`` (default: the end)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dataset = build_dataset(history, feature_set)
    seconds["features"] = time.perf_counter() - started
    if progress:
        progress(f"features: {len(dataset)} rows x {len(dataset.columns)} "
                 f"({seconds['features']:.0f}s)")
    if len(dataset) == 0:
        raise InputDataError("the history is empty; pass a file with transactions")
    until_us = (
        int(dataset.event_time_us[-1]) + 1 if until is None
        else (until - _EPOCH).days * MICROS_PER_DAY
    )
    rows = labelled_rows(dataset, until_us)
    models = fit_models(dataset, rows, config, progress)
    seconds.update(models.seconds)
    days = day_number(dataset.event_time_us[rows])
    training_range = (
        _EPOCH + dt.timedelta(days=int(days[0])), _EPOCH + dt.timedelta(days=int(days[-1]) + 1)
    )
    return TrainedRun(dataset, models, rows, training_range, seconds)


def write_run(run: TrainedRun, out_dir: Path, feature_set_name: str, label_delay_days: int) -> Path:
    """Export the run as a model bundle in ``out_dir`` (``training.bundle.write_bundle``)."""
    from stream_app.features.spec import feature_set
    from training.bundle import write_bundle

    later = np.arange(int(run.train_rows[-1]) + 1, len(run.dataset), dtype=np.int64)
    held_out = later if len(later) >= 2 else run.train_rows
    started = time.perf_counter()
    path = write_bundle(
        out_dir,
        autoencoder=run.models.autoencoder,
        sequence_model=run.models.sequence,
        stacker=run.models.stacker,
        feature_set=feature_set(feature_set_name, label_delay_days),
        normalisation=run.models.normaliser.statistics(run.models.columns),
        threshold=run.models.threshold,
        threshold_rule=run.models.threshold_rule,
        training_range=run.training_range,
        metrics=run.summary(),
        sample_inputs=sample_rows(run.dataset, held_out),
        reference_inputs=sample_rows(run.dataset, run.train_rows, REFERENCE_ROWS),
    )
    run.seconds["bundle"] = time.perf_counter() - started
    return path
