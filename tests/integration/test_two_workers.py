"""Two workers in one consumer group, as subprocesses: each owns half the partitions and
both write the shared terminal windows. Every transaction ends up in its customer's and
terminal's window exactly once, every fraud label once, every alert id is on the topic,
and neither worker fails (a terminal moved by the other worker while a batch reads is the
case that used to crash one); and at full replay speed their scores and alerts equal the
backtest's."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from aiokafka import TopicPartition

from stream_app.contracts import TransactionScore, decode_alert
from stream_app.local_services import free_port
from stream_app.settings import Settings
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import WorkerProcess, worker_process
from stream_app.topics import stream_topics
from tests.integration.stream_checks import assert_scores_equal, backtest_of, settled_alerts
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    worker_settings,
)
from tests.unit.model_bundles import tiny_bundle

pytestmark = [pytest.mark.integration, pytest.mark.train]

FINISH_TIMEOUT_S = 120.0
_SCORE = msgspec.json.Decoder(TransactionScore)


def test_two_workers_share_terminals_and_lose_or_double_nothing(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    bundle = bundle_alerting_on_all()
    first = worker_settings(
        kafka_bootstrap, redis_url, model_dir=str(bundle.path), batch_max_events=40
    )
    second = first.replace(web_port=free_port())  # same namespace: same group and keys
    # many customers on few terminals, at full speed: batches read new customers while
    # the other worker moves the terminals they share
    history = simulate(n_customers=400, n_terminals=40, n_days=10,
                       start_date=dt.date(2018, 4, 1), seed=11)
    asyncio.run(create_topics(first))
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(worker_process(settings, log))
            for settings, log in zip((first, second), logs, strict=True)
        ]
        asyncio.run(
            replay(history, replay_order(history, None, None), kafka_bootstrap,
                   stream_topics(first.namespace), None, progress=False)
        )  # fmt: skip

        def both_alive() -> None:
            for worker in workers:
                worker.check_alive()

        settled_alerts(
            redis_client, kafka_bootstrap, first.namespace, history, bundle, both_alive,
            FINISH_TIMEOUT_S,
        )  # fmt: skip
        both_alive()
    for log in logs:
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()


async def _scores_of(
    settings: Settings, expected: int, workers: Sequence[WorkerProcess]
) -> tuple[dict[str, float], set[str]]:
    """Every score and alerted transaction id the workers publish, once ``expected``
    transactions are scored."""
    topics = stream_topics(settings.namespace)
    scores: dict[str, float] = {}
    alerts: set[str] = set()
    stop = asyncio.Event()

    def on_scores(_tp: TopicPartition, records: Sequence[Any]) -> None:
        decoded = (_SCORE.decode(record.value) for record in records)
        scores.update((score.transaction_id, score.score) for score in decoded)

    def on_alerts(_tp: TopicPartition, records: Sequence[Any]) -> None:
        alerts.update(decode_alert(r.value).transaction_id for r in records)

    readers = [
        asyncio.create_task(read_topic(settings.kafka_bootstrap, topic, handler,
                                       follow=True, stop=stop))
        for topic, handler in ((topics.scores, on_scores), (topics.alerts, on_alerts))
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while len(scores) < expected and time.monotonic() < deadline:
            for worker in workers:
                worker.check_alive()
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # alerts go out with the scores of their batch
    finally:
        stop.set()
        await asyncio.gather(*readers)
    return scores, alerts


@pytest.mark.parametrize("state", ["redis", "redis-cluster"])
def test_two_workers_at_full_speed_score_exactly_what_the_backtest_scores(
    kafka_bootstrap: str, state: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Each worker computes a row only once every partition's owner stored its terminal
    changes up to it, so shared terminals see the other worker's earlier transactions;
    on a single Redis and on a Redis Cluster (3 masters with a replica each)."""
    bundle = tiny_bundle().path
    if state == "redis":
        redis_url, cluster = request.getfixturevalue("redis_url"), False
    else:
        request.getfixturevalue("cluster_client")  # emptied
        redis_url, cluster = request.getfixturevalue("redis_cluster").url, True
    first = worker_settings(
        kafka_bootstrap, redis_url, model_dir=str(bundle), publish_scores=True,
        topic_partitions=4, batch_max_events=64, redis_cluster=cluster,
    )  # fmt: skip
    history = simulate(n_customers=300, n_terminals=12, n_days=16,
                       start_date=dt.date(2018, 4, 1), seed=5, label_delay_days=7)  # fmt: skip
    expected, expected_alerts = backtest_of(history, bundle, tmp_path)

    asyncio.run(create_topics(first))
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(worker_process(first.replace(web_port=free_port()),
                                               tmp_path / f"worker-{i}.log"))
            for i in range(2)
        ]  # fmt: skip
        asyncio.run(
            replay(history, replay_order(history, None, None), kafka_bootstrap,
                   stream_topics(first.namespace), None, progress=False)
        )  # fmt: skip
        scores, alerts = asyncio.run(_scores_of(first, len(expected), workers))

    assert_scores_equal(scores, alerts, expected, expected_alerts)
