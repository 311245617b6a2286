"""Checks of what a worker left behind: every transaction of a history in Redis exactly once."""

from __future__ import annotations

from collections import defaultdict

import msgspec
import redis

from stream_app.features.incremental import CustomerWindow, TerminalWindow
from stream_app.sources.history import TransactionHistory


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


def windows_match(client: redis.Redis, namespace: str, history: TransactionHistory) -> str:
    """'' when Redis holds exactly the history's windows, else what differs first."""
    customers, terminals, customer_frauds, terminal_frauds = _expected_windows(history)
    prefix = f"fraudstream:{namespace}:v1:"
    for kind, expected, frauds, cls in (
        ("cust", customers, customer_frauds, CustomerWindow),
        ("term", terminals, terminal_frauds, TerminalWindow),
    ):
        for key, ids in expected.items():
            state = client.hget(f"{prefix}{kind}:{key}", "s")
            if state is None:
                return f"{kind}:{key} missing"
            window = msgspec.msgpack.decode(state, type=cls)
            if sorted(window.transaction_ids) != sorted(ids):
                return f"{kind}:{key} holds {sorted(window.transaction_ids)}, not {sorted(ids)}"
            labelled = [label[0] for label in window.fraud_labels]
            if sorted(labelled) != sorted(frauds.get(key, set())):
                return f"{kind}:{key} fraud labels {labelled}, not {sorted(frauds.get(key, []))}"
    return ""
