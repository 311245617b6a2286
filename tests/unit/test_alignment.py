"""EventTimeAligner: release in event-time order up to the watermark of the partitions
holding back (behind, or active less than the idle time ago)."""

from __future__ import annotations

from aiokafka import TopicPartition

from stream_app.worker.align import EventTimeAligner
from stream_app.worker.grace import ActivityClock, ArrivalSkew, FixedGrace, Run

TOPIC = "tx"
P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)
BOTH = (0, 1)


def aligner(
    *,
    max_buffered: int = 100,
    max_per_partition: int = 100,
    max_wait_s: float = 60,
    idle_s: float = 1.0,
) -> EventTimeAligner[str]:
    return EventTimeAligner(
        TOPIC, max_buffered=max_buffered, max_per_partition=max_per_partition,
        max_wait_s=max_wait_s, grace=FixedGrace(idle_s), now=0.0,
    )  # fmt: skip


def fetch(a: EventTimeAligner[str], p: int, start: int, times: list[int], now: float) -> None:
    a.add(((t, p, start + i, f"{p}@{start + i}") for i, t in enumerate(times)), now)
    a.fetched(p, start + len(times))


def test_holds_records_newer_than_a_lagging_partition() -> None:
    a = aligner()
    fetch(a, 0, 0, [10, 20, 30], now=0)
    fetch(a, 1, 0, [15], now=0)
    released = a.release(BOTH, behind=BOTH, now=0)
    assert released.items == ["0@0", "1@0"]
    assert released.offsets == {P0: 1, P1: 1}
    assert released.forced == 0
    assert a.buffered == 2


def test_caught_up_partition_holds_back_until_idle() -> None:
    a = aligner(idle_s=1.0)
    fetch(a, 0, 0, [10], now=0)
    fetch(a, 1, 0, [20, 30], now=0)
    # Both caught up, but active just now: a producer batch may still be in flight.
    assert a.release(BOTH, behind=[], now=0.5).items == ["0@0"]
    fetch(a, 0, 1, [15], now=0.7)  # it was
    assert a.release(BOTH, behind=[], now=0.8).items == ["0@1"]
    released = a.release(BOTH, behind=[], now=1.7)  # both quiet for the idle time
    assert released.items == ["1@0", "1@1"]
    assert released.offsets == {P1: 2}


def test_order_is_global_event_time_then_partition_then_offset() -> None:
    a = aligner()
    fetch(a, 1, 0, [5, 7, 7], now=0)
    fetch(a, 0, 0, [7, 9], now=0)
    assert a.release(BOTH, behind=[], now=2).items == ["1@0", "0@0", "1@1", "1@2", "0@1"]


def test_partition_never_fetched_holds_everything_until_idle() -> None:
    a = aligner(idle_s=1.0)
    fetch(a, 0, 5, [10], now=0)
    released = a.release(BOTH, behind=[0, 1], now=0)
    assert released.items == []
    assert released.offsets == {P0: 5}  # never past a buffered record
    assert a.release(BOTH, behind=[0], now=0.9).items == []
    assert a.release(BOTH, behind=[], now=1.0).items == ["0@5"]


def test_crowded_partitions_are_named_for_pausing() -> None:
    a = aligner(max_per_partition=3)
    fetch(a, 0, 0, [10, 20, 30], now=0)
    fetch(a, 1, 0, [5], now=0)
    assert a.crowded() == {0}
    a.release(BOTH, behind=BOTH, now=0)  # releases up to 5: P0 still holds 3
    assert a.crowded() == {0}
    fetch(a, 1, 1, [25], now=0)
    a.release(BOTH, behind=BOTH, now=0)
    assert a.crowded() == set()


def test_bounds_force_the_oldest_out() -> None:
    a = aligner(max_buffered=2, max_wait_s=5)
    fetch(a, 0, 0, [10, 20, 30, 40], now=0)
    released = a.release(BOTH, behind=BOTH, now=0)
    assert released.items == ["0@0", "0@1"]
    assert released.forced == 2
    assert released.offsets == {P0: 2}
    fetch(a, 0, 4, [50], now=3)
    waited = a.release(BOTH, behind=BOTH, now=5)  # 30 and 40 waited 5 s; 50 did not
    assert waited.items == ["0@2", "0@3"]
    assert waited.forced == 2
    assert waited.offsets == {P0: 4}


