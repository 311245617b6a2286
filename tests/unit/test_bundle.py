"""Bundle writing and loading: schema, model_version, and every refusal of load_bundle."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from schemas import load_schema
from stream_app.errors import BundleError
from stream_app.features.spec import feature_hash
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.contract import CONTRACTS, ROLES
from stream_app.scoring.manifest import Manifest, content_hash, model_version
from tests.unit.model_bundles import tiny_bundle
from training.bundle import write_bundle

pytestmark = pytest.mark.train


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle().path, tmp_path / "bundle"))


def _manifest(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return document


def _rewrite(path: Path, document: dict[str, Any], *, resign: bool) -> None:
    """Write ``document``; ``resign`` recomputes model_version as a real writer would."""
    if resign:
        document["model_version"] = model_version(document)
    (path / "manifest.json").write_text(json.dumps(document))


def test_manifest_schema_is_valid_and_describes_every_field() -> None:
    schema = load_schema("manifest.v1")
    jsonschema.Draft202012Validator.check_schema(schema)
    undescribed: list[str] = []

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        for name, child in node.get("properties", {}).items():
            if "description" not in child:
                undescribed.append(f"{where}.{name}")
            walk(child, f"{where}.{name}")
        for key in ("additionalProperties", "items"):
            walk(node.get(key), f"{where}[{key}]")
        for name, child in node.get("$defs", {}).items():
            walk(child, f"$defs.{name}")

    walk(schema, "$")
    assert undescribed == []


def test_written_manifest_validates_against_the_schema() -> None:
    document = _manifest(tiny_bundle().path)
    schema = load_schema("manifest.v1")
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)
    fs = tiny_bundle().feature_set
    assert document["feature_columns"] == list(fs.columns)
    assert document["sequence_length"] == fs.sequence_length
    assert document["feature_hash"] == feature_hash(fs)
    assert document["threshold"] == tiny_bundle().threshold
    assert document["training_data"] == {"from": "2018-08-01", "to": "2018-08-08"}
    assert document["created_at"] == "2026-11-23T09:30:00Z"
    assert document["models"]["sequence"]["inputs"][0] == {
        "name": "sequence", "dtype": "float32",
        "shape": ["batch", fs.sequence_length, len(fs.columns)],
    }
    assert list(document["normalisation"]) == list(fs.columns)
    assert set(document["files"]) == {CONTRACTS[role].file for role in ROLES}
    for name, sha in document["files"].items():
        assert hashlib.sha256((tiny_bundle().path / name).read_bytes()).hexdigest() == sha


def test_model_version_is_feature_set_date_and_content_hash() -> None:
    document = _manifest(tiny_bundle().path)
    assert document["model_version"] == f"default-20261123-{content_hash(document)[:12]}"
    edited = {**document, "threshold": 0.25}
    assert content_hash(edited) != content_hash(document)


def test_every_schema_property_has_a_manifest_struct_field() -> None:
    """The typed view (msgspec) and the schema (the validator) name the same fields."""

    def struct_fields(kind: Any) -> set[str]:
        return {f.encode_name for f in msgspec.structs.fields(kind)}

    schema = load_schema("manifest.v1")
    assert struct_fields(Manifest) == set(schema["properties"])
    info = msgspec.inspect.type_info(Manifest)
    assert isinstance(info, msgspec.inspect.StructType)
    by_name = {f.encode_name: f.type for f in info.fields}
    for name in ("training_data", "export_max_abs_diff", "producer", "models"):
        field_type = by_name[name]
        assert isinstance(field_type, msgspec.inspect.StructType)
        assert {f.encode_name for f in field_type.fields} == set(
            schema["properties"][name]["properties"]
        )
    model = by_name["models"]
    assert isinstance(model, msgspec.inspect.StructType)
    spec = model.fields[0].type
    assert isinstance(spec, msgspec.inspect.StructType)
    assert {f.encode_name for f in spec.fields} == set(schema["$defs"]["model"]["properties"])


def test_load_bundle_round_trips_what_was_written() -> None:
    bundle = load_bundle(tiny_bundle().path)
    assert bundle.feature_columns == tiny_bundle().feature_set.columns
    assert bundle.threshold == tiny_bundle().threshold
    assert bundle.model_version == _manifest(tiny_bundle().path)["model_version"]
    assert set(bundle.onnx_models) == set(ROLES)
    for role in ROLES:
        written = (tiny_bundle().path / CONTRACTS[role].file).read_bytes()
        assert bundle.onnx_models[role] == written


def test_tampered_onnx_file_is_refused_naming_file_and_hashes(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    target = path / "sequence.onnx"
    expected = hashlib.sha256(target.read_bytes()).hexdigest()
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleError) as caught:
        load_bundle(path)
    message = str(caught.value)
    assert "sequence.onnx" in message
    assert f"sha256 {actual[:12]}..., the manifest expects {expected[:12]}..." in message


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    document["threshold"] = 0.05
    _rewrite(path, document, resign=False)
    with pytest.raises(BundleError, match=r"does not match the manifest's content.*edited"):
        load_bundle(path)


def test_manifest_breaking_the_schema_is_refused_with_the_path(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    document["threshold"] = 1.5
    _rewrite(path, document, resign=True)
    with pytest.raises(BundleError, match=r"does not match manifest\.v1 at \$\.threshold: 1\.5"):
        load_bundle(path)


def test_manifest_breaking_the_onnx_contract_is_refused(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    document["models"]["combined"]["outputs"][0]["name"] = "probability"
    _rewrite(path, document, resign=True)
    with pytest.raises(BundleError, match=r"inconsistent: models\.combined is .*probability"):
        load_bundle(path)


def test_bundle_without_an_explainer_is_refused_with_retrain(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    (path / CONTRACTS["explainer"].file).unlink()
    del document["models"]["explainer"], document["files"][CONTRACTS["explainer"].file]
    del document["export_max_abs_diff"]["explainer"], document["explanation"]
    _rewrite(path, document, resign=True)
    with pytest.raises(BundleError, match=r"lists no explainer graph: .*older fraudstream.*"
                                          r"retrain it with `fraudstream train`"):
        load_bundle(path)


def test_explanation_inputs_must_name_the_contribution_columns(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    assert document["explanation"]["inputs"] == [
        *document["feature_columns"], "autoencoder_error", "sequence_probability"
    ]
    assert 0 < document["explanation"]["baseline_score"] < 1
    document["explanation"]["inputs"] = document["explanation"]["inputs"][::-1]
    _rewrite(path, document, resign=True)
    with pytest.raises(BundleError, match=r"inconsistent: explanation\.inputs must be"):
        load_bundle(path)


def test_feature_hash_mismatch_is_refused_with_both_hashes_and_the_fix(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    document = _manifest(path)
    trained_with = "0123456789ab" + "c" * 52
    document["feature_hash"] = trained_with
    _rewrite(path, document, resign=True)
    running = feature_hash(tiny_bundle().feature_set)
    with pytest.raises(BundleError) as caught:
        load_bundle(path)
    message = str(caught.value)
    assert f"feature_hash {trained_with[:12]}..." in message
    assert f"running code computes {running[:12]}..." in message
    assert "retrain" in message and "fraudstream version that trained" in message


def test_explicit_expected_feature_hash_is_honoured() -> None:
    with pytest.raises(BundleError, match="feature_hash"):
        load_bundle(tiny_bundle().path, expected_feature_hash="f" * 64)


def test_missing_bundle_directory_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"'.*nowhere' does not exist; train one"):
        load_bundle(tmp_path / "nowhere")


def test_missing_onnx_file_is_named(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    (path / "combined.onnx").unlink()
    with pytest.raises(BundleError, match=r"combined\.onnx' is missing"):
        load_bundle(path)


def test_missing_or_broken_manifest_is_named(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        load_bundle(path)
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json' is missing"):
        load_bundle(path)


def _write(out_dir: Path, **changes: Any) -> Path:
    bundle = tiny_bundle()
    arguments: dict[str, Any] = {
        "autoencoder": bundle.modules["autoencoder"],
        "sequence_model": bundle.modules["sequence"],
        "stacker": bundle.modules["combined"],
        "feature_set": bundle.feature_set,
        "normalisation": _manifest(bundle.path)["normalisation"],
        "threshold": 0.5,
        "threshold_rule": "x",
        "training_range": (dt.date(2018, 1, 1), dt.date(2018, 1, 8)),
        "metrics": {},
        "sample_inputs": bundle.sample,
    }
    return write_bundle(out_dir, **{**arguments, **changes})


def test_write_bundle_never_replaces_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    keep = tmp_path / "important"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a model bundle"):
        _write(keep)
    assert (keep / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["important"]


def test_write_bundle_checks_its_arguments_before_exporting(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"normalisation has columns \[\]"):
        _write(tmp_path / "b", normalisation={})
    with pytest.raises(BundleError, match=r"threshold=1\.5 is outside 0\.\.1"):
        _write(tmp_path / "b", threshold=1.5)
    assert list(tmp_path.iterdir()) == []
