"""Write a model bundle directory: the four ONNX graphs and a verified manifest.json.

The one entry point, for ``fraudstream train`` and tests::

    write_bundle(
        out_dir,                      # the bundle directory to create (or replace)
        autoencoder=...,              # nn.Module: features -> (reconstruction_error,
                                      #                         feature_errors)
        sequence_model=...,           # nn.Module: (sequence, mask) -> fraud_probability
        stacker=...,                  # training.models.Stacker: (features,
                                      #   reconstruction_error, sequence_probability) -> score
        feature_set=fs,               # stream_app.features.spec.FeatureSet
        normalisation=...,            # column -> {"log1p": bool, "mean": float, "std": float}
                                      # (training.models.FeatureNormaliser.statistics(columns))
        threshold=0.42,               # alert when score >= threshold
        threshold_rule="...",         # how it was chosen, in words
        training_range=(first_day, end_day),  # datetime.date, end exclusive
        metrics={...},                # JSON-serialisable evaluation metrics
        sample_inputs=batch,          # held-out rows: .values [n, F], .sequences [n, K, F],
                                      # .mask [n, K] (e.g. a FeatureBatch), n >= 2
        reference_inputs=rows,        # optional, training rows (same shape): the
                                      # manifest's distributions of features and score
    ) -> Path

Each module is exported with :func:`training.export.export_model`, which refuses an export
whose ONNX outputs differ from PyTorch by more than ``tolerance``. The stacker, and its
:class:`~training.models.StackerExplainer` (the ``explainer`` graph, whose baseline score
the manifest's ``explanation`` records), are checked on the PyTorch outputs of the other
two models for the same rows. The bundle is built in
a temporary sibling directory, loaded back with :func:`stream_app.scoring.bundle.load_bundle`
and only then renamed to ``out_dir``; an existing bundle there is replaced (a directory
that is not a bundle is never touched).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import nn

from stream_app.drift.psi import training_distributions
from stream_app.errors import BundleError
from stream_app.features.spec import FeatureSet, feature_hash
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.contract import CONTRACTS, EXPLAINED_INPUTS, ROLES, ModelRole
from stream_app.scoring.manifest import MANIFEST_FILE, model_version, parse_manifest
from training.export import DEFAULT_TOLERANCE, ExportReport, export_model, torch_outputs
from training.models import Stacker, StackerExplainer

EXPLANATION_METHOD = "deeplift-rescale"
EXPLANATION_BASELINE = (
    "an average training transaction: every feature at its normalisation mean, the "
    "standardised log autoencoder error at its mean and the sequence model's logit at its "
    "mean over the stacker's training rows"
)


class SampleInputs(Protocol):
    """Held-out rows for the agreement check (``FeatureBatch`` has this shape)."""

    @property
    def values(self) -> npt.NDArray[Any]: ...
    @property
    def sequences(self) -> npt.NDArray[Any]: ...
    @property
    def mask(self) -> npt.NDArray[Any]: ...


def write_bundle(
    out_dir: str | Path,
    *,
    autoencoder: nn.Module,
    sequence_model: nn.Module,
    stacker: Stacker,
    feature_set: FeatureSet,
    normalisation: Mapping[str, Mapping[str, float | bool]],
    threshold: float,
    threshold_rule: str,
    training_range: tuple[date, date],
    metrics: Mapping[str, Any],
    sample_inputs: SampleInputs,
    reference_inputs: SampleInputs | None = None,
    created_at: datetime | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Export the models and the stacker's explainer and write the bundle directory
    ``out_dir``; returns it. ``reference_inputs`` (training rows): the manifest's
    ``distributions`` of every feature and of the score are measured on them."""
    target = Path(out_dir)
    created = datetime.now(UTC) if created_at is None else created_at
    if created.tzinfo is None:
        raise BundleError(f"created_at={created.isoformat()} is naive; pass an aware datetime")
    explainer = StackerExplainer(stacker)
    modules: dict[ModelRole, nn.Module] = {
        "autoencoder": autoencoder, "sequence": sequence_model, "combined": stacker,
        "explainer": explainer,
    }
    _check_target(target)
    _check_arguments(feature_set, normalisation, threshold)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        reports = _export_all(modules, sample_inputs, staging, tolerance)
        fhash = feature_hash(feature_set)
        document = _manifest(
            feature_set=feature_set,
            fhash=fhash,
            normalisation=normalisation,
            threshold=threshold,
            threshold_rule=threshold_rule,
            training_range=training_range,
            metrics=metrics,
            created=created,
            reports=reports,
            baseline_score=explainer.baseline_score(),
            distributions=(
                None if reference_inputs is None
                else _distributions(modules, feature_set, reference_inputs)
            ),
        )
        parse_manifest(document, "the manifest being written")
        (staging / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n",
                                             encoding="utf-8")
        load_bundle(staging, expected_feature_hash=fhash)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_arguments(
    feature_set: FeatureSet,
    normalisation: Mapping[str, Mapping[str, float | bool]],
    threshold: float,
) -> None:
    if list(normalisation) != list(feature_set.columns):
        raise BundleError(
            f"normalisation has columns {list(normalisation)}, feature set "
            f"{feature_set.name!r} has {list(feature_set.columns)}; pass "
            "FeatureNormaliser.statistics(feature_set.columns)"
        )
    if not 0.0 <= threshold <= 1.0:
        raise BundleError(f"threshold={threshold} is outside 0..1; scores are probabilities")


