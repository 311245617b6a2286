"""One batch, end to end: decode -> windows -> score -> publish. Orchestration only.

The decoding is the contracts' codec, the window maths the feature store's, the scoring
the bundle's :class:`~stream_app.scoring.scorer.Scorer`; this module wires them for a
batch of consumed records and measures each stage. :class:`~stream_app.worker.batch_worker.
BatchWorker` decides when batches run and commits their offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from stream_app.contracts import (
    Alert,
    Reason,
    Transaction,
    TransactionScore,
    encode_alert,
)
from stream_app.contracts.decode import decode_label_event, decode_transaction_event
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import ContractError
from stream_app.features.store import FeatureBatch
from stream_app.scoring.scorer import Scorer
from stream_app.time import MICROS_PER_MS
from stream_app.topics import StreamTopics
from stream_app.worker.emit import dead_letter
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.publisher import BatchPublisher, OutRecord
from stream_app.worker.retry import Backoff


class ComputedWindows(Protocol):
    """A batch applied to the windows, not written yet (``ComputedBatch``, ``RemoteBatch``)."""

    @property
    def features(self) -> FeatureBatch:
        """A row per applied transaction."""
        ...

    @property
    def applied(self) -> npt.NDArray[np.intp]:
        """Which input transactions have a row in ``features``."""
        ...

    @property
    def late(self) -> npt.NDArray[np.bool_]:
        """Which input transactions were too old to apply."""
        ...

    @property
    def changed(self) -> bool:
        """Whether any window changed (there is something to write)."""
        ...


C = TypeVar("C", bound=ComputedWindows)


class BatchWindowStore(Protocol[C]):
    """The window store as the pipeline drives it (:class:`RedisWindowStore`, or one in a
    child process, :class:`~stream_app.worker.window_process.WindowProcess`)."""

    async def compute(
        self, transactions: Sequence[TransactionEvent], labels: Sequence[LabelEvent]
    ) -> C:
        """Apply ``labels`` then ``transactions`` to the windows; nothing written yet."""
        ...

    async def write_all(self, batches: Sequence[C]) -> None:
        """Make computed batches' window changes durable, in the order given."""
        ...

    @property
    def computes_in_order(self) -> bool:
        """Whether computes may overlap: each applies after those called before it."""
        ...

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """Drop windows cached in the process (after a rebalance); ``shared_terminals``:
        other workers write terminal windows too."""
        ...


@dataclass(eq=False)
class DecodedBatch:
    """Validated records of one fetch, and the offsets to commit once it is processed.

    ``events[i]`` is ``transactions[i]`` as the window store takes it, ``sources[i]`` its
    partition and offset; labels are kept as the window store takes them.
    """

    generation: int
    transactions: list[Transaction] = field(default_factory=list)
    events: list[TransactionEvent] = field(default_factory=list)
    sources: list[tuple[TopicPartition, int]] = field(default_factory=list)
    labels: list[LabelEvent] = field(default_factory=list)
    dead_letters: list[OutRecord] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    last_label_time_us: dict[TopicPartition, int] = field(default_factory=dict)
    max_event_time_us: int = -1

    def keep_transactions(
        self, kept: Sequence[tuple[Transaction, TransactionEvent, tuple[TopicPartition, int]]]
    ) -> None:
        """Replace the transactions (already in application order) with ``kept``."""
        self.transactions = [tx for tx, _, _ in kept]
        self.events = [event for _, event, _ in kept]
        self.sources = [source for _, _, source in kept]
        self.max_event_time_us = max((e.event_time_us for e in self.events), default=-1)

    def merge_labels(self, other: DecodedBatch) -> None:
        """Add the labels (and dead letters, offsets) of a label-only batch."""
        self.labels.extend(other.labels)
        self.dead_letters.extend(other.dead_letters)
        self.offsets.update(other.offsets)
        self.last_label_time_us.update(other.last_label_time_us)


@dataclass(eq=False)
class SentBatch(Generic[C]):
    """A processed batch: its outputs handed to the producer, its windows not yet written."""

    batch: DecodedBatch
    computed: C | None
    records: list[OutRecord]
    futures: list[asyncio.Future[Any]]


