"""The models a worker serves, and their switch between batches.

:class:`Serving` is one immutable choice: the serving model, the shadow challengers and the
alert policy. The score stage reads :attr:`Models.serving` once at the start of each
batch, so a batch is scored by one choice throughout. :meth:`Models.watch` re-reads a
model store's pointers and the policy file every poll; a new choice is loaded and verified
off the event loop and takes effect at the next batch. A bundle or policy that fails
verification is refused with one log line, and the old choice keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import FraudstreamError
from stream_app.scoring.bundle import ModelBundle
from stream_app.scoring.model_store import Selection, is_store, load_compatible, read_selection
from stream_app.scoring.policy import (
    DEFAULT_POLICY,
    AlertPolicy,
    DailyThresholds,
    DayScores,
    InMemoryDayScores,
    load_policy,
)
from stream_app.scoring.scorer import Scorer
from stream_app.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A bundle's scorer and its alert thresholds under the policy in force."""

    path: Path
    scorer: Scorer
    thresholds: DailyThresholds

    @property
    def version(self) -> str:
        return self.scorer.bundle.model_version


@dataclass(frozen=True, eq=False)
class Serving:
    """The serving model, the shadow challengers and the policy, as one choice."""

    model: ServedModel
    challengers: tuple[ServedModel, ...]
    policy: AlertPolicy


Build = Callable[[Path, ModelBundle, AlertPolicy], ServedModel]
"""Makes a :class:`ServedModel` (its scorer and day-score store) of a verified bundle."""


class Models:
    """The current :class:`Serving`, and the watch that replaces it."""

    def __init__(
        self,
        serving: Serving,
        build: Build,
        metrics: WorkerMetrics,
        *,
        location: Path | None,
        policy_file: Path | None,
        poll_s: float,
    ) -> None:
        """``location``: a model store to watch (None: the bundle stays); ``policy_file``:
        the policy to re-read (None: the bundle's threshold)."""
        self.serving = serving
        self._build = build
        self._metrics = metrics
        self._location = location if location is not None and is_store(location) else None
        self._policy_file = policy_file
        self._poll_s = poll_s
        self._refused: object = None
        self._show(serving)

    @classmethod
    def of(
        cls,
        scorer: Scorer,
        metrics: WorkerMetrics,
        policy: AlertPolicy = DEFAULT_POLICY,
        days: DayScores | None = None,
    ) -> Models:
        """One scorer under ``policy``, unwatched (tests and benchmarks); a daily budget
        keeps its day scores in ``days`` (default: in memory)."""
        thresholds = DailyThresholds(
            policy, scorer.threshold, InMemoryDayScores() if days is None else days
        )
        served = ServedModel(scorer.bundle.path, scorer, thresholds)
        return cls(
            Serving(served, (), policy),
            lambda path, bundle, policy: served,
            metrics,
            location=None,
            policy_file=None,
            poll_s=1.0,
        )

    @property
    def watched(self) -> bool:
        """Whether anything can change: a model store or a policy file."""
        return self._location is not None or self._policy_file is not None

    async def watch(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._poll_s)
            await self.refresh()

    async def refresh(self) -> bool:
        """Read the pointers and the policy once; switch if they changed. Whether it did."""
        current = self.serving
        try:
            selection, policy = await asyncio.to_thread(self._read)
        except (FraudstreamError, OSError) as exc:
            self._refuse(str(exc), str(exc))
            return False
        wanted = (selection, policy.digest)
        if wanted == self._refused or wanted == (self._selection(current), current.policy.digest):
            return False
        try:
            serving = await asyncio.to_thread(self._load, selection, policy, current)
        except (FraudstreamError, OSError) as exc:
            self._refuse(wanted, str(exc))
            return False
        self.serving = serving
        self._refused = None
        self._metrics.model_swaps.inc()
        self._show(serving)
        log.info(
            "now serving %s with challengers [%s], %s (was %s)",
            serving.model.version,
            ", ".join(c.version for c in serving.challengers),
            serving.policy.describe(),
            current.model.version,
        )
        return True

    def _read(self) -> tuple[Selection, AlertPolicy]:
        current = self.serving
        selection = (
            read_selection(self._location) if self._location else self._selection(current)
        )
        policy = load_policy(self._policy_file) if self._policy_file else current.policy
        return selection, policy

    @staticmethod
    def _selection(serving: Serving) -> Selection:
        return Selection(serving.model.path, tuple(c.path for c in serving.challengers))

    def _load(self, selection: Selection, policy: AlertPolicy, current: Serving) -> Serving:
        """Verify every bundle of ``selection``, reusing the loaded ones when the policy is
        the same (their day scores and thresholds carry on)."""
        loaded = {m.path: m for m in (current.model, *current.challengers)}
        reference = current.model.scorer.bundle

        def served(path: Path) -> ServedModel:
            bundle = load_compatible(path, reference)
            known = loaded.get(path)
            if (
                known is not None
                and known.version == bundle.model_version
                and policy.digest == current.policy.digest
            ):
                return known
            return self._build(path, bundle, policy)

        return Serving(
            served(selection.serving), tuple(served(p) for p in selection.challengers), policy
        )

    def _refuse(self, wanted: object, why: str) -> None:
        """Log and count a refusal once, until something else is tried."""
        if wanted == self._refused:
            return
        self._refused = wanted
        self._metrics.model_refusals.inc()
        log.error("refused the new model choice: %s; still serving %s", why,
                  self.serving.model.version)

    def _show(self, serving: Serving) -> None:
        info = self._metrics.model_info
        info.clear()
        info.labels("serving", serving.model.version, serving.policy.name).set(1)
        for challenger in serving.challengers:
            info.labels("challenger", challenger.version, serving.policy.name).set(1)
