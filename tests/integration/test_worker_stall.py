"""A stalled worker under traffic, on the real tansu broker and a private redis-server.

The redis-server is frozen (SIGSTOP) while transactions keep arriving: the windows stage
hangs, the fetch loop stops, and yet the consumer lag keeps growing (the lag probe's
fetches) and ``/ready`` turns 503 with the ``progress`` check within 30 s; the broker is
not blamed. After SIGCONT the worker catches up and is ready again. Also: the window-key
counts and Redis memory sampled into ``/metrics``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import msgspec
import pytest
import redis
from aiokafka import AIOKafkaProducer

from stream_app.contracts import Transaction, encode_transaction
from stream_app.local_services import start_redis
from stream_app.scoring.bundle import ModelBundle
from stream_app.settings import Settings
from stream_app.topics import stream_topics
from stream_app.worker.app import WorkerApp
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.redis_stats import RedisStats
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    counter_value,
    create_topics,
    running_worker,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

T0 = dt.datetime(2018, 4, 2, 10, 0, tzinfo=dt.UTC)
STALL_LIMIT_S = 30


def _ready(settings: Settings) -> tuple[int, dict[str, Any]]:
    url = f"http://{settings.web_host}:{settings.web_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, msgspec.json.decode(response.read())
    except urllib.error.HTTPError as error:
        return error.code, msgspec.json.decode(error.read())


def _lag(app: WorkerApp, topic: str) -> float:
    metrics: WorkerMetrics = app.runtime.metrics
    (family,) = metrics.consumer_lag.collect()
    return sum(s.value for s in family.samples if s.labels["topic"] == topic)


async def _traffic(settings: Settings, stop: asyncio.Event, per_s: float = 40) -> None:
    """Transactions of 20 customers on 4 partitions, ``per_s`` a second, until ``stop``."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    topic = stream_topics(settings.namespace).transactions
    try:
        i = 0
        while not stop.is_set():
            customer = f"c{i % 20}"
            at = T0 + i * dt.timedelta(seconds=30)
            tx = Transaction(f"t{i}", customer, f"k{i % 7}", "9.99", "EUR", at)
            await producer.send(topic, encode_transaction(tx), key=customer.encode())
            i += 1
            await asyncio.sleep(1 / per_s)
    finally:
        await producer.stop()


def test_a_stalled_worker_shows_lag_growing_and_is_not_ready_within_30_s(
    kafka_bootstrap: str,
) -> None:
    bundle: ModelBundle = bundle_alerting_on_all()
    with start_redis() as private:
        settings = worker_settings(kafka_bootstrap, private.url, redis_stats_interval_s=1.0)

        async def scenario() -> dict[str, Any]:
            topics = await create_topics(settings)
            stop = asyncio.Event()
            seen: dict[str, Any] = {}
            async with running_worker(settings, bundle) as app:
                producing = asyncio.create_task(_traffic(settings, stop))
                try:
                    await wait_for(
                        lambda: counter_value(app, "fraudstream_alerts_out_total") > 50,
                        60,
                        "alerts flowing",
                    )
                    seen["ready_before"] = (await asyncio.to_thread(_ready, settings))[0]
                    seen["last_batch"] = counter_value(
                        app, "fraudstream_last_batch_timestamp_seconds"
                    )
                    os.kill(private.process.pid, signal.SIGSTOP)
                    stalled_at = time.monotonic()
                    try:
                        lags = []
                        while True:
                            status, body = await asyncio.to_thread(_ready, settings)
                            lags.append(_lag(app, topics.transactions))
                            if "progress" in body["failing"]:
                                break
                            assert time.monotonic() - stalled_at < STALL_LIMIT_S, body
                            await asyncio.sleep(1)
                        seen["not_ready_after_s"] = time.monotonic() - stalled_at
                        seen["not_ready"] = (status, body)
                        seen["lags"] = lags
                        await asyncio.sleep(3)
                        seen["lag_later"] = _lag(app, topics.transactions)
                    finally:
                        os.kill(private.process.pid, signal.SIGCONT)
                    resumed_at = time.monotonic()
                    await wait_for(
                        lambda: _lag(app, topics.transactions) < 20, 60, "the backlog consumed"
                    )
                    while (await asyncio.to_thread(_ready, settings))[0] != 200:
                        assert time.monotonic() - resumed_at < 60, "ready again"
                        await asyncio.sleep(0.5)
                    seen["ready_again_after_s"] = time.monotonic() - resumed_at
                finally:
                    stop.set()
                    await producing
            return seen

        seen = asyncio.run(scenario())
    assert seen["ready_before"] == 200
    assert seen["last_batch"] > time.time() - 120
    status, body = seen["not_ready"]
    assert status == 503
    assert "kafka" not in body["failing"]  # the broker answers the lag probe
    lags = seen["lags"]
    assert seen["not_ready_after_s"] < STALL_LIMIT_S
    # traffic kept arriving at 40/s: the lag grew while the worker stood still
    assert lags[-1] >= lags[0] + 200, lags
    assert seen["lag_later"] > lags[-1]
    assert seen["ready_again_after_s"] < 60


def test_window_keys_and_redis_memory_are_sampled_in_bounded_scans(redis_url: str) -> None:
    """A scan budget smaller than the keyspace counts it over several samples."""
    client = redis.Redis.from_url(redis_url)
    prefix = "fraudstream:stats-test:"
    other = "fraudstream:other-namespace:v2:cust:"
    with client.pipeline() as pipe:
        for i in range(1500):
            pipe.set(f"{prefix}v2:cust:c{i}", b"x")
        for i in range(700):
            pipe.set(f"{prefix}v2:term:t{i}", b"x")
        for i in range(300):
            pipe.set(f"{other}c{i}", b"x")
        pipe.set(f"{prefix}progress", b"x")
        pipe.execute()

    async def sample() -> tuple[WorkerMetrics, int, int]:
        metrics = WorkerMetrics()
        stats = RedisStats(
            redis.asyncio.Redis.from_url(redis_url), prefix, metrics, scan_calls=2, scan_count=100
        )
        samples = 0
        try:
            while stats.passes == 0:
                await stats.sample()
                samples += 1
        finally:
            await stats.close()
        return metrics, samples, stats.passes

    try:
        metrics, samples, passes = asyncio.run(sample())
    finally:
        keys = list(client.scan_iter("fraudstream:stats-test:*"))
        keys += list(client.scan_iter("fraudstream:other-namespace:*"))
        client.delete(*keys)
        client.close()
    get = metrics.registry.get_sample_value
    assert get("fraudstream_window_keys", {"kind": "customer"}) == 1500
    assert get("fraudstream_window_keys", {"kind": "terminal"}) == 700
    assert samples > 1 and passes == 1
    assert (get("fraudstream_redis_memory_bytes") or 0) > 0
