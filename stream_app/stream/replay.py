"""Publish a recorded history to Kafka in event-time order, at real time times N or at max speed.

Transactions go to the namespace's transactions topic, keyed by ``customer_id``, with the
record timestamp set to the event time. Every known outcome goes to the labels topic,
keyed by ``customer_id`` too, with the record timestamp set to its ``label_time``. Both
streams are merged on one replay clock: a label is published when the clock reaches its
``label_time`` (before any transaction of the same instant, since terminal windows count
labels with ``label_time <= t``). The worker's label barrier relies on this order.

Records go out in per-partition batches (:class:`~stream_app.stream.publisher.BatchPublisher`,
the default murmur2 key partitioning) without waiting for each delivery; order within a
partition is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tqdm import tqdm

from stream_app.contracts.codec import encode_label, encode_transaction
from stream_app.contracts.records import Label, Transaction, from_epoch_us
from stream_app.errors import DependencyUnavailable, InputDataError
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.stream.publisher import BatchPublisher, OutRecord
from stream_app.stream.topics import StreamTopics

CHUNK_EVENTS = 2_000
"""Records handed to the producer at once."""
CHUNKS_IN_FLIGHT = 4
"""Chunks handed to the producer whose delivery may still be unconfirmed."""
MAX_IDLE_SLEEP_S = 0.25
LINGER_MS = 5


@dataclass(frozen=True, eq=False)
class ReplayOrder:
    """The merged publication order of a history: one entry per published record.

    ``row`` is the history row, ``is_label`` says whether the record is that row's label
    (else its transaction) and ``clock_us`` is the replay clock at which it is published
    (event time for transactions, label time for labels), non-decreasing.
    """

    row: npt.NDArray[np.int64]
    is_label: npt.NDArray[np.bool_]
    clock_us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.row)

    @property
    def transactions(self) -> int:
        """Transactions in the order."""
        return int(len(self.row) - np.count_nonzero(self.is_label))

    @property
    def labels(self) -> int:
        """Labels in the order."""
        return int(np.count_nonzero(self.is_label))


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay published and how fast."""

    transactions: int
    labels: int
    duration_s: float
    first_event_us: int | None
    last_event_us: int | None

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
        return (
            f"replayed {self.transactions:,} transactions and {self.labels:,} labels to "
            f"{topics.transactions} / {topics.labels} in {self.duration_s:.1f} s "
            f"({self.events_per_s:,.0f} events/s{span})"
        )


def replay_order(
    history: TransactionHistory, start_us: int | None = None, stop_us: int | None = None
) -> ReplayOrder:
    """Merge the transactions in ``[start_us, stop_us)`` and their labels on one clock.

    A label is included when its transaction is, and (with ``stop_us``) when its
    ``label_time`` is before ``stop_us``: the replay clock never passes ``stop_us``.
    """
    if start_us is not None and stop_us is not None and stop_us <= start_us:
        raise InputDataError(
            f"the replay range is empty: --to {_iso(stop_us)} is not after --from "
            f"{_iso(start_us)}; pick a --to later than --from"
        )
    times = history.event_time_us
    lo = 0 if start_us is None else int(np.searchsorted(times, start_us, side="left"))
    hi = len(history) if stop_us is None else int(np.searchsorted(times, stop_us, side="left"))
    tx_rows = np.arange(lo, hi, dtype=np.int64)
    label_times = history.label_time_us[lo:hi]
    known = label_times != NO_LABEL_US
    if stop_us is not None:
        known &= label_times < stop_us
    label_rows = tx_rows[known]
    rows = np.concatenate([label_rows, tx_rows])
    is_label = np.concatenate(
        [np.ones(len(label_rows), dtype=np.bool_), np.zeros(len(tx_rows), dtype=np.bool_)]
    )
    clock = np.concatenate([history.label_time_us[label_rows], times[tx_rows]])
    # Sort by clock; at equal clock labels first; then by history row (file order).
    order = np.lexsort((rows, ~is_label, clock))
    return ReplayOrder(row=rows[order], is_label=is_label[order], clock_us=clock[order])


def format_amount(amount: float) -> str:
    """``amount`` as a contract decimal string (at most 4 decimals, no trailing zeros)."""
    text = f"{amount:.4f}".rstrip("0").rstrip(".")
    return text or "0"


class RecordEncoder:
    """Builds the ``transaction.v1`` / ``label.v1`` payloads of history rows."""

    def __init__(self, history: TransactionHistory) -> None:
        self._history = history

    def transaction(self, row: int) -> Transaction:
        """The transaction of ``row``."""
        h = self._history
        return Transaction(
            transaction_id=str(h.transaction_id[row]),
            customer_id=str(h.customer_id[row]),
            terminal_id=str(h.terminal_id[row]),
            amount=format_amount(float(h.amount[row])),
            currency=h.currency,
            event_time=from_epoch_us(int(h.event_time_us[row])),
        )

    def label(self, row: int) -> Label:
        """The label of ``row`` (its outcome must be known)."""
        h = self._history
        return Label(
            transaction_id=str(h.transaction_id[row]),
            customer_id=str(h.customer_id[row]),
            terminal_id=str(h.terminal_id[row]),
            event_time=from_epoch_us(int(h.event_time_us[row])),
            label_time=from_epoch_us(int(h.label_time_us[row])),
            is_fraud=bool(h.is_fraud[row]),
        )

    def payload(self, row: int, is_label: bool) -> bytes:
        """The encoded, validated record of ``row``."""
        if is_label:
            return encode_label(self.label(row))
        return encode_transaction(self.transaction(row))


async def replay(
    history: TransactionHistory,
    order: ReplayOrder,
    bootstrap: str,
    topics: StreamTopics,
    speed: float | None,
    *,
    events_per_s: float | None = None,
    progress: bool = True,
    on_sent: Callable[[npt.NDArray[np.int64], float], None] | None = None,
) -> ReplaySummary:
    """Publish ``order`` to ``topics`` on ``bootstrap``; ``speed`` None means max speed.

    With a speed N, the record at replay clock ``t`` is published N times faster than real
    time relative to the first record. ``events_per_s`` instead offers a fixed rate of
    transactions (labels go with the transaction before them), for latency measurements.
    ``on_sent(rows, wall_time_s)`` is told the history rows of the transactions handed to
    the producer and the wall time (``time.time()``) when they were.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    publisher = BatchPublisher(producer)
    try:
        await producer.start()
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
            await _publish(history, order, topics, schedule, publisher, bar, on_sent)
        duration = time.monotonic() - started
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot publish to the Kafka broker at {bootstrap}: {exc!r}; check that it runs "
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
    )


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
                )
            )
        in_flight.append(await publisher.send(records))
        if on_sent is not None:
            chunk = slice(i, stop)
            on_sent(order.row[chunk][~order.is_label[chunk]], time.time())
        while len(in_flight) > CHUNKS_IN_FLIGHT:
            await asyncio.gather(*in_flight.pop(0))
        bar.update(stop - i)
        i = stop
    for futures in in_flight:
        await asyncio.gather(*futures)


def _iso(epoch_us: int) -> str:
    return from_epoch_us(epoch_us).isoformat().replace("+00:00", "Z")
