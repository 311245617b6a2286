"""``fraudstream drift``'s figures: a history window scored by a bundle, cut into days or
weeks (UTC), each period's PSI per feature and of the score against the bundle's training
distributions, beside its frauds (per scenario when the history has them).

Features are the batch feature code's over the whole history up to the window's end (equal
to the stream's to 1e-6), scored by the bundle's ONNX graphs as the stream scores them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from stream_app.drift.psi import STABLE, Distributions, psi
from stream_app.errors import BundleError, InputDataError
from stream_app.features.batch import compute_features
from stream_app.scoring.backtest import bundle_feature_set
from stream_app.scoring.scorer import Scorer
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY

PERIODS = ("day", "week")
SCENARIOS = {1: "amount over 220", 2: "compromised terminal", 3: "leaked credentials"}
"""The handbook's fraud scenarios (``fraud_scenario``; 0 = genuine or unknown)."""
_EPOCH = dt.date(1970, 1, 1)
_MONDAY = 4  # 1970-01-01, day 0, was a Thursday


@dataclass(frozen=True)
class Period:
    """One day or week of the window."""

    start: str
    """First day (ISO date, UTC)."""
    transactions: int
    frauds: int
    frauds_by_scenario: dict[str, int]
    score_psi: float
    feature_psi: dict[str, float]
    score_proportions: list[float]
    """The period's share of scores in each training score bin."""
    alert_share: float
    """Share of scores at or above the bundle's threshold."""
    one_bin: list[str]
    """Features whose values all fall in one training bin this period (e.g. whether a day
    is a weekend day): their PSI says which bin, not a drift."""


@dataclass(frozen=True)
class DriftReport:
    """Every figure of a drift report (``drift.json`` is ``dataclasses.asdict`` of it)."""

    command: str
    model_version: str
    training: str
    training_rows: int
    threshold: float
    period: str
    score_edges: list[float]
    training_score_proportions: list[float]
    periods: list[Period] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.periods[0].feature_psi) if self.periods else []

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def correlation(self, x: str, y: str) -> float | None:
        """Pearson r over the periods of two series (``score_psi``, ``fraud_share``,
        ``alert_share``, ``scenario_2_share``...); None when either is constant."""
        a, b = self.series(x), self.series(y)
        if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])

    def series(self, name: str) -> npt.NDArray[np.float64]:
        """One figure per period: a Period field, ``fraud_share``, or ``scenario_<n>_share``."""
        if name == "fraud_share":
            return np.array([p.frauds / p.transactions for p in self.periods])
        if name.startswith("scenario_"):
            scenario = SCENARIOS[int(name.split("_")[1])]
            return np.array(
                [p.frauds_by_scenario.get(scenario, 0) / p.transactions for p in self.periods]
            )
        return np.array([float(getattr(p, name)) for p in self.periods])

    def one_bin(self) -> list[str]:
        """Features in one bin in every period (calendar features at this period length)."""
        return [c for c in self.columns if all(c in p.one_bin for p in self.periods)]

    def drifting(self, limit: float = STABLE) -> dict[str, int]:
        """For each feature, the periods whose PSI is ``limit`` or more."""
        counts = {c: sum(p.feature_psi[c] >= limit for p in self.periods) for c in self.columns}
        return {c: n for c, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n}


def period_start(day: npt.NDArray[np.int64], period: str) -> npt.NDArray[np.int64]:
    """The first day (days since the epoch) of each day's period (weeks start on Monday)."""
    if period == "day":
        return day
    return day - (day - _MONDAY) % 7


