"""The consumer of the hot topics: fetches, what is owned and behind, and the broker clock.

One aiokafka consumer in the worker's group reads ``transactions`` and ``labels``
(co-partitioned by ``customer_id``: the range assignor, set here, gives a worker the same
partition numbers of both; aiokafka's default, round robin, does not with three workers)
with ``getmany``, not Faust's per-message dispatch (~5k events/s here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError

from stream_app.connections import KafkaConnection, kafka_consumer
from stream_app.settings import Settings
from stream_app.topics import StreamTopics
from stream_app.worker.lag import ConsumerLag

POLL_STALE_S = 2.0
"""No fetch response for this long: the broker may hold records not seen yet."""

Fetched = Mapping[TopicPartition, Sequence[Any]]
"""Records of one fetch, by partition, each partition's in offset order."""


def batch_consumer(settings: Settings, topics: StreamTopics) -> AIOKafkaConsumer:
    """The worker's consumer: manual commits, from the earliest offset of a new group."""
    return kafka_consumer(
        KafkaConnection.from_settings(settings),
        group_id=topics.consumer_group,
        client_id=f"{topics.consumer_group}-worker",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        max_poll_interval_ms=300_000,
        # A fetch with nothing to return waits this long; tansu answers only then, even
        # when records arrive meanwhile, so this bounds the latency it adds.
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


_RATE_TIME_CONSTANT_S = 1.0


class FetchPacing:
    """The consumer's fetch wait by traffic: ``idle_ms`` while records trickle in, ``busy_ms``
    from ``busy_per_s`` records a second on.

    A broker that answers a fetch with nothing new only at the wait (tansu does) makes the
    wait the latency quantum at low traffic; at high traffic a longer wait lets each fetch
    gather more, so the broker answers fewer requests. The rate is a count decaying with a
    one-second time constant.
    """

    def __init__(self, idle_ms: int, busy_ms: int, busy_per_s: float = 1000.0) -> None:
        self.idle_ms = idle_ms
        self.busy_ms = busy_ms
        self._busy_per_s = busy_per_s
        self._level = 0.0
        self._at: float | None = None

    def wait_ms(self, records: int, now: float) -> int:
        """The wait after ``records`` arrived at ``now`` (seconds)."""
        if self._at is not None:
            self._level *= math.exp(min(0.0, self._at - now) / _RATE_TIME_CONSTANT_S)
        self._at = now
        self._level += records
        busy = self._level / _RATE_TIME_CONSTANT_S >= self._busy_per_s
        return self.busy_ms if busy else self.idle_ms


class Fetcher:
    """Fetches from the owned partitions and tells which are behind the broker."""

    def __init__(
        self,
        consumer: Any,
        topics: StreamTopics,
        max_records: int,
        pacing: FetchPacing | None = None,
        lags: ConsumerLag | None = None,
    ) -> None:
        """``lags``: updated after every fetch."""
        self.consumer = consumer
        self.lags = lags
        self._topics = topics
        self._max_records = max_records
        self._pacing = pacing
        self._clock_at = time.monotonic()
        self._broker_s = 0.0
        # per partition, the fetch response whose records were read last (ms, wall clock)
        self._delivered_ms: dict[TopicPartition, int] = {}

    def subscribe(self, listener: ConsumerRebalanceListener) -> None:
        """Subscribe to the transactions and labels topics."""
        self.consumer.subscribe([self._topics.transactions, self._topics.labels], listener=listener)

    async def fetch(self, timeout_s: float, *partitions: TopicPartition) -> Fetched:
        """What is fetched within ``timeout_s`` (of ``partitions``, default all owned)."""
        fetched: Fetched = await self.consumer.getmany(
            *partitions, timeout_ms=max(1, int(timeout_s * 1000)), max_records=self._max_records
        )
        if self._pacing is not None and not partitions:  # the traffic of every owned partition
            records = sum(map(len, fetched.values()))
            self._set_fetch_wait(self._pacing.wait_ms(records, time.monotonic()))
        for tp in fetched:
            polled_ms = self.consumer.last_poll_timestamp(tp)
            self._delivered_ms[tp] = int(time.time() * 1000) if polled_ms is None else polled_ms
        if self.lags is not None:
            await self.lags.fetched(fetched)
        return fetched

    def arrived_s(self, tp: TopicPartition) -> float:
        """When the records ``tp`` delivered last reached the consumer (wall-clock seconds of
        their fetch response: a partition is not fetched again while records of its last
        response wait to be read)."""
        return self._delivered_ms.get(tp, 0) / 1000

    def _set_fetch_wait(self, wait_ms: int) -> None:
        """aiokafka reads its fetch wait for every fetch request, but has no setter: its
        fetcher's attribute is set (nothing happens if a release renames it)."""
        fetcher = getattr(self.consumer, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = wait_ms

    def owned(self, topic: str) -> list[TopicPartition]:
        """The partitions of ``topic`` assigned to this worker."""
        return [tp for tp in self.consumer.assignment() if tp.topic == topic]

    async def is_behind(self, tp: TopicPartition) -> bool:
        """``tp`` may have records not fetched yet: its position is below the high watermark
        of the last fetch response (tansu's ListOffsets is wrong), that response is the one
        whose records were read last (what reached the broker since is not known yet: the
        consumer fetches a partition again only once its records are read), or it is older
        than :data:`POLL_STALE_S` (paused, or the broker does not answer). A partition
        revoked meanwhile is not ours to wait for."""
        try:
            highwater = self.consumer.highwater(tp)
            position = await self.consumer.position(tp)
            polled_ms = self.consumer.last_poll_timestamp(tp)
        except (IllegalStateError, AssertionError):
            return False
        if highwater is None or position < highwater or polled_ms is None:
            return True
        stale = time.time() - polled_ms / 1000 >= POLL_STALE_S
        return bool(stale or polled_ms <= self._delivered_ms.get(tp, -1))

    def pause_only(self, owned: Sequence[TopicPartition], crowded: set[int]) -> None:
        """Pause the ``owned`` partitions whose number is in ``crowded``, resume the rest."""
        paused = self.consumer.paused()
        to_pause = [tp for tp in owned if tp.partition in crowded and tp not in paused]
        to_resume = [tp for tp in owned if tp.partition not in crowded and tp in paused]
        if to_pause:
            self.consumer.pause(*to_pause)
        if to_resume:
            self.consumer.resume(*to_resume)

    def broker_time(self) -> float:
        """Seconds that pass only while the broker answers fetches (a fresh fetch response
        for an owned partition): idle and wait times of the alignment and the label barrier
        stand still during a broker outage, so an outage forces nothing out of order."""
        now = time.monotonic()
        elapsed, self._clock_at = now - self._clock_at, now
        if any(self._fresh_poll(tp) for tp in self.consumer.assignment()):
            # a gap between calls (the loop waited on the broker) counts only up to the
            # freshness window: the broker may have been down for the rest of it
            self._broker_s += min(elapsed, POLL_STALE_S)
        return self._broker_s

    def _fresh_poll(self, tp: TopicPartition) -> bool:
        polled_ms = self.consumer.last_poll_timestamp(tp)
        return polled_ms is not None and time.time() - polled_ms / 1000 < POLL_STALE_S
