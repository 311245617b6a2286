"""Scale model: per-transaction costs of the running pipeline, measured, and a projection.

On a fresh private tansu broker and redis-server per run (free loopback ports), one
``fraudstream worker`` child process is started and left idle for ``--idle-s`` seconds
(the cost of partitions with no traffic), then a simulated history (``--events``
transactions and their labels, 5,000 customers, 10,000 terminals) is replayed at full
speed from a thread of this process while the worker scores it. The run ends when the
worker's group has committed every transaction and label (a commit follows the stored
windows and the acknowledged alerts). Measured per transaction:

- CPU µs of each process, from ``/proc/<pid>/stat`` (utime + stime) before and after:
  the worker, its window process (its child), redis-server, tansu; the load generator is
  the replay thread's own CPU time (``time.thread_time``);
- Redis: command µs (``INFO commandstats``, reset before the run) and memory per customer
  and per terminal window (``MEMORY USAGE`` of up to ``--sample-keys`` keys of each kind,
  and ``used_memory`` growth over all windows);
- broker bytes: per topic, key + value + headers of every record as consumed after the run,
  and tansu's resident memory growth (its in-memory storage, record batch overhead included).

Runs: every ``--partitions`` count (default 4 and 64) with the worker as configured by
default (alerts only), 4 partitions again with every score published
(``--no-scores-run`` skips it), and 4 partitions with each ``--workers`` count above 1
(default 2; one group: the workers share the terminal windows, so each runs the
cross-worker coordination; their figures are sums). Prints a table per run, the 64 - 4
partition difference, the coordination's cost (N workers - 1), then a projection to 10k /
100k / 1M transactions/s from the 4-partition run with the most workers and the
assumptions printed with it, and ONE JSON line.

    .venv/bin/python benchmarks/scale_model.py [--events 200000] [--partitions 4 64]
        [--workers 1 2] [--idle-s 10] [--bundle DIR]

One heavy benchmark at a time: the figures are CPU time, but the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from aiokafka import TopicPartition
from bench_stream import (
    RUN_DIR,
    Progress,
    bench_history,
    default_bundle,
    follow_commits,
    python_speed,
    rss_mb,
    worker_profile,
    worker_settings,
)

from stream_app.features.redis_store import KEY_LAYOUT
from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.sources.history import TransactionHistory
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import worker_process
from stream_app.topics import StreamTopics, ensure_topics_sync, stream_topics

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STALL_TIMEOUT_S = 120.0
RATES = (10_000, 100_000, 1_000_000)
SCRIPTS = ("evalsha", "eval")
"""Redis commands that run the window store's Lua scripts (their own calls included)."""


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime: fields 14, 15


def cpu_sum(pids: Sequence[int]) -> float:
    """CPU seconds ``pids`` used so far, together."""
    return sum(map(cpu_s, pids))


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


@dataclass(frozen=True)
class Run:
    """The figures of one run, per transaction unless named otherwise."""

    partitions: int
    scores_published: bool
    workers: int
    transactions: int
    labels: int
    events_per_s: float
    cpu_us: dict[str, float]
    idle_cpu_ms_per_s: dict[str, float]
    redis_command_us: float
    redis_commands: dict[str, float]
    redis_bytes_per_customer: float
    redis_bytes_per_terminal: float
    redis_used_bytes_per_window: float
    windows: dict[str, int]
    broker_bytes: dict[str, float]
    broker_records: dict[str, int]
    profile: str
    tansu_rss_bytes: float
    yardsticks: tuple[float, float]


async def topic_bytes(kafka: str, topic: str) -> tuple[int, int]:
    """Records of ``topic`` and the sum of their key + value + header bytes."""
    totals = [0, 0]

    def count(_tp: TopicPartition, records: Sequence[Any]) -> None:
        totals[0] += len(records)
        totals[1] += sum(
            len(r.key or b"")
            + len(r.value or b"")
            + sum(len(k) + len(v or b"") for k, v in r.headers)
            for r in records
        )

    await read_topic(kafka, topic, count)
    return totals[0], totals[1]


