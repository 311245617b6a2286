"""``fraudstream compare``: the serving bundle beside one or more challengers on a history.

Each bundle scores the history window [--from, --until) through the backtest (the stream's
incremental features; the window horizon before --from only warms them), and the alert
policy (--policy, a policy.v1 file; default: each bundle's own threshold) decides its
alerts. Writes to --out: report.md (alerts and their overlap, frauds caught by one model and
missed by the other, per fraud scenario when known, AUC ROC / AP / CP@100, time to
detection per compromised card and terminal, alerts per day), its PNG plots and
comparison.json with every figure. Needs matplotlib (the ``[train]`` extra).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from stream_app.commands.history_input import add_history_input
from stream_app.compare.figures import Comparison, compare
from stream_app.compare.report import write_report
from stream_app.compare.scored import Role, score_models
from stream_app.errors import ConfigError
from stream_app.scoring.backtest import DEFAULT_BATCH
from stream_app.scoring.bundle import ModelBundle, load_bundle
from stream_app.scoring.policy import AlertPolicy, load_policy
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.sources.load import load_history
from stream_app.tools.timeargs import parse_window_us

NAME = "compare"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare`` and its options."""
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_history_input(parser)
    parser.add_argument("--serving", required=True, type=Path, metavar="DIR",
                        help="the serving model bundle")
    parser.add_argument("--challenger", required=True, action="append", type=Path,
                        metavar="DIR", help="a challenger bundle (repeat for several)")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="alert policy (policy.v1 JSON: a threshold or a daily budget) "
                        "applied to every model (default: each bundle's threshold)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first event time compared (ISO date/time, UTC by default); "
                        "the window horizon before it only warms the windows")
    parser.add_argument("--until", "--to", dest="stop", metavar="DATE",
                        help="compare events before this time (exclusive)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for report.md, comparison.json and the plots")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N",
                        help="transactions scored per ONNX call (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Load the bundles, policy and history; score, compare, write the report."""
    if not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist; "
                          "create it first")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: use 1 or more transactions")
    start, stop = parse_window_us(args.start, args.stop, "--until")
    policy = AlertPolicy() if args.policy is None else load_policy(args.policy)
    bundles = _bundles(args.serving, args.challenger)
    settings = Settings.from_env()
    history = load_history(args.data, args.format, bundles[0][2].manifest.label_delay_days)
    models = [(name, role, Scorer.from_settings(bundle, settings))
              for name, role, bundle in bundles]
    rows, runs = score_models(history, models, policy, start_us=start, stop_us=stop,
                              batch_size=args.batch_size, progress=not args.no_progress)
    comparison = compare(history, rows, runs, command=command_line(args),
                         policy=policy.describe(),
                         settle_days=bundles[0][2].manifest.label_delay_days + 1)
    written = write_report(comparison, args.out)
    print(summary(comparison))
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


def _bundles(serving: Path, challengers: list[Path]) -> list[tuple[str, Role, ModelBundle]]:
    """Each bundle loaded and verified, named after its directory (unique names)."""
    named: list[tuple[str, Role, ModelBundle]] = []
    roles: list[tuple[Path, Role]] = [(serving, "serving")]
    roles += [(path, "challenger") for path in challengers]
    for path, role in roles:
        name = path.resolve().name
        taken = {n for n, _, _ in named}
        if name in taken:
            name = next(f"{name}#{i}" for i in range(2, len(roles) + 2)
                        if f"{name}#{i}" not in taken)
        named.append((name, role, load_bundle(path)))
    delays = {bundle.manifest.label_delay_days for _, _, bundle in named}
    if len(delays) > 1:
        raise ConfigError(
            f"the bundles were trained with different label delays ({sorted(delays)} days); "
            "compare bundles trained with the same --label-delay-days"
        )
    return named


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the report (the options that change a figure)."""
    parts = ["fraudstream", NAME, "--data", str(args.data)]
    if args.format is not None:
        parts += ["--format", args.format]
    parts += ["--serving", str(args.serving)]
    for challenger in args.challenger:
        parts += ["--challenger", str(challenger)]
    if args.policy is not None:
        parts += ["--policy", str(args.policy)]
    if args.start is not None:
        parts += ["--from", args.start]
    if args.stop is not None:
        parts += ["--until", args.stop]
    return shlex.join([*parts, "--out", str(args.out)])


def summary(c: Comparison) -> str:
    """A few lines for the terminal: one per model, one per challenger overlap."""
    lines = [f"{c.days[0]}..{c.days[-1]}: {c.transactions:,} transactions, {c.frauds:,} "
             f"labelled frauds; {c.policy}"]
    for m in c.models:
        metrics = " ".join(
            f"{label} {'n/a' if value is None else f'{value:.3f}'}"
            for label, value in (("AUC", m.auc_roc), ("AP", m.average_precision),
                                 ("CP@100", m.card_precision_at_100))
        )
        lines.append(f"{m.role} {m.name}: {metrics}; {m.alerts:,} alerts, "
                     f"{m.alerted_frauds:,} frauds alerted; cards detected "
                     f"{m.cards.detected}/{m.cards.compromised}, terminals "
                     f"{m.terminals.detected}/{m.terminals.compromised}")
    for o in c.overlaps:
        k = o.catches
        lines.append(f"{o.serving} vs {o.challenger}: alerts both {o.alerts_both:,}, only "
                     f"{o.serving} {o.alerts_serving_only:,}, only {o.challenger} "
                     f"{o.alerts_challenger_only:,}; frauds both {k.both:,}, only "
                     f"{o.serving} {k.serving_only:,}, only {o.challenger} "
                     f"{k.challenger_only:,}, neither {k.neither:,}")
    return "\n".join(lines)
