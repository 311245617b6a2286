"""Ingest-to-score latency at fixed offered rates, measured from outside the worker.

On one private tansu broker and redis-server (free loopback ports), with the demo's model
bundle (trained first when ``.run/demo/bundle`` is missing, or ``--bundle``), each rate of
``--rates`` gets a fresh namespace and a fresh ``fraudstream worker`` child process
(``FRAUDSTREAM_PUBLISH_SCORES=true``, its own web port, plus any ``--set NAME=VALUE``).
``--warmup-s`` after the worker is healthy, a simulated history is offered at that many
transactions per second (labels go with the transaction before them): first for
``--traffic-warmup-s`` (the cold start, whose latency is reported apart: the worker's idle
grace starts at its cap until it has seen the producers' timing), then for ``--seconds``,
the measured part; runs that would measure fewer than 600 transactions (20/s for 20 s)
last long enough for 600 and at least 30 s, so the p99 means something.

Latency is the time from handing a transaction to the producer to receiving its score
record (the alerts are published in the same batch), so it includes the producer's linger
(``--linger-ms``, default 5, the replay tool's own) and up to ``--follow-fetch-wait-ms``
(default 5) of the score follower: tansu answers an empty fetch only after the fetch wait
even when records arrive, so a follower sees each record up to that late. Lower values
shave those milliseconds off, but on this 2-core machine they load the broker, which
shares the cores with the worker (0 and 2 ms: the broker took about 70 % of a core at
5,000/s).

Prints per rate: offered and achieved rate, transactions scored, p50 / p99 / p99.9 / max
in ms, then the worker's own per-stage figures from its ``/metrics`` histogram
``fraudstream_stage_seconds`` (per batch, whatever stage labels it has: count, mean ms and
p99 ms interpolated in the buckets as Prometheus' ``histogram_quantile`` does) and its idle
grace at the end (``fraudstream_idle_grace_seconds``). Also the
git commit and a Python speed yardstick (M loop adds per CPU second) before and after each
rate. Ends with ONE JSON line holding every figure.

    .venv/bin/python benchmarks/bench_latency.py [--rates 20,2000,5000] [--seconds 20]
        [--warmup-s 5] [--set align_idle_ms=0 ...] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from bench_stream import (
    REPO,
    RUN_DIR,
    bench_history,
    default_bundle,
    measure_latency,
    python_speed,
    worker_settings,
)
from prometheus_client.parser import text_string_to_metric_families

from stream_app.console.stats import quantile
from stream_app.local_services import start_redis, start_tansu
from stream_app.settings import ENV_PREFIX, Settings
from stream_app.sources.events import replay_order

STAGE_HISTOGRAM = "fraudstream_stage_seconds"
GRACE_GAUGE = "fraudstream_idle_grace_seconds"
MIN_TRANSACTIONS = 600
MIN_SHORT_RUN_S = 30.0
QUANTILES = (50.0, 99.0, 99.9)


def transactions_for(rate: float, seconds: float) -> int:
    """Transactions offered at ``rate`` for ``seconds``; at least 600 and 30 s when fewer."""
    count = math.ceil(rate * seconds)
    if count < MIN_TRANSACTIONS:
        count = max(MIN_TRANSACTIONS, math.ceil(rate * MIN_SHORT_RUN_S))
    return count


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs (FRAUDSTREAM_ names without the prefix) as typed settings."""
    names = {f.name for f in dataclasses.fields(Settings)}
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lower().removeprefix(ENV_PREFIX.lower())
        if not sep or name not in names:
            raise SystemExit(f"--set {pair!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(names))}")
        env[ENV_PREFIX + name.upper()] = value
    parsed = Settings.from_env(env)  # the settings' own parsing and checks
    return {key.removeprefix(ENV_PREFIX).lower(): getattr(parsed, key.removeprefix(
        ENV_PREFIX).lower()) for key in env}


def stage_breakdown(metrics: str) -> dict[str, dict[str, float]]:
    """Per stage label of the stage histogram: batches, mean ms and approximate p99 ms."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != STAGE_HISTOGRAM:
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[stage] = sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = sample.value
    return {
        stage: {
            "count": int(counts.get(stage, 0)),
            "mean_ms": round(sums.get(stage, 0.0) / counts[stage] * 1000, 3)
            if counts.get(stage) else 0.0,
            "p99_ms": round((quantile(0.99, buckets.get(stage, [])) or 0.0) * 1000, 3),
        }
        for stage in sorted(set(counts) | set(buckets))
    }


def idle_grace_ms(metrics: str) -> dict[str, float]:
    """The worker's idle grace at the end of the run, ms by topic kind."""
    return {
        sample.labels["kind"]: round(sample.value * 1000, 2)
        for family in text_string_to_metric_families(metrics)
        if family.name == GRACE_GAUGE
        for sample in family.samples
    }


