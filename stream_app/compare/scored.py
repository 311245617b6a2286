"""Score one history window with several bundles and apply one alert policy to each.

Every bundle is replayed by :func:`~stream_app.scoring.backtest.backtest`, the stream's
exact incremental scoring (the windows are warmed before ``start_us``). A policy with a
daily budget sets day *D*'s threshold from day *D* - 1's scores, so the day before
``start_us`` is scored too, for its threshold only: the first compared day then alerts as
it would in a stream running since before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_app.errors import ConfigError
from stream_app.scoring.backtest import backtest
from stream_app.scoring.policy import AlertPolicy, history_thresholds
from stream_app.scoring.scorer import Scorer
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY

Role = Literal["serving", "challenger"]


@dataclass(frozen=True, eq=False)
class ModelRun:
    """One bundle's scores and thresholds over the compared rows (history row order)."""

    name: str
    role: Role
    model_version: str
    bundle_threshold: float
    training: str
    """The bundle's training data range, ``from..to``."""
    scores: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]

    @property
    def alerts(self) -> npt.NDArray[np.bool_]:
        """``score >= threshold``: the rows the policy turns into alerts."""
        return self.scores >= self.thresholds


def score_models(
    history: TransactionHistory,
    models: list[tuple[str, Role, Scorer]],
    policy: AlertPolicy,
    *,
    start_us: int | None = None,
    stop_us: int | None = None,
    batch_size: int,
    progress: bool = False,
) -> tuple[npt.NDArray[np.int64], list[ModelRun]]:
    """The history rows scored in ``[start_us, stop_us)`` and each model's run over them."""
    first_us = start_us
    if start_us is not None and policy.daily_budget is not None:
        first_us = (start_us // MICROS_PER_DAY - 1) * MICROS_PER_DAY
    rows: npt.NDArray[np.int64] | None = None
    runs: list[ModelRun] = []
    for name, role, scorer in models:
        scored = backtest(history, scorer, start_us=first_us, stop_us=stop_us,
                          batch_size=batch_size, progress=progress)
        scores = scored.scores.score.astype(np.float64)
        thresholds = history_thresholds(policy, scorer.threshold, scores, scored.event_time_us)
        keep = slice(None) if start_us is None else scored.event_time_us >= start_us
        if rows is None:
            rows = scored.rows[keep]
        elif not np.array_equal(rows, scored.rows[keep]):
            raise ConfigError(
                f"bundle {name} scored other transactions than {runs[0].name}; compare "
                "bundles that read the same history (same label delay)"
            )
        manifest = scorer.bundle.manifest
        runs.append(ModelRun(
            name=name, role=role, model_version=scorer.bundle.model_version,
            bundle_threshold=scorer.threshold,
            training=f"{manifest.training_data.start}..{manifest.training_data.end}",
            scores=scores[keep], thresholds=thresholds[keep],
        ))
    if rows is None or len(rows) == 0:
        raise ConfigError(
            "no transaction of the history falls in the compared window; check --from and "
            "--until against the history's dates"
        )
    return rows, runs
