"""``fraudstream_feature_psi{feature}`` and ``fraudstream_score_psi``: the serving model's
last scored rows against its bundle's training distributions (:mod:`stream_app.drift`).

The score stage hands each batch's scored rows to :meth:`DriftMetrics.observe` (a copy into
a ring buffer); the PSIs are computed when ``/metrics`` is read. A new serving model starts
a new window; a bundle without training distributions publishes no PSI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream_app.drift.window import DriftWindow
from stream_app.scoring.bundle import ModelBundle


class DriftMetrics(Collector):
    """The PSI gauges of the serving model's window of the last ``size`` scored rows."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._version: str | None = None
        self.window: DriftWindow | None = None

    def observe(
        self,
        bundle: ModelBundle,
        values: npt.NDArray[np.floating[Any]],
        scores: npt.NDArray[np.floating[Any]],
    ) -> None:
        """Rows the serving ``bundle`` just scored."""
        if bundle.model_version != self._version:
            self._version = bundle.model_version
            reference = bundle.manifest.distributions
            self.window = (
                None
                if reference is None
                else DriftWindow(reference, bundle.feature_columns, self._size)
            )
        if self.window is not None:
            self.window.add(values, scores)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        computed = None if self.window is None else self.window.psi()
        if computed is None:
            return
        features, score = computed
        feature_psi = GaugeMetricFamily(
            "fraudstream_feature_psi",
            "PSI of a feature over the last scored transactions vs the training distribution.",
            labels=["feature"],
        )
        for name, value in features.items():
            feature_psi.add_metric([name], value)
        yield feature_psi
        yield GaugeMetricFamily(
            "fraudstream_score_psi",
            "PSI of the served score over the last scored transactions vs training.",
            value=score,
        )
