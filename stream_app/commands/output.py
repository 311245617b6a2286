"""Output files of commands: checked before the work starts, replaced only when complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream_app.errors import ConfigError


def output_path(path: Path, suffixes: tuple[str, ...]) -> Path:
    """``path`` if its name ends in one of ``suffixes`` and its directory exists."""
    if not path.name.lower().endswith(suffixes):
        raise ConfigError(
            f"--output {path}: unsupported file type; name it *{' or *'.join(suffixes)}"
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"--output {path}: directory {path.parent} does not exist; create it first"
        )
    return path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that becomes ``path`` when the block
    succeeds; on failure it is removed and ``path`` is left as it was."""
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(
            f"--output {path}: cannot write it ({exc.strerror or exc}); choose another path"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
