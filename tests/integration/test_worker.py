"""The worker on the real tansu broker and redis-server, run in-process.

Transactions in -> alerts (and scores) out; invalid records -> DLQ with reason and source
offsets while the worker goes on; labels -> terminal risk of later transactions;
re-delivered events -> nothing changes in Redis and no new alert; a frozen Redis is
waited out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import urllib.error
import urllib.request

import msgspec
import pytest
import redis
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream_app.contracts import (
    Label,
    Transaction,
    alert_id,
    decode_alert,
    decode_score,
    encode_label,
    encode_transaction,
)
from stream_app.features.incremental import decode_customer
from stream_app.features.redis_store import KEY_LAYOUT
from stream_app.local_services import start_redis
from stream_app.scoring.bundle import ModelBundle
from stream_app.settings import Settings
from stream_app.topics import StreamTopics
from stream_app.worker import emit as dlq
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    counter_value,
    create_topics,
    read_all,
    replay_history,
    running_worker,
    small_history,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

T0 = dt.datetime(2018, 4, 2, 10, 0, tzinfo=dt.UTC)
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def alert_everything() -> ModelBundle:
    """A bundle whose threshold is 0: every scored transaction is an alert."""
    return bundle_alerting_on_all()


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis) -> Settings:
    return worker_settings(kafka_bootstrap, redis_url)


def _tx(tx_id: str, customer: str, terminal: str, at: dt.datetime, amount: str = "12.50") -> bytes:
    return encode_transaction(Transaction(tx_id, customer, terminal, amount, "EUR", at))


async def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def _namespace_state(client: redis.Redis, settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    pattern = f"fraudstream:{settings.namespace}:*"
    return {key: client.hgetall(key) for key in sorted(client.scan_iter(pattern))}


def test_transactions_in_alerts_and_scores_out(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    settings = settings.replace(publish_scores=True)
    history = small_history()
    n = len(history)

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        topics = await create_topics(settings)
        async with running_worker(settings, alert_everything) as app:
            await replay_history(history, settings)
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= n, TIMEOUT_S, "alerts"
            )
        alerts = await read_all(settings.kafka_bootstrap, topics.alerts)
        scores = await read_all(settings.kafka_bootstrap, topics.scores)
        return [r.value for r in alerts], [r.key for r in alerts], [r.value for r in scores]

    alert_values, alert_keys, score_values = asyncio.run(scenario())
    version = alert_everything.model_version
    alerts = [decode_alert(value) for value in alert_values]
    by_tx = {a.transaction_id: a for a in alerts}
    assert len(alerts) == len(by_tx) == n  # exactly once on a clean run
    customers = dict(
        zip(history.transaction_id.tolist(), history.customer_id.tolist(), strict=True)
    )
    for alert, key in zip(alerts, alert_keys, strict=True):
        assert alert.alert_id == alert_id(alert.transaction_id, version)
        assert key == alert.customer_id.encode() == customers[alert.transaction_id].encode()
        assert alert.model_version == version and alert.threshold == 0.0
        assert set(alert.features) == set(alert_everything.feature_columns)
        # threshold 0 alerts rows below the baseline too: up to 3 inputs that raised the score
        contributions = [r.contribution for r in alert.reasons]
        assert len(contributions) <= 3 and all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert alert.reasons_baseline == alert_everything.manifest.explanation.baseline_score
        if alert.score > alert.reasons_baseline + 1e-4:
            assert alert.reasons, "a score above the baseline has an input that raised it"
    scores = [decode_score(v) for v in score_values]
    assert sorted(s.transaction_id for s in scores) == sorted(by_tx)
    assert all(s.is_alert and 0.0 <= s.score <= 1.0 for s in scores)


def test_invalid_records_go_to_the_dlq_with_reason_and_offsets(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    good = [_tx("g1", "c1", "k1", T0), _tx("g2", "c1", "k1", T0 + dt.timedelta(hours=1))]
    bad_amount = good[0].replace(b'"12.50"', b'"-3"').replace(b'"g1"', b'"b1"')
    records: list[tuple[str, bytes | None]] = [
        ("c1", good[0]),
        ("c1", b"not json at all"),
        ("c1", bad_amount),
        ("c1", None),
        ("c1", good[1]),
    ]

    async def scenario(topics_out: list[StreamTopics]) -> list[object]:
        topics = await create_topics(settings)
        topics_out.append(topics)
        async with running_worker(settings, alert_everything) as app:
            await _produce(settings, topics.transactions, records)
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= 2, TIMEOUT_S, "alerts"
            )
            assert counter_value(app, "fraudstream_dlq_total", kind="transaction") == 3
        return [*await read_all(settings.kafka_bootstrap, topics.dlq)]

    topics_seen: list[StreamTopics] = []
    dead = asyncio.run(scenario(topics_seen))
    topics = topics_seen[0]
    assert len(dead) == 3
    by_offset = {}
    for record in dead:
        headers = dict(record.headers)  # type: ignore[attr-defined]
        assert headers[dlq.SOURCE_TOPIC] == topics.transactions.encode()
        by_offset[int(headers[dlq.SOURCE_OFFSET])] = (record, headers)
    assert sorted(by_offset) == [1, 2, 3]
    garbage, headers = by_offset[1]
    assert garbage.value == b"not json at all"  # type: ignore[attr-defined]
    assert headers[dlq.FIELD] == b"$" and b"not JSON" in headers[dlq.REASON]
    amount, headers = by_offset[2]
    assert amount.value == bad_amount  # type: ignore[attr-defined]
    assert headers[dlq.FIELD] == b"$.amount" and b'"-3"' in headers[dlq.REASON]
    _, headers = by_offset[3]
    assert b"tombstone" in headers[dlq.REASON]
    partitions = {int(h[dlq.SOURCE_PARTITION]) for _, h in by_offset.values()}
    assert len(partitions) == 1


def test_fraud_labels_raise_the_terminal_risk_of_later_transactions(
    settings: Settings, alert_everything: ModelBundle, redis_client: redis.Redis
) -> None:
    labelled_at = T0 + dt.timedelta(days=1)
    later = T0 + dt.timedelta(days=7, hours=12)  # delayed windows reach back to T0 - 12 h
    label = encode_label(Label("f1", "c1", "k9", T0, labelled_at, True))

    async def scenario() -> list[bytes]:
        topics = await create_topics(settings)
        async with running_worker(settings, alert_everything) as app:
            await _produce(settings, topics.transactions, [("c1", _tx("f1", "c1", "k9", T0))])
            await _produce(settings, topics.labels, [("c1", label)])
            await _produce(settings, topics.transactions, [("c2", _tx("n1", "c2", "k9", later))])
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= 2, TIMEOUT_S, "alerts"
            )
        return [r.value for r in await read_all(settings.kafka_bootstrap, topics.alerts)]

    alerts = {a.transaction_id: a for a in map(decode_alert, asyncio.run(scenario()))}
    assert alerts["f1"].features["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0
    assert alerts["n1"].features["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert alerts["n1"].features["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    terminal = redis_client.hget(f"fraudstream:{settings.namespace}:{KEY_LAYOUT}:term:k9", "s")
    assert terminal is not None and b"f1" in terminal


def test_redelivered_events_change_no_state_and_raise_no_new_alert(
    settings: Settings, alert_everything: ModelBundle, redis_client: redis.Redis
) -> None:
    history = small_history(seed=5, n_days=10)
    n = len(history)

    async def scenario() -> tuple[int, int]:
        topics = await create_topics(settings)
        async with running_worker(settings, alert_everything) as app:
            await replay_history(history, settings)
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= n, TIMEOUT_S, "alerts"
            )
        before = _namespace_state(redis_client, settings)
        alerts_before = len(await read_all(settings.kafka_bootstrap, topics.alerts))
        await replay_history(history, settings)  # the whole history again: all duplicates
        async with running_worker(settings, alert_everything) as app:
            await wait_for(
                lambda: counter_value(app, "fraudstream_duplicates_total") >= n,
                TIMEOUT_S,
                "the duplicates",
            )
            assert counter_value(app, "fraudstream_alerts_out_total") == 0
        assert _namespace_state(redis_client, settings) == before
        return alerts_before, len(await read_all(settings.kafka_bootstrap, topics.alerts))

    alerts_before, alerts_after = asyncio.run(scenario())
    assert alerts_before == alerts_after == n


@pytest.mark.parametrize("window_process", [True, False], ids=["child", "in-process"])
def test_a_redis_outage_is_waited_out_without_loss(
    kafka_bootstrap: str, alert_everything: ModelBundle, window_process: bool
) -> None:
    """redis-server frozen (SIGSTOP) mid-stream: calls time out, the worker (or its window
    process) backs off, then finishes once Redis is back (SIGCONT) with every transaction
    applied once. Also with the window store in the worker's own process."""
    history = small_history(seed=7, n_days=10)
    n = len(history)
    with start_redis() as private:
        settings = worker_settings(kafka_bootstrap, private.url, window_process=window_process)
        client = redis.Redis.from_url(private.url)

        async def scenario() -> tuple[float, float, int]:
            topics = await create_topics(settings)
            async with running_worker(settings, alert_everything) as app:
                os.kill(private.process.pid, signal.SIGSTOP)
                try:
                    await replay_history(history, settings)
                    await wait_for(
                        lambda: (
                            counter_value(
                                app, "fraudstream_dependency_retries_total", dependency="redis"
                            )
                            > 0
                        ),
                        TIMEOUT_S,
                        "a failed Redis call",
                    )
                    down = counter_value(app, "fraudstream_dependency_up", dependency="redis")
                finally:
                    os.kill(private.process.pid, signal.SIGCONT)
                await wait_for(
                    lambda: counter_value(app, "fraudstream_alerts_out_total") >= n,
                    TIMEOUT_S,
                    "alerts after the outage",
                )
                await wait_for(
                    lambda: (
                        counter_value(app, "fraudstream_dependency_up", dependency="redis") == 1
                    ),
                    TIMEOUT_S,
                    "Redis reported up",
                )
                up = counter_value(app, "fraudstream_dependency_up", dependency="redis")
            alerts = await read_all(settings.kafka_bootstrap, topics.alerts)
            return down, up, len({decode_alert(r.value).transaction_id for r in alerts})

        down, up, alerted = asyncio.run(scenario())
        width = len(alert_everything.feature_columns)
        applied = sum(
            len(decode_customer(client.hget(key, "s"), width).transaction_ids)
            for key in client.scan_iter(f"fraudstream:{settings.namespace}:{KEY_LAYOUT}:cust:*")
        )
        client.close()
    assert (down, up) == (0.0, 1.0)
    assert alerted == n
    assert applied == n


