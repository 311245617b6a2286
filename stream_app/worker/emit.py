"""Dead letters: an invalid input record, kept byte for byte with why and where it failed.

The value is the raw payload, the key the raw key; headers say what was wrong
(``fraudstream.reason``, ``fraudstream.field``) and where the record came from
(``fraudstream.source.topic`` / ``.partition`` / ``.offset``), so it can be fixed and
replayed. A dead letter goes to the DLQ partition with the number of its source partition
(modulo the DLQ's count), keeping each source partition's dead letters in order.
"""

from __future__ import annotations

from stream_app.errors import ContractError
from stream_app.worker.publisher import OutRecord

REASON = "fraudstream.reason"
FIELD = "fraudstream.field"
SOURCE_TOPIC = "fraudstream.source.topic"
SOURCE_PARTITION = "fraudstream.source.partition"
SOURCE_OFFSET = "fraudstream.source.offset"


def dead_letter(
    dlq_topic: str,
    dlq_partitions: int,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp_ms: int | None,
    error: ContractError,
) -> OutRecord:
    """The DLQ record of a record at ``source_topic[source_partition]@source_offset``."""
    return OutRecord(
        topic=dlq_topic,
        key=key,
        value=b"" if value is None else value,
        timestamp_ms=timestamp_ms,
        headers=(
            (REASON, error.problem.encode()),
            (FIELD, error.field.encode()),
            (SOURCE_TOPIC, source_topic.encode()),
            (SOURCE_PARTITION, str(source_partition).encode()),
            (SOURCE_OFFSET, str(source_offset).encode()),
        ),
        partition=source_partition % dlq_partitions,
    )
