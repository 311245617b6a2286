"""The score stage: one scorer call per batch for its new transactions, then the records
to publish (dead letters, alerts, scores)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from stream_app.errors import Superseded
from stream_app.features.store import ComputedWindows
from stream_app.scoring.scorer import Scorer
from stream_app.time import MICROS_PER_SECOND
from stream_app.worker.batches import Batch, Scored, Windowed
from stream_app.worker.emit import Emitter, is_warmup
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.publisher import OutRecord


class Score:
    """Scores windowed batches with one bundle."""

    def __init__(
        self, scorer: Scorer, emitter: Emitter, metrics: WorkerMetrics, *, honor_warmup: bool
    ) -> None:
        """``honor_warmup``: warm-up transactions (a replay's) are applied to the windows but
        not scored, so they raise no alert (never in ``live``: no input may silence it)."""
        self._scorer = scorer
        self._emitter = emitter
        self._metrics = metrics
        self._honor_warmup = honor_warmup
        self._dropped_generation = -1

    async def __call__(self, windowed: Windowed) -> Scored | None:
        """Wait for the batch's windows, score it; its dead letters go out with it.

        None (the batch is dropped, never committed, so redelivered) when a rebalance
        superseded it, and for every later batch of its generation: one of them committed
        would commit offsets past the dropped batch's records.
        """
        batch = windowed.batch
        try:
            computed = await windowed.computed
        except Superseded:
            self._dropped_generation = max(self._dropped_generation, batch.generation)
            return None
        if batch.generation <= self._dropped_generation:
            return None
        records = list(batch.dead_letters)
        if computed is not None and batch.transactions:
            records.extend(await self._score(batch, computed))
        return Scored(batch, computed, tuple(records))

    async def _score(self, batch: Batch, computed: ComputedWindows) -> list[OutRecord]:
        """Score the batch's new transactions at once (not re-deliveries, not conflicts: those
        are dead letters; not warm-ups).

        ONNX Runtime releases the GIL while it runs, so the scorer runs in a thread: the
        event loop decodes the next fetch meanwhile.
        """
        features = computed.features
        duplicates = int(features.duplicate.sum())
        if duplicates:
            self._metrics.duplicates.inc(duplicates)
        sources = batch.sources
        conflicts = [
            self._emitter.conflict(sources[i], batch.transactions[i].transaction_id)
            for i in np.flatnonzero(features.conflict).tolist()
        ]
        fresh = features.to_score
        if self._honor_warmup:
            kept = [i for i in fresh.tolist() if not is_warmup(sources[i])]
            if len(kept) < len(fresh):
                self._metrics.warmup.inc(len(fresh) - len(kept))
                fresh = np.array(kept, dtype=np.intp)
        if not len(fresh):
            return conflicts
        start = time.perf_counter()
        scores = await asyncio.to_thread(
            self._scorer.score_batch,
            features.values[fresh],
            features.sequences[fresh],
            features.mask[fresh],
        )
        self._metrics.stage_seconds.labels("scoring").observe(time.perf_counter() - start)
        self._metrics.event_time_lag.set(time.time() - batch.max_event_time_us / MICROS_PER_SECOND)
        picked = fresh.tolist()
        return conflicts + self._emitter.records(
            [batch.transactions[i] for i in picked],
            [batch.events[i].event_time_us for i in picked],
            features.late[fresh].tolist(),
            scores,
            features.values[fresh],
        )
