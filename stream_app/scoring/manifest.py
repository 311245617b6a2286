"""manifest.json of a model bundle: validation, typed view and content hash.

Validity is decided by ``schemas/manifest.v1.json`` alone, through ``jsonschema`` (a serving
dependency: a manifest is read once per process, so a second hand-written copy of the
rules would only risk drifting from the schema). The msgspec structs below are the typed
view of a document that already passed the schema, plus the checks a schema cannot
express: tensor shapes against the feature columns, the ONNX contract's names, and the
content hash inside ``model_version``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from itertools import pairwise
from typing import Any, Final

import jsonschema
import msgspec

from schemas import load_schema
from stream_app.drift.psi import Distributions
from stream_app.errors import BundleError
from stream_app.scoring.contract import CONTRACTS, EXPLAINED_INPUTS, ROLES, ModelRole

SCHEMA_NAME: Final = "manifest.v1"
MANIFEST_FILE: Final = "manifest.json"
CONTENT_HASH_DIGITS: Final = 12


class TensorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A graph input or output: name, dtype and shape (``"batch"`` = dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ONNX file of the bundle and its tensors."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class ModelSpecs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The four graphs by role."""

    autoencoder: ModelSpec
    sequence: ModelSpec
    combined: ModelSpec
    explainer: ModelSpec

    def by_role(self, role: ModelRole) -> ModelSpec:
        spec: ModelSpec = getattr(self, role)
        return spec


class FeatureStatistics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``z = (t(x) - mean) / std``, ``t = log1p(max(x, 0))`` when ``log1p``."""

    log1p: bool
    mean: float
    std: float


class TrainingData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Training days, ``from`` inclusive, ``to`` exclusive (ISO dates)."""

    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")


class ExportAgreement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Max abs difference PyTorch vs ONNX Runtime per role, measured at export."""

    autoencoder: float
    sequence: float
    combined: float
    explainer: float


class Explanation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the explainer's contributions mean: they sum to ``score - baseline_score``."""

    method: str
    baseline: str
    baseline_score: float
    inputs: tuple[str, ...]
    """The contribution columns: the feature columns, then ``EXPLAINED_INPUTS``."""


class Producer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Software versions that wrote the bundle."""

    fraudstream: str
    torch: str
    onnx: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Typed view of a manifest.v1 document (see the schema for every field)."""

    schema: str
    model_version: str
    created_at: str
    training_data: TrainingData
    feature_set: str
    label_delay_days: int
    feature_hash: str
    feature_columns: tuple[str, ...]
    sequence_length: int
    models: ModelSpecs
    normalisation: dict[str, FeatureStatistics]
    explanation: Explanation
    threshold: float
    threshold_rule: str
    metrics: dict[str, Any]
    onnx_opset: int
    export_max_abs_diff: ExportAgreement
    producer: Producer
    files: dict[str, str]
    distributions: Distributions | None = None
    """The training distributions of the features and the score (None: an older bundle)."""


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema(SCHEMA_NAME)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Keys sorted, no whitespace, UTF-8: the bytes the content hash is taken over."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def content_hash(document: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``document`` without ``model_version``."""
    body = {key: value for key, value in document.items() if key != "model_version"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def model_version(document: Mapping[str, Any]) -> str:
    """``<feature_set>-<YYYYMMDD of created_at>-<first 12 hex digits of content_hash>``."""
    created = datetime.fromisoformat(str(document["created_at"]))
    short = content_hash(document)[:CONTENT_HASH_DIGITS]
    return f"{document['feature_set']}-{created:%Y%m%d}-{short}"


def parse_manifest(document: Any, source: str) -> Manifest:
    """Validate a decoded manifest.json against the schema and the ONNX contract.

    ``source`` names the file in error messages. Raises :class:`BundleError`.
    """
    _refuse_without_explainer(document, source)
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "$" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first.absolute_path
        )
        raise BundleError(
            f"{source} does not match {SCHEMA_NAME} at {where}: {first.message}; "
            "rewrite the bundle with training/bundle.py (fraudstream train) instead of "
            "editing the manifest"
        )
    manifest = msgspec.convert(document, Manifest)
    _check_consistency(manifest, source)
    expected_version = model_version(document)
    if manifest.model_version != expected_version:
        raise BundleError(
            f"{source}: model_version {manifest.model_version!r} does not match the "
            f"manifest's content ({expected_version!r}); the manifest was edited after it "
            "was written: restore it or write a new bundle with training/bundle.py"
        )
    return manifest


def _refuse_without_explainer(document: Any, source: str) -> None:
    """A bundle written before the explainer graph existed: say to retrain it."""
    models = document.get("models") if isinstance(document, dict) else None
    if isinstance(models, dict) and "explainer" not in models:
        raise BundleError(
            f"{source} lists no explainer graph: the bundle was written by an older "
            "fraudstream, whose alerts' reasons did not explain the score; retrain it with "
            "`fraudstream train` (or training/bundle.py) against this version"
        )


def _check_consistency(manifest: Manifest, source: str) -> None:
    n_features = len(manifest.feature_columns)
    k = manifest.sequence_length
    problems: list[str] = []
    if list(manifest.normalisation) != list(manifest.feature_columns):
        problems.append("normalisation must list exactly the feature_columns, in order")
    if manifest.explanation.inputs != (*manifest.feature_columns, *EXPLAINED_INPUTS):
        problems.append(
            f"explanation.inputs must be the feature_columns, then {list(EXPLAINED_INPUTS)}"
        )
    if manifest.training_data.start >= manifest.training_data.end:
        problems.append(
            f"training_data from {manifest.training_data.start} must be before "
            f"to {manifest.training_data.end}"
        )
    problems += _distribution_problems(manifest)
    for role in ROLES:
        contract = CONTRACTS[role]
        expected = contract.spec(n_features, k)
        spec = manifest.models.by_role(role)
        actual = msgspec.to_builtins(spec)
        actual["inputs"] = [{**t, "shape": list(t["shape"])} for t in actual["inputs"]]
        actual["outputs"] = [{**t, "shape": list(t["shape"])} for t in actual["outputs"]]
        if actual != expected:
            problems.append(f"models.{role} is {actual}, the ONNX contract needs {expected}")
        if spec.file not in manifest.files:
            problems.append(f"models.{role}.file {spec.file!r} has no sha256 in files")
    if problems:
        raise BundleError(
            f"{source} is inconsistent: {'; '.join(problems)}; write the bundle with "
            "training/bundle.py against this fraudstream version"
        )


def _distribution_problems(manifest: Manifest) -> list[str]:
    """What a schema cannot check of ``distributions``: every feature column, and bins."""
    if manifest.distributions is None:
        return []
    problems = []
    if list(manifest.distributions.features) != list(manifest.feature_columns):
        problems.append("distributions.features must list exactly the feature_columns, in order")
    named = [*manifest.distributions.features.items(), ("score", manifest.distributions.score)]
    for name, binned in named:
        edges = binned.edges
        if len(binned.proportions) != len(edges) + 1:
            problems.append(f"distributions of {name}: {len(edges)} edges need "
                            f"{len(edges) + 1} proportions, got {len(binned.proportions)}")
        if any(b <= a for a, b in pairwise(edges)):
            problems.append(f"distributions of {name}: edges must be strictly ascending")
        if abs(sum(binned.proportions) - 1) > 1e-6:
            problems.append(f"distributions of {name}: proportions sum to "
                            f"{sum(binned.proportions):.6f}, not 1")
    return problems
