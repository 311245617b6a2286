"""Print the alerts of a namespace: readable lines or one ``alert.v1`` JSON object per line.

Reading is :func:`~stream_app.tools.topic_reader.read_topic` (no consumer group, seek by
time, stop at the end of the topic or follow it); this module decodes and shows alerts,
their customer and terminal ids masked (:func:`~stream_app.pseudonyms.mask_id`) unless
asked to show them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import msgspec
from aiokafka import TopicPartition

from stream_app.connections import Kafka
from stream_app.contracts.codec import decode_alert
from stream_app.contracts.records import Alert, Reason
from stream_app.errors import ContractError
from stream_app.pseudonyms import CUSTOMER, TERMINAL, Pseudonymizer, mask_id
from stream_app.tools.topic_reader import read_topic

TOP_REASONS = 3


def format_alert(alert: Alert) -> str:
    """One readable line: time, customer, terminal, amount, score vs threshold, the score of
    the explanation baseline and the top reasons, each with how much it raised the score."""
    when = alert.event_time.isoformat().replace("+00:00", "Z")
    reasons = ", ".join(format_reason(reason) for reason in alert.reasons[:TOP_REASONS])
    return (
        f"{when}  customer {alert.customer_id:>8}  terminal {alert.terminal_id:>8}  "
        f"{alert.amount:>10} {alert.currency}  score {alert.score:.3f} >= "
        f"{alert.threshold:.3f}  baseline {alert.reasons_baseline:.3f}: "
        f"{reasons or 'no reasons given'}"
    )


def format_reason(reason: Reason) -> str:
    """``+0.31 sequence model (p=0.93)``, ``+0.12 autoencoder error (1.8e+03)`` or
    ``+0.05 feature = value``: the contribution in probability units, then what it is."""
    if reason.feature == "sequence_probability":
        what = f"sequence model (p={reason.value:.2f})"
    elif reason.feature == "autoencoder_error":
        what = f"autoencoder error ({reason.value:.3g})"
    else:
        what = f"{reason.feature} = {reason.value:.6g}"
    return f"{reason.contribution:+.2f} {what}"


def alert_json(alert: Alert) -> str:
    """``alert`` as one line of ``alert.v1`` JSON."""
    return msgspec.json.encode(alert).decode()


def masked(alert: Alert, pseudonymizer: Pseudonymizer | None) -> Alert:
    """``alert`` with its customer and terminal ids masked (tags from ``pseudonymizer``)."""
    return msgspec.structs.replace(
        alert,
        customer_id=mask_id(CUSTOMER, alert.customer_id, pseudonymizer),
        terminal_id=mask_id(TERMINAL, alert.terminal_id, pseudonymizer),
    )


def printer(
    as_json: bool,
    out: TextIO | None = None,
    *,
    show_ids: bool = False,
    pseudonymizer: Pseudonymizer | None = None,
) -> Callable[[Alert], None]:
    """A callback printing each alert (readable or JSON) and flushing, for pipes; the ids
    are :func:`masked` unless ``show_ids``."""

    def show(alert: Alert) -> None:
        if not show_ids:
            alert = masked(alert, pseudonymizer)
        stream = out if out is not None else sys.stdout
        stream.write((alert_json(alert) if as_json else format_alert(alert)) + "\n")
        stream.flush()

    return show


def warn_invalid(error: ContractError, where: str) -> None:
    """Report an invalid record on the alerts topic to stderr (and carry on)."""
    print(f"skipping invalid alert at {where}: {error}", file=sys.stderr, flush=True)


def warn_invalid_masked(error: ContractError, where: str) -> None:
    """:func:`warn_invalid` naming only the field: the problem may quote the record."""
    print(
        f"skipping invalid alert at {where}: {error.field} is invalid (--show-ids tells "
        "why, quoting the record)",
        file=sys.stderr,
        flush=True,
    )


async def consume_alerts(
    kafka: Kafka,
    topic: str,
    on_alert: Callable[[Alert], None],
    *,
    since_ms: int | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    on_invalid: Callable[[ContractError, str], None] = warn_invalid,
) -> int:
    """Call ``on_alert`` for each alert on ``topic``; return how many there were.

    Stops at the end of the topic, or with ``follow`` when ``stop`` is set (or the task
    is cancelled). Invalid records go to ``on_invalid`` with their position.
    """
    count = 0

    def on_records(tp: TopicPartition, records: Sequence[Any]) -> None:
        nonlocal count
        for record in records:
            try:
                alert = decode_alert(record.value or b"")
            except ContractError as error:
                on_invalid(error, f"{tp.topic}[{tp.partition}]@{record.offset}")
                continue
            on_alert(alert)
            count += 1

    await read_topic(kafka, topic, on_records, since_ms=since_ms, follow=follow, stop=stop)
    return count
