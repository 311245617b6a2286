"""Run :mod:`tests.hostile_records` traffic through a live worker and collect what came out."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from stream_app.contracts import TransactionScore, decode_score
from stream_app.scoring.bundle import ModelBundle
from stream_app.settings import Settings
from stream_app.worker import emit as dlq
from stream_app.worker.app import WorkerApp
from tests.hostile_records import Record, Traffic
from tests.integration.worker_support import (
    counter_value,
    create_topics,
    read_all,
    running_worker,
    wait_for,
)


@dataclass(frozen=True)
class Outcome:
    """The worker's output for a traffic: score records, dead letters (value, reason), and
    whether the worker was still running at the end."""

    scores: list[TransactionScore]
    dead: list[tuple[bytes, str]]
    alive: bool

    def missing_from_dlq(self, traffic: Traffic) -> Counter[str]:
        """Bad records without a dead letter of the same bytes, by kind."""
        left = Counter(value for value, _ in self.dead)
        missing: Counter[str] = Counter()
        for kind, record in traffic.bad:
            value = b"" if record.value is None else record.value
            if left[value]:
                left[value] -= 1
            else:
                missing[kind] += 1
        return missing


async def run_hostile(
    traffic: Traffic, settings: Settings, bundle: ModelBundle, timeout_s: float
) -> Outcome:
    """Produce ``traffic`` to a running worker (scores published) in its two parts, each
    time waiting until every record so far is scored or dead-lettered; then read the
    scores and DLQ topics."""
    topics = await create_topics(settings)
    settings = settings.replace(publish_scores=True)
    topic_of = {"transactions": topics.transactions, "labels": topics.labels}
    records = traffic.records
    pause = len(records) if traffic.pause_at is None else traffic.pause_at
    async with running_worker(settings, bundle) as app:
        for end in (pause, len(records)):
            await _produce(settings, topic_of, records[pause if end > pause else 0 : end])
            produced = records[:end]
            with contextlib.suppress(AssertionError):  # the caller's assertions say what failed
                await wait_for(
                    lambda: _settled(app, traffic, produced),  # noqa: B023 - awaited here
                    timeout_s,
                    "the records",
                )
        alive = app.runtime.ready and not app.runtime.crashed
    scored = await read_all(settings.kafka_bootstrap, topics.scores)
    dead = [
        (r.value or b"", dict(r.headers)[dlq.REASON].decode())
        for r in await read_all(settings.kafka_bootstrap, topics.dlq)
    ]
    return Outcome([decode_score(r.value) for r in scored], dead, alive)


async def _produce(settings: Settings, topic_of: dict[str, str], records: Sequence[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for record in records:
            await producer.send(topic_of[record.kind], record.value, key=record.key)
        await producer.flush()
    finally:
        await producer.stop()


def _settled(app: WorkerApp, traffic: Traffic, produced: Sequence[Record]) -> bool:
    """Whether every produced record is scored or dead-lettered."""
    kinds = ("transaction", "label")
    dead = sum(counter_value(app, "fraudstream_dlq_total", kind=kind) for kind in kinds)
    scored = counter_value(app, "fraudstream_scores_out_total")
    bad = {id(record) for _, record in traffic.bad}
    n_bad = sum(id(record) in bad for record in produced)
    return dead >= n_bad and scored >= len(produced) - n_bad
