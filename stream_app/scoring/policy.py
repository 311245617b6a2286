"""The alert policy: which scores become alerts, set at run time outside the signed bundle.

A policy file (``policy.v1``, ``FRAUDSTREAM_ALERT_POLICY`` or ``--policy``) holds a name and
either a fixed ``threshold`` or a ``daily_budget`` *k* (the handbook's CP@k framing: the
analysts can look at *k* alerts a day)::

    {"schema": "policy.v1", "name": "swamped", "threshold": 0.6}
    {"schema": "policy.v1", "name": "top-100", "daily_budget": 100}

- ``threshold``: an alert when ``score >= threshold``.
- ``daily_budget``: day *D*'s threshold (UTC event-time days) is the *k*-th highest score
  the same model gave on day *D* - 1, so each day alerts about as many transactions as
  the day before had in its top *k*. A day whose previous day has fewer than *k* scores
  (the first day of a stream) uses the policy's ``threshold`` if it has one, else the
  bundle's.

Without a file the bundle's threshold applies (policy ``bundle``). The stream
(:class:`DailyThresholds` over Redis) and the backtest (:func:`history_thresholds`) apply a
policy the same way; alert ids do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Protocol

import jsonschema
import numpy as np
import numpy.typing as npt

from schemas import load_schema
from stream_app.errors import ConfigError
from stream_app.time import MICROS_PER_DAY

SCHEMA_NAME: Final = "policy.v1"
BUNDLE_POLICY: Final = "bundle"
"""The name of the policy in force without a policy file: the bundle's threshold."""


@dataclass(frozen=True)
class AlertPolicy:
    """A validated policy; ``digest`` is the sha256 of its file (empty for ``bundle``)."""

    name: str = BUNDLE_POLICY
    threshold: float | None = None
    daily_budget: int | None = None
    digest: str = ""

    def fixed_threshold(self, bundle_threshold: float) -> float:
        """The threshold of a day without a budget figure: the policy's, else the bundle's."""
        return bundle_threshold if self.threshold is None else self.threshold

    def describe(self) -> str:
        """One line for logs: name and rule."""
        if self.daily_budget is not None:
            return f"policy {self.name!r}: top {self.daily_budget} scores per day"
        if self.threshold is not None:
            return f"policy {self.name!r}: threshold {self.threshold:g}"
        return "policy 'bundle': the bundle's threshold"


DEFAULT_POLICY: Final = AlertPolicy()
"""No policy file: the bundle's threshold."""


