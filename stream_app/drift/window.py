"""The worker's drift window: the last ``size`` scored rows (features and score), their PSI
against the bundle's training distributions computed when asked, at most every ``every_s``.

Adding a batch copies its rows into a ring buffer (no binning on the hot path); the bins
and PSIs of the whole window are computed when the metrics are read, and reused for
``every_s`` seconds (10,000 rows of 22 features: a few milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_app.drift.psi import Distributions, psi


class DriftWindow:
    """PSI of the last ``size`` rows per feature column and of the score."""

    def __init__(
        self,
        reference: Distributions,
        columns: Sequence[str],
        size: int,
        *,
        min_rows: int = 1000,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``min_rows``: no PSI from fewer rows (or ``size`` if smaller)."""
        self.columns = tuple(columns)
        self._references = [reference.features[c] for c in self.columns]
        self._score_reference = reference.score
        self._rows = np.zeros((size, len(self.columns)), dtype=np.float64)
        self._scores = np.zeros(size, dtype=np.float64)
        self._size = size
        self._filled = 0
        self._at = 0
        self._min_rows = min(min_rows, size)
        self._every_s = every_s
        self._clock = clock
        self._computed_at = -float("inf")
        self._psi: tuple[dict[str, float], float] | None = None

    def add(
        self, values: npt.NDArray[np.floating[Any]], scores: npt.NDArray[np.floating[Any]]
    ) -> None:
        """Rows just scored (``values`` [n, F] in ``columns`` order, ``scores`` [n])."""
        n = len(scores)
        if n > self._size:
            values, scores, n = values[-self._size :], scores[-self._size :], self._size
        first = min(n, self._size - self._at)
        self._rows[self._at : self._at + first] = values[:first]
        self._scores[self._at : self._at + first] = scores[:first]
        rest = n - first
        if rest:
            self._rows[:rest] = values[first:]
            self._scores[:rest] = scores[first:]
        self._at = (self._at + n) % self._size
        self._filled = min(self._size, self._filled + n)

    def psi(self) -> tuple[dict[str, float], float] | None:
        """Each feature's PSI and the score's; None while the window holds too few rows."""
        if self._filled < self._min_rows:
            return None
        now = self._clock()
        if self._psi is None or now - self._computed_at >= self._every_s:
            rows, scores = self._rows[: self._filled], self._scores[: self._filled]
            features = {
                column: psi(ref.proportions, ref.counts(rows[:, i]))
                for i, (column, ref) in enumerate(zip(self.columns, self._references, strict=True))
            }
            score = psi(self._score_reference.proportions, self._score_reference.counts(scores))
            self._psi = (features, score)
            self._computed_at = now
        return self._psi
