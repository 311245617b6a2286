"""Committer: stored offsets are committed at most every interval, and at once on demand."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from stream_app.worker.batches import Batch
from stream_app.worker.commit import Committer
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff

TP = TopicPartition("tx", 0)


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def _committer(consumer: RecordingConsumer, interval_s: float) -> Committer:
    metrics = WorkerMetrics()
    return Committer(consumer, Backoff("kafka", metrics), metrics, interval_s=interval_s)


def test_batches_stored_within_the_interval_are_committed_together() -> None:
    async def run() -> list[dict[TopicPartition, int]]:
        consumer = RecordingConsumer()
        committer = _committer(consumer, interval_s=0.2)
        loop = asyncio.create_task(committer.loop())
        committer.stored(Batch(0, 0.0, offsets={TP: 10}))
        await asyncio.sleep(0.05)  # the first is committed at once, then the loop rests
        for offset in (20, 30):
            committer.stored(Batch(0, 0.0, offsets={TP: offset}))
        await asyncio.sleep(0.05)
        waiting = committer.pending
        await asyncio.sleep(0.3)
        loop.cancel()
        assert waiting and not committer.pending
        return consumer.commits

    assert asyncio.run(run()) == [{TP: 10}, {TP: 30}]


def test_a_commit_on_demand_does_not_wait_for_the_interval() -> None:
    async def run() -> list[dict[TopicPartition, int]]:
        consumer = RecordingConsumer()
        committer = _committer(consumer, interval_s=60.0)
        committer.stored(Batch(0, 0.0, offsets={TP: 5}))
        committer.stored(Batch(1, 0.0, offsets={TP: 9}))  # not the current generation: dropped
        await committer.commit()
        return consumer.commits

    assert asyncio.run(run()) == [{TP: 5}]