def load_policy(path: str | Path) -> AlertPolicy:
    """Read and validate the policy file at ``path`` (a :class:`ConfigError` names the fix)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the alert policy file {str(file)!r} ({exc.strerror}); set "
            "FRAUDSTREAM_ALERT_POLICY (or --policy) to a policy.v1 JSON file, or unset it "
            "to use the bundle's threshold"
        ) from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"the alert policy file {str(file)!r} is not JSON ({exc}); write it as "
            '{"schema": "policy.v1", "name": "...", "threshold": 0.5}'
        ) from None
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "$" + "".join(f"[{p!r}]" for p in error.absolute_path)
        raise ConfigError(
            f"the alert policy file {str(file)!r} breaks policy.v1 at {where}: "
            f"{error.message}; fix the file (schemas/policy.v1.json lists the fields)"
        )
    return AlertPolicy(
        name=document["name"],
        threshold=document.get("threshold"),
        daily_budget=document.get("daily_budget"),
        digest=hashlib.sha256(raw).hexdigest(),
    )


@cache
def _validator() -> jsonschema.Draft202012Validator:
    """Compiled once: the worker re-reads the policy file every model poll."""
    return jsonschema.Draft202012Validator(load_schema(SCHEMA_NAME))


def event_day(event_time_us: int) -> int:
    """The UTC day number of an event time (days since 1970-01-01)."""
    return event_time_us // MICROS_PER_DAY


def kth_highest(scores: npt.NDArray[np.floating[Any]], k: int) -> float | None:
    """The ``k``-th highest of ``scores``; None when there are fewer than ``k``."""
    if len(scores) < k:
        return None
    return float(np.partition(scores.astype(np.float64), len(scores) - k)[len(scores) - k])


def history_thresholds(
    policy: AlertPolicy,
    bundle_threshold: float,
    scores: npt.NDArray[np.floating[Any]],
    event_time_us: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """The threshold each score of a scored history was held to (the backtest's policy)."""
    fixed = policy.fixed_threshold(bundle_threshold)
    thresholds = np.full(len(scores), fixed, dtype=np.float64)
    if policy.daily_budget is None or not len(scores):
        return thresholds
    days = event_time_us // MICROS_PER_DAY
    for day in np.unique(days).tolist():
        previous = kth_highest(scores[days == day - 1], policy.daily_budget)
        if previous is not None:
            thresholds[days == day] = previous
    return thresholds


class DayScores(Protocol):
    """Where a daily budget keeps each day's top scores of one model."""

    async def kth_highest(self, day: int, k: int) -> float | None:
        """The ``k``-th highest score recorded for ``day``; None with fewer than ``k``."""
        ...

    async def record(
        self, day: int, ids: Sequence[str], scores: Sequence[float], k: int
    ) -> float | None:
        """Add scores (idempotent per id), keep the top ``k``; returns the ``k``-th highest
        now recorded (None with fewer than ``k``)."""
        ...


class DailyThresholds:
    """A policy applied batch by batch, in event-time order, as the backtest applies it.

    Each day's threshold is read once, from the previous day's top scores in
    :class:`DayScores`; a batch's scores are recorded before the next batch is decided, and
    only those that can still enter their day's top *k*.
    """

    def __init__(self, policy: AlertPolicy, bundle_threshold: float, days: DayScores) -> None:
        self.policy = policy
        self._fixed = policy.fixed_threshold(bundle_threshold)
        self._days = days
        self._threshold_of: dict[int, float] = {}
        self._floor_of: dict[int, float] = {}

    async def decide(
        self, ids: Sequence[str], scores: npt.NDArray[np.float32], times_us: Sequence[int]
    ) -> npt.NDArray[np.float64]:
        """The threshold of each score; records the scores for later days' budgets."""
        k = self.policy.daily_budget
        if k is None:
            return np.full(len(scores), self._fixed, dtype=np.float64)
        days = np.asarray(times_us, dtype=np.int64) // MICROS_PER_DAY
        thresholds = np.empty(len(scores), dtype=np.float64)
        values = scores.astype(np.float64)
        for day in np.unique(days).tolist():
            rows = days == day
            thresholds[rows] = await self._threshold(day, k)
            floor = self._floor_of.get(day, -np.inf)
            entering = np.flatnonzero(rows & (values >= floor)).tolist()
            if entering:
                kth = await self._days.record(
                    day, [ids[i] for i in entering], values[entering].tolist(), k
                )
                if kth is not None:
                    self._floor_of = {day: kth}
        return thresholds

    async def _threshold(self, day: int, k: int) -> float:
        if day not in self._threshold_of:
            previous = await self._days.kth_highest(day - 1, k)
            self._threshold_of = {day: self._fixed if previous is None else previous}
        return self._threshold_of[day]


class InMemoryDayScores:
    """:class:`DayScores` in a dict (tests, a stream without Redis)."""

    def __init__(self) -> None:
        self._days: dict[int, dict[str, float]] = {}

    async def kth_highest(self, day: int, k: int) -> float | None:
        return kth_highest(np.array(list(self._days.get(day, {}).values())), k)

    async def record(
        self, day: int, ids: Sequence[str], scores: Sequence[float], k: int
    ) -> float | None:
        kept = self._days.setdefault(day, {})
        kept.update(zip(ids, scores, strict=True))
        if len(kept) > k:
            top = sorted(kept.items(), key=lambda item: item[1], reverse=True)[:k]
            self._days[day] = kept = dict(top)
        return kth_highest(np.array(list(kept.values())), k)
