"""Parity on the handbook data: the always-on stream scores exactly what the backtest scores.

Takes ``--days`` days of the handbook history from ``--from`` plus the ``--warmup-days``
before them, replays them (transactions and labels on the event-time clock, max speed or
``--rate`` transactions/s) through ``--workers`` ``fraudstream worker`` child processes
(one consumer group) on a private tansu broker and redis-server, with scores published,
and runs ``fraudstream backtest --from`` on the same rows and bundle. Compares every
transaction's score from ``--from`` on (tolerance 1e-6) and the alert sets; prints the
figures and ONE JSON line. Exit code 1 when they differ. ``--kill-after N``: once N
scores are out, ``kill -9`` the newest worker (and its window process) and start another
in its place; ``--add-after N``: start one more worker then (a rebalance mid-replay).

    .venv/bin/python benchmarks/stream_vs_backtest.py [--from 2018-08-01] [--days 20]
        [--warmup-days 30] [--partitions 4] [--workers 1] [--rate N] [--bundle DIR]
        [--kill-after N] [--add-after N]

The slice is written as JSONL to a temporary directory (removed at the end), never into
the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow.parquet as pq
from aiokafka import TopicPartition

from stream_app.contracts import TransactionScore, decode_alert
from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.scoring.bundle import load_bundle
from stream_app.settings import Settings
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.load import load_history
from stream_app.time import MICROS_PER_DAY
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import WorkerProcess, worker_process
from stream_app.topics import ensure_topics_sync, stream_topics

REPO = Path(__file__).resolve().parent.parent
HANDBOOK = REPO.parent / "shared" / "data" / "handbook" / "transactions.parquet"
TOLERANCE = 1e-6
STALL_TIMEOUT_S = 180.0
NAMESPACE = "parity"
_SCORE = msgspec.json.Decoder(TransactionScore)


async def stream_scores(
    history: Any,
    workers: list[WorkerProcess],
    rate: float | None,
    start_worker: Callable[[], WorkerProcess],
    kill_after: int | None = None,
    add_after: int | None = None,
) -> tuple[dict[str, float], set[str], float]:
    """Replay ``history`` to the workers (one consumer group) at ``rate`` transactions/s
    (None: max speed); their scores, alerted ids and events/s. Once ``kill_after`` scores
    are out the newest worker is killed (``kill -9``) and replaced; once ``add_after``
    are, a worker joins (``start_worker``)."""
    settings = workers[0].settings
    topics = stream_topics(settings.namespace)
    scores: dict[str, float] = {}
    alerts: set[str] = set()
    first_at: float | None = None
    stop = asyncio.Event()

    def on_scores(_tp: TopicPartition, records: Sequence[Any]) -> None:
        nonlocal first_at
        first_at = first_at or time.time()
        for record in records:
            score = _SCORE.decode(record.value)
            scores[score.transaction_id] = score.score

    def on_alerts(_tp: TopicPartition, records: Sequence[Any]) -> None:
        alerts.update(decode_alert(r.value).transaction_id for r in records)

    readers = [
        asyncio.create_task(read_topic(settings.kafka_bootstrap, topic, handler,
                                       follow=True, stop=stop))
        for topic, handler in ((topics.scores, on_scores), (topics.alerts, on_alerts))
    ]
    try:
        order = replay_order(history)
        summary = await replay(history, order, settings.kafka_bootstrap, topics, None,
                               events_per_s=rate, progress=False)
        print(summary.line(topics), flush=True)
        last, last_count = time.monotonic(), -1
        while len(scores) < order.transactions:
            if kill_after is not None and len(scores) >= kill_after:
                kill_after = None
                killed = workers.pop()
                os.killpg(killed.process.pid, signal.SIGKILL)
                killed.process.wait()
                print(f"killed a worker (kill -9) after {len(scores):,} scores", flush=True)
                workers.append(await asyncio.to_thread(start_worker))
            if add_after is not None and len(scores) >= add_after:
                add_after = None
                print(f"a worker joins after {len(scores):,} scores", flush=True)
                workers.append(await asyncio.to_thread(start_worker))
            for worker in workers:
                worker.check_alive()
            if len(scores) != last_count:
                last, last_count = time.monotonic(), len(scores)
            elif time.monotonic() - last > STALL_TIMEOUT_S:
                raise RuntimeError(f"the workers scored {len(scores):,} of "
                                   f"{order.transactions:,} and then stalled")
            await asyncio.sleep(0.2)
        finished = time.time()
        await asyncio.sleep(1.0)  # alerts are published with the scores of the same batch
    finally:
        stop.set()
        await asyncio.gather(*readers)
    rate = len(scores) / (finished - first_at) if first_at and finished > first_at else 0.0
    return scores, alerts, rate


def order_metrics(web_port: int) -> str:
    """The worker's counters of what can break parity: out-of-order records, forced
    alignment releases and label-barrier give-ups."""
    url = f"http://127.0.0.1:{web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    wanted = ("fraudstream_out_of_order_total", "fraudstream_alignment_forced_releases_total",
              "fraudstream_label_barrier_timeouts_total")
    return ", ".join(line for line in text.splitlines() if line.startswith(wanted)) or "none"


def main() -> int:
    """Run both paths and compare them."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat,
                        default=dt.date(2018, 8, 1))
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--warmup-days", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=Settings().topic_partitions,
                        help="partitions per topic (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the partitions (default 1)")
    parser.add_argument("--rate", type=float, default=None,
                        help="transactions/s offered (default: max speed)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="model bundle (default models/current, else .run/demo/bundle)")
    parser.add_argument("--kill-after", type=int, default=None, metavar="N",
                        help="kill -9 a worker after N scores and start another")
    parser.add_argument("--add-after", type=int, default=None, metavar="N",
                        help="start one more worker after N scores")
    args = parser.parse_args()
    bundle_dir = args.bundle or next(
        (p for p in (REPO / "models" / "current", REPO / ".run" / "demo" / "bundle")
         if (p / "manifest.json").is_file()), None)
    if bundle_dir is None:
        sys.exit("no model bundle: pass --bundle, or run `fraudstream demo` once to cache one")
    bundle = load_bundle(bundle_dir)

    epoch = dt.date(1970, 1, 1)
    start_us = (args.start - epoch).days * MICROS_PER_DAY
    warm_us = start_us - args.warmup_days * MICROS_PER_DAY
    stop_us = start_us + args.days * MICROS_PER_DAY
    full = load_history(args.data, None, bundle.manifest.label_delay_days)
    lo, hi = np.searchsorted(full.event_time_us, [warm_us, stop_us], side="left")
    history = full.slice(int(lo), int(hi))
    evaluated = int(np.count_nonzero(history.event_time_us >= start_us))
    print(f"{len(history):,} transactions {args.start - dt.timedelta(days=args.warmup_days)}"
          f"..{args.start + dt.timedelta(days=args.days)} ({evaluated:,} compared from "
          f"{args.start}), bundle {bundle.model_version}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fraudstream-parity-") as tmp:
        data = Path(tmp) / "slice.jsonl"
        write_jsonl(history, data)
        out = Path(tmp) / "backtest.parquet"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "stream_app", "backtest", "--input", str(data),
             "--models", str(bundle_dir), "--out", str(out), "--from", args.start.isoformat(),
             "--no-progress"],
            check=True,
        )  # fmt: skip
        backtest_s = time.monotonic() - started
        table = pq.read_table(out, columns=["transaction_id", "score", "is_alert"]).to_pydict()

        with contextlib.ExitStack() as stack:
            kafka = stack.enter_context(start_tansu())
            redis_server = stack.enter_context(start_redis())
            settings = Settings.from_env(
                kafka_bootstrap=kafka.address, redis_url=redis_server.url, namespace=NAMESPACE,
                model_dir=str(bundle_dir), publish_scores=True,
                label_delay_days=bundle.manifest.label_delay_days,
                topic_partitions=args.partitions,
            )
            ensure_topics_sync(kafka.address, stream_topics(NAMESPACE).all,
                               settings.topic_partitions, 1)
            started = 0

            def start_worker() -> WorkerProcess:  # one group; each its own web port and log
                nonlocal started
                started += 1
                return stack.enter_context(worker_process(
                    settings.replace(web_port=free_port()),
                    REPO / ".run" / "parity" / f"worker-{started - 1}.log",
                ))

            workers = [start_worker() for _ in range(args.workers)]
            scores, alerts, rate = asyncio.run(stream_scores(
                history, workers, args.rate, start_worker, args.kill_after, args.add_after
            ))
            for i, worker in enumerate(workers):
                print(f"worker {i} order metrics: " + order_metrics(worker.settings.web_port),
                      flush=True)

    expected = dict(zip(table["transaction_id"], table["score"], strict=True))
    expected_alerts = {t for t, a in zip(table["transaction_id"], table["is_alert"],
                                         strict=True) if a}
    in_range = {str(t) for t, when in zip(history.transaction_id, history.event_time_us,
                                          strict=True) if when >= start_us}
    stream_alerts = alerts & in_range
    missing = sorted(set(expected) - set(scores))
    ids = sorted(set(expected) & set(scores))
    diff = np.abs(np.array([scores[t] for t in ids]) - np.array([expected[t] for t in ids]))
    worst = float(diff.max()) if len(diff) else 0.0
    mismatched = int(np.count_nonzero(diff > TOLERANCE))
    equal = (not missing and set(expected) == in_range and mismatched == 0
             and stream_alerts == expected_alerts)
    p50, p99 = (float(np.percentile(diff, q)) if len(diff) else 0.0 for q in (50, 99))
    print(f"compared {len(ids):,} transactions from {args.start}: |stream - backtest| max "
          f"{worst:.3g}, p99 {p99:.3g}, p50 {p50:.3g}; {mismatched:,} beyond {TOLERANCE}, "
          f"{len(missing):,} not scored by the stream")
    for i in np.argsort(-diff)[: min(5, mismatched)]:
        print(f"  transaction {ids[i]}: stream {scores[ids[i]]:.7f}, backtest "
              f"{expected[ids[i]]:.7f}")
    print(f"alerts: stream {len(stream_alerts):,}, backtest {len(expected_alerts):,}, "
          f"in both {len(stream_alerts & expected_alerts):,}")
    print(f"stream {rate:,.0f} events/s; backtest {backtest_s:.0f} s; parity "
          f"{'HOLDS' if equal else 'BROKEN'}")
    print(json.dumps({
        "transactions": len(ids), "max_abs_diff": worst, "mismatches": mismatched,
        "not_scored": len(missing), "alerts_stream": len(stream_alerts),
        "alerts_backtest": len(expected_alerts), "alerts_equal": stream_alerts == expected_alerts,
        "parity": equal, "stream_events_per_s": round(rate, 1),
    }))
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
