"""Every figure of a comparison, from the compared rows and each model's alerts (numpy only).

- Alerts: per model, per day (the analysts' workload), and each challenger's overlap with
  the serving model.
- Catches: the labelled fraud transactions alerted by both, by one only, or by neither, in
  total and per fraud scenario when the history records it.
- AUC ROC, average precision and card precision@100 (the handbook's, from
  :mod:`training.metrics`, numpy only) over every compared transaction. Unlike
  ``fraudstream evaluate``, cards known to be compromised before a day are not removed
  (card precision still drops the cards it found on earlier days).
- Time to detection per compromised card and per compromised terminal: from the entity's
  first fraudulent transaction to the first alert among its fraudulent transactions, or
  missed. Only entities whose first fraud falls in the window count (one compromised
  before it started its clock earlier). A card is compromised by any fraud; a terminal by
  the compromised-terminal scenario (2) when the history records scenarios, else by any
  fraud. Detection is cut off at the window's end, so the entities compromised at least
  ``settle_days`` (the label delay + 1) before it are counted apart: they had time for
  their first labels to reach the windows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from stream_app.compare.scored import ModelRun
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY, MICROS_PER_HOUR
from training.metrics import auc_roc, average_precision, card_precision_top_k

TOP_K: Final = 100
SCENARIOS: Final = {1: "amount > 220", 2: "compromised terminal", 3: "leaked card credentials"}
TERMINAL_SCENARIO: Final = 2
_CURVE_POINTS: Final = 200
_EPOCH = dt.date(1970, 1, 1)

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Detection:
    """Time to detection of the entities (cards or terminals) first compromised in the window.

    Quantiles count a missed entity as never detected: ``None`` when the quantile falls on
    one. Shares are of all compromised entities (``None`` when there are none).
    """

    compromised: int
    detected: int
    median_hours: float | None
    p90_hours: float | None
    within_1h: float | None
    within_1d: float | None
    settle_days: int
    settled: int
    """Entities compromised at least ``settle_days`` before the end of the window."""
    settled_detected: int
    hours: dict[str, float | None]
    """Entity id -> hours from its first fraud to its first alerted fraud (None: missed),
    in order of first fraud."""
    first_fraud: dict[str, str]
    """Entity id -> the time of its first fraud (ISO 8601, UTC)."""


@dataclass(frozen=True)
class Catches:
    """Labelled fraud transactions split by which of two models alerted them."""

    frauds: int
    both: int
    serving_only: int
    challenger_only: int
    neither: int


@dataclass(frozen=True)
class Overlap:
    """The serving model beside one challenger."""

    serving: str
    challenger: str
    alerts_both: int
    alerts_serving_only: int
    alerts_challenger_only: int
    alert_jaccard: float | None
    """Alerts of both / alerts of either."""
    catches: Catches
    catches_by_scenario: dict[str, Catches]
    serving_only_frauds: list[str]
    """Transaction ids of the frauds the serving model alerted and the challenger missed."""
    challenger_only_frauds: list[str]


@dataclass(frozen=True)
class ModelFigures:
    """One model's figures over the window."""

    name: str
    role: str
    model_version: str
    bundle_threshold: float
    training: str
    alerts: int
    alerted_frauds: int
    alert_precision: float | None
    fraud_recall: float | None
    auc_roc: float | None
    average_precision: float | None
    card_precision_at_100: float | None
    card_precision_daily: list[float]
    alerts_per_day: list[int]
    alerted_frauds_per_day: list[int]
    cards: Detection
    terminals: Detection
    precision_recall: dict[str, list[float]]
    """``recall`` and ``precision`` at up to 200 alert counts (geometric), for the plot."""


