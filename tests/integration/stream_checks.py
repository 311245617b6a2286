"""Checks of what a worker left behind: every transaction of a history in Redis exactly once."""

from __future__ import annotations

from collections import defaultdict

import redis

from stream_app.features.incremental import (
    CustomerWindow,
    TerminalWindow,
    decode_customer,
    decode_terminal,
)
from stream_app.features.redis_store import KEY_LAYOUT
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


def windows_match(
    client: redis.Redis, namespace: str, history: TransactionHistory, width: int
) -> str:
    """'' when Redis holds exactly the history's windows (customer rows of ``width``
    features), else what differs first."""
    customers, terminals, customer_frauds, terminal_frauds = _expected_windows(history)
    prefix = f"fraudstream:{namespace}:{KEY_LAYOUT}:"
    for kind, expected, frauds in (
        ("cust", customers, customer_frauds),
        ("term", terminals, terminal_frauds),
    ):
        for key, ids in expected.items():
            state = client.hget(f"{prefix}{kind}:{key}", "s")
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
