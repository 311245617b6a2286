"""The hostile-input suite at benchmark size: bad records of every kind beside valid traffic.

On a private tansu broker and redis-server, one worker (in this process, scores published)
gets ``--valid`` valid transactions (about 1 % of them late) and ``--bad`` generated bad
records (tests/hostile_records.py: not JSON, bad UTF-8, duplicate keys, control
characters in ids, far-future and label-order violations, conflicts, tombstones, oversize
payloads, ...). Prints the bad records by kind and how many of each reached the DLQ with a
reason, the valid transactions scored (and flagged late), and the worker's state.

The model is the tests' small bundle with threshold 0: every scored transaction raises an
alert too.

    .venv/bin/python -m benchmarks.hostile_input [--valid 25000] [--bad 50000]

(as a module from the repository root: it imports the generator from tests/)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from stream_app.local_services import start_redis, start_tansu
from tests.hostile_records import MAX_PAYLOAD_BYTES, hostile_traffic
from tests.integration.hostile_run import run_hostile
from tests.integration.worker_support import bundle_alerting_on_all, worker_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valid", type=int, default=25_000)
    parser.add_argument("--bad", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per part")
    args = parser.parse_args()
    bundle = bundle_alerting_on_all()
    traffic = hostile_traffic(args.valid, args.bad)
    with start_tansu() as kafka, start_redis() as redis_server:
        settings = worker_settings(
            kafka.address, redis_server.url, max_payload_bytes=MAX_PAYLOAD_BYTES,
            batch_max_events=2000,
        )  # fmt: skip
        started = time.perf_counter()
        outcome = asyncio.run(run_hostile(traffic, settings, bundle, args.timeout))
        seconds = time.perf_counter() - started
    missing = outcome.missing_from_dlq(traffic)
    print(f"{'kind':<26}{'sent':>8}{'in DLQ':>9}")
    for kind, sent in sorted(traffic.bad_counts().items()):
        print(f"{kind:<26}{sent:>8}{sent - missing[kind]:>9}")
    bad, dead = len(traffic.bad), len(outcome.dead)
    print(f"bad records: {bad:,} sent, {dead:,} dead letters, {sum(missing.values())} missing")
    print(f"dead letters without a reason: {sum(1 for _, reason in outcome.dead if not reason)}")
    scored = Counter(s.transaction_id for s in outcome.scores)
    late = sum(1 for s in outcome.scores if s.late)
    expected_late = sum(traffic.valid.values())
    unscored = sum(1 for tx_id in traffic.valid if not scored[tx_id])
    print(
        f"valid transactions: {len(traffic.valid):,} sent, {len(scored):,} scored "
        f"({unscored} unscored, {sum(scored.values()) - len(scored)} scored twice), "
        f"{late} flagged late of {expected_late} built late"
    )
    print(f"worker alive at the end: {outcome.alive}; {len(traffic.records):,} records in "
          f"{seconds:.1f} s (worker start to last output read)")  # fmt: skip


if __name__ == "__main__":
    main()
