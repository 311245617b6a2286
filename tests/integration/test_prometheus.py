"""Debian's Prometheus scrapes a real worker with the compose stack's rules.

The configuration is the shipped ``deploy/prometheus/prometheus.yml`` with 1 s intervals and
the worker's private port as the target; the rules are ``deploy/prometheus/rules.yml`` with
every ``for:`` shortened to :data:`FOR`. The worker is stopped while simulated traffic still
flows: FraudstreamWorkerDown must fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.local_services import RunningService, start_prometheus
from stream_app.settings import Settings
from stream_app.tools.replay import replay, replay_order
from stream_app.topics import StreamTopics
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    running_worker,
    small_history,
    worker_settings,
)

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
FOR = "2s"
RATE = 100.0  # transactions/s: the 2,273 of the history take about 23 s


def fast_config(tmp_path: Path, worker_port: int) -> Path:
    """The shipped config and rules, made fast, scraping ``127.0.0.1:worker_port``."""
    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = FOR
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s",
                        "evaluation_interval": "1s"}  # fmt: skip
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def api(prometheus: RunningService, path: str, **params: str) -> Any:
    """``data`` of a Prometheus HTTP API answer (``status`` must be ``success``)."""
    url = f"{prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def query(prometheus: RunningService, expr: str) -> dict[str, float]:
    """Instant vector of ``expr``: its labels (``__name__`` left out) -> value."""
    result = api(prometheus, "query", query=expr)["result"]
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"):
        float(r["value"][1])
        for r in result
    }  # fmt: skip


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.25)


def firing(prometheus: RunningService) -> set[str]:
    return {
        alert["labels"]["alertname"]
        for alert in api(prometheus, "alerts")["alerts"]
        if alert["state"] == "firing"
    }


async def test_prometheus_sees_lag_and_alert_rate_and_fires_when_the_worker_stops(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    settings = worker_settings(kafka_bootstrap, redis_url)
    topics = await create_topics(settings)
    history = small_history(n_days=30)
    with start_prometheus(fast_config(tmp_path, settings.web_port)) as prometheus:
        feed = asyncio.create_task(
            replay(history, replay_order(history, None, None), kafka_bootstrap, topics, None,
                   events_per_s=RATE, progress=False)
        )  # fmt: skip
        try:
            await _scrape_then_stop(prometheus, settings, topics, feed)
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed


async def _scrape_then_stop(
    prometheus: RunningService, settings: Settings, topics: StreamTopics, feed: asyncio.Task[Any]
) -> None:
    async with running_worker(settings, bundle_alerting_on_all()):
        lag = f'fraudstream_consumer_lag{{topic="{topics.transactions}"}}'
        await eventually(lambda: len(query(prometheus, lag)) == settings.topic_partitions,
                         20, f"{lag} for each partition")  # fmt: skip
        await eventually(lambda: any(query(prometheus, "fraudstream_alerts_per_minute > 0")),
                         20, "fraudstream_alerts_per_minute above 0")  # fmt: skip
        alert_rate = "rate(fraudstream_alerts_out_total[5s]) * 60 > 0"
        await eventually(lambda: any(query(prometheus, alert_rate)), 10, alert_rate)
        assert query(prometheus, 'up{job="fraudstream-worker"}') == {
            f"instance=127.0.0.1:{settings.web_port},job=fraudstream-worker": 1.0
        }
        # Every rule evaluates against the live series without an error.
        groups = api(prometheus, "rules")["groups"]
        health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        assert len(health) == 6 and set(health.values()) == {"ok"}, health
        assert "FraudstreamWorkerDown" not in firing(prometheus)
    stopped = time.monotonic()
    assert not feed.done(), "the traffic ended before the worker stopped"
    await eventually(lambda: "FraudstreamWorkerDown" in firing(prometheus), 15,
                     "FraudstreamWorkerDown to fire")  # fmt: skip
    fired_after = time.monotonic() - stopped
    assert not feed.done(), "the rule fired only after the traffic ended"
    assert query(prometheus, 'up{job="fraudstream-worker"}') == {
        f"instance=127.0.0.1:{settings.web_port},job=fraudstream-worker": 0.0
    }
    print(f"FraudstreamWorkerDown fired {fired_after:.1f} s after the worker stopped "
          f"(for: {FOR}, 1 s scrape and evaluation)")  # fmt: skip