def test_metrics_and_health_pages(settings: Settings, alert_everything: ModelBundle) -> None:
    def get(url: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    async def scenario() -> tuple[tuple[int, str, bytes], tuple[int, str, bytes]]:
        await create_topics(settings)
        async with running_worker(settings, alert_everything):
            base = f"http://{settings.web_host}:{settings.web_port}"
            metrics = await asyncio.to_thread(get, f"{base}/metrics")
            health = await asyncio.to_thread(get, f"{base}/health")
        return metrics, health

    (status, kind, body), (health_status, _, health) = asyncio.run(scenario())
    assert status == 200 and kind.startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {
        "fraudstream_events_in", "fraudstream_alerts_out", "fraudstream_dlq",
        "fraudstream_batch_size", "fraudstream_stage_seconds",
        "fraudstream_event_time_lag_seconds", "fraudstream_label_barrier_timeouts",
    } <= families  # fmt: skip
    assert health_status == 200 and msgspec.json.decode(health)["status"] == "ok"


def test_labels_waiting_in_the_topic_are_applied_before_a_later_transaction(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    """2,000 labels wait in the labels topic, the fraud label of terminal k9 last; a later
    transaction at k9 is scored with that label applied (the barrier's own logic is
    tested in tests/unit/test_label_barrier.py: here the fetch order alone may do)."""
    settings = settings.replace(batch_max_events=50, label_barrier_timeout_ms=20_000)
    fraud_at = T0 - dt.timedelta(days=1)
    later = T0 + dt.timedelta(days=6, hours=12)  # delayed windows: (T0-1d-12h, T0-12h]
    genuine = [
        ("c1", encode_label(Label(f"g{i}", "c1", "k1", fraud_at, fraud_at + dt.timedelta(
            seconds=i + 1), False)))
        for i in range(2000)
    ]  # fmt: skip
    fraud = ("c1", encode_label(Label("f1", "c1", "k9", fraud_at, T0, True)))

    async def scenario() -> tuple[list[bytes], float]:
        topics = await create_topics(settings)
        await _produce(settings, topics.transactions, [("c1", _tx("f1", "c1", "k9", fraud_at))])
        await _produce(settings, topics.labels, [*genuine, fraud])
        await _produce(settings, topics.transactions, [("c2", _tx("n1", "c2", "k9", later))])
        async with running_worker(settings, alert_everything) as app:
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= 2, TIMEOUT_S, "alerts"
            )
            timeouts = counter_value(app, "fraudstream_label_barrier_timeouts_total")
        return [r.value for r in await read_all(settings.kafka_bootstrap, topics.alerts)], timeouts

    values, timeouts = asyncio.run(scenario())
    alerts = {a.transaction_id: a for a in map(decode_alert, values)}
    assert alerts["n1"].features["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    assert timeouts == 0
