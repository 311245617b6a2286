"""The compose stack's model service (``training.provision``): seed, keep, refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stream_app.errors import ConfigError
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.model_store import CURRENT, read_selection
from tests.unit.model_bundles import tiny_bundle
from training.provision import main, provision

pytestmark = pytest.mark.train


def test_a_seed_bundle_is_copied_in_promoted_and_then_kept(tmp_path: Path) -> None:
    seed = tiny_bundle(0.3).path
    version = load_bundle(seed).model_version
    store = tmp_path / "store"
    lines: list[str] = []
    assert provision(store, seed, lines.append) == version
    assert (store / CURRENT).read_text() == f"{version}\n"
    assert read_selection(store).serving == store / version
    assert load_bundle(store / version).model_version == version  # verified copy
    assert [p.name for p in store.iterdir() if p.name.startswith(".")] == []  # no staging left

    # A second start keeps the store as it is, even with another seed mounted.
    other = tiny_bundle(0.7).path
    assert provision(store, other, lines.append) == version
    assert lines[-1] == f"the model store {store} already serves {version}: kept"
    assert sorted(p.name for p in store.iterdir()) == sorted([CURRENT, version])


def test_a_seed_store_gives_its_serving_bundle(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(tiny_bundle(0.3).path, seed / "weekly")
    (seed / CURRENT).write_text("weekly\n")
    version = load_bundle(seed / "weekly").model_version
    assert main(["--store", str(tmp_path / "store"), "--seed", str(seed)]) == 0
    assert read_selection(tmp_path / "store").serving.name == version


def test_a_seed_without_a_bundle_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "notes.txt").write_text("not a bundle")
    assert main(["--store", str(tmp_path / "store"), "--seed", str(seed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: --seed '{seed}' holds neither a model bundle")


def test_a_store_serving_a_broken_bundle_is_refused_not_replaced(tmp_path: Path) -> None:
    store = tmp_path / "store"
    version = provision(store, tiny_bundle(0.3).path, lambda _line: None)
    (store / version / "sequence.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match=f"serves '{version}', which does not load"):
        provision(store, tiny_bundle(0.7).path, lambda _line: None)
    assert (store / CURRENT).read_text() == f"{version}\n"
