"""Prometheus metrics of one worker, kept in the worker's own registry.

A registry per worker (not the process-global one) lets tests and benchmarks run several
workers in one process. ``/metrics`` on the Faust web server renders it with
:func:`render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 750, 1000, 2000, 5000)

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

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
