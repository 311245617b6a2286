"""The product's default training run on the full handbook data: time per stage, peak RSS.

Runs what ``fraudstream train --data transactions.parquet --out DIR`` runs (read, features,
autoencoder, cross-fitted LSTMs for the stacker, the served LSTM, the stacker, ONNX export
and bundle writing) and prints the wall time of each stage and the process's CPU time: on a
machine shared with other jobs the CPU time is the figure that does not depend on the
neighbours; the wall time is what a user waits. The target is < 15 min wall in total.

    .venv/bin/python benchmarks/bench_training.py [--data PATH] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import tempfile
import time
from pathlib import Path

from stream_app.sources.load import load_history
from training.fit import TrainConfig
from training.pipeline import train_run, write_run

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "handbook"
    / "transactions.parquet"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=TrainConfig().threads)
    parser.add_argument("--feature-set", default="default")
    args = parser.parse_args()
    config = dataclasses.replace(TrainConfig(), threads=args.threads)
    load_before = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    history = load_history(args.data)
    read_seconds = time.perf_counter() - wall0
    run = train_run(history, args.feature_set, None, config)
    with tempfile.TemporaryDirectory() as tmp:
        write_run(run, Path(tmp) / "bundle", args.feature_set, 7)
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"default training run: {len(history)} transactions read, "
          f"{len(run.train_rows)} labelled rows trained on, feature set {args.feature_set}, "
          f"{config.threads} torch thread(s), load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"{'stage':<28} {'wall s':>8}")
    for name, seconds in [("read history", read_seconds), *run.seconds.items()]:
        print(f"{name:<28} {seconds:>8.1f}")
    print(f"{'total':<28} {total_wall:>8.1f}  (process CPU {total_cpu:.1f} s; wall beyond CPU "
          "is waiting for the shared cores)")
    print(f"peak RSS {peak_mib:.0f} MiB; threshold {run.models.threshold:.4f}")


if __name__ == "__main__":
    main()
