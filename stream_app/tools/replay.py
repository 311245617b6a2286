"""Publish a recorded history to Kafka in event-time order, at real time times N or at max speed.

Transactions go to the namespace's transactions topic, keyed by ``customer_id``, with the
record timestamp set to the event time. Every known outcome goes to the labels topic,
keyed by ``customer_id`` too, with the record timestamp set to its ``label_time``. Both
streams are merged on one replay clock by :func:`~stream_app.sources.events.replay_order`
(re-exported here): a label is published when the clock reaches its ``label_time``
(before any transaction of the same instant). The worker's label barrier relies on this
order. The events are built by :class:`~stream_app.sources.events.RecordEncoder`, the
encoder :func:`~stream_app.sources.jsonl.write_jsonl` uses too.

Records go out in per-partition batches (:class:`~stream_app.worker.publisher.BatchPublisher`,
the default murmur2 key partitioning) without waiting for each delivery; order within a
partition is kept.

A replay from a date D can first publish a warm-up (``warmup_until_us=D``): the events
before D (the commands start the order one window horizon earlier) carry the header
:data:`WARMUP_HEADER`. Outside the live namespace the worker applies such transactions to
the windows without alerting or publishing a score, so the scores from D on are those of
a run with warm windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka.errors import KafkaError
from tqdm import tqdm

from stream_app.connections import Kafka, kafka_connection, kafka_producer, start_client
from stream_app.contracts.records import from_epoch_us
from stream_app.errors import DependencyUnavailable, InputDataError
from stream_app.sources.events import RecordEncoder, ReplayOrder, replay_order
from stream_app.sources.history import TransactionHistory
from stream_app.topics import WARMUP, StreamTopics
from stream_app.worker.publisher import BatchPublisher, OutRecord

CHUNK_EVENTS = 2_000
"""Records handed to the producer at once."""
CHUNKS_IN_FLIGHT = 4
"""Chunks handed to the producer whose delivery may still be unconfirmed."""
MAX_IDLE_SLEEP_S = 0.25
WARMUP_HEADER = (WARMUP, b"1")
"""The Kafka header of a warm-up event (name, value)."""
LINGER_MS = 5
"""Default producer linger: every batch waits this long before it goes out (aiokafka lingers
also batches handed over whole with ``send_batch``)."""

__all__ = ["WARMUP_HEADER", "ReplayOrder", "ReplaySummary", "replay", "replay_order"]


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay published and how fast."""

    transactions: int
    labels: int
    duration_s: float
    first_event_us: int | None
    last_event_us: int | None
    warmup: int = 0
    """Events (transactions and labels) published as warm-up."""

    @property
    def events_per_s(self) -> float:
        """Records (transactions and labels) published per second of wall time."""
        total = self.transactions + self.labels
        return total / self.duration_s if self.duration_s > 0 else 0.0

    def line(self, topics: StreamTopics) -> str:
        """One human-readable summary line."""
        span = ""
        if self.first_event_us is not None and self.last_event_us is not None:
            first = from_epoch_us(self.first_event_us).isoformat().replace("+00:00", "Z")
            last = from_epoch_us(self.last_event_us).isoformat().replace("+00:00", "Z")
            span = f", event time {first} .. {last}"
        warmup = f", the first {self.warmup:,} events as warm-up" if self.warmup else ""
        return (
            f"replayed {self.transactions:,} transactions and {self.labels:,} labels to "
            f"{topics.transactions} / {topics.labels} in {self.duration_s:.1f} s "
            f"({self.events_per_s:,.0f} events/s{span}{warmup})"
        )


