"""The label barrier, against a scripted consumer (no broker).

Before a batch whose newest transaction is at t goes on, each owned labels partition must
be at its fetch high watermark or have delivered a label with label_time > t; otherwise
the worker reads more labels, at most ``label_barrier_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from stream_app.ahead import AheadLimit
from stream_app.contracts import Label, Transaction, encode_label, encode_transaction
from stream_app.topics import stream_topics
from stream_app.worker.barrier import LabelBarrier
from stream_app.worker.batches import Batch
from stream_app.worker.decode import Decoder
from stream_app.worker.fetch import Fetcher
from stream_app.worker.grace import FixedGrace
from stream_app.worker.metrics import WorkerMetrics

TOPICS = stream_topics("barrier")
LABELS = TopicPartition(TOPICS.labels, 0)
TRANSACTIONS = TopicPartition(TOPICS.transactions, 0)
T0 = dt.datetime(2018, 4, 2, tzinfo=dt.UTC)


class ScriptedConsumer:
    """Serves ``labels`` from offset 0 in chunks of 2; ``highwater`` as given."""

    def __init__(self, labels: list[bytes], highwater: int | None) -> None:
        self.labels = labels
        self.position_ = 0
        self.highwater_ = highwater
        self.label_fetches = 0
        self.polled_ms = int(time.time() * 1000)

    def assignment(self) -> set[TopicPartition]:
        return {LABELS, TRANSACTIONS}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwater_

    async def position(self, tp: TopicPartition) -> int:
        return self.position_

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return self.polled_ms  # the broker answers

    def _answer(self) -> None:
        """A fetch response (each getmany is one, newer than the last)."""
        self.polled_ms = max(int(time.time() * 1000), self.polled_ms + 1)

    async def getmany(self, *tps: TopicPartition, timeout_ms: int, max_records: int) -> Any:
        assert tps == (LABELS,), "the barrier reads labels only"
        self.label_fetches += 1
        self._answer()
        chunk = self.labels[self.position_ : self.position_ + 2]
        if not chunk:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        records = [
            ConsumerRecord(LABELS.topic, 0, self.position_ + i, 0, 0, b"c", v, None, 0, 0, [])
            for i, v in enumerate(chunk)
        ]
        self.position_ += len(chunk)
        return {LABELS: records}


def _barrier(
    consumer: ScriptedConsumer, timeout_ms: int, at: dt.datetime, idle_ms: int = 0
) -> tuple[Any, float]:
    """Run the barrier for a one-transaction batch at ``at``: (the batch, timeouts)."""

    async def run() -> tuple[Any, float]:
        metrics = WorkerMetrics()
        decoder = Decoder(
            TOPICS, metrics, dlq_partitions=1, max_payload_bytes=16384,
            ahead=AheadLimit("watermark", max_ahead_s=1e9),
        )  # fmt: skip
        barrier = LabelBarrier(
            Fetcher(consumer, TOPICS, max_records=100),  # scripted, not a broker client
            decoder,
            TOPICS,
            metrics,
            timeout_s=timeout_ms / 1000,
            poll_s=0.005,
            grace=FixedGrace(idle_ms / 1000),
        )
        batch = await barrier(_transaction_batch(decoder, at))
        timeouts = metrics.registry.get_sample_value("fraudstream_label_barrier_timeouts_total")
        return batch, timeouts or 0.0

    return asyncio.run(run())


def _label(i: int, label_time: dt.datetime) -> bytes:
    return encode_label(Label(f"l{i}", "c", "k", T0, label_time, i % 2 == 0))


def _transaction_batch(decoder: Decoder, at: dt.datetime) -> Batch:
    tx = encode_transaction(Transaction("t", "c", "k", "1.00", "EUR", at))
    record = ConsumerRecord(TRANSACTIONS.topic, 0, 0, 0, 0, b"c", tx, None, 0, 0, [])
    return decoder({TRANSACTIONS: [record]}, generation=0)


def test_labels_are_read_until_one_is_newer_than_the_batch() -> None:
    t = T0 + dt.timedelta(days=8)
    labels = [_label(i, T0 + dt.timedelta(days=i)) for i in range(12)]  # day 9 passes t
    consumer = ScriptedConsumer(labels, highwater=len(labels))
    batch, timeouts = _barrier(consumer, 5_000, t)
    assert [label.transaction_id for label in batch.labels] == [f"l{i}" for i in range(10)]
    assert batch.offsets[LABELS] == 10
    assert timeouts == 0


def test_labels_are_read_up_to_the_high_watermark() -> None:
    labels = [_label(i, T0) for i in range(5)]
    consumer = ScriptedConsumer(labels, highwater=len(labels))
    batch, timeouts = _barrier(consumer, 5_000, T0 + dt.timedelta(days=8))
    assert len(batch.labels) == 5 and consumer.position_ == 5
    assert timeouts == 0


def test_an_unknown_high_watermark_is_waited_for_at_most_the_timeout() -> None:
    consumer = ScriptedConsumer([], highwater=None)
    batch, timeouts = _barrier(consumer, 50, T0)
    assert consumer.label_fetches >= 1 and batch.labels == ()
    assert timeouts == 1


def test_a_caught_up_labels_partition_is_waited_for_until_it_is_quiet() -> None:
    # Every label is older than the batch and the partition is caught up, but labels just
    # arrived: more may be in flight, so the barrier keeps reading until the idle time.
    labels = [_label(i, T0 + dt.timedelta(days=i)) for i in range(4)]
    eager = ScriptedConsumer(labels, highwater=len(labels))
    _barrier(eager, 5_000, T0 + dt.timedelta(days=8), idle_ms=0)
    patient = ScriptedConsumer(labels, highwater=len(labels))
    batch, timeouts = _barrier(patient, 5_000, T0 + dt.timedelta(days=8), idle_ms=300)
    assert len(batch.labels) == 4
    assert timeouts == 0
    # two fetches bring the labels, a third (empty) answer shows nothing came after them
    assert eager.label_fetches == 3
    assert patient.label_fetches > eager.label_fetches + 5  # polled on while not quiet


def test_a_partition_is_behind_until_a_response_after_the_one_it_delivered() -> None:
    async def run() -> list[bool]:
        consumer = ScriptedConsumer([_label(0, T0), _label(1, T0)], highwater=2)
        fetcher = Fetcher(consumer, TOPICS, max_records=100)
        states = [await fetcher.is_behind(LABELS)]  # position 0 < highwater 2
        await fetcher.fetch(0.001, LABELS)  # both labels, from one response
        states.append(await fetcher.is_behind(LABELS))  # nothing known after that response
        await fetcher.fetch(0.001, LABELS)  # a newer, empty response
        states.append(await fetcher.is_behind(LABELS))
        return states

    assert asyncio.run(run()) == [True, True, False]
