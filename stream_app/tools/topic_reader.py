"""Read one topic without a consumer group: from the start or a moment, to its end or following.

The reader assigns itself every partition, so reading never moves anyone's committed
offsets. ``since_ms`` seeks each partition with ``offsets_for_times`` and also drops older
records, so a partition without newer records yields nothing. Without ``follow`` the reader
stops once every partition reached the high watermark of its latest Fetch response
(tansu's ListOffsets end offsets are wrong, see the broker notes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream_app.connections import Kafka, kafka_connection, kafka_consumer, start_client
from stream_app.errors import ConfigError, DependencyUnavailable

POLL_TIMEOUT_MS = 200
MAX_RECORDS = 2_000
FETCH_MAX_WAIT_MS = 50
"""An empty fetch is answered after this (tansu: even if records arrive meanwhile), so a
follower sees a record up to this late; latency measurements pass a smaller value."""

OnRecords = Callable[[TopicPartition, Sequence[Any]], None]
"""Called with each fetched partition's records (aiokafka ``ConsumerRecord`` s)."""


async def read_topic(
    kafka: Kafka,
    topic: str,
    on_records: OnRecords,
    *,
    since_ms: int | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> None:
    """Hand every record of ``topic`` to ``on_records``, partition batch by partition batch.

    Returns at the end of the topic, or with ``follow`` when ``stop`` is set (or the task
    is cancelled). ``fetch_max_wait_ms`` is the consumer's; lower means fresher records
    and more fetch requests.
    """
    consumer = kafka_consumer(
        kafka,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    try:
        await start_client(consumer, kafka)
        assigned = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(assigned)
        await _seek(consumer, assigned, since_ms)
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(
                *assigned, timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS
            )
            for tp, records in batches.items():
                if since_ms is not None:
                    records = [r for r in records if r.timestamp >= since_ms]
                if records:
                    on_records(tp, records)
            if not follow and await _at_end(consumer, assigned):
                return
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot read {topic!r} from the Kafka broker at "
            f"{kafka_connection(kafka).bootstrap}: {exc!r}; check "
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


async def _at_end(consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> bool:
    for tp in assigned:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
