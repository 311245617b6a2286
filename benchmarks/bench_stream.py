"""End-to-end stream benchmark: the batched worker against the naive per-event pipeline.

On a private tansu broker and redis-server (free loopback ports), with the demo's model
bundle (trained first when ``.run/demo/bundle`` is missing, or ``--bundle``):

1. **throughput**: a simulated history (``--events`` transactions and their labels) is
   pre-produced, then one ``fraudstream worker`` child process scores it; events/s counts
   transactions from the first to the last seen done. Two runs, each on its own namespace:
   the worker as configured by default (alerts only; progress is the offsets it commits,
   which it does only after the alerts were acknowledged and the windows stored), then
   with every score published (``FRAUDSTREAM_PUBLISH_SCORES``, progress is the score
   records received), which is what the naive pipeline does too.
2. **naive**: ``benchmarks/naive_pipeline.py`` (the same code, one event at a time) scores
   the first ``--naive-events`` transactions of the same records; events/s the same way.
3. **latency**: a fresh worker gets transactions offered at a fixed ``--rate`` for
   ``--seconds``; latency is the time from handing a transaction to the producer to
   receiving its score record (alerts are published in the same batch, so this is the
   ingest-to-alert latency), p50 and p99. Offers start ``--warmup-s`` after the worker is
   up: a worker just assigned its partitions holds its first batch for up to
   ``align_idle_ms`` until the labels partitions count as quiet.

The throughput run is bracketed by a yardstick (M pure-Python loop adds per CPU second):
this shared virtual machine's speed varies by about ±30 % from minute to minute.

Prints a table, then ONE JSON line with ``events_per_s`` (default settings),
``events_per_s_scores_published``, ``naive_events_per_s``, ``speedup`` (scores published
vs naive), ``latency_p50_ms``, ``latency_p99_ms`` and ``rss_mb``.

    .venv/bin/python benchmarks/bench_stream.py [--events 200000] [--naive-events 20000]
        [--rate 2000] [--seconds 20] [--warmup-s 3] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream_app.connections import Kafka, kafka_consumer
from stream_app.contracts import TransactionScore
from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.sources.simulator import simulate
from stream_app.tools.demo import DemoPlan, demo_bundle
from stream_app.tools.replay import LINGER_MS, replay, replay_order
from stream_app.tools.topic_reader import FETCH_MAX_WAIT_MS, read_topic
from stream_app.tools.worker_process import log_tail, stop_process_group, worker_process
from stream_app.topics import ensure_topics_sync, stream_topics

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".run"
STALL_TIMEOUT_S = 120.0
_SCORE = msgspec.json.Decoder(TransactionScore)


@dataclass(eq=False)
class Progress:
    """Counts transactions done as they are seen; events/s from the first sighting to the
    last (what the first sighting covered is excluded: its start is not seen)."""

    expected: int
    count: int = 0
    first_at: float | None = None
    first_count: int = 0
    last_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reached(self, count: int, now: float) -> None:
        """``count`` transactions are done at ``now``."""
        if count <= self.count:
            return
        if self.first_at is None:
            self.first_at, self.first_count = now, count
        self.count, self.last_at = count, now
        if self.count >= self.expected:
            self.done.set()

    @property
    def events_per_s(self) -> float:
        """Transactions per second from the first sighting to the last."""
        if self.first_at is None or self.last_at <= self.first_at:
            return 0.0
        return (self.count - self.first_count) / (self.last_at - self.first_at)


@dataclass(eq=False)
class ScoreWatch(Progress):
    """Counts score records as they arrive; keeps their arrival times per transaction id."""

    keep_times: bool = False
    received_at: dict[str, float] = field(default_factory=dict)

    def __call__(self, _tp: TopicPartition, records: Sequence[Any]) -> None:
        now = time.time()
        if self.keep_times:
            for record in records:
                self.received_at[_SCORE.decode(record.value).transaction_id] = now
        self.reached(self.count + len(records), now)


Follow = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Watches a worker's progress until the event is set."""


def follow_scores(
    bootstrap: Kafka, topic: str, watch: ScoreWatch, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
) -> Follow:
    """Follow the score records on ``topic`` (a record is seen up to ``fetch_max_wait_ms``
    late: tansu answers an empty fetch only after that wait, even when records arrive)."""
    return lambda stop: read_topic(
        bootstrap, topic, watch, follow=True, stop=stop, fetch_max_wait_ms=fetch_max_wait_ms
    )


