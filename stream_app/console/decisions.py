"""An analyst's decision on an alert: the ``label.v1`` it publishes and its audit-log line.

The label carries the transaction's ids and event time from the alert and ``label_time``
= now (never before the event time, which the contract forbids). The audit log is a JSON
Lines file opened for appending (created with mode 0600): one object per decision, written
and flushed to disk after the label was acknowledged by the broker.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from stream_app.contracts import Alert, Label
from stream_app.errors import ConfigError

DECISIONS = {"fraud": True, "genuine": False}
"""What an analyst can decide, and the ``is_fraud`` of the label each publishes."""
AUDIT_VAR = "FRAUDSTREAM_CONSOLE_AUDIT_LOG"


def parse_decision(value: object) -> bool:
    """``is_fraud`` of a decision name; anything else is a :class:`ValueError`."""
    if not isinstance(value, str) or value not in DECISIONS:
        raise ValueError(f"decision {value!r} is not one of {', '.join(DECISIONS)}")
    return DECISIONS[value]


def label_for(alert: Alert, is_fraud: bool, now: datetime) -> Label:
    """The ``label.v1`` of a decision on ``alert`` made at ``now`` (tz-aware)."""
    return Label(
        transaction_id=alert.transaction_id,
        customer_id=alert.customer_id,
        terminal_id=alert.terminal_id,
        event_time=alert.event_time,
        label_time=max(now, alert.event_time),
        is_fraud=is_fraud,
    )


@dataclass(frozen=True)
class Decision:
    """Who decided what and when, and where the label went."""

    analyst: str
    alert_id: str
    label: Label
    topic: str
    partition: int
    offset: int

    def record(self) -> dict[str, Any]:
        """The audit-log object."""
        return {
            "at": self.label.label_time.isoformat(),
            "analyst": self.analyst,
            "alert_id": self.alert_id,
            "transaction_id": self.label.transaction_id,
            "customer_id": self.label.customer_id,
            "terminal_id": self.label.terminal_id,
            "decision": "fraud" if self.label.is_fraud else "genuine",
            "label_topic": self.topic,
            "label_partition": self.partition,
            "label_offset": self.offset,
        }


class AuditLog:
    """Appends decisions to a JSON Lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ConfigError(
                f"{AUDIT_VAR}={str(path)!r} cannot be opened for appending "
                f"({exc.strerror}); point it at a writable file"
            ) from None

    def append(self, decision: Decision) -> None:
        """Write one line for ``decision`` and flush it to disk."""
        line = json.dumps(decision.record(), ensure_ascii=False, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every decision logged so far, oldest first."""
        with self.path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