async def replay(
    history: TransactionHistory,
    order: ReplayOrder,
    kafka: Kafka,
    topics: StreamTopics,
    speed: float | None,
    *,
    events_per_s: float | None = None,
    progress: bool = True,
    on_sent: Callable[[npt.NDArray[np.int64], float], None] | None = None,
    linger_ms: int = LINGER_MS,
    warmup_until_us: int | None = None,
) -> ReplaySummary:
    """Publish ``order`` to ``topics`` on ``kafka``; ``speed`` None means max speed.

    With a speed N, the record at replay clock ``t`` is published N times faster than real
    time relative to the first record. ``events_per_s`` instead offers a fixed rate of
    transactions (labels go with the transaction before them), for latency measurements.
    ``on_sent(rows, wall_time_s)`` is told the history rows of the transactions handed to
    the producer and the wall time (``time.time()``) when they were (just before the
    hand-over, so time the producer blocks counts as theirs). ``linger_ms`` is the
    producer's linger (latency measurements pass 0). Events whose replay clock is before
    ``warmup_until_us`` carry :data:`WARMUP_HEADER`.
    """
    producer = kafka_producer(kafka, linger_ms=linger_ms)
    publisher = BatchPublisher(producer)
    try:
        await start_client(producer, kafka)
        partitions = {
            await publisher.partition_count(topic) for topic in (topics.transactions, topics.labels)
        }
        if len(partitions) != 1:
            raise InputDataError(
                f"{topics.transactions} and {topics.labels} have different partition counts "
                f"({sorted(partitions)}); labels must be co-partitioned with transactions: "
                "recreate them with the same count or use a new namespace"
            )
        started = time.monotonic()
        with tqdm(total=len(order), unit="ev", disable=not progress, smoothing=0.1) as bar:
            schedule = _schedule(order, speed, events_per_s)
            warm = _warmup(order, warmup_until_us)
            await _publish(history, order, warm, topics, schedule, publisher, bar, on_sent)
        duration = time.monotonic() - started
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot publish to the Kafka broker at {kafka_connection(kafka).bootstrap}: "
            f"{exc!r}; check that it runs "
            "and that FRAUDSTREAM_KAFKA_BOOTSTRAP is right"
        ) from exc
    finally:
        await producer.stop()
    return ReplaySummary(
        transactions=order.transactions,
        labels=order.labels,
        duration_s=duration,
        first_event_us=int(order.clock_us[0]) if len(order) else None,
        last_event_us=int(order.clock_us[-1]) if len(order) else None,
        warmup=warm,
    )


def _warmup(order: ReplayOrder, until_us: int | None) -> int:
    """How many events of ``order`` (a prefix: the clock never decreases) are warm-up."""
    return 0 if until_us is None else int(np.searchsorted(order.clock_us, until_us, "left"))


def _schedule(
    order: ReplayOrder, speed: float | None, events_per_s: float | None
) -> npt.NDArray[np.float64] | None:
    """Seconds after the start at which each record is due; None: all at once."""
    if speed is not None and events_per_s is not None:
        raise InputDataError("pace a replay by speed or by events_per_s, not both")
    if speed is not None:
        due: npt.NDArray[np.float64] = (order.clock_us - order.clock_us[:1]) / 1e6 / speed
        return due
    if events_per_s is not None:
        is_tx = (~order.is_label).astype(np.int64)
        transactions_before: npt.NDArray[np.int64] = np.cumsum(is_tx) - is_tx
        # A transaction waits for its turn; a label goes with the transaction before it.
        due = np.maximum(transactions_before - order.is_label, 0) / events_per_s
        return due
    return None


async def _publish(
    history: TransactionHistory,
    order: ReplayOrder,
    warm: int,
    topics: StreamTopics,
    schedule: npt.NDArray[np.float64] | None,
    publisher: BatchPublisher,
    bar: tqdm[Any],
    on_sent: Callable[[npt.NDArray[np.int64], float], None] | None,
) -> None:
    encoder = RecordEncoder(history)
    keys = history.customer_id
    n = len(order)
    wall_start = time.monotonic()
    in_flight: list[list[asyncio.Future[Any]]] = []
    warmup_headers = (WARMUP_HEADER,)
    i = 0
    while i < n:
        stop = min(n, i + CHUNK_EVENTS)
        if schedule is not None:
            elapsed = time.monotonic() - wall_start
            due = int(np.searchsorted(schedule, elapsed, "right"))
            if due <= i:
                await asyncio.sleep(min(MAX_IDLE_SLEEP_S, float(schedule[i]) - elapsed))
                continue
            stop = min(stop, due)
        records = []
        for j in range(i, stop):
            row = int(order.row[j])
            is_label = bool(order.is_label[j])
            records.append(
                OutRecord(
                    topic=topics.labels if is_label else topics.transactions,
                    key=str(keys[row]).encode(),
                    value=encoder.payload(row, is_label),
                    timestamp_ms=int(order.clock_us[j]) // 1000,
                    headers=warmup_headers if j < warm else (),
                )
            )
        handed_at = time.time()
        in_flight.append(await publisher.send(records))
        if on_sent is not None:
            chunk = slice(i, stop)
            on_sent(order.row[chunk][~order.is_label[chunk]], handed_at)
        while len(in_flight) > CHUNKS_IN_FLIGHT:
            await asyncio.gather(*in_flight.pop(0))
        bar.update(stop - i)
        i = stop
    for futures in in_flight:
        await asyncio.gather(*futures)
