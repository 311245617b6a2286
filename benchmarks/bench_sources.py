"""Throughput of the history sources: the simulator and our JSONL reader/writer.

Prints transactions/s of ``simulate`` and events/s (transactions + labels) of
``write_jsonl`` and ``read_jsonl``, plain and gzipped, plus the peak RSS.

    .venv/bin/python benchmarks/bench_sources.py [--customers 1000] [--days 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from stream_app.sources.jsonl import read_jsonl, write_jsonl
from stream_app.sources.simulator import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()

    started = time.perf_counter()
    history = simulate(args.customers, 2 * args.customers, args.days, dt.date(2018, 4, 1), 0)
    seconds = time.perf_counter() - started
    n = len(history)
    print(f"simulate      {n:>9} transactions  {seconds:6.2f} s  {n / seconds:>11,.0f} tx/s")

    events = 2 * n  # every simulated transaction is labelled
    with tempfile.TemporaryDirectory() as folder:
        for name in ("events.jsonl", "events.jsonl.gz"):
            path = Path(folder) / name
            started = time.perf_counter()
            write_jsonl(history, path)
            wrote = time.perf_counter() - started
            started = time.perf_counter()
            read_jsonl(path)
            read = time.perf_counter() - started
            size_mb = path.stat().st_size / 1e6
            print(f"write {name:<16} {events:>9} events  {wrote:6.2f} s  "
                  f"{events / wrote:>11,.0f} events/s  ({size_mb:.1f} MB)")
            print(f"read  {name:<16} {events:>9} events  {read:6.2f} s  "
                  f"{events / read:>11,.0f} events/s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
