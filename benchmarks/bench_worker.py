"""Worker-only throughput: the batched worker in-process on a pre-produced backlog.

On a private tansu broker and redis-server (free loopback ports), a simulated history
(``--customers`` / ``--terminals`` / ``--days``; every transaction gets its label 7 days
later) is replayed at full speed first; then one worker (``create_app`` started in this
process) consumes the backlog. Prints transactions/s from worker start until the last
transaction was consumed and confirmed, labels/s, CPU µs per transaction of the worker and
of its window process, Redis's µs per window-write call, and the worker's per-stage
seconds (from its metrics).

    .venv/bin/python benchmarks/bench_worker.py --models DIR [--days 10] [--batch 2000]
        [--challengers N]  (N shadow challengers: copies of the bundle in a model store)
        [--profile PATH]   (cProfile of the worker phase only; slows it down)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import redis

from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.model_store import CHALLENGERS, CURRENT
from stream_app.settings import Settings
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import replay, replay_order
from stream_app.topics import ensure_topics, stream_topics
from stream_app.worker.app import create_app
from stream_app.worker.metrics import STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="model bundle directory")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--challengers", type=int, default=0,
                        help="shadow challengers scoring every batch beside the bundle")
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the worker phase")
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="bench-models-"))
    model_dir = _model_store(Path(args.models), store, args.challengers)
    bundle = load_bundle(store / "serving")
    history = simulate(args.customers, args.terminals, args.days, dt.date(2018, 4, 1), seed=1)
    n = len(history)
    with start_tansu() as kafka, start_redis() as redis_server:
        settings = Settings.from_env(
            {},
            kafka_bootstrap=kafka.address,
            redis_url=redis_server.url,
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            topic_partitions=args.partitions,
            batch_max_events=args.batch,
            web_port=free_port(),
            model_dir=str(model_dir),
        )

        async def run() -> None:
            topics = stream_topics(settings.namespace)
            await ensure_topics(settings.kafka_bootstrap, topics.all, args.partitions)
            order = replay_order(history, None, None)
            await replay(history, order, settings.kafka_bootstrap, topics, None, progress=False)
            app = create_app(settings, bundle)
            profile = cProfile.Profile() if args.profile else None
            if profile:
                profile.enable()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            reaped0 = _children_cpu_s()
            await app.start()
            registry = app.runtime.metrics.registry

            def consumed(kind: str) -> float:
                sample = registry.get_sample_value("fraudstream_events_in_total", {"kind": kind})
                return sample or 0.0

            def confirmed() -> float:
                return (
                    registry.get_sample_value(
                        "fraudstream_stage_seconds_count", {"stage": "commit"}
                    )
                    or 0.0
                )

            while consumed("transaction") < n:  # noqa: ASYNC110 - polling a metric
                await asyncio.sleep(0.01)
            await app.runtime.drained()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if profile:
                profile.disable()
                profile.dump_stats(args.profile)
            await app.stop()  # waits for the window process: its CPU is in RUSAGE_CHILDREN
            windows_cpu = _children_cpu_s() - reaped0
            stats = redis.Redis.from_url(redis_server.url).info("commandstats")
            evalsha = stats.get("cmdstat_evalsha", {})
            print(f"transactions: {n:,} (+{consumed('label'):,.0f} labels), batch {args.batch}, "
                  f"{args.challengers} challengers")
            print(
                f"worker: {n / wall:,.0f} transactions/s, {(n + consumed('label')) / wall:,.0f} "
                f"records/s, {cpu / n * 1e6:.0f} µs CPU per transaction in the worker process "
                f"+ {windows_cpu / n * 1e6:.0f} in its window process (incl. start-up)"
            )
            print(
                f"redis: {evalsha.get('usec_per_call', 0) / 1000:.1f} ms per window write "
                f"({evalsha.get('calls', 0)} calls), commits {confirmed():.0f}"
            )
            for stage in STAGES:
                total = registry.get_sample_value("fraudstream_stage_seconds_sum", {"stage": stage})
                print(f"  stage {stage:8s} {total or 0.0:7.2f} s")
            print(
                f"peak RSS: worker {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
                f" MiB, window process "
                f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB"
            )

        asyncio.run(run())
    shutil.rmtree(store)


def _model_store(bundle: Path, store: Path, challengers: int) -> Path:
    """A model store serving a copy of ``bundle``, with ``challengers`` more copies."""
    shutil.copytree(bundle, store / "serving")
    names = [f"challenger-{i}" for i in range(challengers)]
    for name in names:
        shutil.copytree(bundle, store / name)
    (store / CURRENT).write_text("serving\n", encoding="utf-8")
    (store / CHALLENGERS).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return store


def _children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