def _transaction_rows(history: Any) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Rows of ``history`` in the order its transactions are offered."""
    order = replay_order(history)
    return np.asarray(order.row[~order.is_label], dtype=np.intp)


def _cold_figures(latency_ms: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float]:
    scored = latency_ms[~np.isnan(latency_ms)]
    if not len(scored):
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p99 = (float(np.percentile(scored, q)) for q in (50.0, 99.0))
    return {"count": len(scored), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
            "max_ms": round(float(scored.max()), 2)}


def git_commit(tree: Path) -> str:
    """Short commit of ``tree`` (the worker's code), marked when its stream_app/ is modified."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "stream_app")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else "")


def main() -> None:
    """Measure every rate and print the tables and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="20,2000,5000",
                        help="offered transactions/s, comma-separated (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0,
                        help="seconds each worker runs before the first offer")
    parser.add_argument("--traffic-warmup-s", type=float, default=5.0,
                        help="seconds of traffic at the rate before the measured transactions "
                             "(their latency is reported apart, as the cold start)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker setting, FRAUDSTREAM_ name without the prefix (repeat)")
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="producer linger (the replay tool's default)")
    parser.add_argument("--follow-fetch-wait-ms", type=int, default=5,
                        help="fetch_max_wait_ms of the score follower")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--worker-tree", type=Path, default=None,
                        help="run the worker from another checkout of the project (its "
                             "directory goes first on the worker's PYTHONPATH), to compare "
                             "versions with one harness; pass a --bundle that tree accepts")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    overrides = parse_sets(args.sets)

    worker_env = None if args.worker_tree is None else {
        "PYTHONPATH": str(args.worker_tree),
        "PYTHONSAFEPATH": "1",  # `python -m stream_app` would import the current directory's
    }
    commit = git_commit(args.worker_tree or REPO)
    print(f"commit {commit}; worker settings changed: "
          f"{', '.join(f'{k}={v}' for k, v in overrides.items()) or 'none'}")
    bundle = args.bundle or default_bundle()
    warm = {rate: math.ceil(rate * args.traffic_warmup_s) for rate in rates}
    counts = {rate: warm[rate] + transactions_for(rate, args.seconds) for rate in rates}
    history = bench_history(max(counts.values()), seed=5)
    print(f"{len(history):,} simulated transactions, bundle {bundle}")

    results: list[dict[str, Any]] = []
    with start_tansu() as kafka, start_redis() as redis_server:
        for index, rate in enumerate(rates):
            namespace = f"lat{index}-{rate:g}".replace(".", "_")
            settings = worker_settings(kafka.address, redis_server.url, bundle, namespace)
            settings = settings.replace(**overrides)
            offered = history.slice(0, min(counts[rate], len(history)))
            speed_before = python_speed()
            run = measure_latency(
                kafka.address, settings, offered, rate, warmup_s=args.warmup_s,
                log_path=RUN_DIR / "bench" / f"worker-latency-{namespace}.log",
                follow_fetch_wait_ms=args.follow_fetch_wait_ms, linger_ms=args.linger_ms,
                worker_env=worker_env,
            )
            speed_after = python_speed()
            rows = _transaction_rows(offered)
            cold = run.by_row_ms[rows[: warm[rate]]]
            steady = run.by_row_ms[rows[warm[rate] :]]
            latency = steady[~np.isnan(steady)]
            p50, p99, p999 = (float(np.percentile(latency, q)) for q in QUANTILES)
            results.append({
                "rate": rate,
                "achieved_per_s": round(run.achieved_per_s, 1),
                "offered": run.offered,
                "scored": int(np.count_nonzero(~np.isnan(run.by_row_ms))),
                "measured": len(latency),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "p999_ms": round(p999, 2),
                "max_ms": round(float(latency.max()), 2),
                "cold": _cold_figures(cold),
                "stages": stage_breakdown(run.metrics),
                "idle_grace_ms": idle_grace_ms(run.metrics),
                "speed_before": round(speed_before, 1),
                "speed_after": round(speed_after, 1),
            })
            print(f"{rate:,.0f}/s done: {len(latency):,} measured, p50 {p50:.1f} ms; "
                  f"yardstick {speed_before:.1f} / {speed_after:.1f}", flush=True)

    print()
    print(f"ingest-to-score latency, commit {commit}, worker settings changed: "
          f"{', '.join(f'{k}={v}' for k, v in overrides.items()) or 'none'}; "
          f"producer linger {args.linger_ms} ms, follower fetch wait "
          f"{args.follow_fetch_wait_ms} ms")
    print(f"after {args.traffic_warmup_s:g} s of traffic at the rate (the cold start, below):")
    print(f"{'offered/s':>10}{'achieved/s':>11}{'measured':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'p99.9 ms':>10}{'max ms':>9}{'yardstick':>14}")
    for r in results:
        print(f"{r['rate']:>10,.0f}{r['achieved_per_s']:>11,.0f}{r['measured']:>9,}"
              f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['p999_ms']:>10.1f}{r['max_ms']:>9.1f}"
              f"{r['speed_before']:>8.1f}/{r['speed_after']:<5.1f}")
    print("cold start, the first seconds of traffic to a fresh worker:")
    for r in results:
        c = r["cold"]
        print(f"{r['rate']:>10,.0f}/s: {c['count']:,} transactions, p50 {c['p50_ms']:.1f} ms, "
              f"p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms")
    print()
    print("worker stages per batch (fraudstream_stage_seconds): batches / mean ms / p99 ms")
    for r in results:
        print(f"  at {r['rate']:,.0f}/s:")
        for stage, figures in r["stages"].items():
            print(f"    {stage:<16}{figures['count']:>8,}{figures['mean_ms']:>10.2f}"
                  f"{figures['p99_ms']:>10.2f}")
        if not r["stages"]:
            print("    (no stage histogram in /metrics)")
        grace = ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in r["idle_grace_ms"].items())
        print(f"    idle grace at the end: {grace or '(not in /metrics)'}")
    print(json.dumps({
        "commit": commit,
        "settings": overrides,
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "linger_ms": args.linger_ms,
        "follow_fetch_wait_ms": args.follow_fetch_wait_ms,
        "rates": results,
    }))


if __name__ == "__main__":
    main()
