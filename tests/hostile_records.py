"""Generated hostile input beside valid traffic, for the hostile-input suite and benchmark.

:func:`hostile_traffic` interleaves valid transactions (every one must be scored, the late
ones flagged) with bad records of every kind below (every one must reach the DLQ with a
reason), on the transactions and labels topics. Valid event times start at ``T0`` (2018)
and move forward, so only the records built to be late are late.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from stream_app.contracts import Label, Transaction, encode_label, encode_transaction

T0 = dt.datetime(2018, 4, 2, tzinfo=dt.UTC)
MAX_PAYLOAD_BYTES = 4096
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """One record to produce: its topic kind (``transactions`` or ``labels``), key, value."""

    kind: str
    key: bytes
    value: bytes | None


@dataclass
class Traffic:
    """Records in produce order, and what the worker must make of them."""

    records: list[Record] = field(default_factory=list)
    valid: dict[str, bool] = field(default_factory=dict)
    """Valid transaction ids, each with whether it must be flagged late."""
    bad: list[tuple[str, Record]] = field(default_factory=list)
    """Bad records with their kind of badness."""
    pause_at: int | None = None
    """Produce the records before this position, wait until the worker scored or
    dead-lettered every one, then the rest (so that late records arrive after the newer
    events of their windows were applied, not in one batch with them)."""

    def add_bad(self, kind: str, record: Record) -> None:
        self.records.append(record)
        self.bad.append((kind, record))

    def bad_counts(self) -> dict[str, int]:
        """How many bad records of each kind."""
        return dict(Counter(kind for kind, _ in self.bad))


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _tx_document(tx_id: str, customer: str, at: dt.datetime) -> dict[str, object]:
    return {
        "schema": "transaction.v1",
        "transaction_id": tx_id,
        "customer_id": customer,
        "terminal_id": f"k-{customer}",
        "amount": "12.50",
        "currency": "EUR",
        "event_time": at.isoformat().replace("+00:00", "Z"),
    }


Mutation = Callable[[dict[str, object], np.random.Generator], bytes | None]


def _pick(options: Sequence[T], rng: np.random.Generator) -> T:
    return options[int(rng.integers(len(options)))]


def _without(doc: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in doc.items() if k != key}


def _with(key: str, value: object) -> Mutation:
    return lambda doc, _: _json({**doc, key: value})


def _duplicate_key(doc: dict[str, object], rng: np.random.Generator) -> bytes:
    name = _pick(["amount", "customer_id", "event_time", "transaction_id"], rng)
    text = _json(doc).decode()
    return (text[:-1] + f',"{name}":{json.dumps(str(doc[name])[::-1] or "x")}' + "}").encode()


def _control_id(doc: dict[str, object], rng: np.random.Generator) -> bytes:
    char = chr(_pick([0, 1, 9, 10, 13, 27, 0x7F, 0x85, 0x9F], rng))
    name = _pick(["transaction_id", "customer_id", "terminal_id"], rng)
    return _json({**doc, name: f"c{char}x"})


def _nested(doc: dict[str, object], _: np.random.Generator) -> bytes:
    return b'{"schema":"transaction.v1","amount":' + b"[" * 500 + b"]" * 500 + b"}"


_TRANSACTION_MUTATIONS: dict[str, Mutation] = {
    "not json": lambda doc, rng: bytes(rng.integers(0, 256, 40, dtype=np.uint8)),
    "truncated json": lambda doc, rng: _json(doc)[: int(rng.integers(1, 60))],
    "invalid utf-8": lambda doc, _: _json(doc).replace(b"EUR", b"E\xffR"),
    "not an object": lambda doc, rng: _json(
        [doc] if rng.random() < 0.5 else str(doc["transaction_id"])
    ),
    "unknown schema": _with("schema", "transaction.v2"),
    "missing field": lambda doc, rng: _json(_without(doc, _pick(list(doc), rng))),
    "unknown field": _with("cvv", "123"),
    "bad amount": lambda doc, rng: _json(
        {**doc, "amount": _pick(["-3", "1e5", "NaN", "12.34567", "007", 12.5, ""], rng)}
    ),
    "bad currency": _with("currency", "eur"),
    "bad time": lambda doc, rng: _json(
        {
            **doc,
            "event_time": _pick(
                [
                    "2018-04-02T10:00:00",
                    "2018-02-30T10:00:00Z",
                    "2018-04-02t10:00:00Z",
                    "2018-04-02T10:00:00.1234567Z",
                    "yesterday",
                    1522663200,
                ],
                rng,
            ),
        }
    ),
    "far future": lambda doc, rng: _json(
        {**doc, "event_time": _pick(["9999-12-31T23:59:59Z", _days_ahead(2)], rng)}
    ),
    "duplicate key": _duplicate_key,
    "control character in id": _control_id,
    "empty id": _with("customer_id", ""),
    "id too long": _with("transaction_id", "x" * 65),
    "tombstone": lambda doc, _: None,
    "too large": lambda doc, _: _json({**doc, "pad": "x" * MAX_PAYLOAD_BYTES}),
    "deeply nested": _nested,
}


def _days_ahead(days: int) -> str:
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=days)
    return moment.isoformat().replace("+00:00", "Z")


def hostile_traffic(n_valid: int, n_bad: int, seed: int = 7) -> Traffic:
    """``n_valid`` valid transactions (some late) and about ``n_bad`` bad records of every
    kind (conflicts and bad labels included), shuffled into one produce order per topic."""
    rng = np.random.default_rng(seed)
    traffic = Traffic()
    customers = [f"c{i}" for i in range(max(n_valid // 20, 4))]
    step = dt.timedelta(minutes=5)
    recent: list[tuple[str, str, dt.datetime]] = []
    kinds = list(_TRANSACTION_MUTATIONS)
    extra = ["conflict", "bad label", "far-future label"]
    bad_every = n_valid / max(n_bad, 1)
    made_bad = 0
    for i in range(n_valid):
        customer = customers[i % len(customers)]
        at = T0 + i * step
        tx_id = f"v{i}"
        if i == n_valid // 2:
            traffic.pause_at = len(traffic.records)
        late = i % 97 == 96 and i > n_valid // 2  # its windows are 60 days newer
        if late:
            at = T0 + (i - 96) * step - dt.timedelta(days=60)
        traffic.records.append(
            Record("transactions", customer.encode(), encode_transaction(
                Transaction(tx_id, customer, f"k-{customer}", "12.50", "EUR", at)
            ))
        )  # fmt: skip
        traffic.valid[tx_id] = late
        if not late:
            recent.append((tx_id, customer, at))
        while made_bad < (i + 1) / bad_every:
            made_bad += 1
            kind = _pick(kinds + extra, rng)
            doc = _tx_document(f"b{made_bad}", customer, at)
            if kind == "conflict":
                old_id, old_customer, old_at = _pick(recent[-50:], rng)
                doc = {**_tx_document(old_id, old_customer, old_at), "amount": "99.99"}
                traffic.add_bad(kind, Record("transactions", old_customer.encode(), _json(doc)))
            elif kind in ("bad label", "far-future label"):
                traffic.add_bad(kind, Record("labels", customer.encode(), _label(kind, at, rng)))
            else:
                value = _TRANSACTION_MUTATIONS[kind](doc, rng)
                traffic.add_bad(kind, Record("transactions", customer.encode(), value))
    return traffic


def _label(kind: str, at: dt.datetime, rng: np.random.Generator) -> bytes:
    if kind == "far-future label":
        label = Label("x", "c0", "k-c0", at, dt.datetime(9999, 1, 1, tzinfo=dt.UTC), True)
        return encode_label(label)
    document = {
        "schema": "label.v1",
        "transaction_id": "x",
        "customer_id": "c0",
        "terminal_id": "k-c0",
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "label_time": (at - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "is_fraud": bool(rng.random() < 0.5),
    }
    return _json(document)  # label_time before event_time
