"""PSI, training bins and the worker's drift window against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_app.drift.psi import FLOOR, Binned, Distributions, binned, psi
from stream_app.drift.window import DriftWindow
from stream_app.errors import InputDataError


def test_psi_of_known_shares() -> None:
    assert psi([0.5, 0.5], [50, 50]) == 0.0
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert psi([0.5, 0.5], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # PSI is symmetric in its two distributions
    assert psi([0.25, 0.75], [50, 50]) == pytest.approx(psi([0.5, 0.5], [25, 75]))
    # an empty bin counts as FLOOR, not as zero (which would make the PSI infinite)
    expected = (FLOOR - 0.5) * math.log(FLOOR / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert psi([0.5, 0.5], [0, 7]) == pytest.approx(expected)
    assert math.isnan(psi([0.5, 0.5], [0, 0]))


def test_bins_are_training_deciles_with_ties_merged() -> None:
    even = binned(np.arange(1000, dtype=np.float64))
    assert len(even.edges) == 9 and even.proportions == pytest.approx([0.1] * 10)
    # 80 % zeros, 20 % ones: bins (-inf, 0], (0, 1], (1, inf)
    ties = binned(np.array([0.0] * 80 + [1.0] * 20))
    assert ties.edges == (0.0, 1.0)
    assert ties.proportions == pytest.approx([0.8, 0.2, 0.0])
    # a value on an edge falls in the lower bin
    assert ties.bin_of(np.array([-5.0, 0.0, 0.5, 1.0, 1.5])).tolist() == [0, 0, 1, 1, 2]
    assert ties.counts(np.array([0.0, 1.0, 3.0, 3.0])).tolist() == [1, 1, 2]
    with pytest.raises(InputDataError, match="not finite"):
        binned(np.array([1.0, np.nan]))


def test_the_same_distribution_is_stable_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    reference = binned(rng.normal(size=50_000))
    same = psi(reference.proportions, reference.counts(rng.normal(size=20_000)))
    shifted = psi(reference.proportions, reference.counts(rng.normal(0.5, size=20_000)))
    assert same < 0.01
    assert 0.2 < shifted < 0.35  # about 0.25 for half a standard deviation


def _reference() -> Distributions:
    quarters = Binned((0.25, 0.5, 0.75), (0.25, 0.25, 0.25, 0.25))
    return Distributions(rows=100, features={"a": quarters, "b": quarters}, score=quarters)


def test_drift_window_keeps_the_last_rows_only() -> None:
    now = [0.0]
    window = DriftWindow(_reference(), ["a", "b"], size=8, min_rows=4, clock=lambda: now[0])
    low = np.full((6, 2), 0.1)
    window.add(low, np.full(6, 0.1))
    assert window.psi() is not None
    high = np.full((5, 2), 0.9)
    high[:, 1] = [0.1, 0.3, 0.6, 0.9, 0.9]
    now[0] = 10.0
    window.add(high, np.full(5, 0.9))  # wraps: the window holds 3 low rows and 5 high ones
    result = window.psi()
    assert result is not None
    features, score = result
    assert features["a"] == pytest.approx(psi([0.25] * 4, [3, 0, 0, 5]))
    assert features["b"] == pytest.approx(psi([0.25] * 4, [4, 1, 1, 2]))
    assert score == pytest.approx(features["a"])
    # more rows than the window at once: the last 8 count
    now[0] = 20.0
    window.add(np.vstack([np.full((10, 2), 0.9), np.full((8, 2), 0.4)]), np.full(18, 0.4))
    result = window.psi()
    assert result is not None and result[1] == pytest.approx(psi([0.25] * 4, [0, 8, 0, 0]))


def test_drift_window_waits_for_rows_and_reuses_its_figures() -> None:
    now = [0.0]
    window = DriftWindow(_reference(), ["a", "b"], size=100, min_rows=10, every_s=5.0,
                         clock=lambda: now[0])
    window.add(np.full((9, 2), 0.1), np.full(9, 0.1))
    assert window.psi() is None
    window.add(np.full((1, 2), 0.1), np.full(1, 0.1))
    first = window.psi()
    assert first is not None
    window.add(np.full((50, 2), 0.9), np.full(50, 0.9))
    now[0] = 4.9
    assert window.psi() == first  # computed at most every 5 s
    now[0] = 5.0
    assert window.psi() != first
