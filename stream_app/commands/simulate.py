"""``fraudstream simulate``: write a simulated history (see ``stream_app.sources.simulator``).

``.jsonl``/``.jsonl.gz`` gives our events (transactions and their labels in the order a
live system sees them); ``.parquet`` gives the handbook's layout, so every tool reads it.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stream_app.commands.output import output_path, replacing
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY, MICROS_PER_SECOND

NAME = "simulate"
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
_EPOCH = dt.date(1970, 1, 1)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` and its options."""
    settings = Settings.from_env()
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1000, metavar="N",
                        help="number of customers (default %(default)s)")
    parser.add_argument("--terminals", type=int, default=2000, metavar="N",
                        help="number of terminals (default %(default)s)")
    parser.add_argument("--days", type=int, default=60, metavar="N",
                        help="number of days (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; the same seed gives the same history "
                        "(default %(default)s)")
    parser.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2018, 4, 1),
                        metavar="YYYY-MM-DD", help="first day, from midnight UTC "
                        "(default %(default)s)")
    parser.add_argument(
        "--label-delay-days", type=int, default=settings.label_delay_days, metavar="DAYS",
        help="days until a label is known (default %(default)s, FRAUDSTREAM_LABEL_DELAY_DAYS)",
    )
    parser.add_argument("--output", required=True, type=Path,
                        metavar="events.jsonl[.gz]|history.parquet", help="file to write")


def run(args: argparse.Namespace) -> int:
    """Simulate and write; report the size and fraud rate on stdout."""
    output = output_path(args.output, SUFFIXES)
    history = simulate(args.customers, args.terminals, args.days, args.start_date, args.seed,
                       label_delay_days=args.label_delay_days)
    with replacing(output) as temporary:
        if output.name.lower().endswith(".parquet"):
            origin_us = (args.start_date - _EPOCH).days * MICROS_PER_DAY
            pq.write_table(handbook_table(history, origin_us), temporary)
        else:
            write_jsonl(history, temporary)
    frauds = int(history.is_fraud.sum())
    print(f"wrote {len(history)} transactions ({frauds} frauds, "
          f"{100 * frauds / max(len(history), 1):.2f} %) to {output}")
    return 0


def handbook_table(history: TransactionHistory, origin_us: int) -> pa.Table:
    """``history`` in the handbook's column layout (integer ids, naive UTC ``TX_DATETIME``,
    ``TX_TIME_SECONDS``/``TX_TIME_DAYS`` counted from ``origin_us``)."""
    seconds = (history.event_time_us - origin_us) // MICROS_PER_SECOND
    return pa.table({
        "TRANSACTION_ID": history.transaction_id.astype(np.int64),
        "TX_DATETIME": pa.array(history.event_time_us, type=pa.timestamp("us")),
        "CUSTOMER_ID": history.customer_id.astype(np.int64),
        "TERMINAL_ID": history.terminal_id.astype(np.int64),
        "TX_AMOUNT": history.amount,
        "TX_TIME_SECONDS": seconds,
        "TX_TIME_DAYS": seconds // 86_400,
        "TX_FRAUD": history.is_fraud.astype(np.int64),
        "TX_FRAUD_SCENARIO": history.fraud_scenario.astype(np.int64),
    })
