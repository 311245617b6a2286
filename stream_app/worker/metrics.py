"""Prometheus metrics of one worker, kept in the worker's own registry.

A registry per worker (not the process-global one) lets tests and benchmarks run several
workers in one process. ``/metrics`` on the Faust web server renders it with
:func:`render`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from stream_app.errors import REASON_CLASSES
from stream_app.worker.drift import DriftMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 750, 1000, 2000, 5000)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""Upper bounds of ``fraudstream_score``'s buckets: 0.05, 0.10, ..., 1.0."""

STAGES = (
    "decode",  # a fetch's records validated
    "align_hold",  # how long a batch's oldest transaction waited in the event-time aligner
    "barrier",  # the label barrier
    "windows",  # the windows lane: a compute sent (and awaited, for an in-process store)
    "window_compute",  # a batch applied to the windows, Redis reads and retries included
    "score",  # the score lane: waiting for the windows, scoring, records to the producer
    "scoring",  # the ONNX scorer call
    "acknowledge",  # the broker's acknowledgements of a batch's records
    "store",  # the window writes of the acknowledged batches
    "commit",  # an offset commit
    "fetch_to_acknowledged",  # a batch from its (oldest record's) fetch to acknowledged
)
"""The labels of ``fraudstream_stage_seconds``: each a latency histogram, per batch."""