def follow_commits(
    bootstrap: Kafka, group: str, topic: str, partitions: int, watch: Progress
) -> Follow:
    """Follow the offsets ``group`` committed on ``topic`` (polled every 20 ms): a worker
    commits a transaction only after its windows are in Redis and its alerts on the broker,
    so this sees transactions done when no score records are published."""

    async def follow(stop: asyncio.Event) -> None:
        consumer = kafka_consumer(bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            while not stop.is_set():
                offsets = [await consumer.committed(tp) for tp in tps]
                watch.reached(sum(o or 0 for o in offsets), time.time())
                await asyncio.sleep(0.02)
        finally:
            await consumer.stop()

    return follow


async def run_and_watch(
    follow: Follow,
    watch: Progress,
    start_child: Callable[[contextlib.ExitStack[Any]], Callable[[], None]],
    offer: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Start ``follow`` first, then the child process (and ``offer`` records), and wait
    until ``watch`` saw every transaction done; fail when the child dies or progress stalls."""
    stop = asyncio.Event()
    reader = asyncio.create_task(follow(stop))
    try:
        with contextlib.ExitStack() as stack:
            alive = await asyncio.to_thread(start_child, stack)
            offering: asyncio.Task[None] | None = (
                asyncio.create_task(offer()) if offer is not None else None
            )
            last, last_count = time.monotonic(), -1
            while not watch.done.is_set():
                alive()
                for task in (reader, offering):
                    if task is not None and task.done():
                        task.result()
                if watch.count != last_count:
                    last, last_count = time.monotonic(), watch.count
                elif time.monotonic() - last > STALL_TIMEOUT_S:
                    raise RuntimeError(f"{watch.count:,} of {watch.expected:,} transactions "
                                       f"done, then nothing for {STALL_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.1)
            if offering is not None:
                await offering
    finally:
        stop.set()
        await asyncio.gather(reader, return_exceptions=True)


@contextlib.contextmanager
def naive_process(args: list[str], log_path: Path) -> Iterator[Callable[[], None]]:
    """Run ``naive_pipeline.py`` with ``args``; yields its liveness check."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "naive_pipeline.py"), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def alive() -> None:
        if process.poll() not in (None, 0):
            raise RuntimeError(f"the naive pipeline failed:\n{log_tail(log_path)}")

    try:
        yield alive
    finally:
        stop_process_group(process)


def default_bundle() -> Path:
    """The demo's model bundle (``.run/demo/bundle``, trained first when missing)."""
    plan = DemoPlan()
    demo_history = simulate(plan.customers, plan.terminals, plan.warmup_days + 1,
                            plan.start_date, plan.seed, plan.label_delay_days)
    return demo_bundle(RUN_DIR / "demo", plan, demo_history, print)


def bench_history(events: int, seed: int) -> TransactionHistory:
    """A simulated history of (at least) ``events`` transactions, 5,000 customers."""
    customers = 5_000
    days = max(2, math.ceil(events / (customers * 2.0)) + 2)
    history = simulate(customers, 10_000, days, dt.date(2018, 4, 1), seed)
    return history.slice(0, min(events, len(history)))


def worker_settings(
    kafka: str, redis_url: str, bundle: Path, namespace: str, *, publish_scores: bool = True
) -> Settings:
    """Settings of a benchmark worker (its own web port)."""
    return Settings.from_env(
        kafka_bootstrap=kafka, redis_url=redis_url, namespace=namespace,
        model_dir=str(bundle), publish_scores=publish_scores, web_port=free_port(),
    )


@dataclass(frozen=True)
class Throughput:
    """One throughput run: transactions per second, the worker's RSS, the yardsticks."""

    events_per_s: float
    rss_mb: float
    speed_before: float
    speed_after: float


def measure_throughput(
    kafka: str, redis_url: str, bundle: Path, history: TransactionHistory, namespace: str,
    *, publish_scores: bool, log_path: Path,
) -> Throughput:
    """Pre-produce ``history`` to ``namespace``, then let one worker score all of it.

    With ``publish_scores`` progress is the score records received, else the offsets the
    worker committed (after the alerts were acknowledged and the windows stored).
    """
    settings = worker_settings(kafka, redis_url, bundle, namespace,
                               publish_scores=publish_scores)
    topics = stream_topics(namespace)
    ensure_topics_sync(kafka, topics.all, settings.topic_partitions, 1)
    order = replay_order(history)
    produced = asyncio.run(replay(history, order, kafka, topics, None, progress=False))
    print(produced.line(topics))
    watch: Progress
    if publish_scores:
        scores = watch = ScoreWatch(order.transactions)
        follow = follow_scores(kafka, topics.scores, scores)
    else:
        watch = Progress(order.transactions)
        follow = follow_commits(kafka, topics.consumer_group, topics.transactions,
                                settings.topic_partitions, watch)
    rss: list[float] = []

    def batched(stack: contextlib.ExitStack[Any]) -> Callable[[], None]:
        worker = stack.enter_context(worker_process(settings, log_path))
        stack.callback(lambda: rss.append(rss_mb(worker.process.pid)))
        stack.callback(lambda: print(worker_profile(settings)))
        return worker.check_alive

    speed_before = python_speed()
    asyncio.run(run_and_watch(follow, watch, batched))
    speed_after = python_speed()
    what = "scores published" if publish_scores else "alerts only (default settings)"
    print(f"batched worker, {what}: {watch.count:,} done, {watch.events_per_s:,.0f} "
          f"events/s, worker RSS {rss[0]:.0f} MiB; machine yardstick {speed_before:.1f} / "
          f"{speed_after:.1f} M Python loop adds per CPU second before / after")
    return Throughput(watch.events_per_s, rss[0], speed_before, speed_after)


@dataclass(frozen=True)
class LatencyRun:
    """One fixed-rate run: the latency of every offered transaction in history order (NaN
    if its score never came) and the worker's ``/metrics`` text at the end of the run."""

    by_row_ms: np.ndarray[Any, np.dtype[np.float64]]
    offered: int
    offer_s: float
    metrics: str

    @property
    def latency_ms(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The latency of every scored transaction."""
        return self.by_row_ms[~np.isnan(self.by_row_ms)]

    @property
    def achieved_per_s(self) -> float:
        """Transactions handed to the producer per second, first to last."""
        return (self.offered - 1) / self.offer_s if self.offer_s > 0 else 0.0


def measure_latency(
    kafka: str, settings: Settings, history: TransactionHistory, rate: float, *,
    warmup_s: float, log_path: Path, follow_fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
    linger_ms: int = LINGER_MS, worker_env: dict[str, str] | None = None,
) -> LatencyRun:
    """Offer ``history`` at ``rate`` transactions/s (labels with them) to a fresh worker
    with ``settings`` (and ``worker_env``), ``warmup_s`` after it is healthy; latency is the
    time from handing a transaction to the producer to receiving its score record."""
    topics = stream_topics(settings.namespace)
    ensure_topics_sync(kafka, topics.all, settings.topic_partitions, 1)
    order = replay_order(history)
    sent_at = np.full(len(history), np.nan)
    watch = ScoreWatch(order.transactions, keep_times=True)
    metrics: list[str] = []

    def on_sent(rows: Any, at: float) -> None:
        sent_at[rows] = at

    async def offer() -> None:
        await asyncio.sleep(warmup_s)  # a running worker, not one just assigned
        await replay(history, order, kafka, topics, None, events_per_s=rate, progress=False,
                     on_sent=on_sent, linger_ms=linger_ms)

    def start(stack: contextlib.ExitStack[Any]) -> Callable[[], None]:
        worker = stack.enter_context(worker_process(settings, log_path, extra_env=worker_env))
        stack.callback(lambda: metrics.append(worker_metrics(settings)))  # before it stops
        return worker.check_alive

    follow = follow_scores(kafka, topics.scores, watch, follow_fetch_wait_ms)
    asyncio.run(run_and_watch(follow, watch, start, offer))
    row_of = {str(t): i for i, t in enumerate(history.transaction_id)}
    by_row_ms = np.full(len(history), np.nan)
    for tx, at in watch.received_at.items():
        row = row_of[tx]
        by_row_ms[row] = (at - sent_at[row]) * 1000
    offer_s = float(np.nanmax(sent_at) - np.nanmin(sent_at))
    return LatencyRun(by_row_ms, order.transactions, offer_s, metrics[0] if metrics else "")


def python_speed() -> float:
    """Millions of pure-Python loop additions per CPU second right now: a yardstick of how
    fast this (shared, virtual) machine runs Python at the moment (it has varied ±30 %
    between minutes here), to read the events/s against."""
    start = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i
    return 5.0 / (time.process_time() - start)


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` and its child processes (the worker's window
    process) in MiB (0 when unknown)."""
    try:
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024 + sum(map(rss_mb, children))
    except OSError:
        pass
    return 0.0


def worker_metrics(settings: Settings) -> str:
    """The worker's ``/metrics`` text ("" when it does not answer)."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        print(f"worker metrics unavailable: {url} answered {exc}")
        return ""


def worker_profile(settings: Settings) -> str:
    """Seconds the worker spent per stage and its mean batch sizes, from its /metrics."""
    text = worker_metrics(settings)
    if not text:
        return "worker profile unavailable"
    sums: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("fraudstream_stage_seconds_sum", "fraudstream_batch_size_sum",
                               "fraudstream_batch_size_count"):
                key = sample.labels.get("stage") or sample.labels.get("kind", "")
                sums[(sample.name, key)] = sample.value
    stages = ", ".join(f"{key} {value:.1f}" for (name, key), value in sorted(sums.items())
                       if name == "fraudstream_stage_seconds_sum")
    batches = ", ".join(
        f"{key} {value / max(sums.get(('fraudstream_batch_size_count', key), 1), 1):.0f}"
        for (name, key), value in sorted(sums.items()) if name == "fraudstream_batch_size_sum")
    return f"worker seconds by stage: {stages}; mean records per fetch: {batches}"


def main() -> None:
    """Run the three measurements and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--warmup-s", type=float, default=3.0,
                        help="seconds the latency worker runs before the first offer")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()

    bundle = args.bundle or default_bundle()
    history = bench_history(args.events, seed=5)
    log_dir = RUN_DIR / "bench"
    print(f"{len(history):,} simulated transactions, bundle {bundle}")

    with start_tansu() as kafka, start_redis() as redis_server:
        # 1. throughput of the batched worker on pre-produced records: as configured by
        # default (alerts only), then publishing every score like the naive pipeline does
        default = measure_throughput(
            kafka.address, redis_server.url, bundle, history, "bench-default",
            publish_scores=False, log_path=log_dir / "worker-default.log",
        )
        scores = measure_throughput(
            kafka.address, redis_server.url, bundle, history, "bench",
            publish_scores=True, log_path=log_dir / "worker.log",
        )
        partitions = Settings.from_env().topic_partitions

        # 2. the naive per-event pipeline on the first records of the same topics
        naive = stream_topics("bench-naive")
        ensure_topics_sync(kafka.address, naive.all, partitions, 1)
        naive_watch = ScoreWatch(min(args.naive_events, len(history)))
        naive_args = [
            "--bootstrap", kafka.address, "--redis-url", redis_server.url,
            "--bundle", str(bundle), "--input-namespace", "bench",
            "--namespace", "bench-naive", "--transactions", str(naive_watch.expected),
        ]  # fmt: skip
        asyncio.run(run_and_watch(
            follow_scores(kafka.address, naive.scores, naive_watch), naive_watch,
            lambda stack: stack.enter_context(naive_process(naive_args, log_dir / "naive.log")),
        ))
        print(f"naive pipeline: {naive_watch.count:,} scored, "
              f"{naive_watch.events_per_s:,.0f} events/s")

        # 3. latency at a fixed offered rate, fresh worker and namespace
        paced = history.slice(0, min(len(history), int(args.rate * args.seconds)))
        latency_ms = measure_latency(
            kafka.address, worker_settings(kafka.address, redis_server.url, bundle, "bench-lat"),
            paced, args.rate, warmup_s=args.warmup_s, log_path=log_dir / "worker-latency.log",
        ).latency_ms
        p50, p99 = (float(np.percentile(latency_ms, q)) for q in (50, 99))

    naive_per_s = naive_watch.events_per_s
    speedup = scores.events_per_s / naive_per_s if naive_per_s else 0.0
    print()
    print(f"{'pipeline':<44}{'events/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'batched worker, default (alerts only)':<44}{default.events_per_s:>10,.0f}"
          f"{'-':>10}{'-':>10}")
    print(f"{'batched worker, every score published':<44}{scores.events_per_s:>10,.0f}"
          f"{p50:>10.1f}{p99:>10.1f}")
    print(f"{'naive per-event pipeline (scores published)':<44}{naive_per_s:>10,.0f}"
          f"{'-':>10}{'-':>10}")
    print(f"speedup {speedup:.1f}x (both publishing every score); latency at "
          f"{args.rate:,.0f} events/s offered for {args.seconds:.0f} s "
          f"({len(latency_ms):,} transactions, ingest to score record)")
    print(json.dumps({
        "events_per_s": round(default.events_per_s, 1),
        "events_per_s_scores_published": round(scores.events_per_s, 1),
        "naive_events_per_s": round(naive_per_s, 1),
        "speedup": round(speedup, 2),
        "latency_p50_ms": round(p50, 2),
        "latency_p99_ms": round(p99, 2),
        "rss_mb": round(max(default.rss_mb, scores.rss_mb), 1),
    }))

if __name__ == "__main__":
    main()
