"""What the console holds in memory, read from the namespace's topics: every part bounded.

- :class:`AlertBook`: the latest alerts (``console_max_alerts``) by id, in arrival order;
- :class:`RecentTransactions`: each customer's last transactions (the customers least
  recently seen are dropped past a cap);
- :class:`Bounded`: the latest scores and labels by transaction id.

Records that do not decode are counted and skipped (the worker's dead-letter topic is where
bad input is kept).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from stream_app.contracts import (
    Alert,
    Label,
    Transaction,
    decode_alert,
    decode_label,
    decode_score,
    decode_transaction,
)
from stream_app.errors import ContractError

K = TypeVar("K")
V = TypeVar("V")

TRANSACTIONS_PER_CUSTOMER = 20
MAX_CUSTOMERS = 50_000
MAX_OUTCOMES = 200_000
MAX_FILTER_CHARS = 64


@dataclass(frozen=True)
class AlertFilter:
    """The list's filters: exact customer / terminal / model version, a lowest score."""

    customer: str = ""
    terminal: str = ""
    model_version: str = ""
    min_score: float = 0.0

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AlertFilter:
        """The filter of a request's query (``customer``, ``terminal``, ``model``,
        ``min_score``); a bad value is a :class:`ValueError` naming it."""
        texts = {}
        for name in ("customer", "terminal", "model"):
            value = query.get(name, "").strip()
            if len(value) > MAX_FILTER_CHARS:
                raise ValueError(f"{name} filter is longer than {MAX_FILTER_CHARS} characters")
            texts[name] = value
        raw = query.get("min_score", "").strip()
        try:
            min_score = float(raw) if raw else 0.0
        except ValueError:
            raise ValueError(f"min_score {raw!r} is not a number from 0 to 1") from None
        if not 0.0 <= min_score <= 1.0:  # also refuses NaN
            raise ValueError(f"min_score {raw!r} is not a number from 0 to 1")
        return cls(texts["customer"], texts["terminal"], texts["model"], min_score)

    def matches(self, alert: Alert) -> bool:
        """Whether ``alert`` passes every filter that is set."""
        return (
            (not self.customer or alert.customer_id == self.customer)
            and (not self.terminal or alert.terminal_id == self.terminal)
            and (not self.model_version or alert.model_version == self.model_version)
            and alert.score >= self.min_score
        )


class Bounded(Generic[K, V]):
    """A mapping that forgets its least recently written keys past ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)


class AlertBook:
    """The latest ``capacity`` alerts by id; a re-delivered alert (same id) is kept once."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self.received = 0

    def add(self, alert: Alert) -> bool:
        """Keep ``alert``; False when its id is already held."""
        if alert.alert_id in self._alerts:
            return False
        self._alerts[alert.alert_id] = alert
        self.received += 1
        while len(self._alerts) > self._capacity:
            self._alerts.popitem(last=False)
        return True

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def latest(self, where: AlertFilter, limit: int) -> list[Alert]:
        """Up to ``limit`` alerts passing ``where``, newest event time first (partitions
        are read side by side, so arrival order is not time order)."""
        found = [alert for alert in reversed(self._alerts.values()) if where.matches(alert)]
        return heapq.nlargest(limit, found, key=lambda alert: alert.event_time)

    def __len__(self) -> int:
        return len(self._alerts)

    def __iter__(self) -> Iterator[Alert]:
        return iter(self._alerts.values())


class RecentTransactions:
    """Each customer's last ``per_customer`` transactions (distinct ids)."""

    def __init__(
        self, per_customer: int = TRANSACTIONS_PER_CUSTOMER, customers: int = MAX_CUSTOMERS
    ) -> None:
        self._per_customer = per_customer
        self._by_customer: Bounded[str, deque[Transaction]] = Bounded(customers)

    def add(self, tx: Transaction) -> None:
        recent = self._by_customer.get(tx.customer_id)
        if recent is None:
            recent = deque(maxlen=self._per_customer)
        elif any(t.transaction_id == tx.transaction_id for t in recent):
            return
        recent.append(tx)
        self._by_customer.put(tx.customer_id, recent)

    def of(self, customer_id: str) -> list[Transaction]:
        """The customer's transactions held, newest event time first."""
        recent = self._by_customer.get(customer_id) or ()
        return sorted(recent, key=lambda t: t.event_time, reverse=True)


