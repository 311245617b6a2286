"""``fraudstream drift``: a history's drift against a bundle's training distribution.

Scores the history window [--from, --until) with the bundle (the batch feature code over
the history up to --until, which equals the stream's, and the bundle's ONNX graphs), cuts
it into days or weeks (UTC) and compares each with the training distributions the bundle's
manifest records: the PSI of every feature and of the score, beside the period's frauds (per
fraud scenario when the history has them) and its share of scores at or above the
threshold. Writes to --out: report.md, its PNG plots and drift.json with every figure.
Needs matplotlib (the ``[train]`` extra).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from stream_app.commands.history_input import add_history_input
from stream_app.drift.periods import PERIODS, DriftReport, drift_report
from stream_app.drift.report import write_report
from stream_app.errors import ConfigError
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.sources.load import load_history
from stream_app.tools.timeargs import parse_window_us

NAME = "drift"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``drift`` and its options."""
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_history_input(parser)
    parser.add_argument("--models", required=True, type=Path, metavar="DIR",
                        help="the model bundle (its manifest records the training "
                        "distributions)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first event time reported (ISO date/time, UTC by default)")
    parser.add_argument("--until", "--to", dest="stop", metavar="DATE",
                        help="report events before this time (exclusive)")
    parser.add_argument("--period", choices=PERIODS, default="day",
                        help="one PSI per day or per week (default %(default)s)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for report.md, drift.json and the plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the bundle and history, score, compare with training, write the report."""
    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist; "
                          "create it first")
    start, stop = parse_window_us(args.start, args.stop, "--until")
    bundle = load_bundle(args.models)
    history = load_history(args.data, args.format, bundle.manifest.label_delay_days)
    scorer = Scorer.from_settings(bundle, Settings.from_env())
    report = drift_report(history, scorer, start_us=start, stop_us=stop, period=args.period,
                          command=command_line(args), progress=not args.no_progress)
    written = write_report(report, args.out)
    print(summary(report))
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the report."""
    parts = ["fraudstream", NAME, "--data", str(args.data)]
    if args.format is not None:
        parts += ["--format", args.format]
    parts += ["--models", str(args.models)]
    if args.start is not None:
        parts += ["--from", args.start]
    if args.stop is not None:
        parts += ["--until", args.stop]
    if args.period != "day":
        parts += ["--period", args.period]
    return shlex.join([*parts, "--out", str(args.out)])


def summary(report: DriftReport) -> str:
    """A few lines for the terminal."""
    p = report.periods
    worst = max(p, key=lambda x: x.score_psi)
    drifting = [c for c in report.drifting() if c not in report.one_bin()]
    r = report.correlation("score_psi", "fraud_share")
    return (
        f"{p[0].start}..{p[-1].start}: {len(p)} {report.period}s, "
        f"{sum(x.transactions for x in p):,} transactions; score PSI largest "
        f"{worst.score_psi:.4f} ({worst.start}), r with the fraud share "
        f"{'n/a' if r is None else f'{r:+.2f}'}; features with PSI >= 0.1 in some "
        f"{report.period}: {', '.join(drifting) or 'none'}"
    )
