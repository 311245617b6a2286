"""``fraudstream demo``: broker, Redis, a trained model, a worker and a replayed day, locally."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

DESCRIPTION = """\
Run the whole system on this machine: start a private tansu broker and redis-server on free
loopback ports, train a small model on simulated warm-up days (or reuse the one cached in
RUN_DIR/demo/bundle), start a worker, replay the warm-up days and one more day at max
speed, print that day's alerts as they arrive, and close with events, alerts, precision
and recall against the simulated labels, events/s and ingest-to-alert latency. The
operations console runs beside it (its URL is printed; the analyst 'demo' logs in with the
token in RUN_DIR/demo/console-tokens); in a terminal it stays up after the summary until
Ctrl-C (--no-hold ends the demo there). Everything it started is stopped at the end, also
on Ctrl-C."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``demo``."""
    parser = subparsers.add_parser("demo", help="run the whole system locally on simulated data",
                                   description=DESCRIPTION)
    parser.add_argument("--run-dir", type=Path, default=Path(".run"), metavar="RUN_DIR",
                        help="where the demo keeps its model, data and logs (default .run)")
    parser.add_argument("--no-hold", action="store_true",
                        help="end after the summary even in a terminal (default: keep the "
                             "console up until Ctrl-C when stdin is a terminal)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; SIGTERM stops it like Ctrl-C (everything started is stopped)."""
    from stream_app.tools.demo import DemoPlan, run_demo

    # A Ctrl-C reaches the broker (same process group) before the demo's own clients stop;
    # their reconnect complaints would bury the output. Failures surface as exceptions.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        hold = not args.no_hold and sys.stdin.isatty()
        run_demo(args.run_dir, DemoPlan(), print, hold_console=hold)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