def test_a_late_record_is_released_at_once_and_blocks_its_offset_until_then() -> None:
    a = aligner()
    fetch(a, 0, 0, [10], now=0)
    fetch(a, 1, 0, [30], now=0)
    assert a.release(BOTH, behind=BOTH, now=0).items == ["0@0"]
    fetch(a, 0, 1, [40], now=0)
    assert a.release(BOTH, behind=BOTH, now=0).items == ["1@0"]
    fetch(a, 1, 1, [20], now=0)  # older than what P1 already released
    released = a.release(BOTH, behind=BOTH, now=0)
    assert released.items == ["1@1"]
    assert released.offsets == {P1: 2}


def test_clear_forgets_everything_and_restarts_the_idle_clock() -> None:
    a = aligner(idle_s=1.0)
    fetch(a, 0, 0, [10], now=0)
    a.clear(now=5)
    assert a.buffered == 0
    fetch(a, 0, 0, [10], now=5)
    assert a.release(BOTH, behind=[0], now=5.5).items == []  # P1 not idle since the clear
    assert a.release(BOTH, behind=[], now=6).items == ["0@0"]


def test_traffic_resuming_on_one_partition_makes_the_quiet_ones_hold_back() -> None:
    a = aligner(idle_s=1.0)
    fetch(a, 0, 0, [10], now=0)
    fetch(a, 1, 0, [5], now=0)
    assert a.release(BOTH, behind=[], now=2).items == ["1@0", "0@0"]
    # After the lull P0 wakes first: P1 (quiet) may be about to deliver older records.
    fetch(a, 0, 1, [30], now=10)
    assert a.release(BOTH, behind=[], now=10.5).items == []
    fetch(a, 1, 1, [25], now=10.6)
    assert a.release(BOTH, behind=[], now=10.7).items == ["1@1"]
    assert a.release(BOTH, behind=[], now=11.6).items == ["0@1"]


def test_activity_clock_starts_new_partitions_at_the_last_wake_up() -> None:
    clock = ActivityClock(FixedGrace(1.0), now=0)
    assert not clock.quiet(3, now=0.5)
    assert clock.quiet(3, now=1.0)
    clock.touch(0, now=5)
    assert not clock.quiet(3, now=5.5)  # traffic started on partition 0
    clock.touch(0, now=5.8)  # not a wake-up: 0 was active 0.8 s ago
    assert clock.quiet(3, now=6.0)
    assert not clock.quiet(0, now=6.0)
    assert ActivityClock(FixedGrace(0), now=0).quiet(1, now=0)  # 0 disables the wait


def test_a_partition_releases_in_offset_order() -> None:
    a = aligner()
    fetch(a, 0, 0, [30, 20], now=0)  # a producer wrote them out of event-time order
    fetch(a, 1, 0, [25], now=0)
    assert a.release(BOTH, behind=BOTH, now=0).items == ["1@0"]  # 20 waits behind 30
    fetch(a, 1, 1, [35], now=0)
    assert a.release(BOTH, behind=BOTH, now=0).items == ["0@1", "0@0"]  # applied by time


def test_a_record_written_out_of_time_order_blocks_the_commit_of_its_offset() -> None:
    a = aligner()
    fetch(a, 0, 0, [30, 20], now=0)  # offsets 0 and 1
    fetch(a, 1, 0, [25], now=0)
    released = a.release(BOTH, behind=BOTH, now=0)
    assert released.items == ["1@0"]
    assert released.offsets == {P0: 0, P1: 1}  # nothing of P0 is committable yet


def test_the_next_release_is_when_a_partition_held_for_the_grace_turns_quiet() -> None:
    a = aligner(idle_s=1.0)
    assert a.next_release_in(BOTH, behind=[], now=0) == float("inf")  # nothing waits
    fetch(a, 0, 0, [10], now=0)
    fetch(a, 1, 0, [20], now=0.25)
    assert a.release(BOTH, behind=[], now=0.5).items == ["0@0"]  # 1@0 waits for the grace
    assert a.next_release_in(BOTH, behind=[], now=0.5) == 0.75  # 1 s after 0.25's wake-up
    assert a.next_release_in(BOTH, behind=[1], now=0.5) == float("inf")  # a fetch will come


