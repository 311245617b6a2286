"""Throughput of the feature code on the handbook data (or its first --rows rows).

Prints wall seconds, CPU seconds of this process (the machine is shared: CPU time is the
steadier figure) and rows/s for reading the handbook Parquet file, for batch features
(``handbook`` and ``default`` sets), events/s of the in-memory window store driven by
``replay_history`` (and of ``apply`` in batches of --batch without labels), the bytes of
serialised window state (the Redis store's encoding) per customer and per terminal after
those batches, a pure-Python loop as a yardstick of how fast this machine runs Python right
now, and the peak RSS.

    .venv/bin/python benchmarks/bench_features.py [--rows 300000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

from stream_app.features.batch import compute_features
from stream_app.features.incremental import encode_window
from stream_app.features.spec import feature_set
from stream_app.features.store import InMemoryWindowStore, replay_history, transaction_events
from stream_app.sources.handbook import read_handbook

HANDBOOK = Path(__file__).resolve().parent.parent.parent / "shared/data/handbook"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=HANDBOOK / "transactions.parquet")
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0 = all)")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    clock = _Clock()
    history = read_handbook(args.data)
    clock.line("read handbook parquet", len(history), "rows")
    if args.rows:
        history = history.slice(0, args.rows)
    n = len(history)

    for name in ("handbook", "default"):
        clock.restart()
        compute_features(history, feature_set(name))
        clock.line(f"batch features {name}", n, "rows")

    fs = feature_set("default")
    clock.restart()
    replay_history(history, fs)
    clock.line("incremental replay default", n, "events")

    events = transaction_events(history)
    store = InMemoryWindowStore(fs)
    clock.restart()
    for start in range(0, n, args.batch):
        store.apply(events[start : start + args.batch], [])
    clock.line(f"store.apply batches of {args.batch}", n, "events")

    customer_bytes = [len(encode_window(w)) for w in store.customers.values()]
    terminal_bytes = [len(encode_window(w)) for w in store.terminals.values()]
    started = time.perf_counter()
    for window in store.customers.values():
        encode_window(window)
    encode_us = (time.perf_counter() - started) / len(customer_bytes) * 1e6
    print(f"state bytes per customer: mean {statistics.mean(customer_bytes):.0f}, "
          f"max {max(customer_bytes)} ({len(customer_bytes)} customers, "
          f"{encode_us:.1f} µs to encode one)")
    print(f"state bytes per terminal: mean {statistics.mean(terminal_bytes):.0f}, "
          f"max {max(terminal_bytes)} ({len(terminal_bytes)} terminals)")
    clock.restart()
    total = 0
    for i in range(10_000_000):
        total += i
    clock.line("calibration: python loop adds", 10_000_000, "adds")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")


class _Clock:
    """Wall and process CPU time since the last restart."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def line(self, what: str, n: int, unit: str) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        print(f"{what:<34} {n:>9} {unit}  wall {wall:7.2f} s  cpu {cpu:7.2f} s  "
              f"{n / cpu:>11,.0f} {unit}/cpu-s  ({cpu / n * 1e6:.1f} µs cpu each)")


if __name__ == "__main__":
    main()
