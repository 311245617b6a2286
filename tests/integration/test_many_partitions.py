"""Many partitions: a worker on 64-partition topics, and a namespace moved to more partitions.

1. A worker on topics of 64 partitions each (``FRAUDSTREAM_TOPIC_PARTITIONS=64``; most
   partitions hold a few customers, some none) scores a small simulated history exactly as
   ``fraudstream backtest`` does: every score to 1e-6, identical alert sets.
2. The in-place move to more partitions (README, "Scaling out"): the history's first days
   go through two workers on 4 partitions; the consumer lag is drained to 0 (the group's
   committed offsets reach every record published), the workers stop, the namespace's
   topics get 64 partitions, two workers with ``topic_partitions=64`` score the rest. Each
   customer's records now land on another partition, but the windows in Redis are keyed
   by id: every score of both phases equals the backtest of the whole history. tansu
   cannot add partitions to a topic (no CreatePartitions), so the topics are deleted and
   created again, which also drops the group's offsets; on Apache Kafka the step is
   ``kafka-topics.sh --alter --partitions``.
3. The other way: a new namespace of 64 partitions whose windows are warmed by a replay
   from a date D (the window horizon before D as warm-up, as ``fraudstream replay --from
   D`` publishes it) scores from D what ``fraudstream backtest --from D`` scores.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import pytest
from aiokafka import TopicPartition

from stream_app.connections import kafka_admin, kafka_consumer
from stream_app.contracts import TransactionScore, decode_alert, to_epoch_us
from stream_app.features.horizon import warmup_us
from stream_app.local_services import free_port
from stream_app.scoring.bundle import load_bundle
from stream_app.settings import Settings
from stream_app.sources.events import ReplayOrder
from stream_app.sources.history import TransactionHistory
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.worker_process import worker_process
from stream_app.topics import StreamTopics, ensure_topics, stream_topics
from tests.integration.stream_checks import assert_scores_equal, backtest_of
from tests.integration.worker_support import (
    create_topics,
    read_all,
    running_worker,
    worker_settings,
)
from tests.unit.model_bundles import tiny_bundle

pytestmark = [pytest.mark.integration, pytest.mark.train]

MANY = 64
TIMEOUT_S = 120
MOVE_AT = dt.datetime(2018, 4, 9, tzinfo=dt.UTC)  # day 8 of 14
_SCORE = msgspec.json.Decoder(TransactionScore)


def _history() -> TransactionHistory:
    # ~3,000 transactions of 120 customers over 14 days (labels 7 days later): about two
    # customers per partition of 64, a few partitions empty.
    return simulate(120, 60, 14, dt.date(2018, 4, 1), seed=17, label_delay_days=7)


async def _committed(settings: Settings, topic: str) -> int:
    """Sum of the offsets the worker's group committed on ``topic`` (records done)."""
    topics = stream_topics(settings.namespace)
    consumer = kafka_consumer(
        settings.kafka_bootstrap, group_id=topics.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum([await consumer.committed(tp) or 0 for tp in tps])
    finally:
        await consumer.stop()


async def _score(
    history: TransactionHistory,
    order: ReplayOrder,
    settings: Settings,
    warmup_until_us: int | None = None,
    logs: Sequence[Path] = (),
) -> tuple[dict[str, float], set[str]]:
    """Run a worker (with ``logs``, one worker child process logging to each), publish
    ``order`` (events before ``warmup_until_us`` as warm-up) and drain: wait until the
    group's committed offsets cover every transaction and label published (consumer lag 0).
    The scores and alerted ids the workers published."""
    topics: StreamTopics = stream_topics(settings.namespace)
    bootstrap = settings.kafka_bootstrap

    async def drained() -> bool:
        return (
            await _committed(settings, topics.transactions) == order.transactions
            and await _committed(settings, topics.labels) == order.labels
        )

    async with contextlib.AsyncExitStack() as stack:
        children = [
            stack.enter_context(worker_process(settings.replace(web_port=free_port()), log))
            for log in logs
        ]
        if not children:
            await stack.enter_async_context(
                running_worker(settings, load_bundle(settings.model_dir))
            )
        await replay(
            history, order, bootstrap, topics, None, progress=False, warmup_until_us=warmup_until_us
        )
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while not await drained():  # a commit follows the stored windows and acknowledged sends
            assert asyncio.get_running_loop().time() < deadline, "consumer lag not 0"
            for child in children:
                child.check_alive()
            await asyncio.sleep(0.2)
    scores = [_SCORE.decode(r.value) for r in await read_all(bootstrap, topics.scores)]
    alerts = [decode_alert(r.value) for r in await read_all(bootstrap, topics.alerts)]
    return {s.transaction_id: s.score for s in scores}, {a.transaction_id for a in alerts}


def test_a_worker_on_64_partitions_scores_what_the_backtest_scores(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    history = _history()
    bundle = tiny_bundle().path
    settings = worker_settings(
        kafka_bootstrap,
        redis_url,
        publish_scores=True,
        model_dir=str(bundle),
        batch_max_events=128,
        topic_partitions=MANY,
    )
    asyncio.run(create_topics(settings))
    scores, alerts = asyncio.run(_score(history, replay_order(history), settings))
    assert_scores_equal(scores, alerts, *backtest_of(history, bundle, tmp_path))


async def _recreate_topics(settings: Settings, partitions: int) -> None:
    """The namespace's topics again, empty, with ``partitions`` each (tansu's stand-in for
    adding partitions: it has no CreatePartitions)."""
    topics = stream_topics(settings.namespace)
    admin = kafka_admin(settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(topics.all))
    finally:
        await admin.close()
    await ensure_topics(settings.kafka_bootstrap, topics.all, partitions)


def test_a_drained_namespace_moves_to_more_partitions_with_its_windows(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    history = _history()
    bundle = tiny_bundle().path
    before = worker_settings(
        kafka_bootstrap,
        redis_url,
        publish_scores=True,
        model_dir=str(bundle),
        batch_max_events=128,
        topic_partitions=4,
    )
    after = before.replace(topic_partitions=MANY)  # same namespace: same group, same windows
    order = replay_order(history)
    cut = int(np.searchsorted(order.clock_us, to_epoch_us(MOVE_AT), "left"))
    first, rest = (
        ReplayOrder(order.row[part], order.is_label[part], order.clock_us[part])
        for part in (slice(0, cut), slice(cut, None))
    )
    assert first.transactions > 1_000 and first.labels > 0 and rest.transactions > 1_000

    asyncio.run(create_topics(before))
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]  # two workers, sharing terminals
    scores, alerts = asyncio.run(_score(history, first, before, logs=logs))
    asyncio.run(_recreate_topics(before, MANY))
    later_scores, later_alerts = asyncio.run(_score(history, rest, after, logs=logs))

    assert not set(scores) & set(later_scores)  # each transaction scored once
    assert_scores_equal(
        scores | later_scores, alerts | later_alerts, *backtest_of(history, bundle, tmp_path)
    )


def test_a_new_64_partition_namespace_warmed_by_replay_scores_what_the_backtest_scores(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    # The other way to more partitions: a new namespace, its windows warmed by what
    # `fraudstream replay --from D` publishes first (the window horizon before D, marked
    # as warm-up: applied, not scored), then D on.
    history = simulate(100, 50, 46, dt.date(2018, 4, 1), seed=19, label_delay_days=7)
    bundle = tiny_bundle().path
    start = dt.datetime(2018, 5, 11, tzinfo=dt.UTC)  # day 40: the warm-up starts on day 3
    start_us = to_epoch_us(start)
    settings = worker_settings(
        kafka_bootstrap,
        redis_url,
        publish_scores=True,
        model_dir=str(bundle),
        batch_max_events=128,
        topic_partitions=MANY,
    )
    order = replay_order(history, start_us - warmup_us(settings.label_delay_days), None)
    asyncio.run(create_topics(settings))
    scores, alerts = asyncio.run(_score(history, order, settings, warmup_until_us=start_us))
    assert_scores_equal(scores, alerts, *backtest_of(history, bundle, tmp_path, start))