@dataclass(frozen=True)
class Outcome:
    """A transaction's known outcome: from the labels topic, or decided here by an analyst."""

    is_fraud: bool
    label_time: str
    analyst: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": "fraud" if self.is_fraud else "genuine",
            "label_time": self.label_time,
            "analyst": self.analyst,
        }


class ConsoleState:
    """Everything the console read, fed record batch by record batch."""

    def __init__(self, max_alerts: int) -> None:
        self.alerts = AlertBook(max_alerts)
        self.transactions = RecentTransactions()
        self.scores: Bounded[str, float] = Bounded(MAX_OUTCOMES)
        self.outcomes: Bounded[str, Outcome] = Bounded(MAX_OUTCOMES)
        self.invalid: dict[str, int] = {"alerts": 0, "transactions": 0, "labels": 0, "scores": 0}
        self.version = 0
        """Grows whenever what the alert list shows may have changed."""

    def on_alerts(self, values: Iterable[bytes | None]) -> None:
        for alert in self._decoded(values, decode_alert, "alerts"):
            if self.alerts.add(alert):
                self.version += 1

    def on_transactions(self, values: Iterable[bytes | None]) -> None:
        for tx in self._decoded(values, decode_transaction, "transactions"):
            self.transactions.add(tx)

    def on_scores(self, values: Iterable[bytes | None]) -> None:
        for score in self._decoded(values, decode_score, "scores"):
            self.scores.put(score.transaction_id, score.score)

    def on_labels(self, values: Iterable[bytes | None]) -> None:
        for label in self._decoded(values, decode_label, "labels"):
            self.record_label(label)

    def record_label(self, label: Label, analyst: str | None = None) -> None:
        """Note ``label``; a label read back from the topic keeps the analyst who made it."""
        known = self.outcomes.get(label.transaction_id)
        label_time = label.label_time.isoformat()
        if (
            analyst is None
            and known is not None
            and (known.is_fraud, known.label_time) == (label.is_fraud, label_time)
        ):
            analyst = known.analyst
        self.outcomes.put(label.transaction_id, Outcome(label.is_fraud, label_time, analyst))
        self.version += 1

    def _decoded(self, values: Iterable[bytes | None], decode: Any, kind: str) -> Iterator[Any]:
        for value in values:
            try:
                if value is None:
                    raise ContractError("$", "is a tombstone")
                yield decode(value)
            except (ContractError, msgspec.DecodeError):
                self.invalid[kind] += 1


def alert_summary(alert: Alert, outcome: Outcome | None) -> dict[str, Any]:
    """An alert as a row of the list."""
    return {
        "alert_id": alert.alert_id,
        "transaction_id": alert.transaction_id,
        "customer_id": alert.customer_id,
        "terminal_id": alert.terminal_id,
        "amount": alert.amount,
        "currency": alert.currency,
        "score": alert.score,
        "threshold": alert.threshold,
        "model_version": alert.model_version,
        "event_time": alert.event_time.isoformat(),
        "processed_at": alert.processed_at.isoformat(),
        "top_reasons": [r.feature for r in alert.reasons[:3]],
        "outcome": None if outcome is None else outcome.as_json(),
    }


def alert_detail(
    alert: Alert,
    outcome: Outcome | None,
    recent: Sequence[Transaction],
    scores: Bounded[str, float],
    outcomes: Bounded[str, Outcome],
) -> dict[str, Any]:
    """An alert with every field (reasons as published, whatever fields they carry) and
    its customer's recent transactions with their scores and outcomes where known."""
    detail: dict[str, Any] = msgspec.to_builtins(alert)
    detail["outcome"] = None if outcome is None else outcome.as_json()
    detail["recent_transactions"] = [_recent(t, scores, outcomes) for t in recent]
    return detail


def _recent(
    tx: Transaction, scores: Bounded[str, float], outcomes: Bounded[str, Outcome]
) -> dict[str, Any]:
    outcome = outcomes.get(tx.transaction_id)
    return {
        "transaction_id": tx.transaction_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
        "currency": tx.currency,
        "event_time": tx.event_time.isoformat(),
        "score": scores.get(tx.transaction_id),
        "outcome": None if outcome is None else outcome.as_json(),
    }
