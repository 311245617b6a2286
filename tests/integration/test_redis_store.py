"""RedisWindowStore on a real redis-server: the window-store contract suite (run against
the in-memory store and the store in a child process too), idempotence down to the bytes,
TTLs, restarts, two workers sharing terminals, late events, and the memory a customer
costs."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.testing as npt
import pytest
import redis

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.batch import compute_features
from stream_app.features.redis_store import READ_SCRIPT, RedisWindowStore
from stream_app.features.store import InMemoryWindowStore, WindowStore
from tests.integration.window_stores import (
    FS,
    PREFIX,
    TTL_DAYS,
    BlockingProcessStore,
    BlockingRedisStore,
    drive,
    redis_state,
)
from tests.unit.feature_histories import (
    DAY,
    T0,
    label_events,
    random_history,
    transaction_events,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["in-memory", "redis", "process"])
def any_store(request: pytest.FixtureRequest) -> WindowStore:
    if request.param == "in-memory":
        return InMemoryWindowStore(FS)
    store: WindowStore = request.getfixturevalue(f"{request.param}_store")
    return store


# -- the contract suite: every WindowStore -------------------------------------------------


def test_random_batches_give_the_batch_features_row_for_row(any_store: WindowStore) -> None:
    history = random_history(21, n=900)
    expected = compute_features(history, FS)
    batches = drive(any_store, history, seed=21)
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values, rtol=1e-9, atol=1e-9
    )
    index = expected.sequence_index
    want = np.where((index >= 0)[..., None], expected.values[index], 0.0).astype(np.float32)
    npt.assert_allclose(np.concatenate([b.sequences for b in batches]), want, rtol=1e-6)
    npt.assert_array_equal(
        np.concatenate([b.mask for b in batches]), (index >= 0).astype(np.float32)
    )
    assert not np.concatenate([b.duplicate for b in batches]).any()


def test_redelivered_events_are_flagged_and_keep_their_first_rows(any_store: WindowStore) -> None:
    events = [TransactionEvent(f"t{i}", "c", f"k{i % 2}", T0 + i * 3_600_000_000, 10.0 + i)
              for i in range(7)]  # fmt: skip
    label = LabelEvent("t1", "c", "k1", events[1].event_time_us, T0 + 5 * 3_600_000_000, True)
    first = any_store.process(events[:5], [label])
    rest = any_store.process(events[5:], [])
    again = any_store.process(events[3:], [label])
    assert again.duplicate.all()
    npt.assert_array_equal(again.values[:2], first.values[3:5])
    npt.assert_array_equal(again.values[2:], rest.values)
    npt.assert_array_equal(again.sequences[-1], rest.sequences[-1])


def test_a_genuine_label_withdraws_a_fraud_label(any_store: WindowStore) -> None:
    fraud_column = FS.columns.index("customer_nb_fraud_known_30d")
    any_store.process([TransactionEvent("a", "c", "k", T0, 5.0)], [])
    any_store.process([], [LabelEvent("a", "c", "k", T0, T0 + DAY, True)])
    counted = any_store.process([TransactionEvent("b", "c", "k", T0 + 2 * DAY, 5.0)], [])
    any_store.process([], [LabelEvent("a", "c", "k", T0, T0 + 3 * DAY, False)])
    withdrawn = any_store.process([TransactionEvent("d", "c", "k", T0 + 4 * DAY, 5.0)], [])
    assert counted.values[0, fraud_column] == 1.0
    assert withdrawn.values[0, fraud_column] == 0.0


# -- Redis only ------------------------------------------------------------------------------


def test_keys_are_namespaced_versioned_hashes_with_a_ttl(
    redis_store: BlockingRedisStore, redis_client: redis.Redis
) -> None:
    redis_store.process([TransactionEvent("a", "c1", "k1", T0, 5.0)], [])
    keys = sorted(redis_client.scan_iter("*"))
    assert keys == [b"fraudstream:test:v2:cust:c1", b"fraudstream:test:v2:term:k1"]
    for key in keys:
        assert redis_client.hget(key, "v") == b"1"
        assert 0 < redis_client.ttl(key) <= TTL_DAYS * 86_400


def test_redelivery_leaves_redis_byte_identical(
    redis_store: BlockingRedisStore, redis_client: redis.Redis
) -> None:
    history = random_history(22, n=600)
    drive(redis_store, history, seed=22)
    before = redis_state(redis_client)
    tail = range(len(history) - 80, len(history))
    last_us = history.event_time_us[-1]
    delivered = [lab for lab in label_events(history) if lab.label_time_us <= last_us]
    again = redis_store.process(transaction_events(history, tail), delivered)
    assert again.duplicate.all()
    assert redis_state(redis_client) == before


def test_a_restarted_store_continues_exactly_where_redis_left_off(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(23, n=900)
    expected = compute_features(history, FS)
    first = BlockingRedisStore(redis_url)
    try:
        drive(first, history, seed=1, stop=500)
    finally:
        first.close()
    second = BlockingRedisStore(redis_url)  # nothing cached: reads what the first wrote
    try:
        batches = drive(second, history, seed=2, start=500)
    finally:
        second.close()
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values[500:], rtol=1e-9, atol=1e-9
    )


def test_a_cold_store_reads_every_version_and_state_as_stored(
    redis_store: BlockingRedisStore, redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(24, n=700)
    drive(redis_store, history, seed=24)
    customers = [*sorted(set(history.customer_id.tolist())), "never-seen"]
    terminals = [*sorted(set(history.terminal_id.tolist())), "never-seen"]
    cold = BlockingRedisStore(redis_url)
    try:
        replies = cold.run(cold.store._read(customers, terminals))
    finally:
        cold.close()
    keys = [redis_store.store.customer_key(c) for c in customers]
    keys += [redis_store.store.terminal_key(t) for t in terminals]
    expected = []
    for key in keys:
        version, state = redis_client.hmget(key, "v", "s")
        expected.append((int(version or 0), state or b""))
    assert replies == expected
    assert expected[0][0] > 0 and expected[len(customers) - 1] == (0, b"")


def test_two_workers_sharing_terminals_lose_no_update(
    redis_client: redis.Redis, redis_url: str
) -> None:
    a, b = BlockingRedisStore(redis_url), BlockingRedisStore(redis_url)
    try:
        a.process([TransactionEvent("a1", "ca", "k", T0, 1.0)], [])
        b.process([TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)], [])  # reads k fresh
        # a's cached k is now stale: its write must merge, not overwrite b1
        a.process([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
        b.process([TransactionEvent("b2", "cb", "k", T0 + 3, 1.0)], [])
    finally:
        a.close()
        b.close()
    assert _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, b2, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"


@pytest.mark.parametrize("threaded_writes", [False, True], ids=["async", "threaded"])
def test_a_group_of_writes_redoes_a_stale_batch_and_the_ones_after_it(
    redis_client: redis.Redis, redis_url: str, threaded_writes: bool
) -> None:
    a = BlockingRedisStore(redis_url, threaded_writes=threaded_writes)
    b = BlockingRedisStore(redis_url)
    try:
        a.process([TransactionEvent("a1", "ca", "k", T0, 1.0)], [])  # k at version 1
        b.process([TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)], [])  # 2, behind a's back
        first = a.run(a.store.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], []))
        second = a.run(a.store.compute([TransactionEvent("a3", "cd", "k", T0 + 3, 1.0)], []))
        a.run(a.store.write_all([first, second]))  # both expect versions a alone left
    finally:
        a.close()
        b.close()
    assert _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, a3, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"  # a2, a3 redone, then c1
    assert redis_client.hget(f"{PREFIX}v2:cust:ca", "v") == b"2"
    assert redis_client.hget(f"{PREFIX}v2:cust:cd", "v") == b"1"


@pytest.mark.parametrize("kind", ["redis", "process"])
@pytest.mark.parametrize(("shared", "seen"), [(True, 3.0), (False, 2.0)], ids=["shared", "own"])
def test_a_store_sharing_terminals_reads_what_another_worker_stored(
    redis_client: redis.Redis, redis_url: str, kind: str, shared: bool, seen: float
) -> None:
    a = BlockingRedisStore(redis_url) if kind == "redis" else BlockingProcessStore(redis_url)
    b = BlockingRedisStore(redis_url)
    try:
        a.store.reset_cache(shared_terminals=shared)
        a.process([TransactionEvent("a1", "ca", "k", T0, 1.0)], [])
        b.process([TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)], [])  # k moved
        row = a.process([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
    finally:
        a.close()
        b.close()
    # shared: a1, b1, a2; its own: a trusts its cached k (a1, a2) until a write is stale
    assert row.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")] == seen
    assert _terminal_k_count_for_a_new_transaction(redis_url) == 4.0  # and c1


def test_a_store_sharing_terminals_keeps_its_pending_events_and_loses_no_update(
    redis_client: redis.Redis, redis_url: str
) -> None:
    a, b = BlockingRedisStore(redis_url), BlockingRedisStore(redis_url)
    try:
        a.store.reset_cache(shared_terminals=True)
        a.process([TransactionEvent("a0", "ca", "k", T0, 1.0)], [])
        first = a.run(a.store.compute([TransactionEvent("a1", "ca", "k", T0 + 1, 1.0)], []))
        b.process([TransactionEvent("b1", "cb", "k", T0 + 2, 1.0)], [])  # behind a's back
        second = a.run(a.store.compute([TransactionEvent("a2", "cd", "k", T0 + 3, 1.0)], []))
        a.run(a.store.write_all([first, second]))
    finally:
        a.close()
        b.close()
    # a2 is computed on a's own pending a1 (b1 is seen once a1 is stored)
    assert second.features.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")] == 3.0
    assert _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a0, a1, b1, a2, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"


class _HeldReads:
    """A redis.asyncio client whose next window read, once :meth:`hold` is called, waits
    for :attr:`release` (Redis itself is real): it lets a write land mid-read, as the
    worker's store task may while its windows task computes the next batch."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._holding = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    def hold(self) -> None:
        self._holding = True

    def register_script(self, text: str) -> Any:
        script = self._client.register_script(text)
        if text != READ_SCRIPT:
            return script

        async def read(**kwargs: Any) -> Any:
            if self._holding:
                self._holding = False
                self.reading.set()
                await self.release.wait()
            return await script(**kwargs)

        return read