def _export_all(
    modules: Mapping[ModelRole, nn.Module],
    sample: SampleInputs,
    directory: Path,
    tolerance: float,
) -> dict[ModelRole, ExportReport]:
    values = np.asarray(sample.values, dtype=np.float32)
    sequences = np.asarray(sample.sequences, dtype=np.float32)
    mask = np.asarray(sample.mask, dtype=np.float32)
    error, _ = torch_outputs(modules["autoencoder"], "autoencoder", [values])
    (probability,) = torch_outputs(modules["sequence"], "sequence", [sequences, mask])
    inputs: dict[ModelRole, list[npt.NDArray[np.float32]]] = {
        "autoencoder": [values],
        "sequence": [sequences, mask],
        "combined": [values, error, probability],
        "explainer": [values, error, probability],
    }
    return {
        role: export_model(
            modules[role], role, inputs[role], directory / CONTRACTS[role].file,
            tolerance=tolerance,
        )
        for role in ROLES
    }


def _manifest(
    *,
    feature_set: FeatureSet,
    fhash: str,
    normalisation: Mapping[str, Mapping[str, float | bool]],
    threshold: float,
    threshold_rule: str,
    training_range: tuple[date, date],
    metrics: Mapping[str, Any],
    created: datetime,
    reports: Mapping[ModelRole, ExportReport],
    baseline_score: float,
    distributions: dict[str, Any] | None,
) -> dict[str, Any]:
    n_features, k = len(feature_set.columns), feature_set.sequence_length
    opsets = {report.opset for report in reports.values()}
    document: dict[str, Any] = {
        "schema": "manifest.v1",
        "model_version": "",
        "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_data": {"from": training_range[0].isoformat(),
                          "to": training_range[1].isoformat()},
        "feature_set": feature_set.name,
        "label_delay_days": feature_set.label_delay_days,
        "feature_hash": fhash,
        "feature_columns": list(feature_set.columns),
        "sequence_length": k,
        "models": {role: CONTRACTS[role].spec(n_features, k) for role in ROLES},
        "normalisation": {
            column: {"log1p": bool(stats["log1p"]), "mean": float(stats["mean"]),
                     "std": float(stats["std"])}
            for column, stats in normalisation.items()
        },
        "explanation": {
            "method": EXPLANATION_METHOD,
            "baseline": EXPLANATION_BASELINE,
            "baseline_score": baseline_score,
            "inputs": [*feature_set.columns, *EXPLAINED_INPUTS],
        },
        "threshold": float(threshold),
        "threshold_rule": threshold_rule,
        "metrics": _json_ready(metrics),
        "onnx_opset": min(opsets),
        "export_max_abs_diff": {role: reports[role].max_abs_diff for role in ROLES},
        "producer": {
            "fraudstream": importlib.metadata.version("fraudstream"),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
        "files": {
            report.path.name: hashlib.sha256(report.path.read_bytes()).hexdigest()
            for report in reports.values()
        },
    }
    if distributions is not None:
        document["distributions"] = distributions
    document["model_version"] = model_version(document)
    return document


_REFERENCE_CHUNK = 8192


def _distributions(
    modules: Mapping[ModelRole, nn.Module], feature_set: FeatureSet, rows: SampleInputs
) -> dict[str, Any]:
    """The ``distributions`` of ``rows``: their feature values and the scores the three
    models give them (PyTorch, which the export check holds to ONNX Runtime's)."""
    values = np.asarray(rows.values, dtype=np.float32)
    sequences = np.asarray(rows.sequences, dtype=np.float32)
    mask = np.asarray(rows.mask, dtype=np.float32)
    scores = []
    for at in range(0, len(values), _REFERENCE_CHUNK):
        part = slice(at, at + _REFERENCE_CHUNK)
        error, _ = torch_outputs(modules["autoencoder"], "autoencoder", [values[part]])
        (probability,) = torch_outputs(
            modules["sequence"], "sequence", [sequences[part], mask[part]]
        )
        (score,) = torch_outputs(
            modules["combined"], "combined", [values[part], error, probability]
        )
        scores.append(score)
    return training_distributions(feature_set.columns, values, np.concatenate(scores))


def _json_ready(metrics: Mapping[str, Any]) -> dict[str, Any]:
    def builtin(value: Any) -> Any:
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        ready: dict[str, Any] = json.loads(json.dumps(dict(metrics), allow_nan=False,
                                                      default=builtin))
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"metrics cannot be written to the manifest ({exc}); pass finite numbers, "
            "strings, lists and dicts only"
        ) from None
    return ready


def _check_target(target: Path) -> None:
    """Refuse to replace anything but a model bundle or an empty directory."""
    if target.exists() and (
        not target.is_dir()
        or (not (target / MANIFEST_FILE).is_file() and any(target.iterdir()))
    ):
        raise BundleError(
            f"{str(target)!r} exists and is not a model bundle (no {MANIFEST_FILE}); "
            "choose a new output directory or remove it"
        )


def _install(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing the bundle there (if any) last."""
    _check_target(target)
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)
