"""Bytes off a topic to the worker's events: a record and its window-store event, or a
:class:`~stream_app.errors.ContractError` naming what is wrong."""

from __future__ import annotations

from stream_app.contracts.codec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    decode_label_fields,
    decode_transaction_us,
)
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.contracts.records import Transaction
from stream_app.errors import ContractError

TOMBSTONE = "the record has no value (a tombstone); send one JSON event"


def decode_transaction_event(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[Transaction, TransactionEvent]:
    """A ``transaction.v1`` payload as its record and as the window store's event."""
    if raw is None:
        raise ContractError("$", TOMBSTONE, "tombstone")
    tx, event_us = decode_transaction_us(raw, max_bytes)
    event = TransactionEvent(
        tx.transaction_id, tx.customer_id, tx.terminal_id, event_us, tx.amount_float
    )
    return tx, event


def decode_label_event(raw: bytes | None, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> LabelEvent:
    """A ``label.v1`` payload as the window store's event."""
    if raw is None:
        raise ContractError("$", TOMBSTONE, "tombstone")
    return LabelEvent(*decode_label_fields(raw, max_bytes))
