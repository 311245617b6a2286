"""Runs the stages: one task per lane, joined by bounded queues. No domain logic here.

The source (the batch worker's fetch loop) hands batches to the first :class:`Lane` with
:meth:`Runner.hand_over`; the last lane's outputs go to the sink; a step returning None
drops its item. A batch is in flight from when the source starts preparing it until the
sink took it or a lane dropped it (:meth:`Runner.idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from stream_app.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Lane:
    """A stage run by its own task; ``depth`` items may wait in front of it. A ``grouped``
    step gets every item waiting, as a list, and returns a list."""

    name: str
    step: Callable[[Any], Awaitable[Any]]
    depth: int = 1
    grouped: bool = False


class Runner:
    """Runs ``lanes`` and ``loops`` (background tasks such as the commit loop) as tasks."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        sink: Callable[[Any], None],
        metrics: WorkerMetrics,
        loops: Sequence[tuple[str, Loop]] = (),
    ) -> None:
        self._lanes = lanes
        self._sink = sink
        self._metrics = metrics
        self._loops = loops
        self._queues: list[asyncio.Queue[Any]] = [asyncio.Queue(lane.depth) for lane in lanes]
        self._in_flight = 0  # batches handed over and not yet through
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress_at = time.monotonic()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, source: Loop) -> None:
        """Start the source loop, every lane and every loop."""
        lanes = [(lane.name, partial(self._run_lane, i)) for i, lane in enumerate(self._lanes)]
        loops: list[tuple[str, Loop]] = [("fetch", source), *lanes, *self._loops]
        for name, loop in loops:
            self.tasks.append(asyncio.create_task(loop(), name=f"fraudstream-{name}"))

    @contextlib.asynccontextmanager
    async def hand_over(self) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
        """Count a batch in flight while the source prepares it; yields the function that
        hands it to the first lane (not called: the batch is given up)."""
        self._started()
        handed = False

        async def submit(item: Any) -> None:
            nonlocal handed
            await self._queues[0].put(item)
            handed = True

        try:
            yield submit
        finally:
            if not handed:
                self._finished()

    async def idle(self) -> None:
        """Return once no batch is in flight."""
        await self._idle.wait()

    @property
    def busy(self) -> bool:
        """Whether a batch is in flight."""
        return self._in_flight > 0

    def stalled_s(self) -> float:
        """Seconds since a batch last got through (the sink took it or a lane dropped it)
        while batches are in flight: 0 when none is."""
        return time.monotonic() - self._progress_at if self._in_flight else 0.0

    async def run(self) -> None:
        """Wait for the tasks; the first that fails is raised (the caller stops the rest)."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self, drain_s: float, before_cancel: Callable[[], Awaitable[None]]) -> None:
        """Stop the source, let what is in flight finish (at most ``drain_s``), await
        ``before_cancel``, then cancel the lanes and loops."""
        if not self.tasks:
            return
        source, *others = self.tasks
        source.cancel()
        try:
            await asyncio.wait_for(self.idle(), timeout=drain_s)
            await before_cancel()
        except TimeoutError:
            log.warning("stopping with %d batches uncommitted", self._in_flight)
        for task in others:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    def _started(self) -> None:
        if not self._in_flight:
            self._progress_at = time.monotonic()
        self._in_flight += 1
        self._idle.clear()

    def _finished(self, n: int = 1) -> None:
        self._progress_at = time.monotonic()
        self._in_flight -= n
        if not self._in_flight:
            self._idle.set()

    async def _run_lane(self, index: int) -> None:
        lane, queue = self._lanes[index], self._queues[index]
        follow = self._queues[index + 1] if index + 1 < len(self._queues) else None
        seconds = self._metrics.stage_seconds.labels(lane.name)
        while True:
            items = [await queue.get()]
            while lane.grouped and not queue.empty():
                items.append(queue.get_nowait())
            start = time.perf_counter()
            try:
                outputs = await lane.step(items if lane.grouped else items[0])
            except BaseException:
                self._finished(len(items))  # redelivered after a restart
                raise
            seconds.observe(time.perf_counter() - start)
            for output in outputs if lane.grouped else [outputs]:
                if output is None:
                    self._finished()
                elif follow is not None:
                    await follow.put(output)
                else:
                    self._sink(output)
                    self._finished()
