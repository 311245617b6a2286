"""One small model bundle per test session: ``training.models`` with seeded random weights.

Exporting four graphs takes seconds, so the bundle is written once (to a temporary
directory removed at exit) and shared read-only; tests that tamper with it copy it first.
A bundle with another alert threshold is a copy of it with a re-signed manifest, not a
second export.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from stream_app.features.spec import FeatureSet, feature_set
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.manifest import MANIFEST_FILE, model_version
from training.bundle import write_bundle
from training.export import torch_outputs
from training.models import (
    Autoencoder,
    FeatureNormaliser,
    SequenceClassifier,
    Stacker,
    StackerExplainer,
    log_columns,
)

CREATED_AT = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Rows:
    """Feature rows in the scorer's layout."""

    values: npt.NDArray[np.float32]
    sequences: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]


@dataclass(frozen=True)
class TinyBundle:
    path: Path
    feature_set: FeatureSet
    modules: dict[str, nn.Module]
    sample: Rows
    threshold: float


def random_rows(fs: FeatureSet, n: int, seed: int) -> Rows:
    """Non-negative, count/amount-like rows with padded sequences (current step always real)."""
    rng = np.random.default_rng(seed)
    f, k = len(fs.columns), fs.sequence_length
    sequences = rng.gamma(2.0, 10.0, size=(n, k, f)).astype(np.float32)
    lengths = rng.integers(1, k + 1, size=n)
    mask = (np.arange(k)[None, :] >= (k - lengths)[:, None]).astype(np.float32)
    sequences *= mask[:, :, None]
    return Rows(values=sequences[:, -1].copy(), sequences=sequences, mask=mask)


def tiny_bundle(threshold: float | None = None) -> TinyBundle:
    """The session's bundle; with ``threshold``, the same models alerting at ``threshold``."""
    return _exported() if threshold is None else _with_threshold(threshold)


@cache
def _with_threshold(threshold: float) -> TinyBundle:
    """A copy of the exported bundle whose manifest says ``threshold``.

    The ONNX files are copied as they are, so the manifest's sha256 of each stays right;
    ``model_version`` (the manifest's content hash) is recomputed, and the copy is loaded
    once to prove it verifies.
    """
    exported = _exported()
    path = Path(shutil.copytree(exported.path, exported.path.parent / f"threshold-{threshold}"))
    manifest = path / MANIFEST_FILE
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["threshold"] = threshold
    document["threshold_rule"] = f"fixed {threshold} (tests)"
    document["model_version"] = model_version(document)
    manifest.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    load_bundle(path)
    return replace(exported, path=path, threshold=threshold)


@cache
def _exported() -> TinyBundle:
    fs = feature_set("default")
    torch.manual_seed(7)
    fit_rows = random_rows(fs, 256, seed=1)
    normaliser = FeatureNormaliser.fit(fit_rows.values, log_columns(fit_rows.values))
    autoencoder = Autoencoder(normaliser, hidden=16, code=4)
    sequence = SequenceClassifier(normaliser, hidden=8, head=8)
    stacker = Stacker(normaliser, hidden=8)
    stacker.sequence_logit_mean.fill_(-2.0)  # a baseline other than p = 0.5
    modules: dict[str, nn.Module] = {
        "autoencoder": autoencoder, "sequence": sequence, "combined": stacker,
        "explainer": StackerExplainer(stacker),
    }
    root = Path(tempfile.mkdtemp(prefix="fraudstream-test-bundle-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    sample = random_rows(fs, 64, seed=2)
    threshold = _median_score(modules, sample)
    path = write_bundle(
        root / "bundle",
        autoencoder=modules["autoencoder"],
        sequence_model=modules["sequence"],
        stacker=stacker,
        feature_set=fs,
        normalisation=normaliser.statistics(fs.columns),
        threshold=threshold,
        threshold_rule="median PyTorch score of the 64 sample rows (tests)",
        training_range=(dt.date(2018, 8, 1), dt.date(2018, 8, 8)),
        metrics={"auc_roc": 0.5, "folds": [{"index": 0, "average_precision": 0.1}]},
        sample_inputs=sample,
        reference_inputs=fit_rows,
        created_at=CREATED_AT,
    )
    return TinyBundle(path, fs, modules, sample, threshold)


def _median_score(modules: dict[str, nn.Module], rows: Rows) -> float:
    """Random weights put every score near one value; the median splits them in two."""
    error, _ = torch_outputs(modules["autoencoder"], "autoencoder", [rows.values])
    (probability,) = torch_outputs(modules["sequence"], "sequence", [rows.sequences, rows.mask])
    (score,) = torch_outputs(modules["combined"], "combined", [rows.values, error, probability])
    return float(np.median(score))
