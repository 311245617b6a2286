"""EventTimeAligner: release in event-time order up to the watermark of lagging partitions."""

from __future__ import annotations

from aiokafka import TopicPartition

from stream_app.stream.alignment import EventTimeAligner

P0 = TopicPartition("tx", 0)
P1 = TopicPartition("tx", 1)


def fetch(
    aligner: EventTimeAligner[str], tp: TopicPartition, start: int, times: list[int], now: float
) -> None:
    for i, t in enumerate(times):
        aligner.add(tp, start + i, t, f"{tp.partition}@{start + i}", now)
    aligner.fetched(tp, start + len(times))


def test_holds_records_newer_than_a_lagging_partition() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(max_buffered=100, max_wait_s=60)
    fetch(aligner, P0, 0, [10, 20, 30], now=0)
    fetch(aligner, P1, 0, [15], now=0)
    released = aligner.release([P0, P1], now=0)
    assert released.items == ["0@0", "1@0"]
    assert released.offsets == {P0: 1, P1: 1}
    assert released.forced == 0
    assert aligner.buffered == 2


def test_caught_up_partition_holds_nothing_back_and_order_is_global() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(max_buffered=100, max_wait_s=60)
    fetch(aligner, P0, 0, [10, 20, 30], now=0)
    fetch(aligner, P1, 0, [15], now=0)
    aligner.release([P0, P1], now=0)
    fetch(aligner, P1, 1, [20, 25], now=1)
    released = aligner.release([P1], now=1)  # P0 caught up: only P1's newest (25) bounds
    assert released.items == ["0@1", "1@1", "1@2"]  # ties: partition, then offset
    assert released.offsets == {P0: 2, P1: 3}
    assert aligner.release([], now=1).items == ["0@2"]


def test_partition_never_fetched_holds_everything() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(max_buffered=100, max_wait_s=60)
    fetch(aligner, P0, 5, [10], now=0)
    released = aligner.release([P0, P1], now=0)
    assert released.items == []
    assert released.offsets == {P0: 5}  # never past a buffered record


def test_bounds_force_the_oldest_out() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(max_buffered=2, max_wait_s=5)
    fetch(aligner, P0, 0, [10, 20, 30, 40], now=0)
    released = aligner.release([P0, P1], now=0)
    assert released.items == ["0@0", "0@1"]
    assert released.forced == 2
    assert released.offsets == {P0: 2}
    waited = aligner.release([P0, P1], now=5)
    assert waited.items == ["0@2", "0@3"]
    assert waited.forced == 2
    assert waited.offsets == {P0: 4}


def test_clear_forgets_buffers_and_progress() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(max_buffered=100, max_wait_s=60)
    fetch(aligner, P0, 0, [10], now=0)
    aligner.clear()
    assert aligner.buffered == 0
    assert aligner.release([], now=0).offsets == {}
