"""The worker's web surface: only ``/metrics``, ``/health`` and ``/ready`` are served.

``/ready`` follows the real dependencies: a stopped redis-server or a frozen broker (SIGSTOP,
the worker runs as its own process) turns it 503 naming the failing check, and it is back
to 200 once they answer again, while ``/health`` (liveness) stays 200 throughout. A worker
of a group whose one partition another worker owns is alive but not ready.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.settings import Settings
from stream_app.tools.worker_process import WorkerProcess, worker_process
from stream_app.worker import batch_worker
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    create_topics,
    running_worker,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

TIMEOUT_S = 30.0
FAUST_PAGES = ("/", "/router/", "/router", "/table/", "/table", "/graph/", "/stats/",
               "/assignment/", "/performance/", "/metrics/", "/favicon.ico")  # fmt: skip


def _get(settings: Settings, page: str) -> tuple[int, Any]:
    """Status and body (JSON decoded when it is JSON) of ``page``."""
    url = f"http://{settings.web_host}:{settings.web_port}{page}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status, kind, body = response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        status, kind, body = error.code, error.headers["Content-Type"], error.read()
    return status, json.loads(body) if kind.startswith("application/json") else body


def _ready_becomes(worker: WorkerProcess, status: int) -> dict[str, Any]:
    """Poll ``/ready`` until it answers ``status`` (the worker must stay alive meanwhile)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        worker.check_alive()
        got, body = _get(worker.settings, "/ready")
        if got == status:
            assert isinstance(body, dict)
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/ready still {got} {body} after {TIMEOUT_S} s")
        time.sleep(0.1)


def test_only_three_pages_and_ready_follows_redis(kafka_bootstrap: str, tmp_path: Path) -> None:
    bundle = bundle_alerting_on_all()
    with start_redis() as redis_server:
        port = redis_server.port
        settings = worker_settings(kafka_bootstrap, redis_server.url, model_dir=str(bundle.path))
        asyncio.run(create_topics(settings))
        with worker_process(settings, tmp_path / "worker.log") as worker:
            pages = {page: _get(settings, page)[0] for page in FAUST_PAGES}
            metrics_status, metrics = _get(settings, "/metrics")
            health = _get(settings, "/health")
            ready = _get(settings, "/ready")
            redis_server.process.terminate()
            redis_server.process.wait()
            down = _ready_becomes(worker, 503)
            health_down = _get(settings, "/health")
            with start_redis(port):
                up = _ready_becomes(worker, 200)
                health_up = _get(settings, "/health")
    assert pages == dict.fromkeys(FAUST_PAGES, 404)
    assert metrics_status == 200 and b"fraudstream_events_in" in metrics
    namespace = settings.namespace
    assert health == (200, {"status": "ok", "namespace": namespace})
    assert ready == (200, {"status": "ready", "failing": {}, "namespace": namespace})
    assert down["status"] == "not ready" and list(down["failing"]) == ["redis"]
    assert "PING" in down["failing"]["redis"]
    assert health_down == health_up == health
    assert up == ready[1]


def test_ready_follows_the_broker(redis_url: str, tmp_path: Path) -> None:
    bundle = bundle_alerting_on_all()
    with start_tansu() as broker:
        settings = worker_settings(broker.address, redis_url, model_dir=str(bundle.path))
        asyncio.run(create_topics(settings))
        with worker_process(settings, tmp_path / "worker.log") as worker:
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                down = _ready_becomes(worker, 503)
                health_down = _get(settings, "/health")
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            up = _ready_becomes(worker, 200)
    assert list(down["failing"]) == ["kafka"]
    assert "no fetch response" in down["failing"]["kafka"]
    assert health_down == (200, {"status": "ok", "namespace": settings.namespace})
    assert up["failing"] == {}


async def test_a_worker_without_partitions_is_alive_but_not_ready(
    kafka_bootstrap: str, redis_url: str
) -> None:
    """One partition, two workers of one group: once both joined, the one without it
    answers 503 naming the partitions, the other 200."""
    bundle = bundle_alerting_on_all()
    first = worker_settings(kafka_bootstrap, redis_url, topic_partitions=1)
    second = first.replace(web_port=free_port())
    await create_topics(first)
    assignments = _Assignments()

    async def get(settings: Settings, page: str) -> tuple[int, Any]:
        return await asyncio.to_thread(_get, settings, page)

    with assignments:
        async with running_worker(first, bundle):
            await _wait_until(lambda: get(first, "/ready"), 200)
            alone = assignments.count
            async with running_worker(second, bundle):
                # the join of the second: a new generation, assigned to both workers
                await wait_for(lambda: assignments.count >= alone + 2, TIMEOUT_S, "a rebalance")
                deadline = time.monotonic() + TIMEOUT_S
                while True:  # the owner answers 200 once its first fetch response came
                    ready = sorted([await get(first, "/ready"), await get(second, "/ready")],
                                   key=lambda answer: answer[0])  # fmt: skip
                    if ready[0][0] == 200 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                health = [await get(first, "/health"), await get(second, "/health")]
    assert [status for status, _ in ready] == [200, 503], ready
    assert list(ready[1][1]["failing"]) == ["partitions"]
    assert [status for status, _ in health] == [200, 200]


async def _wait_until(answer: Callable[[], Awaitable[tuple[int, Any]]], status: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while (got := await answer())[0] != status:
        assert time.monotonic() < deadline, f"still {got} after {TIMEOUT_S} s"
        await asyncio.sleep(0.1)


class _Assignments(logging.Handler):
    """Counts the partition assignments the batch workers of this process log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self._logger = logging.getLogger(batch_worker.__name__)
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("assigned ")

    def __enter__(self) -> _Assignments:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
