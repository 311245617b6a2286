"""The worker's stages without servers: decoding, dead letters, scoring and what is published.

The window store is the in-memory one, the scorer the session's tiny bundle, the producer
a recorder of the records handed to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from stream_app.ahead import AheadLimit
from stream_app.contracts import (
    Label,
    Transaction,
    TransactionScore,
    decode_alert,
    decode_score,
    encode_label,
    encode_transaction,
)
from stream_app.errors import Superseded
from stream_app.features.store import InMemoryWindowStore
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.scorer import Scorer
from stream_app.topics import WARMUP, stream_topics
from stream_app.worker import emit as dlq
from stream_app.worker.batches import Batch, Windowed
from stream_app.worker.commit import Publish
from stream_app.worker.decode import Decoder
from stream_app.worker.emit import Emitter
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.models import Models
from stream_app.worker.publisher import OutRecord
from stream_app.worker.retry import Backoff
from stream_app.worker.score import Score
from stream_app.worker.windows import Windows
from tests.unit.model_bundles import tiny_bundle

pytestmark = pytest.mark.train  # the tiny bundle is exported with torch

TOPICS = stream_topics("unit")
T0 = dt.datetime(2018, 4, 2, 10, 0, tzinfo=dt.UTC)


class RecordingPublisher:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def send(self, records: Iterable[OutRecord]) -> list[asyncio.Future[Any]]:
        self.records.extend(records)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]


@dataclass
class Stages:
    """The decode, windows, score and publish stages around an in-memory window store."""

    decode: Decoder
    windows: Windows
    score: Score
    publish: Publish
    store: InMemoryWindowStore

    async def process(self, batch: Batch) -> None:
        """A batch through windows -> score -> publish -> acknowledge -> store."""
        windowed = await self.windows.compute(batch)
        assert windowed is not None
        sent = await self.publish.acknowledge(await self.publish(await self.score(windowed)))
        await self.windows.store([sent])


def _stages(
    publish_scores: bool = True, honor_warmup: bool = True
) -> tuple[Stages, RecordingPublisher, WorkerMetrics]:
    publisher = RecordingPublisher()
    metrics = WorkerMetrics()
    scorer = Scorer(load_bundle(tiny_bundle().path))
    emitter = Emitter(
        TOPICS, metrics, publish_scores=publish_scores, dlq_partitions=2, clock=lambda: T0
    )
    store = InMemoryWindowStore(tiny_bundle().feature_set)
    stages = Stages(
        Decoder(
            TOPICS,
            metrics,
            dlq_partitions=2,
            max_payload_bytes=16384,
            ahead=AheadLimit("watermark", max_ahead_s=86_400),
        ),
        Windows(store, Backoff("redis", metrics), metrics),
        Score(
            Models.of(scorer, metrics), emitter, metrics, Backoff("redis", metrics),
            honor_warmup=honor_warmup,
        ),
        Publish(publisher, Backoff("kafka", metrics), metrics),  # type: ignore[arg-type]
        store,
    )
    return stages, publisher, metrics


def _record(topic: str, partition: int, offset: int, value: bytes | None, headers: Any = ()) -> Any:
    return ConsumerRecord(
        topic, partition, offset, 0, 0, b"c1", value, None, 0, len(value or b""), headers
    )


def _tx(
    tx_id: str, at: dt.datetime, amount: str = "10.00", customer: str = "c1", terminal: str = "k1"
) -> bytes:
    return encode_transaction(Transaction(tx_id, customer, terminal, amount, "EUR", at))


def _run(stages: Stages, *fetches: dict[TopicPartition, list[Any]]) -> None:
    async def run() -> None:
        for fetched in fetches:
            await stages.process(stages.decode(fetched, generation=0))

    asyncio.run(run())


def _txs(*values: bytes, headers: Any = ()) -> dict[TopicPartition, list[Any]]:
    return {
        TopicPartition(TOPICS.transactions, 0): [
            _record(TOPICS.transactions, 0, i, value, headers) for i, value in enumerate(values)
        ]
    }


def _dead(publisher: RecordingPublisher) -> list[tuple[bytes, str]]:
    return [
        (r.value, dict(r.headers)[dlq.REASON].decode())
        for r in publisher.records
        if r.topic == TOPICS.dlq
    ]


def _scored(publisher: RecordingPublisher) -> dict[str, TransactionScore]:
    scores = (decode_score(r.value) for r in publisher.records if r.topic == TOPICS.scores)
    return {score.transaction_id: score for score in scores}


def test_events_too_far_ahead_of_the_watermark_are_dead_letters() -> None:
    stages, publisher, _ = _stages()
    future = _tx("far", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    label = encode_label(Label("x", "c1", "k1", T0, T0 + dt.timedelta(days=3), True))
    fetched = _txs(_tx("a", T0), future, _tx("b", T0 + dt.timedelta(hours=23)))
    fetched[TopicPartition(TOPICS.labels, 0)] = [_record(TOPICS.labels, 0, 0, label)]
    _run(stages, fetched)
    (far, far_reason), (late_label, label_reason) = _dead(publisher)
    assert far == future and late_label == label
    assert "event_time 9999-12-31T23:59:59Z is" in far_reason
    assert "FRAUDSTREAM_MAX_EVENT_AHEAD_S=86400" in far_reason
    assert "label_time 2018-04-05T10:00:00Z" in label_reason
    assert set(_scored(publisher)) == {"a", "b"}


def test_a_late_transaction_is_scored_flagged_and_not_added() -> None:
    stages, publisher, metrics = _stages()
    new, old = T0 + dt.timedelta(days=60), T0
    _run(
        stages,
        _txs(_tx("new", new)),
        _txs(_tx("old", old, terminal="k2")),
        _txs(_tx("next", new + dt.timedelta(hours=1))),
    )
    scored = _scored(publisher)
    assert set(scored) == {"new", "old", "next"}
    assert scored["old"].late and not scored["new"].late and not scored["next"].late
    windows = stages.store  # the in-memory store: its windows are the state
    assert windows.customers["c1"].transaction_ids == ["new", "next"]
    late = metrics.registry.get_sample_value(
        "fraudstream_late_events_total", {"kind": "transaction"}
    )
    assert late == 1


def test_a_reused_transaction_id_with_other_content_is_a_conflict() -> None:
    stages, publisher, _ = _stages()
    first = _tx("t1", T0)
    other_amount = _tx("t1", T0, amount="99.00")
    other_time = _tx("t1", T0 + dt.timedelta(hours=1))
    other_customer_same_terminal = _tx("t1", T0, customer="c9")
    _run(
        stages,
        _txs(first),
        _txs(first),  # a re-delivery: a duplicate, not a conflict
        _txs(other_amount),
        _txs(other_time),
        _txs(other_customer_same_terminal),
    )
    dead = _dead(publisher)
    assert [value for value, _ in dead] == [other_amount, other_time, other_customer_same_terminal]
    assert all("transaction id 't1' was seen before with other content" in r for _, r in dead)
    assert sum(r.topic == TOPICS.scores for r in publisher.records) == 1


@pytest.mark.parametrize("honor_warmup", [True, False])
def test_warmup_transactions_stay_silent_only_where_honored(honor_warmup: bool) -> None:
    stages, publisher, _ = _stages(honor_warmup=honor_warmup)
    warm = [(WARMUP, b"1")]
    _run(
        stages,
        _txs(*(_tx(f"w{i}", T0 + dt.timedelta(hours=i)) for i in range(3)), headers=warm),
        _txs(_tx("live", T0 + dt.timedelta(hours=5))),
    )
    expected = {"live"} if honor_warmup else {"w0", "w1", "w2", "live"}
    assert set(_scored(publisher)) == expected
    assert stages.store.customers["c1"].transaction_ids == ["w0", "w1", "w2", "live"]


def test_decode_keeps_fetch_order_and_dead_letters_the_rest() -> None:
    stages, _, metrics = _stages()
    later, earlier = _tx("b", T0 + dt.timedelta(hours=1)), _tx("a", T0)
    label = encode_label(Label("a", "c1", "k1", T0, T0 + dt.timedelta(days=1), True))
    fetched = {
        TopicPartition(TOPICS.transactions, 0): [
            _record(TOPICS.transactions, 0, 7, later),
            _record(TOPICS.transactions, 0, 8, b"{}"),
        ],
        TopicPartition(TOPICS.transactions, 1): [_record(TOPICS.transactions, 1, 3, earlier)],
        TopicPartition(TOPICS.labels, 1): [_record(TOPICS.labels, 1, 5, label)],
    }
    batch = stages.decode(fetched, generation=4)
    # fetch order, partition by partition: the aligner orders them by event time
    assert [tx.transaction_id for tx in batch.transactions] == ["b", "a"]
    assert [(source.partition, source.offset) for source in batch.sources] == [(0, 7), (1, 3)]
    assert batch.sources[0].value == later
    assert [lab.transaction_id for lab in batch.labels] == ["a"]
    assert batch.max_event_time_us == batch.transactions[0].event_time_us  # the later one
    assert batch.offsets == {
        TopicPartition(TOPICS.transactions, 0): 9,
        TopicPartition(TOPICS.transactions, 1): 4,
        TopicPartition(TOPICS.labels, 1): 6,
    }
    assert batch.last_label_time_us == {
        TopicPartition(TOPICS.labels, 1): batch.labels[0].label_time_us
    }
    (dead,) = batch.dead_letters
    headers = dict(dead.headers)
    assert dead.topic == TOPICS.dlq and dead.partition == 0 and dead.value == b"{}"
    assert headers[dlq.SOURCE_OFFSET] == b"8" and headers[dlq.FIELD] == b"$.transaction_id"
    assert metrics.registry.get_sample_value("fraudstream_dlq_total", {"kind": "transaction"}) == 1


@pytest.mark.parametrize("publish_scores", [True, False])
def test_alerts_exactly_for_scores_at_or_above_the_threshold(publish_scores: bool) -> None:
    stages, publisher, _ = _stages(publish_scores)
    rng = np.random.default_rng(3)
    amounts = [f"{a:.2f}" for a in rng.gamma(2.0, 40.0, size=40)]
    fetched = {
        TopicPartition(TOPICS.transactions, 0): [
            _record(TOPICS.transactions, 0, i, _tx(f"t{i}", T0 + dt.timedelta(hours=i), amount))
            for i, amount in enumerate(amounts)
        ]
    }

    asyncio.run(stages.process(stages.decode(fetched, generation=0)))
    alerts = [decode_alert(r.value) for r in publisher.records if r.topic == TOPICS.alerts]
    scores = [decode_score(r.value) for r in publisher.records if r.topic == TOPICS.scores]
    threshold = load_bundle(tiny_bundle().path).threshold
    if publish_scores:
        assert len(scores) == 40
        above = {s.transaction_id for s in scores if s.score >= threshold}
        assert {a.transaction_id for a in alerts} == above
        assert all(s.is_alert == (s.score >= threshold) for s in scores)
    else:
        assert scores == []
    assert all(a.processed_at == T0 and a.threshold == threshold for a in alerts)


def test_redelivered_transactions_are_not_scored_again() -> None:
    stages, publisher, metrics = _stages()
    records = [_record(TOPICS.transactions, 0, i, _tx(f"t{i}", T0 + dt.timedelta(hours=i)))
               for i in range(3)]  # fmt: skip
    fetched = {TopicPartition(TOPICS.transactions, 0): records}

    async def run() -> None:
        for _ in range(2):
            await stages.process(stages.decode(fetched, generation=0))

    asyncio.run(run())
    assert sum(r.topic == TOPICS.scores for r in publisher.records) == 3
    assert metrics.registry.get_sample_value("fraudstream_duplicates_total") == 3


def test_a_superseded_batch_and_every_later_one_of_its_generation_are_dropped() -> None:
    """A later batch of the generation committed would commit offsets past the records of
    the dropped one; the next generation's batches are scored again."""
    stages, _, _ = _stages()

    def windowed(generation: int, result: Any) -> Windowed:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
        return Windowed(Batch(generation, 0.0), future)

    async def run() -> list[Any]:
        return [
            await stages.score(windowed(1, None)),
            await stages.score(windowed(1, Superseded("rebalance"))),
            await stages.score(windowed(1, None)),  # no events: nothing to wait for
            await stages.score(windowed(2, None)),
        ]

    kept, dropped, after, next_generation = asyncio.run(run())
    assert kept is not None and next_generation is not None
    assert dropped is None and after is None
