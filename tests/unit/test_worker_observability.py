"""The worker's operational metrics: DLQ reason classes, consumer lag, alerts per minute,
the score histogram."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from stream_app.ahead import AheadLimit
from stream_app.errors import REASON_CLASSES
from stream_app.topics import stream_topics
from stream_app.worker.decode import Decoder
from stream_app.worker.emit import Emitter
from stream_app.worker.lag import ConsumerLag, lag
from stream_app.worker.metrics import SCORE_BUCKETS, AlertRate, WorkerMetrics
from tests.hostile_records import MAX_PAYLOAD_BYTES, hostile_traffic

TOPICS = stream_topics("observability")

EXPECTED_CLASS = {
    "not json": "malformed_json",
    "truncated json": "malformed_json",
    "invalid utf-8": "malformed_json",
    "not an object": "schema",
    "unknown schema": "schema",
    "missing field": "schema",
    "unknown field": "schema",
    "bad amount": "schema",
    "bad currency": "schema",
    "bad time": "schema",
    "far future": "far_future",
    "duplicate key": "duplicate_key",
    "control character in id": "control_character",
    "empty id": "schema",
    "id too long": "schema",
    "tombstone": "tombstone",
    "too large": "too_large",
    "deeply nested": "schema",
    "bad label": "label_order",
    "far-future label": "far_future",
}


def _reasons(metrics: WorkerMetrics) -> dict[str, float]:
    (family,) = metrics.dlq_reasons.collect()
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_every_hostile_record_is_counted_in_its_reason_class() -> None:
    metrics = WorkerMetrics()
    decode = Decoder(
        TOPICS,
        metrics,
        dlq_partitions=1,
        max_payload_bytes=MAX_PAYLOAD_BYTES,
        ahead=AheadLimit("wall", max_ahead_s=300),
    )
    traffic = hostile_traffic(n_valid=400, n_bad=600, seed=3)
    seen: set[str] = set()
    for kind, record in traffic.bad:
        if kind == "conflict":  # a valid record: the windows tell (test below)
            continue
        topic = TOPICS.transactions if record.kind == "transactions" else TOPICS.labels
        consumed = ConsumerRecord(topic, 0, 0, 0, 0, record.key, record.value, None, 0, 0, ())
        before = _reasons(metrics)
        batch = decode({TopicPartition(topic, 0): [consumed]}, 0)
        after = _reasons(metrics)
        changed = {r for r in REASON_CLASSES if after[r] != before[r]}
        assert len(batch.dead_letters) == 1, kind
        assert changed == {EXPECTED_CLASS[kind]}, kind
        seen.add(kind)
    assert seen == set(EXPECTED_CLASS)
    get = metrics.registry.get_sample_value
    far = sum(1 for kind, _ in traffic.bad if kind in ("far future", "far-future label"))
    transactions = get("fraudstream_future_events_total", {"kind": "transaction"}) or 0
    labels = get("fraudstream_future_events_total", {"kind": "label"}) or 0
    assert transactions > 0 and labels > 0 and transactions + labels == far


def test_a_conflict_is_its_own_class_and_labels_hold_no_raw_text() -> None:
    metrics = WorkerMetrics()
    emitter = Emitter(TOPICS, metrics, publish_scores=False, dlq_partitions=1)
    record = ConsumerRecord(TOPICS.transactions, 0, 5, 0, 0, b"c", b"{}", None, 0, 2, ())
    emitter.conflict(record, "tx\n1 with 'text'")
    assert _reasons(metrics)["conflict"] == 1
    families = text_string_to_metric_families(metrics.render().decode())
    (family,) = (f for f in families if f.name == "fraudstream_dlq_reasons")
    reasons = {s.labels["reason"] for s in family.samples}
    assert reasons == set(REASON_CLASSES)  # every class published from the start, none else


def test_lag_is_the_high_watermark_minus_the_next_offset() -> None:
    assert lag(120, 100) == 20
    assert lag(100, 100) == 0
    assert lag(99, 100) == 0  # a response older than what was consumed: not negative
    assert lag(None, 100) is None and lag(100, None) is None


class _Consumer:
    """What :class:`ConsumerLag` reads of an aiokafka consumer."""

    def __init__(self, highwater: dict[TopicPartition, int], position: dict[TopicPartition, int]):
        self.highwaters = highwater
        self.positions = position

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def _record(tp: TopicPartition, offset: int) -> Any:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def test_consumer_lag_per_partition_from_fetches_and_probes() -> None:
    tx0, tx1 = TopicPartition(TOPICS.transactions, 0), TopicPartition(TOPICS.transactions, 1)
    labels0 = TopicPartition(TOPICS.labels, 0)
    consumer = _Consumer({tx0: 50, tx1: 7}, {tx0: 0, tx1: 7, labels0: 3})
    metrics = WorkerMetrics()
    lags = ConsumerLag(consumer, metrics)

    def gauge(tp: TopicPartition) -> float | None:
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        return metrics.registry.get_sample_value("fraudstream_consumer_lag", labels)

    # tx0 delivered offsets 0..9: next 10, high watermark 50; tx1 caught up (its position);
    # labels0 has had no fetch response yet: no lag known
    asyncio.run(lags.fetched({tx0: [_record(tx0, i) for i in range(10)]}))
    assert (gauge(tx0), gauge(tx1), gauge(labels0)) == (40, 0, None)
    assert lags.total == 40
    # the probe saw tx0 grow to 80 while the fetch loop stood still; an older consumer
    # response (50) does not bring it back
    assert lags.probe_from([tx0, labels0]) == {tx0: 50}
    lags.seen(tx0, 80)
    asyncio.run(lags.fetched({}))
    assert gauge(tx0) == 70
    # tx1 moved to another worker: its series goes
    lags.assigned([tx0])
    assert gauge(tx1) is None and lags.total == 0


def test_alerts_per_minute_counts_the_last_60_seconds() -> None:
    now = [1000.0]
    rate = AlertRate(clock=lambda: now[0])
    rate.add(3)
    now[0] = 1030.5
    rate.add(2)
    assert rate.per_minute() == 5
    now[0] = 1060.0  # the first second (1000) is out of the window
    assert rate.per_minute() == 2
    now[0] = 1091.0
    assert rate.per_minute() == 0


def test_score_histogram_matches_prometheus_observations() -> None:
    scores = np.array([0.0, 0.05, 0.051, 0.5, 0.99, 1.0, 0.3, 0.3], dtype=np.float32)
    metrics = WorkerMetrics()
    metrics.scores.observe(scores[:3])
    metrics.scores.observe(scores[3:])
    reference = CollectorRegistry()
    histogram = Histogram("fraudstream_score", "", buckets=SCORE_BUCKETS, registry=reference)
    for score in scores.tolist():
        histogram.observe(score)
    for bound in [*(str(b) for b in SCORE_BUCKETS), "+Inf"]:
        ours = metrics.registry.get_sample_value("fraudstream_score_bucket", {"le": bound})
        theirs = reference.get_sample_value("fraudstream_score_bucket", {"le": bound})
        assert ours == theirs, bound
    assert metrics.registry.get_sample_value("fraudstream_score_count") == len(scores)
    assert metrics.registry.get_sample_value("fraudstream_score_sum") == pytest.approx(
        float(scores.sum())
    )
