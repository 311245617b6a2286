"""The decode stage: a fetch's records validated into a :class:`Batch`; the invalid ones
become dead letters."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from stream_app.ahead import AheadLimit
from stream_app.contracts import Transaction
from stream_app.contracts.decode import decode_label_event, decode_transaction_event
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import ContractError
from stream_app.topics import StreamTopics
from stream_app.worker.batches import Batch, Source
from stream_app.worker.emit import dead_letter
from stream_app.worker.fetch import Fetched
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.publisher import OutRecord


class Decoder:
    """Turns fetches into batches."""

    def __init__(
        self,
        topics: StreamTopics,
        metrics: WorkerMetrics,
        *,
        dlq_partitions: int,
        max_payload_bytes: int,
        ahead: AheadLimit,
    ) -> None:
        """``ahead``: refuses event and label times too far ahead."""
        self._topics = topics
        self._metrics = metrics
        self._dlq_partitions = dlq_partitions
        self._max_bytes = max_payload_bytes
        self._ahead = ahead

    def __call__(self, fetched: Fetched, generation: int) -> Batch:
        """Validate every record of a fetch.

        Transactions stay in fetch order (by partition, then offset): ordering them for
        the windows is the aligner's job, which needs each partition's records in offset
        order to know what it may commit. ``sources`` holds each one's consumed record.
        """
        start = time.perf_counter()
        transactions: list[Transaction] = []
        events: list[TransactionEvent] = []
        sources: list[Source] = []
        labels: list[LabelEvent] = []
        dead_letters: list[OutRecord] = []
        offsets: dict[TopicPartition, int] = {}
        last_label_time_us: dict[TopicPartition, int] = {}
        oldest_label_time_us: dict[TopicPartition, int] = {}
        labels_topic, max_bytes, ahead = self._topics.labels, self._max_bytes, self._ahead.check
        self._ahead.read_clock()
        for tp, records in fetched.items():
            if not records:
                continue
            is_label = tp.topic == labels_topic
            kind = "label" if is_label else "transaction"
            self._metrics.events_in.labels(kind).inc(len(records))
            self._metrics.batch_size.labels(kind).observe(len(records))
            offsets[tp] = records[-1].offset + 1
            first_label = len(labels)
            for record in records:
                try:
                    if is_label:
                        label = decode_label_event(record.value, max_bytes)
                        ahead("label_time", label.label_time_us)
                        labels.append(label)
                    else:
                        tx, event = decode_transaction_event(record.value, max_bytes)
                        ahead("event_time", event.event_time_us)
                        transactions.append(tx)
                        events.append(event)
                        sources.append(record)
                except ContractError as error:
                    self._metrics.dlq.labels(kind).inc()
                    self._metrics.dlq_reasons.labels(error.reason).inc()
                    if error.reason == "far_future":
                        self._metrics.future_events.labels(kind).inc()
                    dead_letters.append(
                        dead_letter(self._topics.dlq, self._dlq_partitions, record, error)
                    )
            if len(labels) > first_label:  # this partition's label times, for the barrier
                last_label_time_us[tp] = labels[-1].label_time_us
                oldest_label_time_us[tp] = min(lab.label_time_us for lab in labels[first_label:])
        self._metrics.stage_seconds.labels("decode").observe(time.perf_counter() - start)
        return Batch(
            generation,
            start,
            tuple(transactions),
            tuple(events),
            tuple(sources),
            tuple(labels),
            tuple(dead_letters),
            offsets,
            last_label_time_us,
            oldest_label_time_us,
        )
