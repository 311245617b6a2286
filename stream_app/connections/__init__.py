"""Every Kafka and Redis client of fraudstream is built here, from :class:`Settings`.

:class:`KafkaConnection` (``kafka.py``) and :class:`RedisConnection` (``redis.py``) hold
what a client needs: addresses, TLS files, SASL or ACL credentials. They are frozen and
picklable, build their TLS contexts and clients on demand, and never show a secret in
``repr``::

    kafka = KafkaConnection.from_settings(settings)
    consumer = kafka_consumer(kafka, group_id="g")   # AIOKafkaConsumer, TLS/SASL applied
    await start_client(consumer, kafka)              # refused logins: AuthenticationFailed
    store_client = RedisConnection.from_settings(settings).async_client()

Functions taking a connection also take a bare bootstrap address or Redis URL (plaintext,
no credentials). :func:`check_kafka` / :func:`check_redis`: a refused login or untrusted
certificate is :class:`~stream_app.errors.AuthenticationFailed` (retrying cannot help), a
server that does not answer :class:`~stream_app.errors.DependencyUnavailable`.
"""

from stream_app.connections.checks import CHECK_TIMEOUT_S, tls_failure
from stream_app.connections.kafka import (
    Kafka,
    KafkaConnection,
    check_kafka,
    kafka_admin,
    kafka_connection,
    kafka_consumer,
    kafka_producer,
    start_client,
)
from stream_app.connections.redis import (
    Redis,
    RedisConnection,
    check_redis,
    redis_connection,
    redis_failure,
)

__all__ = [
    "CHECK_TIMEOUT_S",
    "Kafka",
    "KafkaConnection",
    "Redis",
    "RedisConnection",
    "check_kafka",
    "check_redis",
    "kafka_admin",
    "kafka_connection",
    "kafka_consumer",
    "kafka_producer",
    "redis_connection",
    "redis_failure",
    "start_client",
    "tls_failure",
]