def memory_per_key(client: redis.Redis, pattern: str, sample: int) -> tuple[float, int]:
    """Mean ``MEMORY USAGE`` of up to ``sample`` keys matching ``pattern``, and how many
    keys match."""
    keys = list(client.scan_iter(pattern, count=1000))
    used = [int(client.memory_usage(k, samples=0) or 0) for k in keys[:sample]]
    return (sum(used) / len(used) if used else 0.0), len(keys)


def replay_in_thread(
    history: TransactionHistory, kafka: str, topics: StreamTopics, spent: list[float]
) -> threading.Thread:
    """Start a thread that replays ``history`` at full speed; it appends its CPU seconds."""
    order = replay_order(history)

    def run() -> None:
        start = time.thread_time()
        asyncio.run(replay(history, order, kafka, topics, None, progress=False))
        spent.append(time.thread_time() - start)

    thread = threading.Thread(target=run, name="load-generator")
    thread.start()
    return thread


async def watch_commits(
    kafka: str,
    topics: StreamTopics,
    partitions: int,
    transactions: Progress,
    labels: Progress,
    alive: Callable[[], None],
    loading: threading.Thread,
) -> None:
    """Wait until the group committed every transaction and label; fail on a stall."""
    stop = asyncio.Event()
    followers = [
        asyncio.create_task(
            follow_commits(kafka, topics.consumer_group, topic, partitions, watch)(stop)
        )
        for topic, watch in ((topics.transactions, transactions), (topics.labels, labels))
    ]
    try:
        last, seen = time.monotonic(), -1
        while not (transactions.done.is_set() and labels.done.is_set()):
            alive()
            if transactions.count + labels.count != seen:
                last, seen = time.monotonic(), transactions.count + labels.count
            elif time.monotonic() - last > STALL_TIMEOUT_S and not loading.is_alive():
                raise RuntimeError(
                    f"{transactions.count:,} transactions and {labels.count:,} "
                    f"labels committed, then nothing for {STALL_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*followers)


def measure(
    history: TransactionHistory,
    bundle: Path,
    partitions: int,
    *,
    publish_scores: bool,
    idle_s: float,
    sample_keys: int,
    workers: int = 1,
) -> Run:
    """One run on a fresh broker and Redis: see the module docstring. With several
    ``workers`` (one group) the worker and window-process figures are their sums."""
    tag = f"p{partitions}-w{workers}-{'scores' if publish_scores else 'alerts'}"
    with start_tansu() as kafka, start_redis() as redis_server:
        namespace = f"scale-{partitions}"
        settings = worker_settings(
            kafka.address, redis_server.url, bundle, namespace, publish_scores=publish_scores
        ).replace(topic_partitions=partitions)
        topics = stream_topics(namespace)
        ensure_topics_sync(kafka.address, topics.all, partitions, 1)
        client = redis.Redis.from_url(redis_server.url)
        with contextlib.ExitStack() as stack:
            started_workers = [
                stack.enter_context(worker_process(
                    settings.replace(web_port=free_port()) if i else settings,
                    RUN_DIR / "scale" / f"worker-{tag}-{i}.log",
                ))
                for i in range(workers)
            ]  # fmt: skip
            windows = [children(w.process.pid) for w in started_workers]
            if any(len(window) != 1 for window in windows):
                raise RuntimeError(f"expected one window process per worker, not {windows}")
            pids = {
                "worker": [w.process.pid for w in started_workers],
                "window process": [window[0] for window in windows],
                "redis-server": [redis_server.process.pid],
                "tansu": [kafka.process.pid],
            }

            def alive() -> None:
                for each in started_workers:
                    each.check_alive()

            time.sleep(1.0)  # past start-up
            idle0 = {name: cpu_sum(ids) for name, ids in pids.items()}
            time.sleep(idle_s)
            idle = {
                name: (cpu_sum(ids) - idle0[name]) / idle_s * 1000 for name, ids in pids.items()
            }

            client.config_resetstat()
            tansu_rss0 = rss_mb(kafka.process.pid)
            speed_before = python_speed()
            before = {name: cpu_sum(ids) for name, ids in pids.items()}
            started = time.monotonic()
            spent: list[float] = []
            loading = replay_in_thread(history, kafka.address, topics, spent)
            order = replay_order(history)
            transactions, labels = Progress(order.transactions), Progress(order.labels)
            asyncio.run(
                watch_commits(
                    kafka.address,
                    topics,
                    partitions,
                    transactions,
                    labels,
                    alive,
                    loading,
                )
            )
            elapsed = time.monotonic() - started
            after = {name: cpu_sum(ids) for name, ids in pids.items()}
            profile = worker_profile(settings)
            loading.join()
            speed_after = python_speed()
        n = order.transactions
        cpu = {name: (after[name] - before[name]) / n * 1e6 for name in pids}
        cpu["load generator"] = spent[0] / n * 1e6
        tansu_rss = (rss_mb(kafka.process.pid) - tansu_rss0) * 2**20 / n
        commands = {
            name.removeprefix("cmdstat_"): stats["usec"] / n
            for name, stats in client.info("commandstats").items()
            if name not in ("cmdstat_config", "cmdstat_info")  # this script's own
        }
        prefix = f"{topics.redis_key_prefix}{KEY_LAYOUT}:"
        per_customer, customers = memory_per_key(client, prefix + "cust:*", sample_keys)
        per_terminal, terminals = memory_per_key(client, prefix + "term:*", sample_keys)
        used = float(client.info("memory")["used_memory"])
        client.flushall()
        empty = float(client.info("memory")["used_memory"])
        broker, records = {}, {}
        for name, topic in (
            ("transactions", topics.transactions),
            ("labels", topics.labels),
            ("scores", topics.scores),
            ("alerts", topics.alerts),
        ):
            records[name], size = asyncio.run(topic_bytes(kafka.address, topic))
            broker[name] = size / n
        client.close()
    return Run(
        partitions=partitions,
        scores_published=publish_scores,
        workers=workers,
        transactions=n,
        labels=order.labels,
        events_per_s=n / elapsed,
        cpu_us=cpu,
        idle_cpu_ms_per_s=idle,
        redis_command_us=sum(us for name, us in commands.items() if name in SCRIPTS),
        redis_commands=commands,
        redis_bytes_per_customer=per_customer,
        redis_bytes_per_terminal=per_terminal,
        redis_used_bytes_per_window=(used - empty) / max(1, customers + terminals),
        windows={"customers": customers, "terminals": terminals},
        broker_bytes=broker,
        broker_records=records,
        profile=profile,
        tansu_rss_bytes=tansu_rss,
        yardsticks=(speed_before, speed_after),
    )


PROCESSES = ("worker", "window process", "redis-server", "tansu", "load generator")


def print_run(run: Run) -> None:
    """The figures of one run as a table."""
    what = "every score published" if run.scores_published else "alerts only (default)"
    workers = f", {run.workers} workers" if run.workers > 1 else ""
    print(
        f"\n== {run.partitions} partitions{workers}, {what}: {run.transactions:,} transactions + "
        f"{run.labels:,} labels, {run.events_per_s:,.0f} transactions/s end to end; "
        f"yardstick {run.yardsticks[0]:.1f} / {run.yardsticks[1]:.1f}"
    )
    print(f"{'process':<18}{'CPU µs/tx':>11}{'idle CPU ms/s':>15}")
    for name in PROCESSES:
        idle = run.idle_cpu_ms_per_s.get(name)
        print(f"{name:<18}{run.cpu_us[name]:>11.1f}{'-' if idle is None else f'{idle:.1f}':>15}")
    print(f"{'all':<18}{sum(run.cpu_us.values()):>11.1f}")
    top = sorted(run.redis_commands.items(), key=lambda kv: -kv[1])[:4]
    print(
        f"redis: Lua scripts {run.redis_command_us:.2f} µs/tx; by command (calls made inside "
        "the scripts are counted there too): " + ", ".join(f"{name} {us:.2f}" for name, us in top)
    )
    print(
        f"redis memory: {run.redis_bytes_per_customer:,.0f} B per customer window, "
        f"{run.redis_bytes_per_terminal:,.0f} B per terminal window (MEMORY USAGE); "
        f"used_memory {run.redis_used_bytes_per_window:,.0f} B per window over "
        f"{run.windows['customers']:,} customers + {run.windows['terminals']:,} terminals "
        f"({run.transactions / max(1, run.windows['customers']):.0f} transactions per customer)"
    )
    print(
        "broker bytes/tx (key + value + headers): "
        + ", ".join(f"{name} {size:.1f}" for name, size in run.broker_bytes.items())
        + f"; total {sum(run.broker_bytes.values()):.1f}; tansu RSS growth "
        f"{run.tansu_rss_bytes:.0f} B/tx; records "
        + ", ".join(f"{name} {count:,}" for name, count in run.broker_records.items())
    )
    print(run.profile)


def print_coordination_cost(one: Run, several: Run) -> None:
    """What ``several`` workers (sharing terminals: the cross-worker coordination) cost
    beyond one worker owning every partition, per transaction and idle."""
    print(
        f"\n== cross-worker coordination: {several.workers} workers - 1 worker, "
        f"{one.partitions} partitions: {several.events_per_s:,.0f} vs "
        f"{one.events_per_s:,.0f} transactions/s end to end (all of it on 2 cores)"
    )
    print(f"{'process':<18}{'Δ CPU µs/tx':>13}{'Δ idle ms/s':>13}")
    for name in PROCESSES:
        delta = several.cpu_us[name] - one.cpu_us[name]
        idle = several.idle_cpu_ms_per_s.get(name)
        extra = "-" if idle is None else f"{idle - one.idle_cpu_ms_per_s[name]:.2f}"
        print(f"{name:<18}{delta:>13.1f}{extra:>13}")
    total = sum(several.cpu_us.values()) - sum(one.cpu_us.values())
    print(
        f"{'all':<18}{total:>13.1f}; Redis commands {several.redis_command_us:.2f} vs "
        f"{one.redis_command_us:.2f} µs/tx (scripts), "
        + ", ".join(
            f"{name} {several.redis_commands.get(name, 0.0):.2f}" for name in ("hmget", "hset")
        )
    )


def print_partition_cost(few: Run, many: Run) -> None:
    """What ``many`` partitions cost beyond ``few``, per transaction and idle."""
    extra = many.partitions - few.partitions
    print(
        f"\n== per-partition cost: {many.partitions} - {few.partitions} partitions "
        f"({extra} more per topic, {5 * extra} in all)"
    )
    print(f"{'process':<18}{'Δ CPU µs/tx':>13}{'Δ idle ms/s':>13}{'idle µs/s per partition':>25}")
    for name in PROCESSES:
        delta = many.cpu_us[name] - few.cpu_us[name]
        if name in many.idle_cpu_ms_per_s:
            idle = many.idle_cpu_ms_per_s[name] - few.idle_cpu_ms_per_s[name]
            print(f"{name:<18}{delta:>13.1f}{idle:>13.2f}{idle * 1000 / extra:>25.1f}")
        else:
            print(f"{name:<18}{delta:>13.1f}{'-':>13}{'-':>25}")


@dataclass(frozen=True)
class Assumptions:
    """What the projection assumes beyond the measured figures."""

    utilisation: float = 0.7
    """Fraction of a core a process may use at the planned peak."""
    customers: int = 50_000_000
    customer_bytes: float = 3_300.0
    """Redis bytes per customer window (issue 14's figure for a customer with a month of
    handbook-like traffic, about 2 transactions a day)."""
    peak_to_average: float = 3.0
    """The planned rate is the peak; windows hold the average rate times their horizon."""
    customer_horizon_days: int = 30
    terminal_horizon_days: int = 37
    """The default feature set's window horizons (terminal: 30 days + the 7-day delay)."""
    shard_memory_gb: float = 25.0
    """Window state one Redis shard holds (a 32 GB node less fork and fragmentation room)."""
    replication: int = 3
    broker_mb_per_s: float = 100.0
    """Produce bytes per second one Apache Kafka broker takes, replication included."""
    partitions_per_broker: int = 4_000
    partitions_per_worker: int = 2
    """Partitions per worker at the projected rate, so workers can be added without a move."""


def project(
    run: Run, assume: Assumptions, idle_us_per_partition: float | None
) -> list[dict[str, Any]]:
    """Workers, Redis shards, partitions and brokers for each of :data:`RATES`, from ``run``
    and the worker's idle CPU per partition (µs per second; None: not measured, taken as 0)."""
    per_core = assume.utilisation * 1e6
    # The worker's two processes each get a core; the busier one limits it. The main
    # process also pays its partitions' idle cost (fetch requests), per second.
    main_budget = per_core - (idle_us_per_partition or 0.0) * assume.partitions_per_worker
    per_worker = min(
        main_budget / run.cpu_us["worker"], per_core / run.cpu_us["window process"]
    )
    per_shard_cpu = per_core / run.cpu_us["redis-server"]
    customer_per_tx = run.redis_bytes_per_customer * run.windows["customers"] / run.transactions
    terminal_per_tx = run.redis_bytes_per_terminal * run.windows["terminals"] / run.transactions
    wire = sum(run.broker_bytes.values())
    rows = []
    for rate in RATES:
        held_s = rate / assume.peak_to_average * 86_400
        customer_gb = (
            max(
                assume.customers * assume.customer_bytes,
                held_s * assume.customer_horizon_days * customer_per_tx,
            )
            / 1e9
        )
        terminal_gb = held_s * assume.terminal_horizon_days * terminal_per_tx / 1e9
        workers = math.ceil(rate / per_worker)
        shards_cpu = math.ceil(rate / per_shard_cpu)
        shards_memory = math.ceil((customer_gb + terminal_gb) / assume.shard_memory_gb)
        partitions = 2 ** math.ceil(math.log2(max(1, workers * assume.partitions_per_worker)))
        mb_per_s = rate * wire * assume.replication / 1e6
        brokers_bytes = math.ceil(mb_per_s / assume.broker_mb_per_s)
        brokers_partitions = math.ceil(
            5 * partitions * assume.replication / assume.partitions_per_broker
        )
        rows.append({
            "rate": rate, "workers": workers, "redis_shards": max(shards_cpu, shards_memory),
            "redis_shards_cpu": shards_cpu, "redis_shards_memory": shards_memory,
            "state_gb": customer_gb + terminal_gb, "customer_gb": customer_gb,
            "terminal_gb": terminal_gb, "partitions": partitions, "broker_mb_per_s": mb_per_s,
            "brokers_bytes": brokers_bytes, "brokers_partitions": brokers_partitions,
        })  # fmt: skip
    print(
        f"\n== projection from the {run.partitions}-partition run with {run.workers} "
        f"worker(s) ({'scores published' if run.scores_published else 'alerts only'}"
        f"{'; the cross-worker coordination included' if run.workers > 1 else ''})"
    )
    idle = (
        "not measured: one partition count"
        if idle_us_per_partition is None
        else f"{idle_us_per_partition:,.0f} µs/s each, measured"
    )
    print(
        f"assumed: {assume.utilisation:.0%} of a core usable per process; a worker = its "
        f"process + its window process, one core each, {assume.partitions_per_worker} "
        f"partitions per worker (idle cost {idle}), partitions rounded up to a power of 2; "
        f"a Redis shard = one core and "
        f"{assume.shard_memory_gb:.0f} GB of windows; windows hold the average rate "
        f"(peak / {assume.peak_to_average:g}) for {assume.customer_horizon_days} days "
        f"(customers) / {assume.terminal_horizon_days} days (terminals) at "
        f"{customer_per_tx:.0f} / {terminal_per_tx:.0f} B per transaction (measured), and "
        f"customer windows at least {assume.customers / 1e6:.0f} M x "
        f"{assume.customer_bytes:,.0f} B; broker replication {assume.replication}, "
        f"{assume.broker_mb_per_s:.0f} MB/s and {assume.partitions_per_broker:,} partition "
        "replicas per broker (Apache Kafka; tansu's figures above are not a broker's)"
    )
    capacity = {
        "worker CPU": per_worker,
        "Redis shard CPU": per_shard_cpu,
        "broker bytes": assume.broker_mb_per_s * 1e6 / (wire * assume.replication),
    }
    print("capacity of one unit, tx/s: " + ", ".join(
        f"{name} {value:,.0f}" for name, value in sorted(capacity.items(), key=lambda kv: kv[1]))
        + f"; {wire:.0f} B/tx on the broker before replication")  # fmt: skip
    print(
        f"{'tx/s':>10}{'workers':>9}{'partitions':>12}{'Redis shards':>14}"
        f"{'(CPU / memory)':>16}{'state GB':>10}{'broker MB/s':>13}{'brokers':>9}"
        "  binds first"
    )
    for row in rows:
        redis_binds = "memory" if row["redis_shards_memory"] > row["redis_shards_cpu"] else "CPU"
        brokers = max(row["brokers_bytes"], row["brokers_partitions"])
        broker_binds = (
            "bytes" if row["brokers_bytes"] >= row["brokers_partitions"] else ("partition count")
        )
        print(
            f"{row['rate']:>10,}{row['workers']:>9}{row['partitions']:>12}"
            f"{row['redis_shards']:>14}{row['redis_shards_cpu']:>8} / "
            f"{row['redis_shards_memory']:<6}{row['state_gb']:>10,.0f}"
            f"{row['broker_mb_per_s']:>13,.0f}{brokers:>9}  Redis {redis_binds}; "
            f"workers: CPU; brokers: {broker_binds}"
        )
    return rows


def main() -> None:
    """Measure every run, print the tables, the projection and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--sample-keys", type=int, default=2_000)
    parser.add_argument("--no-scores-run", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts of the smallest partition count, alerts only (default 1 2)",
    )
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()
    bundle = args.bundle or default_bundle()
    history = bench_history(args.events, seed=5)
    print(f"{len(history):,} simulated transactions, bundle {bundle}")
    few_partitions = min(args.partitions)
    plan = [(p, False, 1) for p in args.partitions]
    if not args.no_scores_run:
        plan.append((few_partitions, True, 1))
    plan += [(few_partitions, False, w) for w in args.workers if w > 1]
    runs = []
    for partitions, scores, workers in plan:
        runs.append(
            measure(
                history,
                bundle,
                partitions,
                publish_scores=scores,
                idle_s=args.idle_s,
                sample_keys=args.sample_keys,
                workers=workers,
            )
        )
        print_run(runs[-1])
    alerts_only = [r for r in runs if not r.scores_published and r.workers == 1]
    few, many = alerts_only[0], alerts_only[-1]
    shared = [r for r in runs if r.workers > 1]
    for several in shared:
        print_coordination_cost(few, several)
    idle_us_per_partition = None
    if many.partitions > few.partitions:
        print_partition_cost(few, many)
        idle_us_per_partition = max(0.0, (many.idle_cpu_ms_per_s["worker"]
                                          - few.idle_cpu_ms_per_s["worker"]) * 1000
                                    / (many.partitions - few.partitions))  # fmt: skip
    rows = project(shared[-1] if shared else few, Assumptions(), idle_us_per_partition)
    print(json.dumps({"runs": [asdict(r) for r in runs], "projection": rows}))


if __name__ == "__main__":
    main()
