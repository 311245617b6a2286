"""The cost of TLS: the same runs over plaintext and over TLS connections, alternating.

Four private servers on free loopback ports: two tansu brokers, one plain and one behind
stunnel (TLS with client certificates; tansu advertises the stunnel port, tansu 0.6.0
cannot serve TLS itself), and two redis-servers, one plain and one speaking only TLS with
an ACL user. Certificates are made by openssl for the run. Each of ``--rounds`` rounds runs
both modes, in alternating order (plain first in odd rounds), on fresh namespaces:

1. **produce**: a simulated history (``--events`` transactions and their labels) published
   at max speed by the replay tool (``fraudstream replay``'s producer, linger 5 ms):
   records per second.
2. **consume**: the transactions topic read back to its end without a group (the
   ``fraudstream alerts`` reader): records per second.
3. **worker**: one ``fraudstream worker`` child process (default settings, alerts only)
   scores the pre-produced records; events per second from the offsets it commits, as in
   ``bench_stream.py`` (first to last sighting).

The TLS figures include stunnel's extra hop and its CPU on the same two cores: an upper
bound of what a broker terminating TLS itself would cost. Prints every run, then the
median per mode and the TLS / plaintext ratio, then ONE JSON line.

    .venv/bin/python benchmarks/bench_tls.py [--events 100000] [--rounds 3] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_stream import (
    RUN_DIR,
    Progress,
    bench_history,
    default_bundle,
    follow_commits,
    python_speed,
    run_and_watch,
)

from stream_app.connections import KafkaConnection
from stream_app.local_services import (
    RunningService,
    free_port,
    start_redis,
    start_tansu,
    start_tansu_tls,
)
from stream_app.local_tls import Certificates, make_certificates
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import worker_process
from stream_app.topics import ensure_topics_sync, stream_topics

REDIS_USER = "bench"
REDIS_PASSWORD = "bench-password"
MODES = ("plaintext", "tls")


@dataclass(frozen=True)
class Run:
    """One mode's figures in one round."""

    mode: str
    produce_per_s: float
    consume_per_s: float
    worker_per_s: float


@contextlib.contextmanager
def servers(certs: Certificates) -> Iterator[dict[str, dict[str, Any]]]:
    """The settings (besides namespace and bundle) of each mode, while its servers run."""
    with (
        start_tansu() as kafka,
        start_redis() as redis,
        start_tansu_tls(certs) as kafka_tls,
        start_redis(tls=certs, users={REDIS_USER: REDIS_PASSWORD}) as redis_tls,
    ):
        yield {
            "plaintext": {"kafka_bootstrap": kafka.address, "redis_url": redis.url},
            "tls": tls_settings(certs, kafka_tls, redis_tls),
        }


def tls_settings(
    certs: Certificates, kafka: RunningService, redis: RunningService
) -> dict[str, Any]:
    """TLS to both, with client certificates; the ACL login to Redis."""
    files = {"cafile": str(certs.ca), "certfile": str(certs.client_cert),
             "keyfile": str(certs.client_key)}  # fmt: skip
    return {
        "kafka_bootstrap": kafka.address,
        "kafka_security_protocol": "SSL",
        **{f"kafka_ssl_{name}": path for name, path in files.items()},
        "redis_url": redis.url,
        "redis_username": REDIS_USER,
        "redis_password": REDIS_PASSWORD,
        **{f"redis_ssl_{name}": path for name, path in files.items()},
    }


def run_mode(
    mode: str, security: dict[str, Any], bundle: Path, history: TransactionHistory, round_: int
) -> Run:
    """Produce, consume, then let a worker score the records, on a fresh namespace."""
    settings = Settings.from_env(
        {}, **security, namespace=f"tls-bench-{mode}-{round_}", model_dir=str(bundle),
        web_port=free_port(),
    )  # fmt: skip
    kafka = KafkaConnection.from_settings(settings)
    topics = stream_topics(settings.namespace)
    ensure_topics_sync(kafka, topics.all, settings.topic_partitions, 1)
    order = replay_order(history)
    produced = asyncio.run(replay(history, order, kafka, topics, None, progress=False))
    read = 0

    def count(_tp: Any, records: Any) -> None:
        nonlocal read
        read += len(records)

    started = time.perf_counter()
    asyncio.run(read_topic(kafka, topics.transactions, count))
    consume_per_s = read / (time.perf_counter() - started)
    watch = Progress(order.transactions)
    follow = follow_commits(kafka, topics.consumer_group, topics.transactions,
                            settings.topic_partitions, watch)  # fmt: skip
    log = RUN_DIR / "bench" / f"worker-tls-bench-{mode}.log"

    def start(stack: contextlib.ExitStack[Any]) -> Any:
        return stack.enter_context(worker_process(settings, log)).check_alive

    asyncio.run(run_and_watch(follow, watch, start))
    run = Run(mode, produced.events_per_s, consume_per_s, watch.events_per_s)
    print(f"round {round_} {mode:<9}  produce {run.produce_per_s:>9,.0f}/s  consume "
          f"{run.consume_per_s:>9,.0f}/s  worker {run.worker_per_s:>8,.0f} events/s  "
          f"(yardstick {python_speed():.1f} M adds/s)", flush=True)  # fmt: skip
    return run


def main() -> None:
    """Alternate the modes for ``--rounds`` rounds; print the medians and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()

    bundle = args.bundle or default_bundle()
    history = bench_history(args.events, seed=7)
    print(f"{len(history):,} simulated transactions, bundle {bundle}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp, servers(make_certificates(Path(tmp))) as modes:
        for round_ in range(1, args.rounds + 1):
            order = MODES if round_ % 2 else MODES[::-1]
            runs += [run_mode(mode, modes[mode], bundle, history, round_) for mode in order]

    medians = {
        mode: {
            figure: statistics.median(getattr(r, figure) for r in runs if r.mode == mode)
            for figure in ("produce_per_s", "consume_per_s", "worker_per_s")
        }
        for mode in MODES
    }
    print()
    print(f"{'median of ' + str(args.rounds) + ' rounds':<24}{'plaintext':>12}{'TLS':>12}"
          f"{'TLS / plain':>13}")  # fmt: skip
    for figure, label in (("produce_per_s", "produce records/s"),
                          ("consume_per_s", "consume records/s"),
                          ("worker_per_s", "worker events/s")):  # fmt: skip
        plain, tls = medians["plaintext"][figure], medians["tls"][figure]
        print(f"{label:<24}{plain:>12,.0f}{tls:>12,.0f}{tls / plain:>13.2f}")
    print(json.dumps({
        "events": len(history),
        "rounds": args.rounds,
        "median": {mode: {k: round(v, 1) for k, v in m.items()} for mode, m in medians.items()},
        "runs": [vars(r) | {k: round(v, 1) for k, v in vars(r).items() if k != "mode"}
                 for r in runs],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