def drift_report(
    history: TransactionHistory,
    scorer: Scorer,
    *,
    start_us: int | None,
    stop_us: int | None,
    period: str,
    command: str,
    batch_size: int = 4096,
    progress: bool = False,
) -> DriftReport:
    """Score ``[start_us, stop_us)`` of ``history`` and compare each period with training."""
    manifest = scorer.bundle.manifest
    reference = manifest.distributions
    if reference is None:
        raise BundleError(
            f"bundle {scorer.bundle.model_version} records no training distributions (it "
            "predates them); train a new one with `fraudstream train`"
        )
    times = history.event_time_us
    end = len(history) if stop_us is None else int(np.searchsorted(times, stop_us, "left"))
    first = 0 if start_us is None else int(np.searchsorted(times[:end], start_us, "left"))
    if first >= end:
        raise InputDataError(
            "no transaction in the window; choose --from / --until inside the history "
            f"({_day(int(times[0]))} .. {_day(int(times[-1]))})" if len(times) else
            "the history is empty; pass a file with transactions"
        )
    prefix = history.slice(0, end)
    table = compute_features(prefix, bundle_feature_set(scorer))
    rows = np.arange(first, end, dtype=np.int64)
    scores = _scores(table.values, table.sequence_index, rows, scorer, batch_size, progress)
    values = table.values[rows]
    day = times[rows] // MICROS_PER_DAY
    starts = period_start(day, period)
    report = DriftReport(
        command=command,
        model_version=scorer.bundle.model_version,
        training=f"{manifest.training_data.start}..{manifest.training_data.end}",
        training_rows=reference.rows,
        threshold=scorer.threshold,
        period=period,
        score_edges=list(reference.score.edges),
        training_score_proportions=list(reference.score.proportions),
    )
    columns = list(scorer.bundle.feature_columns)
    frauds = history.is_fraud[rows] == 1
    scenario = history.fraud_scenario[rows]
    bounds = np.flatnonzero(np.diff(starts)) + 1
    for part in np.split(np.arange(len(rows)), bounds):
        report.periods.append(
            _period(part, int(starts[part[0]]), values, scores, frauds, scenario, columns,
                    reference, scorer.threshold)
        )  # fmt: skip
    return report


def _period(
    part: npt.NDArray[np.intp],
    start_day: int,
    values: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
    frauds: npt.NDArray[np.bool_],
    scenario: npt.NDArray[np.int8],
    columns: list[str],
    reference: Distributions,
    threshold: float,
) -> Period:
    part_scores = scores[part]
    score_counts = reference.score.counts(part_scores)
    feature_counts = {
        c: reference.features[c].counts(values[part, i]) for i, c in enumerate(columns)
    }
    by_scenario = {
        name: int(np.count_nonzero(frauds[part] & (scenario[part] == code)))
        for code, name in SCENARIOS.items()
    }
    return Period(
        start=(_EPOCH + dt.timedelta(days=start_day)).isoformat(),
        transactions=len(part),
        frauds=int(np.count_nonzero(frauds[part])),
        frauds_by_scenario={name: n for name, n in by_scenario.items() if n},
        score_psi=psi(reference.score.proportions, score_counts),
        feature_psi={
            c: psi(reference.features[c].proportions, counts)
            for c, counts in feature_counts.items()
        },
        score_proportions=(score_counts / len(part)).tolist(),
        alert_share=float(np.mean(part_scores >= threshold)),
        one_bin=[c for c, counts in feature_counts.items() if counts.max() == len(part)],
    )


def _scores(
    values: npt.NDArray[np.floating[Any]],
    sequence_index: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    scorer: Scorer,
    batch_size: int,
    progress: bool,
) -> npt.NDArray[np.float64]:
    """The served score of ``rows`` (each with its customer's sequence of earlier rows)."""
    n, width = values.shape
    pool = np.vstack([values, np.zeros((1, width))]).astype(np.float32)
    out = np.empty(len(rows), dtype=np.float64)
    with tqdm(total=len(rows), unit="tx", desc="score", file=sys.stderr,
              disable=None if progress else True) as bar:
        for at in range(0, len(rows), batch_size):
            picked = rows[at : at + batch_size]
            index = sequence_index[picked]
            mask = (index >= 0).astype(np.float32)
            batch = scorer.score_batch(values[picked], pool[np.where(index >= 0, index, n)], mask)
            out[at : at + len(picked)] = batch.score
            bar.update(len(picked))
    return out


def _day(moment_us: int) -> str:
    return (_EPOCH + dt.timedelta(days=moment_us // MICROS_PER_DAY)).isoformat()
