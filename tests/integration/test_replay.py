"""Replay on the real tansu broker: counts, keys, timestamps, order, ranges, namespaces."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from stream_app.commands import replay as replay_command
from stream_app.contracts import decode_label, decode_transaction, to_epoch_us
from stream_app.errors import ConfigError
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.tools.replay import WARMUP_HEADER, ReplayOrder, replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.topics import StreamTopics, ensure_topics_sync, stream_topics
from tests.unit.feature_histories import clock_history

pytestmark = pytest.mark.integration

PARTITIONS = 3
US = 1_000_000


def _topics(bootstrap: str) -> StreamTopics:
    topics = stream_topics(f"t-{uuid.uuid4().hex[:10]}")
    ensure_topics_sync(bootstrap, topics.all, PARTITIONS)
    return topics


def _read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, up to the fetch high watermark of each partition."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    asyncio.run(read_topic(bootstrap, topic, lambda _tp, batch: records.extend(batch)))
    return records


def _run(history: TransactionHistory, order: ReplayOrder, bootstrap: str, topics: StreamTopics,
         speed: float | None = None) -> None:
    asyncio.run(replay(history, order, bootstrap, topics, speed, progress=False))


@pytest.fixture(scope="module")
def small_history() -> TransactionHistory:
    return simulate(60, 120, 12, dt.date(2018, 4, 1), seed=3, label_delay_days=7)


def test_replay_publishes_every_transaction_and_label_keyed_with_event_time(
    kafka_bootstrap: str, small_history: TransactionHistory
) -> None:
    history = small_history
    topics = _topics(kafka_bootstrap)
    _run(history, replay_order(history), kafka_bootstrap, topics)

    transactions = _read_topic(kafka_bootstrap, topics.transactions)
    labels = _read_topic(kafka_bootstrap, topics.labels)
    assert len(transactions) == len(history)
    assert len(labels) == int(np.count_nonzero(history.label_time_us != NO_LABEL_US))

    row_of = {tx_id: row for row, tx_id in enumerate(history.transaction_id)}
    for record in transactions:
        tx = decode_transaction(record.value)
        row = row_of[tx.transaction_id]
        assert record.key == history.customer_id[row].encode()
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % PARTITIONS
        assert record.timestamp == history.event_time_us[row] // 1000
        assert tx.event_time_us == history.event_time_us[row]
        assert (tx.customer_id, tx.terminal_id) == (history.customer_id[row],
                                                    history.terminal_id[row])
        assert tx.amount_float == history.amount[row]
    for record in labels:
        label = decode_label(record.value)
        row = row_of[label.transaction_id]
        assert record.key == history.customer_id[row].encode()
        assert record.timestamp == history.label_time_us[row] // 1000
        assert label.label_time_us == history.label_time_us[row]
        assert label.is_fraud == bool(history.is_fraud[row])
    # Within each partition both topics come in clock order (labels co-partitioned).
    for records in (transactions, labels):
        for partition in range(PARTITIONS):
            stamps = [r.timestamp for r in records if r.partition == partition]
            assert stamps == sorted(stamps)


def test_from_and_to_keep_event_times_in_range_and_labels_known_before_the_end(
    kafka_bootstrap: str, small_history: TransactionHistory
) -> None:
    history = small_history
    start = to_epoch_us(dt.datetime(2018, 4, 3, tzinfo=dt.UTC))
    stop = to_epoch_us(dt.datetime(2018, 4, 12, tzinfo=dt.UTC))
    topics = _topics(kafka_bootstrap)
    _run(history, replay_order(history, start, stop), kafka_bootstrap, topics)

    in_range = (history.event_time_us >= start) & (history.event_time_us < stop)
    expected_labels = in_range & (history.label_time_us < stop)
    transactions = [decode_transaction(r.value) for r in
                    _read_topic(kafka_bootstrap, topics.transactions)]
    labels = [decode_label(r.value) for r in _read_topic(kafka_bootstrap, topics.labels)]
    assert sorted(t.transaction_id for t in transactions) == sorted(
        history.transaction_id[in_range].tolist())
    assert sorted(lab.transaction_id for lab in labels) == sorted(
        history.transaction_id[expected_labels].tolist())
    assert all(start <= t.event_time_us < stop for t in transactions)
    assert all(lab.label_time_us < stop for lab in labels)
    assert 0 < len(labels) < len(transactions) < len(history)


def test_namespace_isolates_topics(kafka_bootstrap: str) -> None:
    history = clock_history([0, 1, 2, 3, 4, 5], label_delay_s=2)
    ours, other = _topics(kafka_bootstrap), _topics(kafka_bootstrap)
    _run(history, replay_order(history), kafka_bootstrap, ours)

    assert ours.consumer_group != other.consumer_group
    assert ours.redis_key_prefix != other.redis_key_prefix
    assert Counter(r.topic for r in _read_topic(kafka_bootstrap, ours.transactions)) == {
        ours.transactions: 6}
    assert _read_topic(kafka_bootstrap, other.transactions) == []
    assert _read_topic(kafka_bootstrap, other.labels) == []

    assert not set(stream_topics().all) & _topic_names(kafka_bootstrap)


def _topic_names(bootstrap: str) -> set[str]:
    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


def test_speed_paces_publication_relative_to_the_first_event(kafka_bootstrap: str) -> None:
    # Events 0..3 s apart in event time, replayed 4x faster: about 0.75 s of wall time.
    history = clock_history([0.0, 1.0, 2.0, 3.0])
    sent: list[tuple[list[int], float]] = []
    topics = _topics(kafka_bootstrap)
    asyncio.run(replay(history, replay_order(history), kafka_bootstrap, topics, 4.0,
                       progress=False, on_sent=lambda rows, at: sent.append((rows.tolist(), at))))
    rows = [row for chunk, _ in sent for row in chunk]
    assert rows == [0, 1, 2, 3]
    first = sent[0][1]
    lags = {row: at - first for chunk, at in sent for row in chunk}
    for row in (1, 2, 3):
        assert lags[row] >= row / 4.0 - 0.02
    assert len(_read_topic(kafka_bootstrap, topics.transactions)) == 4


def test_replay_command_reads_jsonl_filters_and_prints_a_summary(
    kafka_bootstrap: str, small_history: TransactionHistory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "history.jsonl"
    write_jsonl(small_history, path)
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PARTITIONS", str(PARTITIONS))
    parser = argparse.ArgumentParser()
    replay_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["replay", "--input", str(path), "--namespace", namespace,
                              "--from", "2018-04-05", "--to", "2018-04-09T00:00:00+00:00",
                              "--speed", "max", "--no-warmup", "--no-progress"])
    assert replay_command.run(args) == 0

    start = to_epoch_us(dt.datetime(2018, 4, 5, tzinfo=dt.UTC))
    stop = to_epoch_us(dt.datetime(2018, 4, 9, tzinfo=dt.UTC))
    in_range = (small_history.event_time_us >= start) & (small_history.event_time_us < stop)
    topics = stream_topics(namespace)
    assert len(_read_topic(kafka_bootstrap, topics.transactions)) == int(in_range.sum())
    assert _read_topic(kafka_bootstrap, topics.labels) == []  # labels known 7 days later
    out = capsys.readouterr().out
    assert f"replayed {int(in_range.sum()):,} transactions and 0 labels to {topics.transactions}" \
        in out


def test_replay_command_paces_by_rate(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 11 transactions an hour apart at 20 per second: about 0.5 s, not 10 h, nor at once.
    path = tmp_path / "history.jsonl"
    write_jsonl(clock_history([i * 3600.0 for i in range(11)], label_delay_s=1), path)
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PARTITIONS", str(PARTITIONS))
    parser = argparse.ArgumentParser()
    replay_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["replay", "--input", str(path), "--namespace", namespace,
                              "--rate", "20", "--no-progress"])
    started = time.monotonic()
    assert replay_command.run(args) == 0
    assert 0.5 - 0.02 <= time.monotonic() - started < 10
    topics = stream_topics(namespace)
    assert len(_read_topic(kafka_bootstrap, topics.transactions)) == 11
    assert "replayed 11 transactions and 11 labels" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one pacing only
        parser.parse_args(["replay", "--input", str(path), "--rate", "5", "--speed", "60"])


def test_replay_command_rejects_a_bad_speed_and_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAUDSTREAM_NAMESPACE", raising=False)
    parser = argparse.ArgumentParser()
    replay_command.add_parser(parser.add_subparsers())
    no_namespace = "no namespace given .*pass --namespace <name> .* or --namespace live to"
    live_warmup = "--namespace live --from 2018-04-05: .* add --no-warmup"
    for flags, message in ((["--speed", "fast"], "--speed 'fast'"),
                           (["--speed", "-2"], "--speed '-2'"),
                           (["--rate", "0"], "--rate '0'"),
                           (["--namespace", "Bad_NS"], "namespace 'Bad_NS'"),
                           ([], no_namespace),
                           (["--from", "2018-04-05"], no_namespace),
                           (["--namespace", "live", "--from", "2018-04-05"], live_warmup)):
        args = parser.parse_args(["replay", "--input", str(tmp_path / "x.jsonl"), *flags])
        with pytest.raises(ConfigError, match=message):
            replay_command.run(args)


def test_replay_writes_the_live_topics_only_when_named() -> None:
    assert replay_command.replay_namespace("live", "live") == "live"
    assert replay_command.replay_namespace("review-1", "live") == "review-1"
    assert replay_command.replay_namespace(None, "review-2") == "review-2"  # from the env
    with pytest.raises(ConfigError, match="FRAUDSTREAM_NAMESPACE is 'live' or unset"):
        replay_command.replay_namespace(None, "live")


def test_replay_from_a_date_publishes_the_horizon_before_it_as_warmup(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--from D: the transactions (and labels) of the 37 days before D (1/7/30-day windows,
    7-day label delay) go first with the warm-up header, then D on without it; nothing
    older is published. The namespace comes from FRAUDSTREAM_NAMESPACE."""
    history = simulate(30, 30, 45, dt.date(2018, 4, 1), seed=4, label_delay_days=7)
    path = tmp_path / "history.jsonl"
    write_jsonl(history, path)
    namespace = f"warm-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("FRAUDSTREAM_TOPIC_PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("FRAUDSTREAM_NAMESPACE", namespace)
    parser = argparse.ArgumentParser()
    replay_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["replay", "--input", str(path), "--from", "2018-05-10",
                              "--no-progress"])
    assert replay_command.run(args) == 0

    start = to_epoch_us(dt.datetime(2018, 5, 10, tzinfo=dt.UTC))
    warm_from = start - 37 * 86_400 * US
    topics = stream_topics(namespace)
    times = dict(zip(history.transaction_id.tolist(), history.event_time_us.tolist(),
                     strict=True))
    transactions = _read_topic(kafka_bootstrap, topics.transactions)
    labels = _read_topic(kafka_bootstrap, topics.labels)
    published = sorted(decode_transaction(r.value).transaction_id for r in transactions)
    assert published == sorted(t for t, at in times.items() if at >= warm_from)
    for record in transactions:
        warmup = times[decode_transaction(record.value).transaction_id] < start
        assert (WARMUP_HEADER in record.headers) is warmup
    for record in labels:
        assert (WARMUP_HEADER in record.headers) is (decode_label(record.value).label_time_us
                                                     < start)
    warmed = sum(WARMUP_HEADER in r.headers for r in [*transactions, *labels])
    assert 0 < warmed < len(transactions) + len(labels)
    assert min(times.values()) < warm_from  # the history reaches further back than that
    assert f"the first {warmed:,} events as warm-up" in capsys.readouterr().out


def test_events_per_s_offers_a_fixed_transaction_rate(kafka_bootstrap: str) -> None:
    # 11 transactions at 20 per second: the last one goes out about 0.5 s after the first.
    history = clock_history([i * 3600.0 for i in range(11)], label_delay_s=1)
    sent: dict[int, float] = {}

    def record(rows: npt.NDArray[np.int64], at: float) -> None:
        sent.update(dict.fromkeys(rows.tolist(), at))

    topics = _topics(kafka_bootstrap)
    summary = asyncio.run(replay(history, replay_order(history), kafka_bootstrap, topics, None,
                                 events_per_s=20.0, progress=False, on_sent=record))
    assert sorted(sent) == list(range(11))
    assert sent[10] - sent[0] >= 0.5 - 0.02
    assert (summary.transactions, summary.labels) == (11, 11)
