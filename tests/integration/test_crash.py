"""Crash test: the worker as a subprocess, ``kill -9`` at random points, restarted.

A simulated history is replayed at a limited rate while the worker is killed three times
(SIGKILL to its process group, random moments, so batches die between fetch, publish,
Redis write and commit). A last worker finishes the stream. Then every transaction is in
its customer's and terminal's window exactly once, every fraud label is recorded once,
and every expected alert id is on the alerts topic (a repeated alert has the same id).
The bundle's threshold is 0, so every transaction is expected to alert. With pseudonyms
every worker gets the key as FRAUDSTREAM_PSEUDONYM_KEY_FILE, and Redis ends up holding
exactly the pseudonymous keys of the history's customers and terminals.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from stream_app.contracts import alert_id
from stream_app.pseudonyms import Pseudonymizer
from stream_app.tools.worker_process import worker_process
from tests.integration.stream_checks import pseudonymous_keys, settled_alerts
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    replay_at_rate,
    small_history,
    worker_settings,
)
from tests.secrets import CRASH_PSEUDONYM_KEY

pytestmark = [pytest.mark.integration, pytest.mark.train]

KILLS = 3
TRANSACTIONS_PER_S = 150.0
FINISH_TIMEOUT_S = 120.0
KEY = CRASH_PSEUDONYM_KEY


@pytest.mark.parametrize("pseudonyms", [False, True], ids=["ids", "pseudonyms"])
def test_kill_9_at_random_points_loses_and_doubles_nothing(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path,
    pseudonyms: bool,
) -> None:  # fmt: skip
    bundle = bundle_alerting_on_all()
    version = bundle.model_version
    settings = worker_settings(
        kafka_bootstrap, redis_url, model_dir=str(bundle.path), batch_max_events=40
    )
    history = small_history(seed=9, n_days=14)
    asyncio.run(create_topics(settings))
    producer = threading.Thread(
        target=replay_at_rate,
        args=(history, kafka_bootstrap, settings.namespace, TRANSACTIONS_PER_S),
    )
    producer.start()
    rng = random.Random(20261123)
    log = tmp_path / "worker.log"
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY + "\n")
    env = {"FRAUDSTREAM_PSEUDONYM_KEY_FILE": str(key_file)} if pseudonyms else {}
    pseudonymizer = Pseudonymizer(KEY.encode()) if pseudonyms else None
    try:
        for _ in range(KILLS):
            with worker_process(settings, log, extra_env=env) as worker:
                time.sleep(rng.uniform(0.3, 2.5))
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()
        producer.join()
        applied_before_last_start = len(
            list(redis_client.scan_iter(f"fraudstream:{settings.namespace}:*"))
        )
        with worker_process(settings, log, extra_env=env) as worker:
            alerts = settled_alerts(
                redis_client, kafka_bootstrap, settings.namespace, history, bundle,
                worker.check_alive, FINISH_TIMEOUT_S, pseudonymizer,
            )  # fmt: skip
    finally:
        producer.join()
    assert applied_before_last_start > 0, "the killed workers never got to process anything"
    for alert in alerts:  # a repeated alert is the same alert
        assert alert.alert_id == alert_id(alert.transaction_id, version)
    assert "Traceback" not in log.read_text(errors="replace")
    if pseudonymizer is not None:
        keys = set(redis_client.scan_iter(f"fraudstream:{settings.namespace}:*"))
        assert keys == pseudonymous_keys(settings.namespace, history, pseudonymizer)
