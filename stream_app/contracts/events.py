"""The events the window stores take: decoded records reduced to what the windows need."""

from __future__ import annotations

from typing import NamedTuple


class TransactionEvent(NamedTuple):
    """One transaction as the window store needs it (times in µs since the epoch, UTC)."""

    transaction_id: str
    customer_id: str
    terminal_id: str
    event_time_us: int
    amount: float


class LabelEvent(NamedTuple):
    """The outcome of a transaction, known from ``label_time_us`` on."""

    transaction_id: str
    customer_id: str
    terminal_id: str
    event_time_us: int
    label_time_us: int
    is_fraud: bool