def test_a_write_redone_while_the_next_batch_reads_leaves_that_batch_whole(
    redis_client: redis.Redis, redis_url: str
) -> None:
    a, b = BlockingRedisStore(redis_url), BlockingRedisStore(redis_url)
    held = _HeldReads(a.client)
    a.store = RedisWindowStore(held, FS, key_prefix=PREFIX, ttl_days=TTL_DAYS)

    async def next_batch_reads_while_a_stale_write_is_redone() -> None:
        first = await a.store.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
        held.hold()
        computing = asyncio.ensure_future(  # cd is new to a: this compute reads it
            a.store.compute([TransactionEvent("a3", "cd", "k", T0 + 3, 1.0)], [])
        )
        await held.reading.wait()
        await a.store.write_all([first])  # k moved (b1): redone, k dropped from a's cache
        held.release.set()
        await a.store.write_all([await computing])

    try:
        a.process([TransactionEvent("a1", "ca", "k", T0, 1.0)], [])  # k at version 1
        b.process([TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)], [])  # 2, behind a's back
        a.run(next_batch_reads_while_a_stale_write_is_redone())
    finally:
        a.close()
        b.close()
    assert _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, a3, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"
    assert redis_client.hget(f"{PREFIX}v2:cust:cd", "v") == b"1"


