"""Read the alerts topic: from the start or a moment, to its current end or following it.

The reader assigns itself every partition (no consumer group: reading alerts never moves
anyone's committed offsets). ``since_ms`` seeks each partition with ``offsets_for_times``
and also drops older records, so a partition without newer records shows nothing. Without
``follow`` the reader stops once every partition reached the high watermark of its latest
Fetch response (tansu's ListOffsets end offsets are wrong, see the broker notes).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream_app.contracts.codec import decode_alert
from stream_app.contracts.records import Alert
from stream_app.errors import ConfigError, ContractError, DependencyUnavailable

POLL_TIMEOUT_MS = 200
MAX_RECORDS = 1_000
TOP_REASONS = 3


def format_alert(alert: Alert) -> str:
    """One readable line: time, customer, terminal, amount, score vs threshold, top reasons."""
    when = alert.event_time.isoformat().replace("+00:00", "Z")
    reasons = ", ".join(
        f"{reason.feature}={reason.value:g} ({reason.contribution:+.3g})"
        for reason in alert.reasons[:TOP_REASONS]
    )
    return (
        f"{when}  customer {alert.customer_id:>8}  terminal {alert.terminal_id:>8}  "
        f"{alert.amount:>10} {alert.currency}  score {alert.score:.3f} >= "
        f"{alert.threshold:.3f}  {reasons or 'no reasons given'}"
    )


def alert_json(alert: Alert) -> str:
    """``alert`` as one line of ``alert.v1`` JSON."""
    return msgspec.json.encode(alert).decode()


def printer(as_json: bool, out: TextIO | None = None) -> Callable[[Alert], None]:
    """A callback printing each alert (readable or JSON) and flushing, for pipes."""

    def show(alert: Alert) -> None:
        stream = out if out is not None else sys.stdout
        stream.write((alert_json(alert) if as_json else format_alert(alert)) + "\n")
        stream.flush()

    return show


def warn_invalid(error: ContractError, where: str) -> None:
    """Report an invalid record on the alerts topic to stderr (and carry on)."""
    print(f"skipping invalid alert at {where}: {error}", file=sys.stderr, flush=True)


async def consume_alerts(
    bootstrap: str,
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
    is cancelled).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await _seek(consumer, assigned, since_ms)
        return await _read(consumer, assigned, on_alert, since_ms, follow, stop, on_invalid)
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot read {topic!r} from the Kafka broker at {bootstrap}: {exc!r}; check "
            "that it runs and that FRAUDSTREAM_KAFKA_BOOTSTRAP is right"
        ) from exc
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    topics = await consumer.topics()
    found: set[int] | None = consumer.partitions_for_topic(topic) if topic in topics else None
    if not found:
        raise ConfigError(
            f"topic {topic!r} does not exist on the broker; start a worker (or a replay) in "
            "this namespace first, or pass the --namespace it runs in"
        )
    return found


async def _seek(
    consumer: AIOKafkaConsumer, assigned: list[TopicPartition], since_ms: int | None
) -> None:
    if since_ms is None:
        await consumer.seek_to_beginning(*assigned)
        return
    found = await consumer.offsets_for_times({tp: since_ms for tp in assigned})
    for tp in assigned:
        hit = found.get(tp)
        if hit is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, hit.offset)


async def _read(
    consumer: AIOKafkaConsumer,
    assigned: list[TopicPartition],
    on_alert: Callable[[Alert], None],
    since_ms: int | None,
    follow: bool,
    stop: asyncio.Event | None,
    on_invalid: Callable[[ContractError, str], None],
) -> int:
    count = 0
    while stop is None or not stop.is_set():
        batches = await consumer.getmany(
            *assigned, timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS
        )
        for tp, records in batches.items():
            for record in records:
                if since_ms is not None and record.timestamp < since_ms:
                    continue
                try:
                    alert = decode_alert(record.value or b"")
                except ContractError as error:
                    on_invalid(error, f"{tp.topic}[{tp.partition}]@{record.offset}")
                    continue
                on_alert(alert)
                count += 1
        if not follow and await _at_end(consumer, assigned):
            break
    return count


async def _at_end(consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> bool:
    for tp in assigned:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
