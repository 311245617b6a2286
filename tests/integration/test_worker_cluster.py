"""The worker on a real Redis Cluster (3 masters, a replica each): the stream scores what
``fraudstream backtest`` scores, and neither a ``kill -9`` of the worker nor masters failing
over mid-replay lose or double anything.

In the crash and failover runs the bundle's threshold is 0 (every transaction alerts) and a
history is replayed at a limited rate; at the end every transaction is in its customer's and
terminal's window exactly once, every fraud label recorded once, and the alerts topic holds
each transaction's alert id and no other. The failovers are ``CLUSTER FAILOVER FORCE`` on a
replica: it takes over without waiting for its master's last writes, so a write that
counted as stored before its replica had it would be lost.
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
from redis.cluster import RedisCluster

from stream_app.contracts import alert_id
from stream_app.local_cluster import RunningCluster
from stream_app.tools.worker_process import worker_process
from tests.integration.stream_checks import (
    assert_scores_equal,
    backtest_of,
    settled_alerts,
    window_key,
)
from tests.integration.test_stream_parity import _history, _stream_scores
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    replay_at_rate,
    small_history,
    worker_settings,
)
from tests.unit.model_bundles import tiny_bundle

pytestmark = [pytest.mark.integration, pytest.mark.train]

TRANSACTIONS_PER_S = 150.0
FINISH_TIMEOUT_S = 120.0
PROMOTED_TIMEOUT_S = 20.0


def test_stream_on_a_cluster_scores_what_the_backtest_scores(
    kafka_bootstrap: str, redis_cluster: RunningCluster, cluster_client: RedisCluster,
    tmp_path: Path,
) -> None:  # fmt: skip

    history = _history()
    bundle = tiny_bundle().path
    settings = worker_settings(
        kafka_bootstrap, redis_cluster.url, redis_cluster=True, publish_scores=True,
        model_dir=str(bundle), batch_max_events=128, topic_partitions=3,
    )  # fmt: skip
    scores, alerts = asyncio.run(_stream_scores(history, settings))
    expected, expected_alerts = backtest_of(history, bundle, tmp_path)
    assert_scores_equal({t: s.score for t, s in scores.items()}, set(alerts), expected,
                        expected_alerts)  # fmt: skip
    customer = str(history.customer_id[0])
    assert cluster_client.exists(window_key(settings.namespace, "cust", customer, cluster=True))


def _fail_over(cluster: RunningCluster, rng: random.Random) -> None:
    """``CLUSTER FAILOVER FORCE`` on the replica of a random master; wait until promoted."""
    nodes = redis.Redis(port=cluster.nodes[0].port).cluster("NODES")
    replicas = [address for address, info in nodes.items() if "slave" in info["flags"]]
    replica = int(rng.choice(sorted(replicas)).rpartition(":")[2])
    client = redis.Redis(port=replica)
    client.cluster("FAILOVER", "FORCE")
    deadline = time.monotonic() + PROMOTED_TIMEOUT_S
    while client.info("replication")["role"] != "master":
        assert time.monotonic() < deadline, f"the replica on {replica} was not promoted"
        time.sleep(0.05)


@pytest.mark.parametrize("fault", ["kill-9", "failover"])
def test_a_worker_on_a_cluster_loses_and_doubles_nothing(
    kafka_bootstrap: str, redis_cluster: RunningCluster, cluster_client: RedisCluster,
    tmp_path: Path, fault: str,
) -> None:  # fmt: skip
    bundle = bundle_alerting_on_all()
    settings = worker_settings(
        kafka_bootstrap, redis_cluster.url, redis_cluster=True, model_dir=str(bundle.path),
        batch_max_events=40,
    )  # fmt: skip
    history = small_history(seed=11, n_days=14)
    asyncio.run(create_topics(settings))
    producer = threading.Thread(
        target=replay_at_rate,
        args=(history, kafka_bootstrap, settings.namespace, TRANSACTIONS_PER_S),
    )
    producer.start()
    rng = random.Random(20261206)
    log = tmp_path / "worker.log"
    try:
        if fault == "kill-9":
            for _ in range(2):
                with worker_process(settings, log) as worker:
                    time.sleep(rng.uniform(0.5, 2.5))
                    os.killpg(worker.process.pid, signal.SIGKILL)
                    worker.process.wait()
        with worker_process(settings, log) as worker:
            if fault == "failover":
                for _ in range(2):
                    time.sleep(rng.uniform(0.5, 1.5))
                    _fail_over(redis_cluster, rng)
                    worker.check_alive()
            producer.join()
            alerts = settled_alerts(
                cluster_client, kafka_bootstrap, settings.namespace, history, bundle,
                worker.check_alive, FINISH_TIMEOUT_S, cluster=True,
            )  # fmt: skip
    finally:
        producer.join()
        deadline = time.monotonic() + PROMOTED_TIMEOUT_S
        while (  # every master has its replica in sync again (the demoted one re-synced)
            redis_cluster.replicas_in_sync() < len(redis_cluster.nodes) // 2
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    for alert in alerts:  # a repeated alert is the same alert
        assert alert.alert_id == alert_id(alert.transaction_id, bundle.model_version)
    assert "Traceback" not in log.read_text(errors="replace")
