"""Checks of what a worker left behind: every transaction of a history in Redis exactly
once, an alert for each on the topic, and scores and alerts equal to the backtest's."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from stream_app.cli import main as fraudstream
from stream_app.contracts import Alert, alert_id, decode_alert
from stream_app.features.incremental import (
    CustomerWindow,
    TerminalWindow,
    decode_customer,
    decode_terminal,
)
from stream_app.features.redis_slots import bucket_key, kind_prefix
from stream_app.features.redis_store import KEY_LAYOUT
from stream_app.pseudonyms import CUSTOMER, TERMINAL, Pseudonymizer
from stream_app.scoring.bundle import ModelBundle
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.topics import stream_topics
from tests.integration.worker_support import read_all

TOLERANCE = 1e-6
"""How far a stream score may be from the backtest's."""


def _expected_windows(
    history: TransactionHistory,
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, set[str]], dict[str, set[str]]]:
    customers: dict[str, list[str]] = defaultdict(list)
    terminals: dict[str, list[str]] = defaultdict(list)
    customer_frauds: dict[str, set[str]] = defaultdict(set)
    terminal_frauds: dict[str, set[str]] = defaultdict(set)
    rows = zip(
        history.transaction_id.tolist(), history.customer_id.tolist(),
        history.terminal_id.tolist(), history.is_fraud.tolist(), strict=True,
    )  # fmt: skip
    for tx, customer, terminal, fraud in rows:
        customers[customer].append(tx)
        terminals[terminal].append(tx)
        if fraud:
            customer_frauds[customer].add(tx)
            terminal_frauds[terminal].add(tx)
    return customers, terminals, customer_frauds, terminal_frauds


def window_key(namespace: str, kind: str, name: str, cluster: bool = False) -> str:
    """The Redis key of a window (``name``: an id or its pseudonym), on a cluster or not."""
    prefix = f"fraudstream:{namespace}:"
    if cluster:
        return bucket_key(kind_prefix(prefix, kind))(name)
    return f"{prefix}{KEY_LAYOUT}:{kind}:{name}"


def windows_match(
    client: Any, namespace: str, history: TransactionHistory, width: int,
    pseudonymizer: Pseudonymizer | None = None, cluster: bool = False,
) -> str:  # fmt: skip
    """'' when Redis holds exactly the history's windows (customer rows of ``width``
    features; keyed by the ids' pseudonyms with ``pseudonymizer``), else what differs first.
    ``cluster``: ``client`` is a cluster client, the keys those of a cluster."""
    customers, terminals, customer_frauds, terminal_frauds = _expected_windows(history)
    for kind, expected, frauds in (
        ("cust", customers, customer_frauds),
        ("term", terminals, terminal_frauds),
    ):
        for key, ids in expected.items():
            name = key if pseudonymizer is None else pseudonymizer.pseudonym(kind, key)
            state = client.hget(window_key(namespace, kind, name, cluster), "s")
            if state is None:
                return f"{kind}:{key} missing"
            assert isinstance(state, bytes), "use a client without decode_responses"
            window: CustomerWindow | TerminalWindow = (
                decode_customer(state, width) if kind == "cust" else decode_terminal(state)
            )
            if sorted(window.transaction_ids) != sorted(ids):
                return f"{kind}:{key} holds {sorted(window.transaction_ids)}, not {sorted(ids)}"
            labelled = [label[0] for label in window.fraud_labels]
            if sorted(labelled) != sorted(frauds.get(key, set())):
                return f"{kind}:{key} fraud labels {labelled}, not {sorted(frauds.get(key, []))}"
    return ""


