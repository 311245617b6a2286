"""Client CPU of RedisWindowStore per batch: the window write and the cold read.

On a private redis-server (free loopback port), a simulated history (``--customers`` /
``--terminals`` / ``--days``, every transaction labelled 7 days later) is fed to a fresh
store in worker-like batches: ``--batch`` transactions plus the labels known by the
batch's last event time. Only this process's CPU (``time.process_time``) is counted, so
Redis's own work (it runs in another process) is not; garbage collection is set up as in
the worker (inputs frozen, its thresholds); each figure is the min of ``--runs`` runs,
each on a fresh key prefix. ``--pseudonyms`` names the windows by HMAC pseudonyms of the
ids (a fixed key), as the worker does with ``FRAUDSTREAM_PSEUDONYM_KEY``. Prints:

- compute: CPU µs per transaction of ``store.compute`` over the batches after
  ``--warm-days`` (the window maths on cached windows, the Redis keys of the changed ones
  and the read of the windows not cached yet);
- write: CPU µs per window written by ``store.write_all`` of one batch (the Lua
  compare-and-set call, argument building, packing and reply parsing) over the batches
  after ``--warm-days``;
- read: CPU µs per window of ``store._read`` for every key of the history on a store with
  nothing cached (one round trip; decoding the states is not included);
- Redis-side ``usec_per_call`` and µs per window from INFO commandstats (EVALSHA for the
  writes, the read's commands for the read), and hiredis availability.

With ``--cluster`` it measures store throughput instead, single Redis vs a local Redis
Cluster of 3 masters with a replica each (``WAIT 1`` after each write round), ``--runs``
rounds alternating the two: wall-clock transactions per second of ``compute`` +
``write_all`` of every batch on a fresh store as the worker opens it (threaded writes).

    .venv/bin/python benchmarks/bench_redis_store.py [--days 12] [--batch 2000] [--runs 3]
        [--pseudonyms] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import time
import uuid
from typing import Any

import numpy as np
import redis
import redis.asyncio as redis_asyncio
from redis.utils import HIREDIS_AVAILABLE

from stream_app.connections import RedisConnection
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.redis_store import RedisStoreConfig, RedisWindowStore
from stream_app.features.spec import feature_set
from stream_app.features.store import transaction_events
from stream_app.local_cluster import start_redis_cluster
from stream_app.local_services import start_redis
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY
from stream_app.worker.app import _GC_THRESHOLDS

FS = feature_set("default")
PSEUDONYM_KEY = b"bench-pseudonym-key-0123456789abcdef"
Batch = tuple[list[TransactionEvent], list[LabelEvent]]


def batches(history: TransactionHistory, size: int) -> list[Batch]:
    """Worker-like batches: ``size`` transactions and the labels known by their last time."""
    transactions = transaction_events(history)
    rows = np.flatnonzero(history.label_time_us != NO_LABEL_US)
    rows = rows[np.argsort(history.label_time_us[rows], kind="stable")]
    labels = [
        LabelEvent(*transactions[i][:4], int(history.label_time_us[i]), bool(history.is_fraud[i]))
        for i in rows.tolist()
    ]
    out: list[Batch] = []
    next_label = 0
    for start in range(0, len(transactions), size):
        chunk = transactions[start : start + size]
        stop = next_label
        while stop < len(labels) and labels[stop].label_time_us <= chunk[-1].event_time_us:
            stop += 1
        out.append((chunk, labels[next_label:stop]))
        next_label = stop
    return out


async def run_once(url: str, work: list[Batch], measured_from: int, key: bytes) -> dict[str, float]:
    """Feed every batch to a fresh store; CPU of the measured computes and writes and of a
    cold read."""
    client = redis_asyncio.Redis.from_url(url)
    sync = redis.Redis.from_url(url)
    prefix = f"fraudstream:bench-{uuid.uuid4().hex[:8]}:"
    store = RedisWindowStore(client, FS, key_prefix=prefix, ttl_days=45, pseudonym_key=key)
    compute_cpu = write_cpu = write_calls = write_usec = 0.0
    windows = computed_transactions = 0
    for index, (transactions, labels) in enumerate(work):
        started = time.process_time()
        computed = await store.compute(transactions, labels)
        if index >= measured_from:
            compute_cpu += time.process_time() - started
            computed_transactions += len(transactions)
        if index < measured_from:
            await store.write_all([computed])
            continue
        before = sync.info("commandstats")  # the reads also run EVALSHA: count writes only
        started = time.process_time()
        await store.write_all([computed])
        write_cpu += time.process_time() - started
        after = sync.info("commandstats")
        write_calls += _calls(after, "evalsha") - _calls(before, "evalsha")
        write_usec += _usec(after, "evalsha") - _usec(before, "evalsha")
        windows += len(computed.writes)
    customers = sorted({t.customer_id for batch in work for t in batch[0]})
    terminals = sorted({t.terminal_id for batch in work for t in batch[0]})
    cold = RedisWindowStore(client, FS, key_prefix=prefix, ttl_days=45, pseudonym_key=key)
    sync.config_resetstat()
    started = time.process_time()
    await cold._read(customers, terminals)
    read_cpu = time.process_time() - started
    read_stats = sync.info("commandstats")
    await client.aclose()
    sync.close()
    read_windows = len(customers) + len(terminals)
    return {
        "compute_us": compute_cpu / computed_transactions * 1e6,
        "write_us": write_cpu / windows * 1e6,
        "write_windows": windows,
        "write_calls": write_calls,
        "write_server_us_per_call": write_usec / write_calls,
        "write_server_us_per_window": write_usec / windows,
        "read_us": read_cpu / read_windows * 1e6,
        "read_windows": read_windows,
        "read_server_us_per_window": sum(_usec(read_stats, c) for c in _read_commands(read_stats))
        / read_windows,
    }


async def throughput_once(connection: RedisConnection, work: list[Batch], key: bytes) -> float:
    """Transactions per second (wall clock) of computing and writing every batch."""
    prefix = f"fraudstream:bench-{uuid.uuid4().hex[:8]}:"
    store = RedisStoreConfig(connection, FS, prefix, 45, 5.0, pseudonym_key=key).open()
    started = time.perf_counter()
    for transactions, labels in work:
        await store.write_all([await store.compute(transactions, labels)])
    elapsed = time.perf_counter() - started
    await store.close()
    return sum(len(t) for t, _ in work) / elapsed


def compare_cluster(work: list[Batch], runs: int, key: bytes) -> None:
    """Print store throughput on a single Redis and on a 3-master cluster, alternating."""
    with start_redis() as server, start_redis_cluster(masters=3, replicas=1) as cluster:
        single = RedisConnection(server.url)
        clustered = RedisConnection(cluster.url, cluster=True)
        figures: dict[str, list[float]] = {"single Redis": [], "3-master cluster": []}
        for run in range(runs):
            for name, connection in zip(figures, (single, clustered), strict=True):
                rate = asyncio.run(throughput_once(connection, work, key))
                figures[name].append(rate)
                print(f"run {run + 1}: {name}: {rate:,.0f} transactions/s")
    for name, rates in figures.items():
        print(f"{name}: median {np.median(rates):,.0f} transactions/s over {runs} runs")


def _read_commands(stats: dict[str, Any]) -> list[str]:
    return [k.removeprefix("cmdstat_") for k in stats if k != "cmdstat_config"]


def _calls(stats: dict[str, Any], command: str) -> float:
    return float(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _usec(stats: dict[str, Any], command: str) -> float:
    return float(stats.get(f"cmdstat_{command}", {}).get("usec", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--warm-days", type=int, default=8, help="days before measuring writes")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pseudonyms", action="store_true", help="HMAC pseudonyms as keys")
    parser.add_argument(
        "--cluster", action="store_true", help="throughput: single Redis vs a 3-master cluster"
    )
    args = parser.parse_args()
    key = PSEUDONYM_KEY if args.pseudonyms else b""
    history = simulate(args.customers, args.terminals, args.days, dt.date(2018, 4, 1), seed=1)
    work = batches(history, args.batch)
    warm_until = int(history.event_time_us[0]) + args.warm_days * MICROS_PER_DAY
    measured_from = next(i for i, (t, _) in enumerate(work) if t[0].event_time_us >= warm_until)
    labels = sum(len(b[1]) for b in work[measured_from:]) / (len(work) - measured_from)
    print(
        f"{len(history):,} transactions, {len(work)} batches of {args.batch} "
        f"(+{labels:,.0f} labels each), writes measured from batch {measured_from}; "
        f"hiredis {'yes' if HIREDIS_AVAILABLE else 'no'}; "
        f"{'pseudonymous' if key else 'clear'} ids in keys"
    )
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    if args.cluster:
        compare_cluster(work, args.runs, key)
        return
    with start_redis() as server:
        results = [
            asyncio.run(run_once(server.url, work, measured_from, key)) for _ in range(args.runs)
        ]
    best = {name: min(r[name] for r in results) for name in results[0]}
    per_batch = best["write_windows"] / best["write_calls"]
    print(f"compute: {best['compute_us']:.2f} µs CPU per transaction")
    print(
        f"write: {best['write_us']:.2f} µs CPU per window written "
        f"({per_batch:,.0f} windows per call, {best['write_us'] * per_batch / 1000:.2f} ms "
        f"per call); redis {best['write_server_us_per_call']:,.0f} µs per call, "
        f"{best['write_server_us_per_window']:.2f} µs per window"
    )
    print(
        f"read:  {best['read_us']:.2f} µs CPU per window read ({best['read_windows']:,.0f} "
        f"windows, one round trip); redis {best['read_server_us_per_window']:.2f} µs per window"
    )


if __name__ == "__main__":
    main()
