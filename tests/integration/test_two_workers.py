"""Two workers in one consumer group, as subprocesses: each owns half the partitions and
both write the shared terminal windows. Every transaction ends up in its customer's and
terminal's window exactly once, every fraud label once, every alert id is on the topic,
and neither worker fails (a terminal moved by the other worker while a batch reads is the
case that used to crash one)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import pytest
import redis

from stream_app.local_services import free_port
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.worker_process import worker_process
from stream_app.topics import stream_topics
from tests.integration.stream_checks import settled_alerts
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

FINISH_TIMEOUT_S = 120.0


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
