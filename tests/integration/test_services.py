"""The private servers the fixtures start: a redis-server and a tansu Kafka broker."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from stream_app.errors import ConfigError, LocalServiceError
from stream_app.local_services import RunningService, start_redis
from stream_app.topics import ensure_topics_sync
from tests.conftest import NewTopicFactory

pytestmark = pytest.mark.integration

MESSAGES = 100
PARTITIONS = 4
BASE_TIMESTAMP_MS = 1_700_000_000_000


def test_redis_server_is_private_and_answers(redis_server: RunningService) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()
    assert redis_server.host == "127.0.0.1"
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_a_server_that_cannot_start_is_reported_with_its_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(LocalServiceError, match=r"(?s)redis-server exited.*in use"),
            start_redis(port=port),
        ):
            pass


def test_redis_client_starts_empty(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"


def test_tansu_round_trips_keyed_messages_through_a_consumer_group(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(PARTITIONS)
    asyncio.run(_round_trip(kafka_bootstrap, topic))


def test_new_topic_refuses_an_existing_topic_with_other_partitions(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(2)
    ensure_topics_sync(kafka_bootstrap, [topic], 2)  # existing, same count: fine
    with pytest.raises(ConfigError, match=rf"{topic}.* has 2 partitions, not 3"):
        ensure_topics_sync(kafka_bootstrap, [topic], 3)


async def _round_trip(bootstrap: str, topic: str) -> None:
    positions = await _produce(bootstrap, topic)
    partitions_by_key: defaultdict[bytes, set[int]] = defaultdict(set)
    for i, (partition, _offset) in enumerate(positions):
        partitions_by_key[_key(i)].add(partition)
    assert all(len(p) == 1 for p in partitions_by_key.values()), "a key changed partition"
    assert len({p for p, _ in positions}) > 1, "37 keys should spread over the partitions"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,  # tansu answers JoinGroup after half the session timeout
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
        received = await _consume(consumer, MESSAGES)
        await consumer.commit()
        committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()

    assert sorted(r.value for r in received) == sorted(_value(i) for i in range(MESSAGES))
    for record in received:
        i = int(record.value.decode().removeprefix("message-"))
        assert record.key == _key(i)
        assert list(record.headers) == _headers(i)
        assert record.timestamp == BASE_TIMESTAMP_MS + i
        assert (record.partition, record.offset) == positions[i]
    next_offsets = {p: 0 for p in range(PARTITIONS)}
    for partition, offset in positions:
        next_offsets[partition] = max(next_offsets[partition], offset + 1)
    assert committed == next_offsets


async def _produce(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """Send the messages; return the (partition, offset) the broker gave each one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                _value(i),
                key=_key(i),
                headers=_headers(i),
                timestamp_ms=BASE_TIMESTAMP_MS + i,
            )
            for i in range(MESSAGES)
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in metadata]


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    received: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(30):
        while len(received) < count:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.extend(records)
    return received


def _key(i: int) -> bytes:
    return f"customer-{i % 37}".encode()


def _value(i: int) -> bytes:
    return f"message-{i}".encode()


def _headers(i: int) -> list[tuple[str, bytes]]:
    return [("schema", b"transaction.v1"), ("index", str(i).encode())]
