"""The worker's ``/metrics`` read as the console's figures.

:func:`parse` turns the Prometheus text format into samples; :func:`summarize` turns the
latest two scrapes into throughput, lag, latency, alert rate and drift. A metric the worker
does not publish (an older worker, or one without drift statistics) gives None, which the
page shows as "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]

LATENCY_STAGE = "fetch_to_acknowledged"


@dataclass(frozen=True)
class Scrape:
    """One read of ``/metrics``: sample name -> labels -> value, and when (seconds)."""

    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    families: frozenset[str] = frozenset()
    """Every metric declared, also those without samples yet (a labelled counter)."""

    def values(self, name: str, **labels: str) -> list[tuple[Labels, float]]:
        """The samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return [(k, v) for k, v in self.samples.get(name, {}).items() if wanted <= set(k)]

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of ``name`` matching ``labels``; None when there is none."""
        found = self.values(name, **labels)
        return sum(v for _, v in found) if found else None


def parse(text: str, at: float) -> Scrape:
    """The samples of a Prometheus text exposition read at ``at``."""
    samples: dict[str, dict[Labels, float]] = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = float(sample.value)
    return Scrape(at, samples, frozenset(families))


def _rate(now: Scrape, before: Scrape | None, name: str, **labels: str) -> float | None:
    current = now.total(name, **labels)
    if before is None or current is None or now.at <= before.at:
        return None
    previous = before.total(name, **labels)
    if previous is None or current < previous:  # a restarted worker starts from 0
        return None
    return (current - previous) / (now.at - before.at)


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram ``buckets`` (upper bound, count),
    interpolated linearly inside a bucket as Prometheus' ``histogram_quantile`` does."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def _latency_buckets(
    now: Scrape, before: Scrape | None, stage: str
) -> list[tuple[float, float]]:
    """The stage's buckets observed since ``before`` (all of them when nothing new)."""

    def buckets(scrape: Scrape) -> dict[float, float]:
        return {
            float(dict(labels)["le"]): value
            for labels, value in scrape.values("fraudstream_stage_seconds_bucket", stage=stage)
        }

    current = buckets(now)
    if before is not None:
        previous = buckets(before)
        delta = {le: v - previous.get(le, 0.0) for le, v in current.items()}
        if delta and max(delta.values()) > 0 and min(delta.values()) >= 0:
            return list(delta.items())
    return list(current.items())


def summarize(now: Scrape | None, before: Scrape | None) -> dict[str, Any]:
    """The console's figures from the latest scrape and the one before (None: n/a)."""
    empty: dict[str, Any] = {
        "events_per_s": None, "alerts_per_minute": None, "lag_records": None,
        "lag_partitions": None, "latency_p50_ms": None, "latency_p99_ms": None,
        "event_time_lag_s": None, "score_psi": None, "feature_psi_max": None,
        "model_version": None, "policy": None, "threshold": None, "dlq_records": None,
    }  # fmt: skip
    if now is None:
        return empty
    figures = dict(empty)
    figures["events_per_s"] = _rate(now, before, "fraudstream_events_in_total", kind="transaction")
    per_minute = now.total("fraudstream_alerts_per_minute")
    if per_minute is None:
        per_second = _rate(now, before, "fraudstream_alerts_out_total")
        per_minute = None if per_second is None else per_second * 60
    figures["alerts_per_minute"] = per_minute
    lags = now.values("fraudstream_consumer_lag")
    if lags:
        figures["lag_records"] = sum(v for _, v in lags)
        figures["lag_partitions"] = len(lags)
    buckets = _latency_buckets(now, before, LATENCY_STAGE)
    for q, key in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
        seconds = quantile(q, buckets)
        figures[key] = None if seconds is None else seconds * 1000
    figures["event_time_lag_s"] = now.total("fraudstream_event_time_lag_seconds")
    figures["score_psi"] = now.total("fraudstream_score_psi")
    psi = now.values("fraudstream_feature_psi")
    if psi:
        labels, value = max(psi, key=lambda item: item[1])
        figures["feature_psi_max"] = {"feature": dict(labels).get("feature", ""), "psi": value}
    for labels, value in now.values("fraudstream_model_info", role="serving"):
        if value == 1:
            figures["model_version"] = dict(labels).get("model_version")
            figures["policy"] = dict(labels).get("policy")
    figures["threshold"] = now.total("fraudstream_alert_threshold")
    dlq = now.total("fraudstream_dlq_total")
    figures["dlq_records"] = 0.0 if dlq is None and "fraudstream_dlq" in now.families else dlq
    return figures
