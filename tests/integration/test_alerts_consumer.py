"""The alerts reader on the real tansu broker: readable and JSON output, --since, end, follow."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.commands import alerts as alerts_command
from stream_app.contracts import (
    Alert,
    Reason,
    Transaction,
    decode_alert,
    encode_alert,
    to_epoch_us,
)
from stream_app.errors import ConfigError, ContractError
from stream_app.pseudonyms import Pseudonymizer
from stream_app.tools.alerts_consumer import consume_alerts, format_alert, masked
from stream_app.topics import StreamTopics, ensure_topics_sync, stream_topics
from stream_app.worker.publisher import BatchPublisher, OutRecord
from tests.secrets import ALERTS_PSEUDONYM_KEY

pytestmark = pytest.mark.integration

START = dt.datetime(2018, 9, 1, tzinfo=dt.UTC)


def _alert(i: int) -> Alert:
    tx = Transaction(
        transaction_id=f"tx{i}", customer_id=f"c{i % 5}", terminal_id=f"k{i % 3}",
        amount=f"{100 + i}.25", currency="EUR", event_time=START + dt.timedelta(minutes=i),
    )
    return Alert.for_transaction(
        tx, score=0.9, threshold=0.42, model_version="m-test", policy="bundle",
        reasons=(Reason(feature="sequence_probability", contribution=0.51, value=0.934),
                 Reason(feature="TERMINAL_ID_RISK_30DAY_WINDOW", contribution=0.2,
                        value=0.916667),
                 Reason(feature="autoencoder_error", contribution=0.1, value=1770.5 + i),
                 Reason(feature="is_night", contribution=0.01, value=1.0)),
        reasons_baseline=0.012,
        features={"amount": 100.25 + i}, processed_at=START + dt.timedelta(days=1),
    )


def _publish(bootstrap: str, topic: str, values: list[tuple[bytes, int]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            futures = await BatchPublisher(producer).send(
                OutRecord(topic, b"k%d" % i, value, stamp) for i, (value, stamp) in
                enumerate(values))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def _publish_alerts(bootstrap: str, topic: str, alerts: list[Alert]) -> None:
    stamped = [(encode_alert(a), to_epoch_us(a.event_time) // 1000) for a in alerts]
    _publish(bootstrap, topic, stamped)


@pytest.fixture
def topics(kafka_bootstrap: str) -> StreamTopics:
    names = stream_topics(f"a-{uuid.uuid4().hex[:10]}")
    ensure_topics_sync(kafka_bootstrap, names.all, 3)
    return names


def test_reads_every_alert_to_the_end_of_the_topic_and_stops(
    kafka_bootstrap: str, topics: StreamTopics
) -> None:
    produced = [_alert(i) for i in range(250)]  # many records per batch (tansu end-offset bug)
    _publish_alerts(kafka_bootstrap, topics.alerts, produced)
    seen: list[Alert] = []
    count = asyncio.run(consume_alerts(kafka_bootstrap, topics.alerts, seen.append))
    assert count == 250
    assert sorted(a.alert_id for a in seen) == sorted(a.alert_id for a in produced)


def test_since_seeks_by_record_timestamp(kafka_bootstrap: str, topics: StreamTopics) -> None:
    _publish_alerts(kafka_bootstrap, topics.alerts, [_alert(i) for i in range(60)])
    since_ms = int((START + dt.timedelta(minutes=45)).timestamp() * 1000)
    seen: list[Alert] = []
    asyncio.run(consume_alerts(kafka_bootstrap, topics.alerts, seen.append, since_ms=since_ms))
    assert sorted(int(a.transaction_id[2:]) for a in seen) == list(range(45, 60))
    later: list[Alert] = []
    asyncio.run(consume_alerts(kafka_bootstrap, topics.alerts, later.append,
                               since_ms=since_ms + 3_600_000))
    assert later == []


def test_follow_prints_alerts_published_after_it_started(
    kafka_bootstrap: str, topics: StreamTopics
) -> None:
    _publish_alerts(kafka_bootstrap, topics.alerts, [_alert(0)])

    async def follow() -> list[Alert]:
        seen: list[Alert] = []
        stop = asyncio.Event()

        def on_alert(alert: Alert) -> None:
            seen.append(alert)
            if len(seen) == 3:
                stop.set()

        reader = asyncio.create_task(consume_alerts(
            kafka_bootstrap, topics.alerts, on_alert, follow=True, stop=stop))
        await asyncio.sleep(1.0)
        assert len(seen) == 1 and not reader.done()
        await asyncio.to_thread(_publish_alerts, kafka_bootstrap, topics.alerts,
                                [_alert(1), _alert(2)])
        await asyncio.wait_for(reader, timeout=20)
        return seen

    seen = asyncio.run(follow())
    assert sorted(a.transaction_id for a in seen) == ["tx0", "tx1", "tx2"]


def test_invalid_records_are_reported_and_skipped(
    kafka_bootstrap: str, topics: StreamTopics
) -> None:
    _publish(kafka_bootstrap, topics.alerts, [
        (encode_alert(_alert(1)), 1), (b'{"schema": "alert.v1"}', 2), (b"not json", 3)])
    seen: list[Alert] = []
    bad: list[tuple[ContractError, str]] = []
    asyncio.run(consume_alerts(kafka_bootstrap, topics.alerts, seen.append,
                               on_invalid=lambda e, where: bad.append((e, where))))
    assert [a.transaction_id for a in seen] == ["tx1"]
    assert len(bad) == 2
    assert all(where.startswith(f"{topics.alerts}[") and "@" in where for _, where in bad)


def test_missing_topic_is_a_config_error_naming_it(kafka_bootstrap: str) -> None:
    topic = stream_topics(f"none-{uuid.uuid4().hex[:8]}").alerts
    with pytest.raises(ConfigError, match=topic.replace(".", r"\.")):
        asyncio.run(consume_alerts(kafka_bootstrap, topic, lambda alert: None))


def test_readable_line_shows_time_ids_amount_score_threshold_and_top_reasons() -> None:
    line = format_alert(_alert(7))
    assert line.startswith("2018-09-01T00:07:00Z")
    for part in ("customer", "c2", "terminal", "k1", "107.25 EUR", "score 0.900 >= 0.420",
                 "baseline 0.012: +0.51 sequence model (p=0.93), "
                 "+0.20 TERMINAL_ID_RISK_30DAY_WINDOW = 0.916667, "
                 "+0.10 autoencoder error (1.78e+03)"):
        assert part in line
    assert "is_night" not in line  # only the top three reasons


@pytest.mark.parametrize("as_json", [False, True])
def test_alerts_command_prints_each_alert(
    kafka_bootstrap: str, topics: StreamTopics, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    produced = [_alert(i) for i in range(5)]
    _publish_alerts(kafka_bootstrap, topics.alerts, produced)
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    parser = argparse.ArgumentParser()
    alerts_command.add_parser(parser.add_subparsers())
    args = ["alerts", "--namespace", topics.namespace, "--since", "2018-09-01T00:02:00",
            "--show-ids"]
    code = alerts_command.run(parser.parse_args(args + (["--json"] if as_json else [])))
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    if as_json:
        decoded = [decode_alert(line.encode()) for line in lines]
        assert sorted(decoded, key=lambda a: a.transaction_id) == produced[2:]
        assert all(json.loads(line)["schema"] == "alert.v1" for line in lines)
    else:
        assert sorted(lines) == sorted(format_alert(a) for a in produced[2:])


def _run_alerts_command(namespace: str, *flags: str) -> int:
    parser = argparse.ArgumentParser()
    alerts_command.add_parser(parser.add_subparsers())
    return alerts_command.run(parser.parse_args(["alerts", "--namespace", namespace, *flags]))


@pytest.mark.parametrize("key", ["", ALERTS_PSEUDONYM_KEY], ids=["no key", "key"])
@pytest.mark.parametrize("as_json", [False, True], ids=["readable", "json"])
def test_alerts_command_masks_customer_and_terminal_ids_by_default(
    kafka_bootstrap: str, topics: StreamTopics, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], as_json: bool, key: str
) -> None:
    produced = [_alert(i) for i in range(5)]
    _publish_alerts(kafka_bootstrap, topics.alerts, produced)
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("FRAUDSTREAM_PSEUDONYM_KEY", key)
    assert _run_alerts_command(topics.namespace, *(["--json"] if as_json else [])) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [masked(a, Pseudonymizer.from_key(key)) for a in produced]
    assert all(a.customer_id.startswith("…") and len(a.customer_id) == 9 for a in expected)
    if as_json:  # masked ids are still valid alert.v1
        decoded = sorted(map(decode_alert, (line.encode() for line in lines)),
                         key=lambda a: a.transaction_id)
        assert decoded == expected
    else:
        assert sorted(lines) == sorted(map(format_alert, expected))
        assert not any(f" {a.customer_id} " in line for a in produced for line in lines)


def test_an_invalid_alert_is_reported_without_its_content_unless_show_ids(
    kafka_bootstrap: str, topics: StreamTopics, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(encode_alert(_alert(1)))
    document["customer_id"] = "CUSTOMER-" + "9" * 60  # 69 characters: too long
    _publish(kafka_bootstrap, topics.alerts, [(json.dumps(document).encode(), 1)])
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    assert _run_alerts_command(topics.namespace) == 0
    hidden = capsys.readouterr().err
    assert "$.customer_id is invalid" in hidden and "CUSTOMER-" not in hidden
    assert _run_alerts_command(topics.namespace, "--show-ids") == 0
    assert "CUSTOMER-999" in capsys.readouterr().err
