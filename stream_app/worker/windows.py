"""The windows stages: a batch applied to the window store (compute), and, once its outputs
are acknowledged, its window changes made durable (store)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from stream_app.errors import Superseded
from stream_app.features.store import ComputedWindows, WindowStore
from stream_app.worker.batches import Batch, Sent, Windowed
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff


class Windows:
    """Computes and stores batches' windows in one :class:`WindowStore`, retrying Redis."""

    def __init__(self, store: WindowStore[Any], redis: Backoff, metrics: WorkerMetrics) -> None:
        self._store = store
        self._redis = redis
        self._metrics = metrics
        self.generation = 0
        """Batches of an older generation (fetched before a rebalance) are dropped."""

    def reset(self, generation: int, shared_terminals: bool) -> None:
        """A new generation: drop cached windows (the partitions moved); with
        ``shared_terminals`` other workers write terminal windows too."""
        self.generation = generation
        self._store.reset_cache(shared_terminals=shared_terminals)

    def supersede(self) -> None:
        """Partitions are about to move: computes of this generation stop waiting for other
        workers' progress (:class:`~stream_app.errors.Superseded`), so the batches in
        flight finish; those superseded are dropped, never committed."""
        self._store.supersede(self.generation + 1)

    async def compute(self, batch: Batch) -> Windowed | None:
        """Start applying ``batch``: without waiting when the store orders its computes, so
        the next batch is sent while this one is scored."""
        if batch.generation != self.generation:
            return None  # never committed: redelivered to the partitions' new owner
        computing = asyncio.ensure_future(self._compute(batch))
        if not self._store.computes_in_order:
            await asyncio.wait([computing])
        return Windowed(batch, computing)

    async def claim_idle(self, batch: Batch) -> None:
        """Tell the store that this worker's partitions are idle (``batch`` has no events;
        its ``progress`` says caught up and quiet); outside the lanes: nothing to score,
        publish or write."""
        if batch.generation != self.generation:
            return
        with contextlib.suppress(Superseded):
            await self._redis.call(lambda: self._store.compute((), (), batch.progress))

    async def store(self, sent: Sequence[Sent]) -> list[Batch]:
        """Write acknowledged batches' windows (in processing order: each write expects the
        versions the previous one left), all those waiting in one go."""
        computed = [s.scored.computed for s in sent if s.scored.computed is not None]
        if any(c.changed for c in computed):
            await self._redis.call(lambda: self._store.write_all(computed))
        return [s.scored.batch for s in sent]

    async def _compute(self, batch: Batch) -> ComputedWindows | None:
        """The batch's windows; None without events. Raises
        :class:`~stream_app.errors.Superseded` (see :meth:`supersede`)."""
        if not (batch.transactions or batch.labels):
            return None
        start = time.perf_counter()
        computed: ComputedWindows = await self._redis.call(
            lambda: self._store.compute(batch.events, batch.labels, batch.progress)
        )
        self._metrics.stage_seconds.labels("window_compute").observe(time.perf_counter() - start)
        late = int(computed.features.late.sum())
        if late:
            self._metrics.late_events.labels("transaction").inc(late)
        return computed
