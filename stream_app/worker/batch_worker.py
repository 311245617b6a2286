"""The batch worker: consumer, event-time alignment, label barrier and commit around the
stages a :class:`~stream_app.worker.runner.Runner` runs.

Its fetch loop is the runner's source: fetch -> decode -> align -> label barrier -> the
first lane (windows -> score and publish -> acknowledge -> store); stored batches' offsets
are committed by the commit loop. Idle and wait times of the alignment and the barrier run
on the fetcher's broker clock, which stops while the broker does not answer, so a broker
outage forces nothing out early.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Sequence

from aiokafka import ConsumerRebalanceListener, TopicPartition

from stream_app.features.store import Progress
from stream_app.settings import Settings
from stream_app.topics import StreamTopics
from stream_app.worker.align import Alignment
from stream_app.worker.barrier import LabelBarrier
from stream_app.worker.batches import Batch
from stream_app.worker.commit import Committer
from stream_app.worker.decode import Decoder
from stream_app.worker.fetch import Fetched, Fetcher
from stream_app.worker.retry import Backoff
from stream_app.worker.runner import Runner
from stream_app.worker.windows import Windows

log = logging.getLogger(__name__)

_STOP_DRAIN_S = 10.0



class BatchWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Fetches, aligns and hands batches to the runner; commits what it stored."""

    def __init__(
        self,
        settings: Settings,
        topics: StreamTopics,
        fetcher: Fetcher,
        decode: Decoder,
        alignment: Alignment,
        barrier: LabelBarrier,
        committer: Committer,
        runner: Runner,
        windows: Windows,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._fetcher = fetcher
        self._decode = decode
        self._alignment = alignment
        self._barrier = barrier
        self._committer = committer
        self._runner = runner
        self._windows = windows
        self._idle_claimed_at = -math.inf
        self._generation = 0
        self._owned: tuple[int, ...] = ()
        self._shared = False

    async def start(self, kafka: Backoff) -> None:
        """Subscribe, join the group (retried with ``kafka``) and start the tasks."""
        self._fetcher.subscribe(self)
        await kafka.call(self._fetcher.consumer.start)
        self._runner.start(self._fetch_loop)

    async def run(self) -> None:
        """Wait for the tasks; the first that fails stops the others and raises."""
        try:
            await self._runner.run()
        except BaseException:
            await self.stop()
            raise

    async def drained(self) -> None:
        """Return once every record fetched so far is released by the aligner, processed
        and its offsets committed."""
        while True:
            await self._runner.idle()
            await self._committer.commit()
            if self._alignment.buffered:
                await asyncio.sleep(self._settings.batch_max_wait_ms / 1000)
            elif not self._runner.busy and not self._committer.pending:
                return

    async def stop(self) -> None:
        """Stop fetching, finish what is in flight (at most 10 s), leave the group."""
        await self._runner.stop(_STOP_DRAIN_S, self._committer.commit)
        await self._fetcher.consumer.stop()

    # -- rebalance listener ----------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish and commit every batch already fetched before the partitions move (those
        waiting for other workers' progress are dropped: :meth:`Windows.supersede`)."""
        self._windows.supersede()
        await self._runner.idle()
        await self._committer.commit()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Start a new generation: forget cached windows, label progress and buffered
        transactions (never committed, so redelivered to their new owner)."""
        self._generation = self._committer.generation = self._generation + 1
        self._barrier.clear()
        self._alignment.clear()
        self._owned = tuple(
            sorted(tp.partition for tp in assigned if tp.topic == self._topics.transactions)
        )
        self._shared = len(self._owned) < self._settings.topic_partitions
        self._windows.reset(self._generation, self._shared)
        if self._fetcher.lags is not None:
            self._fetcher.lags.assigned(assigned)
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    # -- the source ------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        max_wait_s = self._settings.batch_max_wait_ms / 1000
        while True:
            fetched = await self._fetcher.fetch(min(max_wait_s, self._alignment.release_in))
            if not fetched and not self._alignment.buffered:
                await self._claim_idle()
                continue
            async with self._runner.hand_over() as submit:
                batch = await self._prepare(fetched)
                if batch is not None:
                    await submit(batch)

    async def _prepare(self, fetched: Fetched) -> Batch | None:
        """Decode, align and hold for the labels due: the batch for the first lane."""
        decoded = self._decode(fetched, self._generation)
        self._barrier.seen(decoded)
        aligned = await self._alignment(decoded)
        if aligned is None:
            return None
        batch = await self._barrier(aligned)
        if not self._shared:
            return batch
        return self._claim(batch, batch.max_event_time_us if batch.transactions else -math.inf)

    def _claim(self, batch: Batch, through_us: float) -> Batch:
        """``batch`` with this worker's progress: every transaction and label of its
        partitions up to ``through_us`` is in it or an earlier batch (-inf: no news; inf:
        caught up and quiet)."""
        progress = Progress(
            self._generation, self._owned, self._settings.topic_partitions, through_us,
            self._alignment.grace_s,
        )  # fmt: skip
        return dataclasses.replace(batch, progress=progress)

    async def _claim_idle(self) -> None:
        """While other workers share the terminals, nothing is in flight and the owned
        partitions are caught up and quiet: tell the store, at most once an idle grace,
        so the others' rows need not wait for this worker's partitions."""
        now = time.monotonic()
        if (
            self._shared
            and not self._runner.busy
            and now - self._idle_claimed_at >= self._alignment.grace_s
            and await self._caught_up()
        ):
            self._idle_claimed_at = now
            await self._windows.claim_idle(self._claim(Batch(self._generation, 0.0), math.inf))

    async def _caught_up(self) -> bool:
        """Whether no owned partition can deliver a transaction or a label now: nothing
        on the broker left to fetch, and quiet for the idle graces."""
        return await self._alignment.caught_up() and await self._barrier.ready(float("inf"))
