"""Broker outage test: the worker as a subprocess, its private tansu frozen mid-stream.

The first half of a simulated history is replayed, and once the worker is processing it
the broker is frozen (SIGSTOP, so it keeps its in-memory data) for twice the worker's
session timeout, then resumed (SIGCONT); the second half follows. The worker must still
be the same running, healthy process (no exit, no crash loop) and must finish with every
transaction in its customer's and terminal's window exactly once, every expected alert id
on the alerts topic (a repeated alert has the same id) and nothing in the DLQ. The bundle's
threshold is 0, so every transaction is expected to alert. The broker is private:
freezing the session's shared one would stall every other test.

A freeze this short fails no request (aiokafka's request timeout is 40 s): nothing is
retried or logged, the calls in flight just wait. ``/metrics`` shows it as a publish or
commit stage that took longer than 10 s, which the test requires.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from stream_app.contracts import alert_id, decode_alert
from stream_app.local_services import start_tansu
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.tools.replay import ReplayOrder, replay, replay_order
from stream_app.tools.worker_process import WorkerProcess, worker_process
from stream_app.topics import stream_topics
from tests.integration.stream_checks import windows_match
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    read_all,
    small_history,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

FREEZE_SESSIONS = 2.0
"""The broker stays frozen this many session timeouts."""
FINISH_TIMEOUT_S = 60.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _halves(order: ReplayOrder) -> tuple[ReplayOrder, ReplayOrder]:
    middle = len(order) // 2
    return (
        ReplayOrder(order.row[:middle], order.is_label[:middle], order.clock_us[:middle]),
        ReplayOrder(order.row[middle:], order.is_label[middle:], order.clock_us[middle:]),
    )


def _replay(history: TransactionHistory, order: ReplayOrder, settings: Settings) -> None:
    topics = stream_topics(settings.namespace)
    asyncio.run(replay(history, order, settings.kafka_bootstrap, topics, None, progress=False))


def _get(settings: Settings, page: str) -> tuple[int, bytes]:
    url = f"http://{settings.web_host}:{settings.web_port}{page}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _metrics(settings: Settings) -> Samples:
    """Every sample of the worker's ``/metrics``, by name and labels."""
    _, body = _get(settings, "/metrics")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _kafka(samples: Samples, name: str) -> float:
    return samples.get((name, (("dependency", "kafka"),)), 0.0)


def _stalled(samples: Samples) -> float:
    """Acknowledge and commit stages that took longer than the histogram's top bucket (10 s)."""
    top = (("le", "10.0"),)
    return sum(
        samples[("fraudstream_stage_seconds_count", (("stage", stage),))]
        - samples[("fraudstream_stage_seconds_bucket", (*top, ("stage", stage)))]
        for stage in ("acknowledge", "commit")
    )


def _wait(worker: WorkerProcess, done: Callable[[], bool], what: str) -> None:
    """Poll ``done()`` while the worker runs, at most FINISH_TIMEOUT_S."""
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while not done():
        worker.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {FINISH_TIMEOUT_S} s waiting for {what}")
        time.sleep(0.05)


def test_a_frozen_broker_is_waited_out_without_loss_or_doubles(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    bundle = bundle_alerting_on_all()
    version, width = bundle.model_version, len(bundle.feature_columns)
    history = small_history(seed=11, n_days=12)
    first, second = _halves(replay_order(history, None, None))
    expected = {alert_id(tx, version) for tx in history.transaction_id.tolist()}
    log = tmp_path / "worker.log"
    with start_tansu() as broker:
        settings = worker_settings(
            broker.address, redis_url, model_dir=str(bundle.path), batch_max_events=20
        )
        freeze_s = FREEZE_SESSIONS * settings.broker_session_timeout_s
        topics = asyncio.run(create_topics(settings))
        with worker_process(settings, log) as worker:
            _replay(history, first, settings)
            _wait(
                worker,
                lambda: _metrics(settings).get(("fraudstream_alerts_out_total", ()), 0) > 0,
                "the first alerts",
            )
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                time.sleep(freeze_s)
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            _replay(history, second, settings)
            _wait(
                worker,
                lambda: windows_match(redis_client, settings.namespace, history, width) == "",
                "every transaction in Redis",
            )

            def all_alerts() -> bool:
                records = asyncio.run(read_all(settings.kafka_bootstrap, topics.alerts))
                return {decode_alert(r.value).alert_id for r in records} >= expected

            _wait(worker, all_alerts, "every alert")
            after = _metrics(settings)
            health, _ = _get(settings, "/health")
            worker.check_alive()  # the one worker started: it never exited
        alerts = [
            decode_alert(r.value)
            for r in asyncio.run(read_all(settings.kafka_bootstrap, topics.alerts))
        ]
        dead_letters = asyncio.run(read_all(settings.kafka_bootstrap, topics.dlq))
    text = log.read_text(errors="replace")
    assert health == 200
    assert _stalled(after) > 0, "no acknowledgement or commit waited out the frozen broker"
    assert _kafka(after, "fraudstream_dependency_up") == 1.0
    # the alignment's clocks stood still during the outage: nothing was forced out early
    order_breaks = {
        name: value
        for (name, _), value in after.items()
        if name in ("fraudstream_alignment_forced_releases_total", "fraudstream_out_of_order_total")
    }
    assert not any(order_breaks.values()), order_breaks
    assert windows_match(redis_client, settings.namespace, history, width) == ""
    assert {a.alert_id for a in alerts} == expected
    for alert in alerts:  # a repeated alert is the same alert
        assert alert.alert_id == alert_id(alert.transaction_id, version)
    assert dead_letters == []
    assert "Traceback" not in text