def skew(**kwargs: float) -> ArrivalSkew:
    settings = {"floor_s": 0.01, "cap_s": 1.0, "window_s": 30.0, "warmup": 3, **kwargs}
    return ArrivalSkew(**settings)  # type: ignore[arg-type]


def run(arrived_s: float, oldest_us: int, newest_us: int | None = None) -> Run:
    return Run(arrived_s, oldest_us, oldest_us if newest_us is None else newest_us, True)


def test_the_grace_is_the_cap_until_enough_runs_were_seen() -> None:
    grace = skew()
    grace.observe([run(0.0, 10)])
    grace.observe([run(0.1, 20)])
    assert grace.seconds() == 1.0
    grace.observe([run(0.2, 30)])
    assert grace.seconds() == 0.01  # in order: nothing late, the floor


def test_the_grace_is_twice_the_largest_recent_lateness() -> None:
    grace = skew()
    grace.observe([run(0.0, 10, 12)])  # frontier 12 reached at 0.0
    grace.observe([run(0.1, 20)])  # frontier 20 reached at 0.1
    grace.observe([run(0.13, 11)])  # 11 was passed at 0.0: 130 ms late
    assert abs(grace.seconds() - 0.26) < 1e-9
    grace.observe([run(0.15, 19)])  # 19 was passed at 0.1: 50 ms late, not the largest
    assert abs(grace.seconds() - 0.26) < 1e-9
    grace.observe([run(0.9, 20)])  # a tie with the frontier is not late
    assert abs(grace.seconds() - 0.26) < 1e-9
    grace.observe([run(31.0, 40)])
    assert grace.seconds() == 0.01  # the late run left the window
    grace.observe([run(40.0, 5, 30)])  # far older than anything kept: capped
    assert grace.seconds() == 1.0


def test_a_sparse_stream_leaves_the_cap_after_the_warm_up_time() -> None:
    grace = skew(warmup=20, warmup_s=5.0)
    grace.observe([run(0.0, 10)])
    grace.observe([run(4.0, 20)])
    assert grace.seconds() == 1.0  # two runs in 4 s: still learning
    grace.observe([run(60.0, 30)])
    assert grace.seconds() == 0.01


def test_lateness_is_measured_in_arrival_order_within_a_fetch() -> None:
    grace = skew(warmup=0)
    # one fetch brought two partitions' runs, received 0.2 s apart: the later one is late
    grace.observe([run(0.3, 15, 16), run(0.1, 10, 20)])
    assert abs(grace.seconds() - 0.4) < 1e-9
    other = skew(warmup=0)
    other.observe([run(0.1, 15, 16), run(0.1, 10, 20)])  # one response: nothing late
    assert other.seconds() == 0.01


def test_a_zero_cap_turns_the_grace_off() -> None:
    grace = skew(cap_s=0.0, warmup=0)
    grace.observe([run(0.0, 10)])
    grace.observe([run(5.0, 5, 10)])
    assert grace.seconds() == 0.0


def test_only_caught_up_partitions_size_the_grace() -> None:
    grace = skew(warmup=0)
    a = EventTimeAligner(
        TOPIC, max_buffered=100, max_per_partition=100, max_wait_s=60, grace=grace, now=0.0
    )
    fetch(a, 0, 0, [10, 20], now=0.0)
    a.release(BOTH, behind=[1], now=0.0)
    fetch(a, 1, 0, [5], now=0.5)  # behind: not fetched yet, not in flight
    assert grace.seconds() == 0.01
    a.release(BOTH, behind=[], now=0.5)
    fetch(a, 1, 1, [15], now=0.8)  # caught up, yet 15 came 0.8 s after 20 was seen
    assert abs(grace.seconds() - 1.0) < 1e-9  # 2 x 0.8 s, capped at 1 s


def test_an_adaptive_grace_releases_as_soon_as_no_partition_is_late() -> None:
    grace = skew(warmup=0)
    a = EventTimeAligner(
        TOPIC, max_buffered=100, max_per_partition=100, max_wait_s=60, grace=grace, now=0.0
    )
    fetch(a, 0, 0, [10], now=0.0)
    fetch(a, 1, 0, [20], now=0.0)
    assert a.release(BOTH, behind=[], now=0.005).items == ["0@0"]  # 1@0: within the floor
    assert a.release(BOTH, behind=[], now=0.011).items == ["1@0"]
