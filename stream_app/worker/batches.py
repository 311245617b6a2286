"""The values handed from stage to stage. Each is frozen: a stage returns a new one.

fetch -> decode -> :class:`Batch` -> align, label barrier -> :class:`Batch` -> windows ->
:class:`Windowed` -> score -> :class:`Scored` -> publish -> :class:`Sent` -> acknowledge
-> :class:`Sent` -> store -> :class:`Batch` -> commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from stream_app.contracts import Transaction
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.store import ComputedWindows, Progress
from stream_app.worker.publisher import OutRecord

Source: TypeAlias = ConsumerRecord[bytes, bytes]
"""A transaction's consumed record: its topic, partition and offset, its raw key and value
(what a dead letter carries) and its headers."""


@dataclass(frozen=True, eq=False, slots=True)
class Batch:
    """Validated records of a fetch, and the offsets to commit once they are processed.

    ``events[i]`` is ``transactions[i]`` as the window store takes it, ``sources[i]`` its
    partition and offset. Decoded, the transactions are in fetch order; aligned, in
    (event time, partition, offset) order, with the labels due before them.
    ``fetched_at`` is the ``perf_counter`` of the fetch (of the oldest record, once
    aligned), for the in-worker latency. Per labels partition, ``last_label_time_us`` is
    the label time of its last label, ``oldest_label_time_us`` the oldest of the fetch.
    ``progress``: what the batch tells the window store when other workers share the
    terminal windows (:class:`~stream_app.features.store.Progress`).
    """

    generation: int
    fetched_at: float
    transactions: tuple[Transaction, ...] = ()
    events: tuple[TransactionEvent, ...] = ()
    sources: tuple[Source, ...] = ()
    labels: tuple[LabelEvent, ...] = ()
    dead_letters: tuple[OutRecord, ...] = ()
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    last_label_time_us: Mapping[TopicPartition, int] = field(default_factory=dict)
    oldest_label_time_us: Mapping[TopicPartition, int] = field(default_factory=dict)
    progress: Progress | None = None

    @property
    def max_event_time_us(self) -> int:
        """The newest transaction's event time (-1 without transactions)."""
        return max((e.event_time_us for e in self.events), default=-1)

    @property
    def empty(self) -> bool:
        """Nothing to apply, publish or commit."""
        return not (self.transactions or self.labels or self.dead_letters or self.offsets)


@dataclass(frozen=True, eq=False, slots=True)
class Windowed:
    """A batch whose windows are being computed (``computed`` resolves to them; None when
    the batch had no events)."""

    batch: Batch
    computed: asyncio.Future[ComputedWindows | None]


@dataclass(frozen=True, eq=False, slots=True)
class Scored:
    """A batch applied to the windows and scored: the records to publish."""

    batch: Batch
    computed: ComputedWindows | None
    records: tuple[OutRecord, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Sent:
    """A scored batch whose records were handed to the producer (``futures`` resolve when
    the broker acknowledged them)."""

    scored: Scored
    futures: tuple[asyncio.Future[Any], ...]
