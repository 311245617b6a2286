"""Load a history from any file fraudstream reads, choosing the reader by format or name."""

from __future__ import annotations

from pathlib import Path

from stream_app.errors import ConfigError, InputDataError
from stream_app.sources.handbook import read_handbook
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import read_jsonl

HANDBOOK = "handbook"
JSONL = "jsonl"
FORMATS = (HANDBOOK, JSONL)
_SUFFIXES = {".parquet": HANDBOOK, ".csv": HANDBOOK, ".jsonl": JSONL, ".jsonl.gz": JSONL}


def detect_format(path: str | Path) -> str:
    """``handbook`` for ``.parquet``/``.csv``, ``jsonl`` for ``.jsonl``/``.jsonl.gz``."""
    name = Path(path).name.lower()
    for suffix, found in _SUFFIXES.items():
        if name.endswith(suffix):
            return found
    raise InputDataError(
        f"cannot tell the format of {path} from its name; name it "
        f"{', '.join(_SUFFIXES)}, or choose the format ({' or '.join(FORMATS)}) explicitly"
    )


def load_history(
    path: str | Path, format: str | None = None, label_delay_days: int = 7
) -> TransactionHistory:
    """Read ``path`` as a handbook file (Parquet/CSV) or our JSONL events.

    ``format`` is ``handbook``, ``jsonl`` or None (from the file name). Handbook labels
    become known ``label_delay_days`` after their transaction; JSONL labels carry their
    own ``label_time``, so the delay does not apply to them.
    """
    path = Path(path)
    chosen = detect_format(path) if format is None else format
    if chosen not in FORMATS:
        raise ConfigError(f"unknown input format {format!r}; choose {' or '.join(FORMATS)}")
    if not path.exists():
        raise InputDataError(f"input file {path} does not exist; check the path")
    if not path.is_file():
        raise InputDataError(f"input {path} is not a file; pass the path of a history file")
    if chosen == HANDBOOK:
        return read_handbook(path, label_delay_days=label_delay_days)
    return read_jsonl(path)
