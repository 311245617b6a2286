"""The compose stack's monitoring files, checked with the real tools (no Docker engine here).

``promtool`` (Debian's ``prometheus`` package, installed by ``make system-deps``) checks the
Prometheus config, the alert rules and their unit tests (``deploy/prometheus/rules.test.yml``),
and every PromQL query of the Grafana dashboard. Every metric a rule or a panel names must be
one the worker exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.worker.metrics import WorkerMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "fraudstream.json"
DATASOURCES = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

DRIFT = REPO_ROOT / "stream_app" / "worker" / "drift.py"
DRIFT_METRICS = frozenset({"fraudstream_feature_psi", "fraudstream_score_psi"})
"""Collected by ``worker/drift.py`` only once its window holds scores (absent from a new
registry's output)."""

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for each scrape target."""

DASHBOARD_MUST_SHOW = frozenset(
    {
        "fraudstream_events_in_total",  # throughput
        "fraudstream_consumer_lag",  # lag per partition
        "fraudstream_stage_seconds_bucket",  # latency
        "fraudstream_alerts_per_minute",
        "fraudstream_score_bucket",  # score histogram
        "fraudstream_dlq_reasons_total",
        "fraudstream_late_events_total",
        "fraudstream_future_events_total",
        "fraudstream_model_info",  # model version
        "fraudstream_window_keys",
        "fraudstream_redis_memory_bytes",
        "fraudstream_feature_psi",
        "fraudstream_score_psi",
    }
)

ALERTS = frozenset(
    {
        "FraudstreamWorkerDown",
        "FraudstreamConsumerLagGrowing",
        "FraudstreamDeadLetterRate",
        "FraudstreamFeatureDrift",
        "FraudstreamScoreDrift",
        "FraudstreamNoTraffic",
    }
)

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
     "group_left", "group_right", "inf", "nan"}
)  # fmt: skip
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (make system-deps)")
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def worker_metric_names() -> set[str]:
    """Every series name the worker's registry exposes, plus the drift gauges."""
    names: set[str] = set()
    for family in WorkerMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names | DRIFT_METRICS


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {
        m.group(1)
        for m in _IDENTIFIER.finditer(text)
        if m.group(2) is None and m.group(1) not in _KEYWORDS
    }


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> dict[str, str]:
    """``panel <id> <refId>`` -> PromQL of every target of every panel."""
    return {
        f"panel {panel['id']} {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel["targets"]
    }


def test_the_drift_gauges_are_the_drift_collectors() -> None:
    source = DRIFT.read_text()
    for name in DRIFT_METRICS:
        assert f'"{name}"' in source


def test_metric_names_finds_selectors_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(fraudstream_stage_seconds_bucket'
        '{stage="a b"}[1m]))) > 0.05 * on (job) group_left(x) up and time() - '
        "fraudstream_last_batch_timestamp_seconds offset 5m > 1e-9"
    )
    assert metric_names(expr) == {
        "fraudstream_stage_seconds_bucket",
        "up",
        "fraudstream_last_batch_timestamp_seconds",
    }


def test_prometheus_config_passes_promtool(promtool: str) -> None:
    result = run_promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert "is valid prometheus config file syntax" in result.stdout


def test_alert_rules_pass_promtool_and_cover_the_issue(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert set(rule_expressions()) == ALERTS


def test_alert_rules_fire_on_their_unit_test_series(promtool: str) -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules.test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert tested == ALERTS
    for test in tests["tests"]:  # each alert is checked quiet first, then firing
        cases = test["alert_rule_test"]
        assert any(c["exp_alerts"] == [] for c in cases), test["name"]
        assert any(c["exp_alerts"] for c in cases), test["name"]
    result = run_promtool(promtool, "test", "rules", str(PROMETHEUS_DIR / "rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_refuses_broken_promql(promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "broken.yml"
    broken = {"record": "x:y", "expr": "sum by (le (rate(a[1m]))"}
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [broken]}]}))
    result = run_promtool(promtool, "check", "rules", str(rules))
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_alert_rules_name_only_worker_metrics() -> None:
    known = worker_metric_names() | PROMETHEUS_OWN
    for alert, expr in rule_expressions().items():
        assert metric_names(expr), alert
        assert metric_names(expr) <= known, f"{alert}: unknown {metric_names(expr) - known}"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules = [
        {"record": f"dashboard:{where.replace(' ', '_')}", "expr": expr}
        for where, expr in queries.items()
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_shows_the_worker_metrics_and_no_other() -> None:
    known = worker_metric_names() | PROMETHEUS_OWN
    shown: set[str] = set()
    for where, expr in dashboard_queries().items():
        names = metric_names(expr)
        assert names, f"{where} selects no metric"
        assert names <= known, f"{where}: unknown {names - known}"
        shown |= names
    assert shown >= DASHBOARD_MUST_SHOW, f"not shown: {sorted(DASHBOARD_MUST_SHOW - shown)}"


def test_dashboard_panels_are_well_formed_and_use_the_provisioned_source() -> None:
    board = dashboard()
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert board["uid"] == "fraudstream" and board["title"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["title"] and panel["type"] in {"stat", "timeseries", "bargauge", "table"}
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        x, y = grid["x"], grid["y"]
        mine = {(x + dx, y + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
