"""Population stability: binned distributions and the PSI between two of them.

A :class:`Binned` distribution is recorded at training for every feature and for the
score (the bundle manifest's ``distributions``): the inner ``edges`` of its bins, the
training rows' deciles (each a value of the data, the lower one between two; the score's
also its 0.95, 0.99 and 0.999 quantiles), repeated ones merged (a feature that is often 0
gets fewer bins), and the share of the training rows in each bin. Bin ``i`` holds values
``edges[i-1] < x <= edges[i]`` (the first from -inf, the last to +inf), so a value equal
to an edge falls in the lower bin.

``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the bins, ``e`` the training shares, ``a``
those observed; a share below :data:`FLOOR` counts as ``FLOOR`` (an empty bin would make
it infinite). Usual reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a
large one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from stream_app.errors import InputDataError

DECILES = tuple(i / 10 for i in range(1, 10))
SCORE_QUANTILES = (*DECILES, 0.95, 0.99, 0.999)
"""The score's bin edges: its deciles and its upper tail, where the alerts and most frauds
are (scores are skewed: nine tenths of them sit near 0)."""
FLOOR = 1e-4
"""Smallest share a bin counts with in the PSI."""
STABLE, MODERATE = 0.1, 0.25
"""The usual PSI reading: below STABLE stable, from MODERATE on a large shift."""


class Binned(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Inner bin edges (ascending) and the share of rows in each of ``len(edges) + 1``
    bins."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def bin_of(self, values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.intp]:
        """The bin of each value."""
        return np.searchsorted(np.asarray(self.edges), values, side="left")

    def counts(self, values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int64]:
        """How many ``values`` fall in each bin."""
        return np.bincount(self.bin_of(values), minlength=len(self.proportions)).astype(np.int64)


def binned(
    values: npt.NDArray[np.floating[Any]], quantiles: Sequence[float] = DECILES
) -> Binned:
    """The distribution of ``values`` (finite numbers) in bins cut at their ``quantiles``."""
    finite = np.asarray(values, dtype=np.float64)
    if finite.size == 0 or not np.isfinite(finite).all():
        raise InputDataError(
            f"a distribution needs finite values, got {finite.size} values "
            f"({int((~np.isfinite(finite)).sum())} not finite); check the training rows"
        )
    edges = np.unique(np.quantile(finite, quantiles, method="lower"))
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    proportions = counts / finite.size
    return Binned(tuple(edges.tolist()), tuple(proportions.tolist()))


def psi(
    expected: Sequence[float] | npt.NDArray[np.floating[Any]],
    counts: Sequence[int] | npt.NDArray[np.integer[Any]],
) -> float:
    """The PSI of observed bin ``counts`` against the ``expected`` shares (NaN when nothing
    was observed)."""
    observed = np.asarray(counts, dtype=np.float64)
    total = observed.sum()
    if not total:
        return float("nan")
    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(observed / total, FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


class Distributions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The manifest's ``distributions``: every feature column's and the score's, on the
    training rows (``rows`` of them)."""

    rows: int
    features: dict[str, Binned]
    score: Binned


def training_distributions(
    columns: Sequence[str],
    values: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
) -> dict[str, Any]:
    """The ``distributions`` object of a manifest for feature rows ``values`` (in ``columns``
    order) and their ``scores``, as JSON-ready builtins."""
    document = Distributions(
        rows=len(scores),
        features={c: binned(values[:, i]) for i, c in enumerate(columns)},
        score=binned(scores, SCORE_QUANTILES),
    )
    built: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return built


def parse_distributions(document: Mapping[str, Any]) -> Distributions:
    """The typed view of a manifest's ``distributions`` (already schema-checked)."""
    return msgspec.convert(document, Distributions)
