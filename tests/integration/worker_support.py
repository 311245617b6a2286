"""Helpers of the worker tests: bundles with a chosen threshold, an in-process worker, topics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from stream_app.connections import Kafka, KafkaConnection
from stream_app.local_services import free_port
from stream_app.scoring.bundle import ModelBundle, load_bundle
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.topics import StreamTopics, ensure_topics, stream_topics
from stream_app.worker.app import WorkerApp, create_app
from tests.unit.model_bundles import tiny_bundle

PARTITIONS = 2


def bundle_with_threshold(threshold: float) -> Path:
    """The session's tiny bundle alerting at ``threshold`` (0 = every transaction alerts)."""
    return tiny_bundle(threshold).path


def bundle_alerting_on_all() -> ModelBundle:
    """The tiny bundle at threshold 0: every scored transaction is an alert."""
    return load_bundle(bundle_with_threshold(0.0))


def small_history(seed: int = 3, n_days: int = 12) -> TransactionHistory:
    """A simulated history of a few hundred transactions (every one labelled after 7 days)."""
    return simulate(
        n_customers=40, n_terminals=30, n_days=n_days, start_date=dt.date(2018, 4, 1), seed=seed
    )


def worker_settings(kafka_bootstrap: str, redis_url: str, **changes: object) -> Settings:
    """Settings of a worker on a fresh namespace, private web port, small batches."""
    values: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "namespace": f"w-{uuid.uuid4().hex[:10]}",
        "topic_partitions": PARTITIONS,
        "web_port": free_port(),
        "batch_max_events": 200,
        "label_barrier_timeout_ms": 3000,
    }
    values.update(changes)
    return Settings.from_env({}, **values)


async def create_topics(settings: Settings) -> StreamTopics:
    topics = stream_topics(settings.namespace)
    await ensure_topics(
        KafkaConnection.from_settings(settings), topics.all, settings.topic_partitions
    )
    return topics


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, bundle: ModelBundle) -> AsyncIterator[WorkerApp]:
    """A worker app started in this event loop, stopped (in-flight batches committed) after."""
    app = create_app(settings, bundle)
    await app.start()
    try:
        await wait_for(lambda: app.runtime.ready, 30, "the worker to start")
        yield app
    finally:
        await app.stop()


async def replay_history(history: TransactionHistory, settings: Settings) -> None:
    """Publish ``history`` (transactions and labels, event-time order) at full speed."""
    await replay(
        history,
        replay_order(history, None, None),
        KafkaConnection.from_settings(settings),
        stream_topics(settings.namespace),
        None,
        progress=False,
    )


def replay_at_rate(
    history: TransactionHistory, bootstrap: str, namespace: str, events_per_s: float
) -> None:
    """Replay ``history`` into ``namespace`` at ``events_per_s`` transactions/s (blocks: run
    it in a thread beside a worker that is killed or failed over)."""
    asyncio.run(
        replay(history, replay_order(history, None, None), bootstrap, stream_topics(namespace),
               None, events_per_s=events_per_s, progress=False)
    )  # fmt: skip


async def read_all(bootstrap: Kafka, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its high watermark."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    await read_topic(bootstrap, topic, lambda _tp, batch: records.extend(batch))
    return records


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def counter_value(app: WorkerApp, name: str, **labels: str) -> float:
    """Current value of a worker metric sample (0 when absent)."""
    value = app.runtime.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value