def _terminal_k_count_for_a_new_transaction(redis_url: str) -> float:
    """``terminal_nb_tx_1d_undelayed`` of a new transaction at terminal k, by a fresh store
    (so from what Redis holds)."""
    check = BlockingRedisStore(redis_url)
    try:
        row = check.process([TransactionEvent("c1", "cc", "k", T0 + 4, 1.0)], [])
        return float(row.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")])
    finally:
        check.close()


def test_late_transactions_are_flagged_and_not_applied(redis_store: BlockingRedisStore) -> None:
    store = redis_store.store
    redis_store.process([TransactionEvent("new", "c", "k", T0 + 40 * DAY, 5.0)], [])
    computed = redis_store.run(
        store.compute(
            [
                TransactionEvent("old", "c", "k2", T0 + 5 * DAY, 5.0),
                TransactionEvent("ok", "c", "k2", T0 + 39 * DAY, 5.0),
            ],
            [],
        )
    )
    assert computed.late.tolist() == [True, False]
    assert computed.applied.tolist() == [1]
    assert computed.features.transaction_id == ("ok",)


def test_a_restarted_store_flags_transactions_late_for_windows_it_read(
    redis_store: BlockingRedisStore, redis_url: str
) -> None:
    """The late check knows the newest event time of windows read from Redis, not only of
    events this process applied."""
    redis_store.process([TransactionEvent("new", "c", "k", T0 + 40 * DAY, 5.0)], [])
    restarted = BlockingRedisStore(redis_url)
    try:
        computed = restarted.run(
            restarted.store.compute(
                [
                    TransactionEvent("old", "c", "k2", T0 + 5 * DAY, 5.0),
                    TransactionEvent("old-at-k", "c2", "k", T0 + 2 * DAY, 5.0),
                    TransactionEvent("ok", "c3", "k3", T0 + 5 * DAY, 5.0),
                ],
                [],
            )
        )
    finally:
        restarted.close()
    assert computed.late.tolist() == [True, True, False]
    assert computed.features.transaction_id == ("ok",)


def test_bytes_per_customer(redis_store: BlockingRedisStore, redis_client: redis.Redis) -> None:
    """30 days of a busy customer (6 transactions a day): the window is bounded by the
    horizon, so the key stops growing; prints MEMORY USAGE for the report."""
    events = [
        TransactionEvent(f"{1_000_000 + i}", "42", f"{i % 97}", T0 + i * 4 * 3_600_000_000, 57.16)
        for i in range(6 * 60)
    ]
    sizes = []
    for day in range(0, len(events), 6):
        redis_store.process(events[day : day + 6], [])
        sizes.append(redis_client.memory_usage(f"{PREFIX}v2:cust:42"))
    print(
        f"\nMEMORY USAGE of a customer key, 30 / 60 days at 6 tx/day: {sizes[29]} / {sizes[-1]} B"
    )
    assert sizes[-1] <= sizes[29] * 1.1
    assert sizes[-1] < 8_000
