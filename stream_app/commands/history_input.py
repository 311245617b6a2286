"""The ``--data`` / ``--format`` pair of the commands that read a recorded history."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_app.sources.load import FORMATS


def add_history_input(parser: argparse.ArgumentParser) -> None:
    """Add ``--data`` (alias ``--input``) and ``--format`` to ``parser``."""
    parser.add_argument("--data", "--input", dest="data", required=True, type=Path,
                        metavar="PATH",
                        help="history: handbook .parquet/.csv, or our .jsonl/.jsonl.gz events")
    parser.add_argument("--format", choices=FORMATS,
                        help="input format (default: from the file name)")