@dataclass(frozen=True)
class Comparison:
    """Everything ``fraudstream compare`` reports (``comparison.json``)."""

    command: str
    policy: str
    days: list[str]
    transactions: int
    frauds: int
    frauds_per_day: list[int]
    frauds_by_scenario: dict[str, int]
    terminal_definition: str
    models: list[ModelFigures]
    overlaps: list[Overlap]

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data."""
        return dataclasses.asdict(self)


def compare(
    history: TransactionHistory, rows: npt.NDArray[np.int64], runs: list[ModelRun],
    *, command: str, policy: str, settle_days: int,
) -> Comparison:
    """The figures of ``runs`` (serving first) over the history rows ``rows`` (ascending);
    ``settle_days``: see :class:`Detection`."""
    fraud = history.is_fraud[rows] == 1
    scenario = history.fraud_scenario[rows]
    day = history.event_time_us[rows] // MICROS_PER_DAY
    days, day_index = np.unique(day, return_inverse=True)
    scenarios_known = bool(len(rows)) and bool(np.all(scenario >= 0))
    serving, challengers = runs[0], runs[1:]
    return Comparison(
        command=command,
        policy=policy,
        days=[(_EPOCH + dt.timedelta(days=int(d))).isoformat() for d in days],
        transactions=len(rows),
        frauds=int(np.count_nonzero(fraud)),
        frauds_per_day=_per_day(day_index, len(days), fraud),
        frauds_by_scenario=(
            {name: int(np.count_nonzero(scenario == code)) for code, name in SCENARIOS.items()}
            if scenarios_known else {}
        ),
        terminal_definition=(
            f"a terminal with frauds of the {SCENARIOS[TERMINAL_SCENARIO]} scenario"
            if scenarios_known else "a terminal with a labelled fraud"
        ),
        models=[
            _model_figures(history, rows, run, day_index, len(days), scenarios_known,
                           settle_days)
            for run in runs
        ],
        overlaps=[
            _overlap(history, rows, serving, challenger, scenarios_known)
            for challenger in challengers
        ],
    )


def detection_hours(
    entity: npt.NDArray[np.object_], event_time_us: npt.NDArray[np.int64], fraud: Bools,
    alert: Bools, already_compromised: set[str],
) -> tuple[dict[str, float | None], dict[str, int]]:
    """Per entity with a fraud among these rows (time order) and not ``already_compromised``:
    hours from its first fraud to its first alerted fraud (None when no fraud was alerted),
    and the time of its first fraud."""
    hours: dict[str, float | None] = {}
    first_us: dict[str, int] = {}
    for key, time_us, alerted in zip(entity[fraud].tolist(), event_time_us[fraud].tolist(),
                                     alert[fraud].tolist(), strict=True):
        name = str(key)
        if name in already_compromised:
            continue
        if name not in first_us:
            first_us[name], hours[name] = time_us, None
        if alerted and hours[name] is None:
            hours[name] = (time_us - first_us[name]) / MICROS_PER_HOUR
    return hours, first_us


def summarise_detection(
    hours: dict[str, float | None], first_us: dict[str, int], end_us: int, settle_days: int
) -> Detection:
    """Counts, median and p90 (missed = never), the shares detected within 1 h and 1 day,
    and the counts of those compromised ``settle_days`` or more before ``end_us``."""
    values = np.sort([np.inf if h is None else h for h in hours.values()])
    settled = [k for k, t in first_us.items() if t <= end_us - settle_days * MICROS_PER_DAY]
    n = len(values)

    def quantile(q: float) -> float | None:
        if not n:
            return None
        value = float(values[int(np.ceil(q * n)) - 1])
        return None if np.isinf(value) else value

    def within(limit_hours: float) -> float | None:
        return float(np.count_nonzero(values <= limit_hours)) / n if n else None

    return Detection(
        compromised=n,
        detected=int(np.count_nonzero(np.isfinite(values))),
        median_hours=quantile(0.5),
        p90_hours=quantile(0.9),
        within_1h=within(1.0),
        within_1d=within(24.0),
        settle_days=settle_days,
        settled=len(settled),
        settled_detected=sum(hours[k] is not None for k in settled),
        hours=hours,
        first_fraud={k: _iso(t) for k, t in first_us.items()},
    )


def catches(fraud: Bools, serving_alert: Bools, challenger_alert: Bools) -> Catches:
    """The frauds among these rows split by who alerted them."""
    return Catches(
        frauds=int(np.count_nonzero(fraud)),
        both=int(np.count_nonzero(fraud & serving_alert & challenger_alert)),
        serving_only=int(np.count_nonzero(fraud & serving_alert & ~challenger_alert)),
        challenger_only=int(np.count_nonzero(fraud & ~serving_alert & challenger_alert)),
        neither=int(np.count_nonzero(fraud & ~serving_alert & ~challenger_alert)),
    )


def _overlap(
    history: TransactionHistory, rows: npt.NDArray[np.int64], serving: ModelRun,
    challenger: ModelRun, scenarios_known: bool,
) -> Overlap:
    a, b = serving.alerts, challenger.alerts
    fraud = history.is_fraud[rows] == 1
    scenario = history.fraud_scenario[rows]
    ids = history.transaction_id[rows]
    either = int(np.count_nonzero(a | b))
    return Overlap(
        serving=serving.name,
        challenger=challenger.name,
        alerts_both=int(np.count_nonzero(a & b)),
        alerts_serving_only=int(np.count_nonzero(a & ~b)),
        alerts_challenger_only=int(np.count_nonzero(~a & b)),
        alert_jaccard=int(np.count_nonzero(a & b)) / either if either else None,
        catches=catches(fraud, a, b),
        catches_by_scenario=(
            {name: catches(fraud & (scenario == code), a, b) for code, name in SCENARIOS.items()}
            if scenarios_known else {}
        ),
        serving_only_frauds=[str(i) for i in ids[fraud & a & ~b]],
        challenger_only_frauds=[str(i) for i in ids[fraud & ~a & b]],
    )


def _model_figures(
    history: TransactionHistory, rows: npt.NDArray[np.int64], run: ModelRun,
    day_index: npt.NDArray[np.intp], n_days: int, scenarios_known: bool, settle_days: int,
) -> ModelFigures:
    labels = history.is_fraud[rows].astype(np.int64)
    fraud = labels == 1
    alert = run.alerts
    times = history.event_time_us[rows]
    alerts, alerted_frauds = int(np.count_nonzero(alert)), int(np.count_nonzero(alert & fraud))
    both_classes = 0 < int(np.count_nonzero(fraud)) < len(rows)
    daily: list[float] = []
    if both_classes:
        customer = np.unique(history.customer_id[rows], return_inverse=True)[1].astype(np.int64)
        daily, _ = card_precision_top_k(day_index.astype(np.int64), customer, labels,
                                        run.scores, TOP_K)
    terminal_fraud = fraud & (history.fraud_scenario[rows] == TERMINAL_SCENARIO) \
        if scenarios_known else fraud
    before = slice(0, int(rows[0]))
    end_us = (int(times[-1]) // MICROS_PER_DAY + 1) * MICROS_PER_DAY
    earlier_fraud = history.is_fraud[before] == 1
    earlier_terminal_fraud = earlier_fraud & (
        history.fraud_scenario[before] == TERMINAL_SCENARIO if scenarios_known else True
    )
    return ModelFigures(
        name=run.name,
        role=run.role,
        model_version=run.model_version,
        bundle_threshold=run.bundle_threshold,
        training=run.training,
        alerts=alerts,
        alerted_frauds=alerted_frauds,
        alert_precision=alerted_frauds / alerts if alerts else None,
        fraud_recall=alerted_frauds / int(np.count_nonzero(fraud)) if fraud.any() else None,
        auc_roc=auc_roc(labels, run.scores) if both_classes else None,
        average_precision=average_precision(labels, run.scores) if both_classes else None,
        card_precision_at_100=float(np.mean(daily)) if daily else None,
        card_precision_daily=daily,
        alerts_per_day=_per_day(day_index, n_days, alert),
        alerted_frauds_per_day=_per_day(day_index, n_days, alert & fraud),
        cards=summarise_detection(*detection_hours(
            history.customer_id[rows], times, fraud, alert,
            set(history.customer_id[before][earlier_fraud].tolist()),
        ), end_us, settle_days),
        terminals=summarise_detection(*detection_hours(
            history.terminal_id[rows], times, terminal_fraud, alert,
            set(history.terminal_id[before][earlier_terminal_fraud].tolist()),
        ), end_us, settle_days),
        precision_recall=_precision_recall(fraud, run.scores),
    )


def _iso(time_us: int) -> str:
    return np.datetime_as_string(np.datetime64(time_us, "us"), unit="s") + "Z"


def _per_day(day_index: npt.NDArray[np.intp], n_days: int, rows: Bools) -> list[int]:
    return [int(c) for c in np.bincount(day_index[rows], minlength=n_days)]


def _precision_recall(fraud: Bools, scores: npt.NDArray[np.float64]) -> dict[str, list[float]]:
    """Precision and recall of the top k scores, k on a geometric grid up to every row."""
    total = int(np.count_nonzero(fraud))
    if not total:
        return {"recall": [], "precision": []}
    hits = np.cumsum(fraud[np.argsort(-scores, kind="mergesort")])
    k = np.unique(np.geomspace(1, len(scores), _CURVE_POINTS).round().astype(np.int64))
    return {"recall": (hits[k - 1] / total).tolist(), "precision": (hits[k - 1] / k).tolist()}
