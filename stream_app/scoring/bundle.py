"""Load and verify a model bundle directory before anything is scored.

A bundle is ``manifest.json`` plus the ONNX files it lists (docs/design.md, "Models").
:func:`load_bundle` refuses, with a :class:`~stream_app.errors.BundleError` that names the
problem and the fix: a missing directory or file, a manifest that breaks the schema or
the ONNX contract or was edited, a file whose sha256 differs from the manifest, and a
bundle trained on feature code other than the running one (``feature_hash``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import BundleError, ConfigError
from stream_app.features.spec import feature_hash, feature_set
from stream_app.scoring.contract import ROLES, ModelRole
from stream_app.scoring.manifest import MANIFEST_FILE, Manifest, parse_manifest

HASH_PREFIX = 12
"""Hex digits of a hash shown in messages."""


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A verified bundle: its manifest and the exact ONNX bytes whose sha256 was checked."""

    path: Path
    manifest: Manifest
    onnx_models: dict[ModelRole, bytes]

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.manifest.feature_columns

    @property
    def sequence_length(self) -> int:
        return self.manifest.sequence_length

    @property
    def threshold(self) -> float:
        return self.manifest.threshold


def load_bundle(path: str | Path, expected_feature_hash: str | None = None) -> ModelBundle:
    """Read and verify the bundle in directory ``path``.

    ``expected_feature_hash`` defaults to the running code's
    ``feature_hash(feature_set(manifest.feature_set, manifest.label_delay_days))``.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(
            f"model bundle directory {str(directory)!r} does not exist; train one with "
            "`fraudstream train` or point FRAUDSTREAM_MODEL_DIR / --models at a bundle"
        )
    manifest_path = directory / MANIFEST_FILE
    manifest_bytes = _read(manifest_path)
    try:
        document = json.loads(manifest_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{manifest_path} is not valid JSON ({exc}); restore the bundle or write a new one"
        ) from None
    manifest = parse_manifest(document, str(manifest_path))
    contents = {name: _verified(directory, name, sha) for name, sha in manifest.files.items()}
    _check_feature_hash(manifest, directory, expected_feature_hash)
    models = {role: contents[manifest.models.by_role(role).file] for role in ROLES}
    return ModelBundle(path=directory, manifest=manifest, onnx_models=models)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"model bundle file {str(path)!r} is missing; the bundle is incomplete: "
            "copy the whole bundle directory again or train a new one"
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot read model bundle file {str(path)!r}: {exc}") from None


def _verified(directory: Path, name: str, expected_sha256: str) -> bytes:
    data = _read(directory / name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise BundleError(
            f"model bundle file {str(directory / name)!r} has sha256 "
            f"{actual[:HASH_PREFIX]}..., the manifest expects {expected_sha256[:HASH_PREFIX]}...; "
            "the file was modified or corrupted: restore the bundle or train a new one"
        )
    return data


def _check_feature_hash(manifest: Manifest, directory: Path, expected: str | None) -> None:
    if expected is None:
        try:
            running = feature_set(manifest.feature_set, manifest.label_delay_days)
        except ConfigError as exc:
            raise BundleError(
                f"model bundle {str(directory)!r} needs feature set {manifest.feature_set!r}, "
                f"which this fraudstream cannot compute ({exc})"
            ) from None
        expected = feature_hash(running)
    if manifest.feature_hash != expected:
        raise BundleError(
            f"model bundle {str(directory)!r} was trained with feature_hash "
            f"{manifest.feature_hash[:HASH_PREFIX]}... for feature set "
            f"{manifest.feature_set!r}, but the running code computes "
            f"{expected[:HASH_PREFIX]}...; the feature code differs from training: retrain "
            "with this version (`fraudstream train`) or run the fraudstream version that "
            f"trained the bundle ({manifest.producer.fraudstream})"
        )
