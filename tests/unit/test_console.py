"""The console's pieces without servers: tokens and sessions, the audit log, labels of
decisions, the alert filters and what is held, the worker's metrics as figures, and the
HTTP guard (401 without a token, CSRF and origin checks) on aiohttp's test server."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from stream_app.console.auth import Analysts, Sessions, bearer_token
from stream_app.console.decisions import AuditLog, Decision, label_for, parse_decision
from stream_app.console.service import Console, metrics_url
from stream_app.console.state import AlertBook, AlertFilter, ConsoleState, RecentTransactions
from stream_app.console.stats import parse, quantile, summarize
from stream_app.console.web import COOKIE, CSRF_HEADER, console_app
from stream_app.contracts import (
    Alert,
    Label,
    Reason,
    Transaction,
    encode_alert,
    encode_label,
    encode_transaction,
)
from stream_app.errors import ConfigError
from stream_app.settings import Settings
from tests.secrets import CONSOLE_TOKEN, OTHER_CONSOLE_TOKEN, WRONG_CONSOLE_TOKEN

T0 = dt.datetime(2018, 4, 2, 10, 0, tzinfo=dt.UTC)
TOKENS = f"# analysts\nalice:{CONSOLE_TOKEN}\n\nbob:{OTHER_CONSOLE_TOKEN}\n"


def _tx(tx_id: str, customer: str = "c1", terminal: str = "k1", minutes: int = 0) -> Transaction:
    at = T0 + dt.timedelta(minutes=minutes)
    return Transaction(tx_id, customer, terminal, "12.50", "EUR", at)


def _alert(
    tx_id: str, customer: str = "c1", terminal: str = "k1", score: float = 0.9,
    model: str = "m1", minutes: int = 0,
) -> Alert:  # fmt: skip
    return Alert.for_transaction(
        _tx(tx_id, customer, terminal, minutes),
        score=score, threshold=0.5, model_version=model, policy="bundle",
        reasons=(Reason("TX_AMOUNT", 0.2, 12.5),), reasons_baseline=0.01,
        features={"TX_AMOUNT": 12.5},
        processed_at=T0 + dt.timedelta(minutes=minutes, seconds=1),
    )  # fmt: skip


# -- tokens and sessions --------------------------------------------------------------


def test_tokens_file_names_analysts_and_checks_tokens() -> None:
    analysts = Analysts.parse(TOKENS)
    assert analysts.names == ["alice", "bob"]
    assert analysts.check(CONSOLE_TOKEN) == "alice"
    assert analysts.check(OTHER_CONSOLE_TOKEN) == "bob"
    assert analysts.check(WRONG_CONSOLE_TOKEN) is None
    assert analysts.check("") is None
    assert CONSOLE_TOKEN not in repr(analysts)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"alice {CONSOLE_TOKEN}", r"line 1 is not `name:token`"),
        (f"\n<b>:{CONSOLE_TOKEN}", r"line 2 is not `name:token`"),
        ("alice:short", r"line 1: the token of 'alice' is shorter than 16"),
        (f"alice:{CONSOLE_TOKEN} x", r"holds white space"),
        (f"alice:{CONSOLE_TOKEN}\nalice:{OTHER_CONSOLE_TOKEN}", r"line 2 repeats the analyst"),
        (f"alice:{CONSOLE_TOKEN}\nbob:{CONSOLE_TOKEN}", r"line 2: 'bob' has another analyst's"),
        ("# nobody\n", r"names no analyst"),
    ],
)
def test_a_bad_tokens_file_names_the_line_never_the_token(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        Analysts.parse(text)
    assert CONSOLE_TOKEN not in str(caught.value) and OTHER_CONSOLE_TOKEN not in str(caught.value)


def test_bearer_header() -> None:
    assert bearer_token(f"Bearer {CONSOLE_TOKEN}") == CONSOLE_TOKEN
    assert bearer_token(f"bearer  {CONSOLE_TOKEN} ") == CONSOLE_TOKEN
    assert bearer_token(f"Basic {CONSOLE_TOKEN}") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_sessions_expire_and_are_capped() -> None:
    now = [100.0]
    sessions = Sessions(ttl_s=10, capacity=2, clock=lambda: now[0])
    first = sessions.open("alice")
    assert sessions.get(first.id) == first and first.csrf != first.id
    assert first.csrf_ok(first.csrf) and not first.csrf_ok("x") and not first.csrf_ok(None)
    now[0] = 110.0
    assert sessions.get(first.id) is None  # expired
    a, b, c = (sessions.open(name) for name in ("a", "b", "c"))
    assert sessions.get(a.id) is None and sessions.get(c.id) == c  # the oldest dropped
    sessions.close(b.id)
    assert sessions.get(b.id) is None and sessions.get(None) is None


# -- decisions ------------------------------------------------------------------------


def test_a_decision_labels_the_alerts_transaction_now() -> None:
    alert = _alert("f1", "c1", "k9")
    now = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
    label = label_for(alert, parse_decision("fraud"), now)
    assert label == Label("f1", "c1", "k9", T0, now, True)
    assert encode_label(label)  # a valid label.v1
    assert label_for(alert, parse_decision("genuine"), now).is_fraud is False
    # a clock behind the event time: label_time may not precede event_time
    assert label_for(alert, True, T0 - dt.timedelta(hours=1)).label_time == T0
    for bad in ("Fraud", "", None, 1):
        with pytest.raises(ValueError, match="is not one of fraud, genuine"):
            parse_decision(bad)


def test_the_audit_log_appends_one_line_per_decision(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    now = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
    for analyst, tx, fraud in (("alice", "f1", True), ("bob", "g1", False)):
        alert = _alert(tx)
        log.append(Decision(analyst, alert.alert_id, label_for(alert, fraud, now), "labels", 1, 7))
    entries = AuditLog(path).read()
    assert [(e["analyst"], e["transaction_id"], e["decision"]) for e in entries] == [
        ("alice", "f1", "fraud"), ("bob", "g1", "genuine"),
    ]  # fmt: skip
    assert entries[0]["at"] == "2026-12-06T09:00:00+00:00"
    assert entries[0]["alert_id"] == _alert("f1").alert_id
    assert entries[0]["label_topic"] == "labels" and entries[0]["label_offset"] == 7


def test_an_audit_log_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CONSOLE_AUDIT_LOG=.*cannot be opened for append"):
        AuditLog(tmp_path / "missing-dir" / "audit.jsonl")


# -- filters and what is held ---------------------------------------------------------


def test_filters_from_the_query() -> None:
    where = AlertFilter.from_query({"customer": " c1 ", "min_score": "0.8", "model": "m1"})
    assert where == AlertFilter("c1", "", "m1", 0.8)
    assert where.matches(_alert("a", score=0.8))
    assert not where.matches(_alert("a", score=0.79))
    assert not where.matches(_alert("a", customer="c2"))
    assert not where.matches(_alert("a", model="m2"))
    assert AlertFilter.from_query({"terminal": "k2"}).matches(_alert("a", terminal="k2"))
    assert not AlertFilter.from_query({"terminal": "k2"}).matches(_alert("a"))
    assert AlertFilter.from_query({}) == AlertFilter()
    for bad in ("abc", "1.5", "-0.1", "nan"):
        with pytest.raises(ValueError, match=f"min_score '{bad}' is not a number from 0 to 1"):
            AlertFilter.from_query({"min_score": bad})
    with pytest.raises(ValueError, match="customer filter is longer than 64"):
        AlertFilter.from_query({"customer": "x" * 65})


def test_the_alert_book_keeps_the_latest_arrivals_once_newest_event_first() -> None:
    book = AlertBook(capacity=3)
    alerts = [_alert(f"t{i}", customer=f"c{i % 2}", minutes=i) for i in range(4)]
    assert all(book.add(a) for a in alerts)
    assert not book.add(alerts[3])  # re-delivered
    assert len(book) == 3 and book.get(alerts[0].alert_id) is None
    assert [a.transaction_id for a in book.latest(AlertFilter(), 10)] == ["t3", "t2", "t1"]
    assert [a.transaction_id for a in book.latest(AlertFilter(customer="c1"), 10)] == ["t3", "t1"]
    assert [a.transaction_id for a in book.latest(AlertFilter(), 2)] == ["t3", "t2"]
    book.add(_alert("early", minutes=-5))  # arrives last, happened first
    assert [a.transaction_id for a in book.latest(AlertFilter(), 10)] == ["t3", "t2", "early"]


def test_recent_transactions_are_bounded_per_customer_and_in_all() -> None:
    recent = RecentTransactions(per_customer=3, customers=2)
    for i in range(5):
        recent.add(_tx(f"t{i}", minutes=10 - i))  # arrival order is not time order
    recent.add(_tx("t4", minutes=6))  # a duplicate
    assert [t.transaction_id for t in recent.of("c1")] == ["t2", "t3", "t4"]
    recent.add(_tx("u", customer="c2"))
    recent.add(_tx("v", customer="c3"))
    assert recent.of("c1") == [] and [t.transaction_id for t in recent.of("c3")] == ["v"]


def test_state_skips_invalid_records_and_keeps_the_analyst_of_a_label() -> None:
    state = ConsoleState(max_alerts=10)
    alert = _alert("f1")
    state.on_alerts([encode_alert(alert), b"not json", None, encode_alert(alert)])
    state.on_transactions([encode_transaction(_tx("f1")), b"{}"])
    assert len(state.alerts) == 1 and state.invalid == {
        "alerts": 2, "transactions": 1, "labels": 0, "scores": 0,
    }  # fmt: skip
    label = label_for(alert, True, dt.datetime(2026, 12, 6, tzinfo=dt.UTC))
    state.record_label(label, "alice")
    state.on_labels([encode_label(label)])  # read back from the topic
    outcome = state.outcomes.get("f1")
    assert outcome is not None and outcome.analyst == "alice" and outcome.is_fraud
    state.on_labels([encode_label(label_for(alert, False, label.label_time))])
    outcome = state.outcomes.get("f1")
    assert outcome is not None and outcome.analyst is None and not outcome.is_fraud


# -- the worker's metrics -------------------------------------------------------------

_METRICS = """\
# TYPE fraudstream_events_in_total counter
fraudstream_events_in_total{{kind="transaction"}} {events}
fraudstream_events_in_total{{kind="label"}} 999
# TYPE fraudstream_alerts_out_total counter
fraudstream_alerts_out_total {alerts}
# TYPE fraudstream_dlq_total counter
# TYPE fraudstream_stage_seconds histogram
fraudstream_stage_seconds_bucket{{stage="fetch_to_acknowledged",le="0.01"}} {fast}
fraudstream_stage_seconds_bucket{{stage="fetch_to_acknowledged",le="0.1"}} {slow}
fraudstream_stage_seconds_bucket{{stage="fetch_to_acknowledged",le="+Inf"}} {slow}
fraudstream_stage_seconds_count{{stage="fetch_to_acknowledged"}} {slow}
fraudstream_stage_seconds_sum{{stage="fetch_to_acknowledged"}} 1.0
# TYPE fraudstream_model_info gauge
fraudstream_model_info{{role="serving",model_version="m7",policy="bundle"}} 1
fraudstream_model_info{{role="challenger",model_version="m8",policy="bundle"}} 1
# TYPE fraudstream_alert_threshold gauge
fraudstream_alert_threshold 0.42
{extra}"""

_NEW_METRICS = """\
# TYPE fraudstream_consumer_lag gauge
fraudstream_consumer_lag{topic="t",partition="0"} 5
fraudstream_consumer_lag{topic="t",partition="1"} 7
# TYPE fraudstream_alerts_per_minute gauge
fraudstream_alerts_per_minute 12
# TYPE fraudstream_score_psi gauge
fraudstream_score_psi 0.31
# TYPE fraudstream_feature_psi gauge
fraudstream_feature_psi{feature="TX_AMOUNT"} 0.02
fraudstream_feature_psi{feature="TERMINAL_ID_RISK_7DAY_WINDOW"} 0.4
"""


def _scrape(at: float, events: int, alerts: int, fast: int, slow: int, extra: str = "") -> str:
    return _METRICS.format(events=events, alerts=alerts, fast=fast, slow=slow, extra=extra)


def test_figures_from_two_scrapes_and_n_a_for_what_is_absent() -> None:
    before = parse(_scrape(0, 1000, 10, 10, 10), at=100.0)
    now = parse(_scrape(0, 3000, 40, 10, 30), at=102.0)
    figures = summarize(now, before)
    assert figures["events_per_s"] == 1000.0
    assert figures["alerts_per_minute"] == 900.0  # from the counter: 30 in 2 s
    assert figures["latency_p50_ms"] == pytest.approx(55.0)  # the 20 new ones: 10..100 ms
    assert figures["model_version"] == "m7" and figures["threshold"] == 0.42
    assert figures["dlq_records"] == 0.0  # declared, no sample yet
    for absent in ("lag_records", "lag_partitions", "score_psi", "feature_psi_max"):
        assert figures[absent] is None
    assert summarize(now, None)["events_per_s"] is None  # one scrape: no rate yet
    assert all(v is None for v in summarize(None, None).values())
    restarted = parse(_scrape(0, 5, 0, 0, 0), at=104.0)
    assert summarize(restarted, now)["events_per_s"] is None


def test_figures_of_the_metrics_added_for_issue_16() -> None:
    now = parse(_scrape(0, 1, 1, 1, 1, _NEW_METRICS), at=1.0)
    figures = summarize(now, None)
    assert figures["lag_records"] == 12 and figures["lag_partitions"] == 2
    assert figures["alerts_per_minute"] == 12
    assert figures["score_psi"] == 0.31
    assert figures["feature_psi_max"] == {"feature": "TERMINAL_ID_RISK_7DAY_WINDOW", "psi": 0.4}


def test_histogram_quantile_as_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1  # in +Inf: the last bound
    assert quantile(0.5, []) is None and quantile(0.5, [(1.0, 0.0)]) is None


def test_metrics_url_defaults_to_the_workers_and_must_be_http() -> None:
    assert metrics_url(Settings(web_port=7000)) == "http://127.0.0.1:7000/metrics"
    assert metrics_url(Settings(console_metrics_url="https://w:1/metrics")) == "https://w:1/metrics"
    with pytest.raises(ConfigError, match=r"CONSOLE_METRICS_URL='ftp://x' is not an http"):
        metrics_url(Settings(console_metrics_url="ftp://x"))


# -- the HTTP guard ---------------------------------------------------------------------


async def test_every_route_wants_a_token_and_posts_want_csrf(tmp_path: Path) -> None:
    settings = Settings(console_audit_log=str(tmp_path / "audit.jsonl"))
    console = Console(settings)  # not started: no broker needed to check the guard
    alert = _alert("f1", customer="<script>x</script>")
    console.state.on_alerts([encode_alert(alert)])
    app = console_app(console, Analysts.parse(TOKENS), Sessions())
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/static/console.js", "/api/alerts", "/api/metrics", "/nope"):
            response = await client.get(path)
            assert response.status == 401, path
        page = await client.get("/")
        assert 'action="/login"' in await page.text()
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
        wrong = {"Authorization": f"Bearer {WRONG_CONSOLE_TOKEN}"}
        assert (await client.get("/api/alerts", headers=wrong)).status == 401
        bearer = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        listed = await client.get("/api/alerts?customer=%3Cscript%3Ex%3C/script%3E", headers=bearer)
        assert listed.status == 200
        assert [a["customer_id"] for a in (await listed.json())["alerts"]] == ["<script>x</script>"]
        assert (await client.get("/api/alerts?min_score=2", headers=bearer)).status == 400
        detail = await client.get(f"/api/alerts/{alert.alert_id}", headers=bearer)
        assert (await detail.json())["reasons"] == [
            {"feature": "TX_AMOUNT", "contribution": 0.2, "value": 12.5}
        ]
        assert (await client.get("/api/alerts/unknown", headers=bearer)).status == 404

        refused = await client.post("/login", data={"token": WRONG_CONSOLE_TOKEN})
        assert refused.status == 401 and "not valid" in await refused.text()
        login = await client.post("/login", data={"token": CONSOLE_TOKEN}, allow_redirects=False)
        assert login.status == 303
        cookie = login.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        session_cookie = {"Cookie": f"{COOKIE}={cookie.value}"}
        session = await (await client.get("/api/session", headers=session_cookie)).json()
        assert session["analyst"] == "alice" and session["csrf"]
        decide = f"/api/alerts/{alert.alert_id}/decision"
        no_csrf = await client.post(decide, json={"decision": "fraud"}, headers=session_cookie)
        assert no_csrf.status == 403
        other_site = await client.post(decide, json={"decision": "fraud"}, headers={
            **bearer, "Origin": "http://evil.example"})  # fmt: skip
        assert other_site.status == 403
        bad = await client.post(decide, json={"decision": "maybe"}, headers={
            **session_cookie, CSRF_HEADER: session["csrf"]})  # fmt: skip
        assert bad.status == 400 and "is not one of fraud, genuine" in (await bad.json())["error"]
        # the guard let it through; the console has no producer, so nothing was published
        unpublished = await client.post(decide, json={"decision": "fraud"}, headers={
            **session_cookie, CSRF_HEADER: session["csrf"]})  # fmt: skip
        assert unpublished.status == 503
        assert AuditLog(tmp_path / "audit.jsonl").read() == []
        with_csrf = {**session_cookie, CSRF_HEADER: session["csrf"]}
        logout = await client.post("/logout", headers=with_csrf, allow_redirects=False)
        assert logout.status == 303
        assert (await client.get("/api/session", headers=session_cookie)).status == 401
