"""The batch loop: transactions and labels consumed with ``getmany``, several batches in flight.

Faust dispatches one message at a time (~5k events/s here, see the performance notes), so
the hot topics are read by one aiokafka consumer in the worker's consumer group,
subscribed to ``transactions`` and ``labels`` (co-partitioned by ``customer_id``: the
range assignor gives a worker the same partition numbers of both). Six tasks run:

1. **fetch**: ``getmany`` -> decode and validate (:meth:`Pipeline.decode`) -> label
   barrier -> queue. It decodes batch k+1 while batch k waits on Redis or the broker.
2. **windows**: applies the batch to the windows (:meth:`Pipeline.compute`; at most one
   Redis round trip). With the window store in a child process this runs on the other
   core while the score task handles the batch before.
3. **score**: one scorer call, alerts/scores/dead letters handed to the producer without
   waiting (:meth:`Pipeline.publish`).
4. **acknowledge**: waits for the broker's acknowledgements of a batch's outputs.
5. **store**: then writes the batch's windows to Redis (in processing order: each write
   expects the versions the previous one left; the batches waiting are written in one
   go) and marks their offsets committable.
   Acknowledgements of the next batches are awaited while a write is in flight, and up
   to ``_SENT_DEPTH`` batches wait for each of the two, so the score task does not stall
   on them (with one stage and one waiting batch it sat idle about a fifth of the time).
6. **commit**: commits the committable offsets, coalescing batches while a commit is slow
   (tansu takes tens of ms), and before partitions are revoked or the worker stops.

Offsets are committed only after the broker and Redis acknowledged a batch
(at-least-once); every effect is idempotent, so a redelivered batch changes nothing.

**Label barrier.** Before a batch of transactions whose newest event time is t goes on,
each owned labels partition must have delivered a label with ``label_time > t``, or be
caught up (position at the high watermark of the last fetch response; tansu's ListOffsets
is wrong) and quiet for ``align_idle_ms`` (a caught-up partition may still have a producer
batch in flight). The fetch task reads more labels until then, at most
``label_barrier_timeout_ms`` (``fraudstream_label_barrier_timeouts`` counts give-ups).

**Event-time alignment.** Terminal windows are shared across partitions, so fetched
transactions go through an :class:`EventTimeAligner`: a batch carries only those no
owned transactions partition still holding back (behind, or active within
``align_idle_ms``) can precede; the rest wait for a later batch, and the batch's offsets
stop at the oldest waiting record. Partitions with many records waiting are paused so the
fetches serve the lagging ones. At most ``align_max_buffered_events`` wait, none longer
than ``align_max_wait_ms`` (``fraudstream_alignment_forced_releases`` counts records
released early); ``fraudstream_out_of_order`` counts what still came too late. Idle and
wait times run on a clock that stops while the broker does not answer fetches, so a
broker outage forces nothing out early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from stream_app.contracts import Transaction
from stream_app.contracts.events import TransactionEvent
from stream_app.settings import Settings
from stream_app.topics import StreamTopics
from stream_app.worker.align import ActivityClock, EventTimeAligner
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.pipeline import DecodedBatch, Pipeline, SentBatch

log = logging.getLogger(__name__)

_Aligned = tuple[Transaction, TransactionEvent, tuple[TopicPartition, int]]
_QUEUE_DEPTH = 1  # decoded batches waiting for the windows task, computed ones for scoring
_SENT_DEPTH = 3  # batches waiting for the acknowledge task, and for the store task
_POLL_STALE_S = 2.0  # no fetch response for this long: the broker may hold unseen records
_STOP_DRAIN_S = 10.0


@dataclass(eq=False)
class _Progress:
    """Batches handed to the pipeline and not yet committed, for draining on rebalance."""

    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


class BatchWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumes, processes and commits batches until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        topics: StreamTopics,
        pipeline: Pipeline[Any],
        metrics: WorkerMetrics,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._pipeline = pipeline
        self._metrics = metrics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=topics.consumer_group,
            client_id=f"{topics.consumer_group}-worker",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
            max_poll_interval_ms=300_000,
            # A fetch with nothing to return waits this long; tansu answers only then, even
            # when records arrive meanwhile, so this bounds the latency it adds.
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        self._kafka = pipeline.kafka  # one outage per dependency across the tasks
        self._decoded: asyncio.Queue[DecodedBatch] = asyncio.Queue(_QUEUE_DEPTH)
        self._computed: asyncio.Queue[tuple[DecodedBatch, Any]] = asyncio.Queue(_QUEUE_DEPTH)
        self._sent: asyncio.Queue[SentBatch[Any]] = asyncio.Queue(_SENT_DEPTH)
        self._acknowledged: asyncio.Queue[SentBatch[Any]] = asyncio.Queue(_SENT_DEPTH)
        self._progress = _Progress()
        self._progress.idle.set()
        self._generation = 0
        self._label_time_us: dict[TopicPartition, int] = {}
        self._clock_at = time.monotonic()
        self._broker_s = 0.0
        now = self._broker_time()
        self._label_activity = ActivityClock(settings.align_idle_ms / 1000, now)
        self._aligner: EventTimeAligner[_Aligned] = EventTimeAligner(
            topics.transactions,
            max_buffered=settings.align_max_buffered_events,
            max_per_partition=2 * settings.batch_max_events,
            max_wait_s=settings.align_max_wait_ms / 1000,
            idle_s=settings.align_idle_ms / 1000,
            now=now,
        )
        self._scored_until_us = -1
        self._committable: dict[TopicPartition, int] = {}
        self._commit_due = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Join the group and start the fetch, windows, score, acknowledge, store and commit
        tasks."""
        self._consumer.subscribe([self._topics.transactions, self._topics.labels], listener=self)
        await self._kafka.call(self._consumer.start)
        for name, loop in (
            ("fetch", self._fetch_loop),
            ("windows", self._windows_loop),
            ("score", self._score_loop),
            ("acknowledge", self._acknowledge_loop),
            ("store", self._store_loop),
            ("commit", self._commit_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"fraudstream-{name}"))

    async def run(self) -> None:
        """Wait for the tasks; the first that fails stops the others and raises."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                await self.stop()
                raise task.exception()  # type: ignore[misc]

    async def drained(self) -> None:
        """Return once every record fetched so far is released by the aligner, confirmed
        and its offsets committed."""
        while True:
            await self._progress.idle.wait()
            await self._commit_pending()
            if self._aligner.buffered:
                await asyncio.sleep(self._settings.batch_max_wait_ms / 1000)
            elif self._progress.idle.is_set() and not self._committable:
                return

    async def stop(self) -> None:
        """Stop fetching, finish what is in flight (at most 10 s), leave the group."""
        if self._tasks:
            fetch, *others = self._tasks
            fetch.cancel()
            try:
                await asyncio.wait_for(self._progress.idle.wait(), timeout=_STOP_DRAIN_S)
                await self._commit_pending()
            except TimeoutError:
                log.warning("stopping with %d batches uncommitted", self._progress.in_flight)
            for task in others:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        await self._consumer.stop()

    # -- rebalance listener ----------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish and commit every batch already fetched before the partitions move."""
        await self._progress.idle.wait()
        await self._commit_pending()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Start a new generation: forget cached windows, label progress and buffered
        transactions (never committed, so redelivered to their new owner). Terminal windows
        are shared when other workers own some transactions partitions."""
        self._generation += 1
        self._label_time_us.clear()
        now = self._broker_time()
        self._label_activity.clear(now)
        self._aligner.clear(now)
        self._scored_until_us = -1
        owned = sum(1 for tp in assigned if tp.topic == self._topics.transactions)
        self._pipeline.reset_cache(shared_terminals=owned < self._settings.topic_partitions)
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    # -- the tasks -------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        settings = self._settings
        while True:
            fetched = await self._consumer.getmany(
                timeout_ms=settings.batch_max_wait_ms, max_records=settings.batch_max_events
            )
            if not fetched and not self._aligner.buffered:
                continue
            self._progress.started()
            try:
                batch = await self._align(self._decode(fetched, self._generation))
                if batch is None:
                    self._progress.finished()
                    continue
                if batch.transactions:
                    await self._label_barrier(batch)
                self._count_out_of_order(batch)
                await self._decoded.put(batch)
            except BaseException:
                self._progress.finished()  # not handed over: redelivered after a restart
                raise

    async def _windows_loop(self) -> None:
        while True:
            batch = await self._decoded.get()
            if batch.generation != self._generation:
                self._progress.finished()  # fetched before a rebalance: redelivered later
                continue
            computing = asyncio.ensure_future(self._pipeline.compute(batch))
            if not self._pipeline.computes_in_order:
                await asyncio.wait([computing])
            await self._computed.put((batch, computing))

    async def _score_loop(self) -> None:
        while True:
            batch, computing = await self._computed.get()
            computed = await computing
            sent = await self._pipeline.publish(batch, computed)
            await self._sent.put(sent)

    async def _acknowledge_loop(self) -> None:
        while True:
            sent = await self._sent.get()
            try:
                await self._pipeline.acknowledge(sent)
                await self._acknowledged.put(sent)
            except BaseException:
                self._progress.finished()  # not handed over: redelivered after a restart
                raise

    async def _store_loop(self) -> None:
        """Store the acknowledged batches, all those waiting at once (in order)."""
        while True:
            group = [await self._acknowledged.get()]
            while not self._acknowledged.empty():
                group.append(self._acknowledged.get_nowait())
            try:
                await self._pipeline.store(group)
                for sent in group:
                    if sent.batch.generation == self._generation:
                        for tp, offset in sent.batch.offsets.items():
                            self._committable[tp] = max(offset, self._committable.get(tp, 0))
                        self._commit_due.set()
            finally:
                for _ in group:
                    self._progress.finished()

    async def _commit_loop(self) -> None:
        """Commit the confirmed offsets, several batches at a time while a commit is slow."""
        while True:
            await self._commit_due.wait()
            self._commit_due.clear()
            await self._commit_pending()

    # -- helpers ---------------------------------------------------------------------------

    def _decode(
        self, fetched: Mapping[TopicPartition, Sequence[Any]], generation: int
    ) -> DecodedBatch:
        start = time.perf_counter()
        batch = self._pipeline.decode(fetched, generation)
        self._metrics.stage_seconds.labels("decode").observe(time.perf_counter() - start)
        self._label_time_us.update(batch.last_label_time_us)
        now = self._broker_time()
        for tp in batch.last_label_time_us:
            self._label_activity.touch(tp.partition, now)
        return batch

    async def _align(self, batch: DecodedBatch) -> DecodedBatch | None:
        """Keep the transactions the watermark releases; ``None`` if nothing is left."""
        aligner = self._aligner
        now = self._broker_time()
        aligner.add(
            (
                (event.event_time_us, source[0].partition, source[1], (tx, event, source))
                for tx, event, source in zip(
                    batch.transactions, batch.events, batch.sources, strict=True
                )
            ),
            now,
        )
        for tp, end in batch.offsets.items():
            if tp.topic == self._topics.transactions:
                aligner.fetched(tp.partition, end)
        owned = self._owned(self._topics.transactions)
        behind = [tp.partition for tp in owned if await self._is_behind(tp)]
        released = aligner.release([tp.partition for tp in owned], behind, now)
        self._pause_crowded(owned)
        if released.forced:
            self._metrics.alignment_forced_releases.inc(released.forced)
        batch.keep_transactions(released.items)
        batch.offsets.update(released.offsets)
        if not (batch.transactions or batch.labels or batch.dead_letters or batch.offsets):
            return None
        return batch

    def _count_out_of_order(self, batch: DecodedBatch) -> None:
        """Count transactions older, and labels not newer, than the newest already scored."""
        until = self._scored_until_us
        late_labels = sum(1 for label in batch.labels if label.label_time_us <= until)
        late_transactions = sum(1 for e in batch.events if e.event_time_us < until)
        if late_labels:
            self._metrics.out_of_order.labels("label").inc(late_labels)
        if late_transactions:
            self._metrics.out_of_order.labels("transaction").inc(late_transactions)
        self._scored_until_us = max(until, batch.max_event_time_us)

    def _owned(self, topic: str) -> list[TopicPartition]:
        return [tp for tp in self._consumer.assignment() if tp.topic == topic]

    def _pause_crowded(self, owned: Sequence[TopicPartition]) -> None:
        """Pause the transactions partitions with many records waiting for the watermark
        (so the fetches serve the lagging ones), resume the others."""
        crowded = self._aligner.crowded()
        paused = self._consumer.paused()
        to_pause = [tp for tp in owned if tp.partition in crowded and tp not in paused]
        to_resume = [tp for tp in owned if tp.partition not in crowded and tp in paused]
        if to_pause:
            self._consumer.pause(*to_pause)
        if to_resume:
            self._consumer.resume(*to_resume)

    async def _is_behind(self, tp: TopicPartition) -> bool:
        """``tp`` may have records not fetched yet: its position is below the high watermark
        of the last fetch response (tansu's ListOffsets is wrong), or that response is older
        than ``_POLL_STALE_S`` (paused, or the broker does not answer). A partition revoked
        meanwhile is not ours to wait for."""
        try:
            highwater = self._consumer.highwater(tp)
            position = await self._consumer.position(tp)
            fresh = self._fresh_poll(tp)
        except (IllegalStateError, AssertionError):
            return False
        return highwater is None or position < highwater or not fresh

    def _fresh_poll(self, tp: TopicPartition) -> bool:
        polled_ms = self._consumer.last_poll_timestamp(tp)
        return polled_ms is not None and time.time() - polled_ms / 1000 < _POLL_STALE_S

    def _broker_time(self) -> float:
        """Seconds that pass only while the broker answers fetches (a fresh fetch response
        for an owned partition): idle and wait times of the alignment and the label barrier
        stand still during a broker outage, so an outage forces nothing out of order."""
        now = time.monotonic()
        elapsed, self._clock_at = now - self._clock_at, now
        if any(self._fresh_poll(tp) for tp in self._consumer.assignment()):
            # a gap between calls (the loop waited on the broker) counts only up to the
            # freshness window: the broker may have been down for the rest of it
            self._broker_s += min(elapsed, _POLL_STALE_S)
        return self._broker_s

    async def _label_barrier(self, batch: DecodedBatch) -> None:
        start = time.perf_counter()
        deadline = start + self._settings.label_barrier_timeout_ms / 1000
        t = batch.max_event_time_us
        while not await self._labels_ready(t):
            remaining_ms = int((deadline - time.perf_counter()) * 1000)
            if remaining_ms <= 0:
                self._metrics.label_barrier_timeouts.inc()
                break
            label_tps = self._owned(self._topics.labels)
            more = await self._consumer.getmany(
                *label_tps,
                timeout_ms=min(remaining_ms, self._settings.batch_max_wait_ms),
                max_records=self._settings.batch_max_events,
            )
            if more:
                batch.merge_labels(self._decode(more, batch.generation))
        self._metrics.stage_seconds.labels("barrier").observe(time.perf_counter() - start)

    async def _labels_ready(self, t: int) -> bool:
        """Each owned labels partition delivered a label after ``t``, or is caught up and
        quiet for ``align_idle_ms`` (a caught-up partition may have labels in flight)."""
        now = self._broker_time()
        for tp in self._owned(self._topics.labels):
            if self._label_time_us.get(tp, -1) > t:
                continue
            if not self._label_activity.quiet(tp.partition, now) or await self._is_behind(tp):
                return False
        return True

    async def _commit_pending(self) -> None:
        """Commit every confirmed offset not committed yet (one commit at a time)."""
        async with self._commit_lock:
            offsets, self._committable = self._committable, {}
            if not offsets:
                return
            start = time.perf_counter()

            async def commit() -> None:
                try:
                    await self._consumer.commit(offsets)
                except (CommitFailedError, IllegalStateError) as exc:  # retrying cannot help
                    self._metrics.commit_failures.inc()
                    log.warning("commit refused (%r); the records will be redelivered", exc)

            await self._kafka.call(commit)
            self._metrics.stage_seconds.labels("commit").observe(time.perf_counter() - start)
