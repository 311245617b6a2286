"""``fraudstream features``: compute a feature set over a history file, write it as Parquet.

The output holds ``transaction_id`` and one float64 column per feature, in the feature
set's column order, one row per transaction in history (event-time) order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from stream_app.commands.output import output_path, replacing
from stream_app.errors import ConfigError
from stream_app.features.batch import FeatureTable, compute_features
from stream_app.features.spec import FEATURE_SET_NAMES, feature_set
from stream_app.settings import Settings
from stream_app.sources.load import FORMATS, load_history

NAME = "features"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``features`` and its options (defaults from ``FRAUDSTREAM_*`` settings)."""
    settings = Settings.from_env()
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, type=Path, metavar="PATH",
                        help="history: handbook .parquet/.csv, or our .jsonl/.jsonl.gz events")
    parser.add_argument("--output", required=True, type=Path, metavar="OUT.parquet",
                        help="Parquet file to write (replaced only when complete)")
    parser.add_argument("--feature-set", choices=FEATURE_SET_NAMES, default=settings.feature_set,
                        help="feature set (default %(default)s, FRAUDSTREAM_FEATURE_SET)")
    parser.add_argument("--format", choices=FORMATS,
                        help="input format (default: from the file name)")
    parser.add_argument(
        "--label-delay-days", type=int, default=settings.label_delay_days, metavar="DAYS",
        help="days until a label is known: handbook labels' delay and the terminal windows' "
        "delay (default %(default)s, FRAUDSTREAM_LABEL_DELAY_DAYS)",
    )


def run(args: argparse.Namespace) -> int:
    """Read, compute, write; report what was written on stdout."""
    output = output_path(args.output, (".parquet",))
    fs = feature_set(args.feature_set, args.label_delay_days)
    with tqdm(total=3, desc="reading", unit="stage", disable=None, file=sys.stderr) as progress:
        history = load_history(args.input, args.format, args.label_delay_days)
        progress.set_description("computing")
        progress.update()
        table = compute_features(history, fs)
        progress.set_description("writing")
        progress.update()
        write_feature_table(table, output)
        progress.update()
    print(f"wrote {len(history)} rows x {len(fs.columns)} {fs.name!r} features to {output}")
    return 0


def write_feature_table(table: FeatureTable, path: Path) -> None:
    """``table`` as Parquet: ``transaction_id`` then one float64 column per feature."""
    columns = {"transaction_id": pa.array(table.transaction_id, type=pa.string())}
    for j, name in enumerate(table.columns):
        columns[name] = pa.array(table.values[:, j], type=pa.float64())
    with replacing(path) as temporary:
        try:
            pq.write_table(pa.table(columns), temporary)
        except pa.ArrowException as exc:
            raise ConfigError(f"--output {path}: cannot write it ({exc})") from None
