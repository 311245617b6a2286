"""Where a worker finds its bundles: one bundle directory, or a model store it watches.

A model store is a directory of bundles with two pointer files::

    models/
      CURRENT          the serving bundle's directory name, e.g. "2026-12-06-weekly"
      CHALLENGERS      optional: challenger bundle directory names, one per line
      2026-12-06-weekly/   manifest.json, *.onnx
      2026-12-13-weekly/

``fraudstream models promote`` rewrites a pointer atomically (write, then rename), after
verifying the bundle. A worker whose ``FRAUDSTREAM_MODEL_DIR`` is a store re-reads the
pointers every ``FRAUDSTREAM_MODEL_POLL_MS`` and switches between batches
(:mod:`stream_app.worker.models`). A plain bundle directory is served as it is, unwatched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stream_app.errors import BundleError, ConfigError
from stream_app.scoring.bundle import ModelBundle, load_bundle

CURRENT: Final = "CURRENT"
CHALLENGERS: Final = "CHALLENGERS"


@dataclass(frozen=True)
class Selection:
    """The bundle directories a store names: the serving one and the challengers."""

    serving: Path
    challengers: tuple[Path, ...] = ()


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a model store (holds a ``CURRENT`` pointer)."""
    return (Path(path) / CURRENT).is_file()


def read_selection(path: str | Path) -> Selection:
    """The bundles ``path`` names: itself when it is a bundle, its pointers when a store."""
    root = Path(path)
    if not is_store(root):
        return Selection(root)
    (serving,) = _names(root, CURRENT, exactly_one=True)
    challengers = _names(root, CHALLENGERS, exactly_one=False)
    return Selection(root / serving, tuple(root / name for name in challengers))


def _names(root: Path, pointer: str, *, exactly_one: bool) -> tuple[str, ...]:
    file = root / pointer
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if exactly_one:
            raise
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the model pointer {str(file)!r}: {exc}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    for name in names:
        _name(root, name)
    if exactly_one and len(names) != 1:
        raise ConfigError(
            f"the model pointer {str(file)!r} holds {len(names)} names; it must hold the "
            "serving bundle's directory name alone (fraudstream models promote writes it)"
        )
    return names


def load_compatible(path: Path, serving: ModelBundle | None) -> ModelBundle:
    """Load and verify the bundle at ``path``; with ``serving``, also check that it scores
    the same feature rows (feature set, hash, columns, sequence length), since the windows
    the worker keeps were built for those."""
    bundle = load_bundle(path)
    if serving is None:
        return bundle
    new, old = bundle.manifest, serving.manifest
    if (new.feature_hash, new.feature_columns, new.sequence_length, new.label_delay_days) != (
        old.feature_hash, old.feature_columns, old.sequence_length, old.label_delay_days
    ):
        raise BundleError(
            f"bundle {str(path)!r} ({new.model_version}) scores feature set "
            f"{new.feature_set!r}, {len(new.feature_columns)} columns, sequences of "
            f"{new.sequence_length}, label delay {new.label_delay_days} d; the worker's "
            f"windows are for {old.feature_set!r}, {len(old.feature_columns)} columns, "
            f"{old.sequence_length}, {old.label_delay_days} d ({old.model_version}): train "
            "the bundle with the same feature set, or start a new worker namespace for it"
        )
    return bundle


def promote(store: str | Path, serving: str) -> ModelBundle:
    """Verify bundle ``serving`` of ``store`` (and that it fits the windows of the bundle
    served now, if any), then point ``CURRENT`` at it atomically."""
    root = Path(store)
    current = load_bundle(read_selection(root).serving) if is_store(root) else None
    bundle = load_compatible(root / _name(root, serving), current)
    _write_atomically(root / CURRENT, f"{serving}\n")
    return bundle


def set_challengers(store: str | Path, names: tuple[str, ...]) -> tuple[ModelBundle, ...]:
    """Verify the challenger bundles ``names`` of ``store`` against its serving bundle, then
    write ``CHALLENGERS`` atomically (no names: no challengers)."""
    root = Path(store)
    if not is_store(root):
        raise ConfigError(
            f"{str(root)!r} has no {CURRENT} pointer; promote a serving bundle first"
        )
    serving = load_bundle(read_selection(root).serving)
    bundles = tuple(load_compatible(root / _name(root, n), serving) for n in names)
    _write_atomically(root / CHALLENGERS, "".join(f"{n}\n" for n in names))
    return bundles


def _name(root: Path, name: str) -> str:
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ConfigError(
            f"bundle name {name!r} is not a directory name inside {str(root)!r}; give the "
            "name of a bundle directory in the store"
        )
    return name


def _write_atomically(file: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
