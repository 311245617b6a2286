"""The score stage: one scorer call per model per batch for its new transactions, the alert
policy's decision, then the records to publish (dead letters, alerts, scores, shadow
scores of the challengers)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_app.errors import Superseded
from stream_app.features.store import ComputedWindows
from stream_app.scoring.scorer import ScoreBatch
from stream_app.time import MICROS_PER_SECOND
from stream_app.worker.batches import Batch, Scored, Windowed
from stream_app.worker.emit import Decision, Emitter, is_warmup
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.models import Models, ServedModel
from stream_app.worker.publisher import OutRecord
from stream_app.worker.retry import Backoff


class Score:
    """Scores windowed batches with the serving model and the challengers of the moment."""

    def __init__(
        self,
        models: Models,
        emitter: Emitter,
        metrics: WorkerMetrics,
        redis: Backoff,
        *,
        honor_warmup: bool,
    ) -> None:
        """``models``: read once per batch, so a swap happens between batches; ``redis``:
        the retries of a daily budget's day scores. ``honor_warmup``: warm-up transactions
        (a replay's) are applied to the windows but not scored, so they raise no alert
        (never in ``live``: no input may silence it)."""
        self._models = models
        self._redis = redis
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
        serving = self._models.serving
        models = (serving.model, *serving.challengers)
        values = features.values[fresh]
        start = time.perf_counter()
        scored = await asyncio.to_thread(
            _score_all, models, values, features.sequences[fresh], features.mask[fresh]
        )
        self._metrics.stage_seconds.labels("scoring").observe(time.perf_counter() - start)
        self._metrics.event_time_lag.set(time.time() - batch.max_event_time_us / MICROS_PER_SECOND)
        picked = fresh.tolist()
        transactions = [batch.transactions[i] for i in picked]
        times_us = [batch.events[i].event_time_us for i in picked]
        ids = [tx.transaction_id for tx in transactions]
        decisions = [
            await self._decide(model, scores, ids, times_us)
            for model, scores in zip(models, scored, strict=True)
        ]
        late = features.late[fresh].tolist()
        first, *challengers = decisions
        first = replace(  # the serving model's alerts are explained: their reasons
            first, scores=serving.model.scorer.with_alerts(first.scores, values, first.alerts)
        )
        self._metrics.alert_threshold.set(float(first.thresholds[-1]))
        self._metrics.scores.observe(first.scores.score)
        self._metrics.drift.observe(serving.model.scorer.bundle, values, first.scores.score)
        self._metrics.last_batch.set(time.time())
        records = conflicts + self._emitter.records(transactions, times_us, late, first, values)
        for challenger in challengers:
            records.extend(self._emitter.shadow(transactions, times_us, late, first, challenger))
        return records

    async def _decide(
        self, model: ServedModel, scores: ScoreBatch, ids: list[str], times_us: list[int]
    ) -> Decision:
        """The policy's thresholds and alerts for a model's scores (a daily budget reads and
        records the day scores in Redis, retried while it is down: recording is
        idempotent)."""
        thresholds = await self._redis.call(
            lambda: model.thresholds.decide(ids, scores.score, times_us)
        )
        alerts = scores.score.astype(np.float64) >= thresholds
        return Decision(
            model.version, model.thresholds.policy.name, model.scorer.columns,
            replace(scores, is_alert=alerts), thresholds,
        )


def _score_all(
    models: tuple[ServedModel, ...],
    values: npt.NDArray[np.floating[Any]],
    sequences: npt.NDArray[np.floating[Any]],
    mask: npt.NDArray[np.floating[Any]],
) -> list[ScoreBatch]:
    """Every model's scores of the same rows (one thread hop; ONNX Runtime releases the GIL),
    unexplained: the serving model's alerts are explained once the policy chose them."""
    return [model.scorer.score_batch(values, sequences, mask, explain=False) for model in models]