def settled_alerts(
    client: Any, bootstrap: str, namespace: str, history: TransactionHistory,
    bundle: ModelBundle, check_alive: Callable[[], None], timeout_s: float,
    pseudonymizer: Pseudonymizer | None = None, cluster: bool = False,
) -> list[Alert]:  # fmt: skip
    """Wait (calling ``check_alive`` meanwhile) until Redis holds exactly the history's
    windows (see :func:`windows_match`) and the alerts topic an alert id for each of its
    transactions (``bundle`` has threshold 0: all alert) and no other, then return the
    alerts on the topic; fail on what still differs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    width = len(bundle.feature_columns)
    while (
        problem := windows_match(client, namespace, history, width, pseudonymizer, cluster)
    ) and (time.monotonic() < deadline):
        check_alive()
        time.sleep(0.5)
    assert problem == ""
    expected = {alert_id(tx, bundle.model_version) for tx in history.transaction_id.tolist()}
    alerts_topic = stream_topics(namespace).alerts
    while True:
        alerts = [decode_alert(r.value) for r in asyncio.run(read_all(bootstrap, alerts_topic))]
        missing = expected - {alert.alert_id for alert in alerts}
        if not missing or time.monotonic() > deadline:
            break
        check_alive()
        time.sleep(0.5)
    unexpected = {alert.alert_id for alert in alerts} - expected
    assert not missing, f"{len(missing)} of {len(expected)} alerts not on {alerts_topic}"
    assert not unexpected, f"{len(unexpected)} alert ids on {alerts_topic} of no transaction"
    return alerts


def pseudonymous_keys(
    namespace: str, history: TransactionHistory, pseudonymizer: Pseudonymizer
) -> set[bytes]:
    """The Redis keys of every customer and terminal of ``history``, by their pseudonyms."""
    pseudonym = pseudonymizer.pseudonym
    prefix = f"fraudstream:{namespace}:{KEY_LAYOUT}:"
    return {
        *(f"{prefix}{CUSTOMER}:{pseudonym(CUSTOMER, c)}".encode() for c in history.customer_id),
        *(f"{prefix}{TERMINAL}:{pseudonym(TERMINAL, t)}".encode() for t in history.terminal_id),
    }


def backtest_of(
    history: TransactionHistory, bundle: Path, tmp_path: Path, start: dt.datetime | None = None
) -> tuple[dict[str, float], set[str]]:
    """``fraudstream backtest`` of ``history`` (``--from start``): scores and alerted ids."""
    path, out = tmp_path / "history.jsonl", tmp_path / "backtest.parquet"
    write_jsonl(history, path)
    since = [] if start is None else ["--from", start.isoformat()]
    args = ["--input", str(path), "--models", str(bundle), "--out", str(out), *since]
    assert fraudstream(["backtest", *args, "--no-progress"]) == 0
    table = pq.read_table(out).to_pydict()
    alerts = {t for t, a in zip(table["transaction_id"], table["is_alert"], strict=True) if a}
    return dict(zip(table["transaction_id"], table["score"], strict=True)), alerts


def assert_reasons_equal(alerts: dict[str, Alert], backtest_parquet: Path) -> None:
    """Each alert's reasons (inputs, contributions, values) and baseline are the backtest's
    (``backtest_parquet``, from ``fraudstream backtest``) to :data:`TOLERANCE`."""
    table = pq.read_table(backtest_parquet).to_pydict()
    expected = {
        t: (reasons, baseline)
        for t, reasons, baseline in zip(table["transaction_id"], table["reasons"],
                                        table["reasons_baseline"], strict=True)
    }
    assert alerts
    for transaction_id, alert in alerts.items():
        reasons, baseline = expected[transaction_id]
        assert alert.reasons, f"alert {transaction_id} without reasons"
        assert [r.feature for r in alert.reasons] == [r["feature"] for r in reasons]
        np.testing.assert_allclose(
            [(r.contribution, r.value) for r in alert.reasons],
            [(r["contribution"], r["value"]) for r in reasons], rtol=TOLERANCE, atol=TOLERANCE,
            err_msg=f"reasons of {transaction_id}",
        )
        assert alert.reasons_baseline == baseline


def assert_scores_equal(
    scores: dict[str, float],
    alerts: set[str],
    expected: dict[str, float],
    expected_alerts: set[str],
) -> None:
    """Every transaction scored, each score within :data:`TOLERANCE` of the backtest's
    (``expected``), and the same alerts (some, not all)."""
    assert set(scores) == set(expected)
    ids = sorted(expected)
    difference = np.abs(np.array([scores[t] for t in ids]) - np.array([expected[t] for t in ids]))
    assert float(difference.max()) <= TOLERANCE, (
        f"{int((difference > TOLERANCE).sum())} of {len(ids)} scores differ by more than "
        f"{TOLERANCE}; worst {float(difference.max()):.3g}"
    )
    assert 0 < len(expected_alerts) < len(ids)
    assert alerts == expected_alerts
