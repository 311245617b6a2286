"""``fraudstream evaluate``: the handbook's prequential protocol for every model.

Trains and tests the autoencoder, the LSTM and the combined score on each fold, with two
training variants: ``handbook`` (the 7 days before the delay window) and ``all_history``
(all history before it), and writes ``metrics.json``, ``protocol.json``, ``report.md``
(our rows beside the published table) and PNG plots to ``--out``. ``--challengers gan cnn``
adds rows for a GAN anomaly detector and a 1-D CNN, each trained alone on every fold.
Needs the ``[train]`` extra (torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_app.commands.train import add_history_arguments, parse_date, progress, train_config
from stream_app.errors import ConfigError
from stream_app.settings import Settings
from stream_app.sources.load import load_history

NAME = "evaluate"
PROTOCOLS = ("handbook",)
CHALLENGERS = ("gan", "cnn")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` and its options."""
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_history_arguments(parser, Settings.from_env())
    parser.add_argument("--protocol", choices=PROTOCOLS, default="handbook",
                        help="fold scheme (default %(default)s: 4 folds of 7+7+7 days)")
    parser.add_argument("--folds", type=int, default=4, help="number of folds (default 4)")
    parser.add_argument("--train-days", type=int, default=7, metavar="DAYS")
    parser.add_argument("--delay-days", type=int, default=7, metavar="DAYS")
    parser.add_argument("--test-days", type=int, default=7, metavar="DAYS")
    parser.add_argument("--latest-train-start", type=parse_date, metavar="YYYY-MM-DD",
                        help="first training day of the latest fold (default: the latest "
                        "test window ends on the last day of the data)")
    parser.add_argument("--training", choices=("handbook", "all_history", "both"),
                        default="both", help="training variants to run (default both)")
    parser.add_argument("--challengers", nargs="+", choices=CHALLENGERS, default=[],
                        help="also train and score these models alone on every fold")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for metrics.json, report.md and the plots")


def run(args: argparse.Namespace) -> int:
    """Load, featurise, run every fold, write the outputs, print the table."""
    from training.datasets import build_dataset
    from training.evaluate import evaluate, write_metrics
    from training.protocol import TRAININGS, PrequentialParams
    from training.report import table, write_report

    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist; "
                          "create it first")
    params = PrequentialParams(args.folds, args.train_days, args.delay_days, args.test_days,
                               args.latest_train_start)
    trainings = TRAININGS if args.training == "both" else (args.training,)
    history = load_history(args.data, args.format, args.label_delay_days)
    progress(f"read {len(history)} transactions from {args.data}")
    dataset = build_dataset(history, args.feature_set)
    progress(f"features: {len(dataset)} rows x {len(dataset.columns)} ({args.feature_set})")
    evaluation = evaluate(dataset, params, train_config(args), trainings, progress,
                          tuple(dict.fromkeys(args.challengers)))
    metrics_path, _ = write_metrics(evaluation, args.out)
    report_path = write_report(evaluation, args.out)
    print(table(evaluation))
    print(f"wrote {metrics_path} and {report_path}")
    return 0
