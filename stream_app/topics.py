"""Topic names, consumer group and Redis key prefix of a namespace, and explicit topic creation.

The default namespace ``live`` uses the bare names (``transactions``, ``labels``,
``fraud-alerts``, ``transaction-scores``, ``transactions-dlq``, ``shadow-scores``); any
other namespace prefixes them (``replay-x.transactions``), so a replay never mixes with
live traffic::

    topics = stream_topics("replay-x")
    await ensure_topics(kafka, topics.all, partitions=4, replication=1)

Topics are always created explicitly and then checked: the tansu broker silently drops
records sent to a topic it does not know, so nothing may rely on auto-creation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from stream_app.connections import Kafka, kafka_admin, kafka_connection, start_client
from stream_app.errors import ConfigError, DependencyUnavailable

DEFAULT_NAMESPACE = "live"
WARMUP = "fraudstream.warmup"
"""The header (value ``1``) of a replay's warm-up transactions: applied to the windows, not
scored, outside the ``live`` namespace (stream_app.worker.score)."""
NAMESPACE_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
"""1..40 characters of ``[a-z0-9-]``, not starting or ending with ``-``."""

TRANSACTIONS = "transactions"
LABELS = "labels"
ALERTS = "fraud-alerts"
SCORES = "transaction-scores"
DLQ = "transactions-dlq"
SHADOW = "shadow-scores"

ADMIN_REQUEST_TIMEOUT_MS = 10_000
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class StreamTopics:
    """Everything a namespace isolates: its topics, its consumer group, its Redis keys."""

    namespace: str
    transactions: str
    labels: str
    alerts: str
    scores: str
    dlq: str
    shadow: str
    consumer_group: str
    redis_key_prefix: str

    @property
    def all(self) -> tuple[str, ...]:
        """Every topic of the namespace (inputs first)."""
        return (self.transactions, self.labels, self.alerts, self.scores, self.dlq, self.shadow)


def validate_namespace(namespace: str) -> str:
    """``namespace`` unchanged when it is a valid namespace name, else a :class:`ConfigError`."""
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ConfigError(
            f"namespace {namespace!r} is not valid: use 1 to 40 characters of a-z, 0-9 and "
            "'-', starting and ending with a letter or digit (for example 'replay-2018-09')"
        )
    return namespace


def stream_topics(namespace: str = DEFAULT_NAMESPACE) -> StreamTopics:
    """The topic names, consumer group and Redis key prefix of ``namespace``."""
    validate_namespace(namespace)
    prefix = "" if namespace == DEFAULT_NAMESPACE else f"{namespace}."
    return StreamTopics(
        namespace=namespace,
        transactions=prefix + TRANSACTIONS,
        labels=prefix + LABELS,
        alerts=prefix + ALERTS,
        scores=prefix + SCORES,
        dlq=prefix + DLQ,
        shadow=prefix + SHADOW,
        consumer_group=f"fraudstream-{namespace}",
        redis_key_prefix=f"fraudstream:{namespace}:",
    )


async def ensure_topics(
    kafka: Kafka, names: Iterable[str], partitions: int, replication: int = 1
) -> None:
    """Create each topic in ``names`` unless it exists, then check that all exist.

    Every topic gets ``partitions`` partitions; an existing topic with another partition
    count is a :class:`ConfigError`. A broker that cannot be reached, or a topic missing
    right after creation, is :class:`DependencyUnavailable`; a refused login or an
    untrusted certificate is :class:`~stream_app.errors.AuthenticationFailed`.
    """
    bootstrap = kafka_connection(kafka).bootstrap
    wanted = list(dict.fromkeys(names))
    if partitions < 1 or replication < 1:
        raise ConfigError(
            f"topics need at least 1 partition and replication 1, got partitions={partitions} "
            f"replication={replication}; set FRAUDSTREAM_TOPIC_PARTITIONS / "
            "FRAUDSTREAM_TOPIC_REPLICATION to positive numbers"
        )
    admin = kafka_admin(kafka, request_timeout_ms=ADMIN_REQUEST_TIMEOUT_MS)
    try:
        await start_client(admin, kafka)
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication) for name in wanted]
        )
        for error in response.to_object()["topic_errors"]:
            if error["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                raise ConfigError(
                    f"the broker at {bootstrap} refused to create topic {error['topic']!r} "
                    f"({partitions} partitions, replication {replication}): "
                    f"{error['error_message']} (Kafka error code {error['error_code']}); "
                    "fix the partition count or replication factor"
                )
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in wanted if n in existing])
    except KafkaError as exc:
        raise DependencyUnavailable(
            f"cannot create topics on the Kafka broker at {bootstrap}: {exc!r}; check that it "
            "runs and that FRAUDSTREAM_KAFKA_BOOTSTRAP is right"
        ) from exc
    finally:
        await admin.close()
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    for name in wanted:
        if name not in counts:
            raise DependencyUnavailable(
                f"topic {name!r} is missing on {bootstrap} right after creating it; retry"
            )
        if counts[name] != partitions:
            raise ConfigError(
                f"topic {name!r} on {bootstrap} has {counts[name]} partitions, not "
                f"{partitions}; set FRAUDSTREAM_TOPIC_PARTITIONS={counts[name]} or use "
                "another namespace"
            )


def ensure_topics_sync(
    kafka: Kafka, names: Iterable[str], partitions: int, replication: int = 1
) -> None:
    """:func:`ensure_topics` for synchronous callers (no event loop running)."""
    asyncio.run(ensure_topics(kafka, names, partitions, replication))
