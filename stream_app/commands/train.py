"""``fraudstream train``: train the autoencoder, the LSTM and the stacker; write a bundle.

Trains on every transaction before ``--until`` whose label was known by then (default: the
whole history), with the product's default hyper-parameters, and writes the model bundle
(ONNX graphs + manifest.json) to ``--out``. Needs the ``[train]`` extra (torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stream_app.errors import ConfigError
from stream_app.features.spec import FEATURE_SET_NAMES
from stream_app.settings import Settings
from stream_app.sources.load import FORMATS, load_history

if TYPE_CHECKING:
    from training.fit import TrainConfig

NAME = "train"
# the choices without importing torch (training.fit checks them against its own)
ANOMALY_MODELS = ("autoencoder", "gan")
SEQUENCE_MODELS = ("lstm", "cnn", "lstm+cnn")


def parse_date(text: str) -> dt.date:
    """``YYYY-MM-DD`` as a date (argparse ``type``)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write it as YYYY-MM-DD, e.g. 2018-08-15"
        ) from None


def add_history_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--data``, ``--format``, ``--feature-set``, ``--label-delay-days``, ``--seed``."""
    parser.add_argument("--data", required=True, type=Path, metavar="PATH",
                        help="history: handbook .parquet/.csv, or our .jsonl/.jsonl.gz events")
    parser.add_argument("--format", choices=FORMATS,
                        help="input format (default: from the file name)")
    parser.add_argument("--feature-set", choices=FEATURE_SET_NAMES, default=settings.feature_set,
                        help="feature set (default %(default)s, FRAUDSTREAM_FEATURE_SET)")
    parser.add_argument(
        "--label-delay-days", type=int, default=settings.label_delay_days, metavar="DAYS",
        help="days until a handbook label is known (default %(default)s, "
        "FRAUDSTREAM_LABEL_DELAY_DAYS)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="epochs of the autoencoder and the LSTM (default: the product's)")
    parser.add_argument("--anomaly-model", choices=ANOMALY_MODELS,
                        help="model in the autoencoder role: the dense autoencoder or the "
                        "GANomaly-style GAN (default: the product's)")
    parser.add_argument("--sequence-model", choices=SEQUENCE_MODELS,
                        help="sequence members: LSTM, 1-D CNN, or alternating LSTM and CNN "
                        "(default: the product's)")
    parser.add_argument("--sequence-members", type=int, metavar="N",
                        help="ensemble size of the sequence model (default: the product's)")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The product's training configuration with the command line's choices applied."""
    from training.fit import TrainConfig

    config = TrainConfig(seed=args.seed)
    for flag, value in (("--epochs", args.epochs), ("--sequence-members", args.sequence_members)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: use 1 or more")
    if args.epochs is not None:
        config = dataclasses.replace(config, autoencoder_epochs=args.epochs,
                                     sequence_epochs=args.epochs)
    if args.sequence_members is not None:
        config = dataclasses.replace(config, sequence_members=args.sequence_members)
    if args.anomaly_model is not None:
        config = dataclasses.replace(config, anomaly_model=args.anomaly_model)
    if args.sequence_model is not None:
        config = dataclasses.replace(config, sequence_model=args.sequence_model)
    return config


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` and its options."""
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_history_arguments(parser, Settings.from_env())
    parser.add_argument("--until", type=parse_date, metavar="YYYY-MM-DD",
                        help="train on transactions before this day (UTC) with labels known "
                        "by then (default: the whole history)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="bundle directory to write (an existing bundle is replaced)")


def progress(message: str) -> None:
    """Progress lines on stderr, stamped with the elapsed wall time."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


_STARTED = time.perf_counter()


def run(args: argparse.Namespace) -> int:
    """Load, train, write the bundle; print where it went."""
    from training.pipeline import train_run, write_run

    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist; "
                          "create it first")
    history = load_history(args.data, args.format, args.label_delay_days)
    progress(f"read {len(history)} transactions from {args.data}")
    trained = train_run(history, args.feature_set, args.until, train_config(args), progress)
    path = write_run(trained, args.out, args.feature_set, args.label_delay_days)
    progress(f"bundle written ({trained.seconds['bundle']:.0f}s)")
    print(f"wrote model bundle to {path} (threshold {trained.models.threshold:.4f}, trained on "
          f"{len(trained.train_rows)} transactions {trained.training_range[0]}.."
          f"{trained.training_range[1]})")
    return 0