@dataclass(eq=False)
class WorkerMetrics:
    """Every metric the worker records, registered in :attr:`registry`."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    drift_window: int = 10_000
    """Scored transactions in the drift window (``fraudstream_*_psi``)."""

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter(
            "fraudstream_events_in", "Records consumed, by topic kind.", ["kind"], registry=r
        )
        self.alerts_out = Counter(
            "fraudstream_alerts_out", "Alerts published to the alerts topic.", registry=r
        )
        self.shadow_out = Counter(
            "fraudstream_shadow_scores_out",
            "Challenger scores published to the shadow topic.",
            registry=r,
        )
        self.model_info = Gauge(
            "fraudstream_model_info",
            "The bundles in use (value 1): role serving or challenger, model version, policy.",
            ["role", "model_version", "policy"],
            registry=r,
        )
        self.model_swaps = Counter(
            "fraudstream_model_swaps", "Switches to a new model or policy choice.", registry=r
        )
        self.model_refusals = Counter(
            "fraudstream_model_refusals",
            "Bundles or policies refused at a swap (the old choice kept serving).",
            registry=r,
        )
        self.alert_threshold = Gauge(
            "fraudstream_alert_threshold",
            "The serving model's alert threshold for the newest scored batch.",
            registry=r,
        )
        self.scores_out = Counter(
            "fraudstream_scores_out", "Scores published to the scores topic.", registry=r
        )
        self.dlq = Counter(
            "fraudstream_dlq",
            "Invalid records sent to the dead-letter topic.",
            ["kind"],
            registry=r,
        )
        self.duplicates = Counter(
            "fraudstream_duplicates",
            "Re-delivered transactions recognised by id: not applied, scored or alerted again.",
            registry=r,
        )
        self.warmup = Counter(
            "fraudstream_warmup_transactions",
            "A replay's warm-up transactions: applied to the windows, not scored or alerted.",
            registry=r,
        )
        self.late_events = Counter(
            "fraudstream_late_events",
            "Transactions older than a window horizon of their customer or terminal: scored "
            "against the windows as they are (flagged late), not added to them.",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "fraudstream_batch_size",
            "Records per consumed batch.",
            ["kind"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "fraudstream_stage_seconds",
            "Wall time of one batch stage (the stage label names it: see metrics.STAGES).",
            ["stage"],
            buckets=_STAGE_BUCKETS_S,
            registry=r,
        )
        self.event_time_lag = Gauge(
            "fraudstream_event_time_lag_seconds",
            "Wall clock minus the newest event time of the last scored batch.",
            registry=r,
        )
        self.idle_grace = Gauge(
            "fraudstream_idle_grace_seconds",
            "How long a caught-up partition may still have records in flight, by topic kind: "
            "the event-time alignment and the label barrier wait that long for it.",
            ["kind"],
            registry=r,
        )
        self.label_barrier_timeouts = Counter(
            "fraudstream_label_barrier_timeouts",
            "Transaction batches scored before the labels consumer caught up.",
            registry=r,
        )
        self.alignment_forced_releases = Counter(
            "fraudstream_alignment_forced_releases",
            "Transactions released before the event-time watermark (buffer full or waited "
            "too long): a partition lagged, so shared terminal windows may miss records.",
            registry=r,
        )
        self.out_of_order = Counter(
            "fraudstream_out_of_order",
            "Records applied after the windows had moved past their event time: a transaction "
            "older than one already scored, or a label whose label time is already scored. "
            "Stream scores may then differ from a backtest.",
            ["kind"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "fraudstream_dependency_up",
            "1 when the dependency answered last time, else 0.",
            ["dependency"],
            registry=r,
        )
        self.dependency_retries = Counter(
            "fraudstream_dependency_retries",
            "Retries after a failed call to a dependency.",
            ["dependency"],
            registry=r,
        )
        self.commit_failures = Counter(
            "fraudstream_commit_failures",
            "Offset commits refused (rebalance); the records are redelivered.",
            registry=r,
        )
        for dependency in ("redis", "kafka"):
            self.dependency_up.labels(dependency).set(1)
        self.consumer_lag = Gauge(
            "fraudstream_consumer_lag",
            "Records behind the high watermark of the partition's latest fetch response.",
            ["topic", "partition"],
            registry=r,
        )
        self.alert_rate = AlertRate()
        self.alerts_per_minute = Gauge(
            "fraudstream_alerts_per_minute",
            "Alerts published in the last 60 s of wall clock.",
            registry=r,
        )
        self.alerts_per_minute.set_function(self.alert_rate.per_minute)
        self.scores = ScoreHistogram()
        r.register(self.scores)
        self.drift = DriftMetrics(self.drift_window)
        r.register(self.drift)
        self.dlq_reasons = Counter(
            "fraudstream_dlq_reasons",
            "Dead letters by reason class (see errors.REASON_CLASSES).",
            ["reason"],
            registry=r,
        )
        for reason in REASON_CLASSES:
            self.dlq_reasons.labels(reason)
        self.future_events = Counter(
            "fraudstream_future_events",
            "Records refused as too far ahead of the reference clock (event or label time).",
            ["kind"],
            registry=r,
        )
        self.window_keys = Gauge(
            "fraudstream_window_keys",
            "Window keys in Redis by kind (customer, terminal), counted every ~15 s.",
            ["kind"],
            registry=r,
        )
        self.redis_memory = Gauge(
            "fraudstream_redis_memory_bytes",
            "Redis used_memory (INFO memory), read every ~15 s.",
            registry=r,
        )
        self.last_batch = Gauge(
            "fraudstream_last_batch_timestamp_seconds",
            "Wall time (Unix seconds) when the last batch was scored.",
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class AlertRate:
    """Alerts counted per wall-clock second over the last ``window_s`` seconds."""

    def __init__(self, window_s: int = 60, clock: Any = time.time) -> None:
        self._window_s = window_s
        self._clock = clock
        self._seconds: deque[list[int]] = deque()  # [second, alerts], oldest first

    def add(self, alerts: int) -> None:
        """``alerts`` were published now."""
        second = int(self._clock())
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += alerts
        else:
            self._seconds.append([second, alerts])
        self._forget(second)

    def per_minute(self) -> float:
        """Alerts of the last ``window_s`` seconds, scaled to one minute."""
        self._forget(int(self._clock()))
        return sum(n for _, n in self._seconds) * 60 / self._window_s

    def _forget(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second - self._window_s:
            self._seconds.popleft()


class ScoreHistogram(Collector):
    """``fraudstream_score``: the served scores in :data:`SCORE_BUCKETS`, counted a batch at
    a time with numpy (a ``Histogram.observe`` per score would cost a call each)."""

    def __init__(self) -> None:
        self._edges = np.array(SCORE_BUCKETS, dtype=np.float64)
        self._counts = np.zeros(len(SCORE_BUCKETS) + 1, dtype=np.int64)  # last: above 1.0
        self._sum = 0.0

    def observe(self, scores: npt.NDArray[np.floating[Any]]) -> None:
        """Count a batch's scores (a score equal to a bound falls in that bucket)."""
        at = np.searchsorted(self._edges, scores, side="left")
        self._counts += np.bincount(at, minlength=len(self._counts))
        self._sum += float(scores.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = np.cumsum(self._counts).tolist()
        buckets = [(str(b), float(c)) for b, c in zip(SCORE_BUCKETS, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family = HistogramMetricFamily("fraudstream_score", "Scores served (the serving model).")
        family.add_metric([], buckets, self._sum)
        yield family
