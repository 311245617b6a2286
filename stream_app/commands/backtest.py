"""``fraudstream backtest``: replay a history through the stream's feature code and a bundle.

Transactions are applied in event-time order to in-memory windows by the same incremental
code the worker runs (fraud labels become known at their label time) and scored in
batches by the bundle's ONNX models. The events of the window horizon before --from (37
days with a 7-day label delay) only warm the windows and older ones are not read, as in
`fraudstream replay --from` (its warm-up); events from --to on are not read. The output
has one row per scored transaction: transaction_id, event_time, score (0..1, higher =
more suspicious), threshold and policy (the alert policy's: --policy, else the bundle's
threshold), is_alert (score >= threshold), autoencoder_error, sequence_probability,
reasons (for alerts: the up to three stacker inputs that raised the score most, as the
stream's alerts give them: feature, contribution in probability units, value; empty for
other rows) and reasons_baseline (the contributions of all inputs sum to score -
reasons_baseline).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stream_app.commands.history_input import add_history_input
from stream_app.commands.output import output_path, replacing
from stream_app.errors import ConfigError
from stream_app.scoring.backtest import DEFAULT_BATCH, ScoredHistory, backtest
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.policy import AlertPolicy, load_policy
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.sources.load import load_history
from stream_app.tools.timeargs import parse_window_us

NAME = "backtest"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backtest`` and its options."""
    settings = Settings.from_env()
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_history_input(parser)
    parser.add_argument("--models", default=Path(settings.model_dir), type=Path, metavar="DIR",
                        help="model bundle directory (default %(default)s, "
                        "FRAUDSTREAM_MODEL_DIR)")
    parser.add_argument("--out", "--output", dest="out", required=True, type=Path,
                        metavar="OUT.parquet",
                        help="Parquet file to write (replaced only when complete)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first event time to score (ISO date/time, UTC by default); "
                        "the window horizon before it only warms the windows")
    parser.add_argument("--to", dest="stop", metavar="DATE",
                        help="score events before this time (exclusive)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N",
                        help="transactions scored per ONNX call (default %(default)s)")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        default=Path(settings.alert_policy) if settings.alert_policy else None,
                        help="alert policy (policy.v1 JSON) to decide alerts with, as the "
                             "worker does (default FRAUDSTREAM_ALERT_POLICY, else the "
                             "bundle's threshold)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the bundle and history, replay and score, write Parquet, print a summary."""
    out = output_path(args.out, (".parquet",))
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: use 1 or more transactions")
    start, stop = parse_window_us(args.start, args.stop, "--to")
    settings = Settings.from_env()
    bundle = load_bundle(args.models)
    scorer = Scorer.from_settings(bundle, settings)
    history = load_history(args.data, args.format, bundle.manifest.label_delay_days)
    policy = AlertPolicy() if args.policy is None else load_policy(args.policy)
    scored = backtest(history, scorer, start_us=start, stop_us=stop,
                      batch_size=args.batch_size, progress=not args.no_progress, policy=policy)
    write_scores(scored, bundle.model_version, bundle.threshold, out)
    print(f"{scored.summary(bundle.model_version)} -> {out}", flush=True)
    return 0


def write_scores(scored: ScoredHistory, model_version: str, threshold: float, path: Path) -> None:
    """The scores as Parquet, with the bundle's model_version and threshold as metadata."""
    table = scored.to_arrow().replace_schema_metadata(
        {"model_version": model_version, "threshold": repr(threshold)}
    )
    with replacing(path) as temporary:
        try:
            pq.write_table(table, temporary)
        except pa.ArrowException as exc:
            raise ConfigError(f"--out {path}: cannot write it ({exc})") from None