class Pipeline(Generic[C]):
    """Decodes, windows, scores and publishes batches for one namespace and bundle."""

    def __init__(
        self,
        *,
        topics: StreamTopics,
        store: BatchWindowStore[C],
        scorer: Scorer,
        publisher: BatchPublisher,
        metrics: WorkerMetrics,
        dlq_partitions: int,
        publish_scores: bool,
        max_payload_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        redis_backoff: Backoff | None = None,
    ) -> None:
        self._topics = topics
        self._store = store
        self._scorer = scorer
        self._publisher = publisher
        self._metrics = metrics
        self._dlq_partitions = dlq_partitions
        self._publish_scores = publish_scores
        self._max_bytes = max_payload_bytes
        self._clock = clock
        self._model_version = scorer.bundle.model_version
        self.kafka = Backoff("kafka", metrics)
        """Retries of broker calls; the worker's own calls to the broker share it."""
        self.redis = redis_backoff or Backoff("redis", metrics)

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """Drop windows cached in the process (the partitions moved); ``shared_terminals``:
        this worker does not own every transactions partition."""
        self._store.reset_cache(shared_terminals=shared_terminals)

    @property
    def computes_in_order(self) -> bool:
        """Whether :meth:`compute` calls may overlap (the store orders them)."""
        return self._store.computes_in_order

    def decode(
        self, fetched: Mapping[TopicPartition, Sequence[Any]], generation: int
    ) -> DecodedBatch:
        """Validate every record of a fetch; invalid ones become dead letters.

        Transactions stay in fetch order (by partition, then offset): ordering them for
        the windows is the :class:`~stream_app.worker.align.EventTimeAligner`'s job,
        which needs each partition's records in offset order to know what it may commit.
        ``sources`` holds each one's partition and offset.
        """
        batch = DecodedBatch(generation)
        labels_topic = self._topics.labels
        max_bytes = self._max_bytes
        for tp, records in fetched.items():
            if not records:
                continue
            is_label = tp.topic == labels_topic
            kind = "label" if is_label else "transaction"
            self._metrics.events_in.labels(kind).inc(len(records))
            self._metrics.batch_size.labels(kind).observe(len(records))
            batch.offsets[tp] = records[-1].offset + 1
            for record in records:
                try:
                    if record.value is None:
                        raise ContractError(
                            "$", "the record has no value (a tombstone); send one JSON event"
                        )
                    if is_label:
                        label = decode_label_event(record.value, max_bytes)
                        batch.labels.append(label)
                        batch.last_label_time_us[tp] = label.label_time_us
                    else:
                        tx, event = decode_transaction_event(record.value, max_bytes)
                        batch.transactions.append(tx)
                        batch.events.append(event)
                        batch.sources.append((tp, record.offset))
                except ContractError as error:
                    self._metrics.dlq.labels(kind).inc()
                    batch.dead_letters.append(
                        dead_letter(
                            self._topics.dlq,
                            self._dlq_partitions,
                            source_topic=tp.topic,
                            source_partition=tp.partition,
                            source_offset=record.offset,
                            key=record.key,
                            value=record.value,
                            timestamp_ms=record.timestamp,
                            error=error,
                        )
                    )
        batch.max_event_time_us = max((e.event_time_us for e in batch.events), default=-1)
        return batch

    async def process(self, batch: DecodedBatch) -> SentBatch[C]:
        """:meth:`compute` then :meth:`publish`."""
        return await self.publish(batch, await self.compute(batch))

    async def compute(self, batch: DecodedBatch) -> C | None:
        """Apply the batch's labels and transactions to the windows (nothing written yet)."""
        if not (batch.transactions or batch.labels):
            return None
        labels = batch.labels
        start = time.perf_counter()
        computed = await self.redis.call(lambda: self._store.compute(batch.events, labels))
        self._observe("redis", start)
        if computed.late.any():
            self._metrics.late_events.labels("transaction").inc(int(computed.late.sum()))
        return computed

    async def publish(self, batch: DecodedBatch, computed: C | None) -> SentBatch[C]:
        """One scorer call, then the outputs (dead letters, alerts, scores) handed to the
        producer without waiting.

        The windows are written by :meth:`store`, after the outputs are acknowledged: a
        crash in between recomputes the same rows from Redis and re-sends the same alerts.
        """
        records = list(batch.dead_letters)
        if computed is not None and batch.transactions:
            records.extend(await self._score(batch, computed))
        start = time.perf_counter()
        futures = await self.kafka.call(lambda: self._publisher.send(records))
        self._observe("publish", start)
        return SentBatch(batch, computed, records, futures)

    async def acknowledge(self, sent: SentBatch[C]) -> None:
        """Wait until the broker acknowledged ``sent``'s outputs (re-sending while it fails)."""
        start = time.perf_counter()
        futures: list[asyncio.Future[Any]] | None = sent.futures

        async def acknowledged() -> None:
            nonlocal futures
            if futures is None:
                futures = await self._publisher.send(sent.records)
            results = await asyncio.gather(*futures, return_exceptions=True)
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is not None:
                futures = None
                raise failure

        await self.kafka.call(acknowledged)
        self._observe("publish", start)

    async def store(self, sent: Sequence[SentBatch[C]]) -> None:
        """Write acknowledged batches' windows to Redis (retrying while Redis is down).

        Batches must be stored in the order they were processed: each write expects the
        window versions the previous one left.
        """
        computed = [batch.computed for batch in sent if batch.computed is not None]
        if any(c.changed for c in computed):
            start = time.perf_counter()
            await self.redis.call(lambda: self._store.write_all(computed))
            self._observe("redis", start)

    async def _score(self, batch: DecodedBatch, computed: C) -> list[OutRecord]:
        """Score the batch's new transactions (not re-deliveries, not late ones) at once.

        ONNX Runtime releases the GIL while it runs, so the scorer runs in a thread: the
        event loop decodes the next fetch meanwhile.
        """
        features = computed.features
        fresh = np.flatnonzero(~features.duplicate)
        duplicates = len(features.duplicate) - len(fresh)
        if duplicates:
            self._metrics.duplicates.inc(duplicates)
        if not len(fresh):
            return []
        rows = computed.applied[fresh]
        start = time.perf_counter()
        scores = await asyncio.to_thread(
            self._scorer.score_batch,
            features.values[fresh],
            features.sequences[fresh],
            features.mask[fresh],
        )
        self._observe("scoring", start)
        self._metrics.event_time_lag.set(time.time() - batch.max_event_time_us / 1_000_000)
        picked = rows.tolist()
        transactions = [batch.transactions[i] for i in picked]
        times_us = [batch.events[i].event_time_us for i in picked]
        records: list[OutRecord] = []
        alerts = np.flatnonzero(scores.is_alert)
        if len(alerts):
            processed_at = self._clock()
            columns = self._scorer.columns
            threshold = self._scorer.threshold
            reasons = scores.reasons_for(alerts)
            values = features.values[fresh]
            for row, row_reasons in zip(alerts.tolist(), reasons, strict=True):
                tx = transactions[row]
                at_ms = times_us[row] // MICROS_PER_MS
                alert = Alert.for_transaction(
                    tx,
                    score=float(scores.score[row]),
                    threshold=threshold,
                    model_version=self._model_version,
                    reasons=tuple(Reason(f, c, v) for f, c, v in row_reasons),
                    features=dict(zip(columns, values[row].tolist(), strict=True)),
                    processed_at=processed_at,
                )
                records.append(
                    OutRecord(
                        topic=self._topics.alerts,
                        key=tx.customer_id.encode(),
                        value=encode_alert(alert),
                        timestamp_ms=at_ms,
                    )
                )
            self._metrics.alerts_out.inc(len(alerts))
        if self._publish_scores:
            records.extend(
                self._score_records(transactions, times_us, scores.score.tolist(), scores.is_alert)
            )
        return records

    def _score_records(
        self,
        transactions: list[Transaction],
        times_us: list[int],
        scores: list[float],
        is_alert: Any,
    ) -> list[OutRecord]:
        encode = msgspec.json.encode
        threshold = self._scorer.threshold
        topic = self._topics.scores
        model_version = self._model_version
        out = [
            OutRecord(
                topic,
                tx.customer_id.encode(),
                encode(
                    TransactionScore(
                        tx.transaction_id,
                        tx.customer_id,
                        score,
                        threshold,
                        alert,
                        model_version,
                        tx.event_time,
                    )
                ),
                t // MICROS_PER_MS,
            )
            for tx, t, score, alert in zip(
                transactions, times_us, scores, is_alert.tolist(), strict=True
            )
        ]
        self._metrics.scores_out.inc(len(out))
        return out

    def _observe(self, stage: str, start: float) -> None:
        self._metrics.stage_seconds.labels(stage).observe(time.perf_counter() - start)
