"""RedisWindowStore on a real redis-server: the window-store contract suite (in process and
in a window process), idempotence down to the bytes, TTLs, restarts, two workers sharing
terminals, late events, and the memory a customer costs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.testing as npt
import pytest
import redis
import redis.asyncio as redis_asyncio

from stream_app.contracts.events import TransactionEvent
from stream_app.errors import Superseded
from stream_app.features.batch import compute_features
from stream_app.features.redis_store import READ_SCRIPT, RedisWindowStore
from stream_app.features.store import Progress, WindowStore
from tests.integration.window_stores import (
    PREFIX,
    TTL_DAYS,
    redis_config,
    redis_state,
    redis_store,
)
from tests.unit.feature_histories import (
    DAY,
    T0,
    label_events,
    random_history,
    transaction_events,
)
from tests.unit.window_store_contract import (
    CONTRACT,
    FS,
    closing,
    drive,
    stored,
    window_process,
)

pytestmark = pytest.mark.integration


# -- the contract suite: the Redis store in process and in a window process -----------------


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
@pytest.mark.parametrize("kind", ["redis", "window process"])
async def test_the_window_store_contract(
    redis_client: redis.Redis,
    redis_url: str,
    kind: str,
    check: Callable[[WindowStore[Any]], Awaitable[None]],
) -> None:
    store: WindowStore[Any] = (
        redis_store(redis_url) if kind == "redis" else await window_process(redis_config(redis_url))
    )
    async with closing(store):
        await check(store)


# -- Redis only ------------------------------------------------------------------------------


async def test_keys_are_namespaced_versioned_hashes_with_a_ttl(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async with closing(redis_store(redis_url)) as store:
        await stored(store, [TransactionEvent("a", "c1", "k1", T0, 5.0)])
    keys = sorted(redis_client.scan_iter("*"))
    assert keys == [b"fraudstream:test:v2:cust:c1", b"fraudstream:test:v2:term:k1"]
    for key in keys:
        assert redis_client.hget(key, "v") == b"1"
        assert 0 < redis_client.ttl(key) <= TTL_DAYS * 86_400


async def test_redelivery_leaves_redis_byte_identical(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(22, n=600)
    async with closing(redis_store(redis_url)) as store:
        await drive(store, history, seed=22)
        before = redis_state(redis_client)
        tail = range(len(history) - 80, len(history))
        last_us = history.event_time_us[-1]
        delivered = [lab for lab in label_events(history) if lab.label_time_us <= last_us]
        again = await stored(store, transaction_events(history, tail), delivered)
    assert again.duplicate.all()
    assert redis_state(redis_client) == before


async def test_a_restarted_store_continues_exactly_where_redis_left_off(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(23, n=900)
    expected = compute_features(history, FS)
    async with closing(redis_store(redis_url)) as first:
        await drive(first, history, seed=1, stop=500)
    async with closing(redis_store(redis_url)) as second:  # nothing cached: reads the first's
        batches = await drive(second, history, seed=2, start=500)
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values[500:], rtol=1e-9, atol=1e-9
    )


async def test_a_cold_store_reads_every_version_and_state_as_stored(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(24, n=700)
    async with closing(redis_store(redis_url)) as store:
        await drive(store, history, seed=24)
    customers = [*sorted(set(history.customer_id.tolist())), "never-seen"]
    terminals = [*sorted(set(history.terminal_id.tolist())), "never-seen"]
    async with closing(redis_store(redis_url)) as cold:
        replies = await cold._read(customers, terminals)
    keys = [store.customer_key(c) for c in customers]
    keys += [store.terminal_key(t) for t in terminals]
    expected = []
    for key in keys:
        version, state = redis_client.hmget(key, "v", "s")
        expected.append((int(version or 0), state or b""))
    assert replies == expected
    assert expected[0][0] > 0 and expected[len(customers) - 1] == (0, b"")


async def test_two_workers_sharing_terminals_lose_no_update(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async with closing(redis_store(redis_url)) as a, closing(redis_store(redis_url)) as b:
        await stored(a, [TransactionEvent("a1", "ca", "k", T0, 1.0)])
        await stored(b, [TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)])  # reads k fresh
        # a's cached k is now stale: its write must merge, not overwrite b1
        await stored(a, [TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)])
        await stored(b, [TransactionEvent("b2", "cb", "k", T0 + 3, 1.0)])
    assert await _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, b2, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"


@pytest.mark.parametrize("threaded_writes", [False, True], ids=["async", "threaded"])
async def test_a_group_of_writes_redoes_a_stale_batch_and_the_ones_after_it(
    redis_client: redis.Redis, redis_url: str, threaded_writes: bool
) -> None:
    async with (
        closing(redis_store(redis_url, threaded_writes=threaded_writes)) as a,
        closing(redis_store(redis_url)) as b,
    ):
        await stored(a, [TransactionEvent("a1", "ca", "k", T0, 1.0)])  # k at version 1
        await stored(b, [TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)])  # 2, behind a's back
        first = await a.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
        second = await a.compute([TransactionEvent("a3", "cd", "k", T0 + 3, 1.0)], [])
        await a.write_all([first, second])  # both expect versions a alone left
    assert await _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, a3, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"  # a2, a3 redone, then c1
    assert redis_client.hget(f"{PREFIX}v2:cust:ca", "v") == b"2"
    assert redis_client.hget(f"{PREFIX}v2:cust:cd", "v") == b"1"


def _progress(partition: int, through_us: float, generation: int = 1) -> Progress:
    return Progress(generation, (partition,), 2, through_us, idle_grace_s=0.0)


async def _still_waiting(task: asyncio.Task[Any]) -> bool:
    await asyncio.sleep(0.3)
    return not task.done()


UNDELAYED = FS.columns.index("terminal_nb_tx_1d_undelayed")


@pytest.mark.parametrize("kind", ["redis", "process"])
async def test_shared_terminals_rows_wait_for_every_partitions_progress(
    redis_client: redis.Redis, redis_url: str, kind: str
) -> None:
    """Worker a owns partition 0, b partition 1; both store their terminal changes first,
    then a row at t waits until both partitions' claims reached t, and counts exactly the
    terminal's earlier transactions, whoever stored them."""
    a: WindowStore[Any] = (
        redis_store(redis_url) if kind == "redis" else await window_process(redis_config(redis_url))
    )
    async with closing(a), closing(redis_store(redis_url)) as b:
        a.reset_cache(shared_terminals=True)
        b.reset_cache(shared_terminals=True)
        a2 = asyncio.create_task(
            a.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [], _progress(0, T0 + 2))
        )
        assert await _still_waiting(a2), "a computed before partition 1 claimed anything"
        b1 = await b.compute([TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)], [],
                             _progress(1, T0 + 1))  # fmt: skip
        assert b1.features.values[0, UNDELAYED] == 1.0  # a2 is in k already, but later
        assert await _still_waiting(a2), "a computed before partition 1 reached T0 + 2"
        await b.write_all([b1])
        await b.compute([], [], _progress(1, float("inf")))  # b is idle: it claims a's T0 + 2
        row = (await asyncio.wait_for(a2, 10)).features.values[0]
        await a.write_all([await a2])
    assert row[UNDELAYED] == 2.0  # b1, a2
    assert await _terminal_k_count_for_a_new_transaction(redis_url) == 3.0  # and c1
    claims = redis_client.hgetall(f"{PREFIX}progress")
    # b's idle claim also says every row of its partition before it is stored: d too
    assert {k: float(v) for k, v in claims.items()} == {
        b"c:0": T0 + 2, b"c:1": T0 + 2, b"d:0": T0 + 2, b"d:1": T0 + 2,
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["redis", "process"])
async def test_a_rebalance_ends_a_shared_compute_waiting_for_progress(
    redis_client: redis.Redis, redis_url: str, kind: str
) -> None:
    a: WindowStore[Any] = (
        redis_store(redis_url) if kind == "redis" else await window_process(redis_config(redis_url))
    )
    async with closing(a):
        a.reset_cache(shared_terminals=True)
        waiting = asyncio.create_task(
            a.compute([TransactionEvent("a1", "ca", "k", T0, 1.0)], [], _progress(0, T0))
        )
        assert await _still_waiting(waiting)
        a.supersede(2)
        with pytest.raises(Superseded, match="generation 1"):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(Superseded):  # later computes of that generation too
            await a.compute([TransactionEvent("a2", "ca", "k", T0 + 1, 1.0)], [], _progress(0, T0))
    # its terminal change was stored before it waited: a redelivery re-inserts nothing
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"1"


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


async def test_a_write_redone_while_the_next_batch_reads_leaves_that_batch_whole(
    redis_client: redis.Redis, redis_url: str
) -> None:
    client = redis_asyncio.Redis.from_url(redis_url)
    held = _HeldReads(client)
    a = RedisWindowStore(held, FS, key_prefix=PREFIX, ttl_days=TTL_DAYS)
    try:
        async with closing(redis_store(redis_url)) as b:
            await stored(a, [TransactionEvent("a1", "ca", "k", T0, 1.0)])  # k at version 1
            await stored(b, [TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)])  # 2, behind a's back
        first = await a.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
        held.hold()
        computing = asyncio.ensure_future(  # cd is new to a: this compute reads it
            a.compute([TransactionEvent("a3", "cd", "k", T0 + 3, 1.0)], [])
        )
        await held.reading.wait()
        await a.write_all([first])  # k moved (b1): redone, k dropped from a's cache
        held.release.set()
        await a.write_all([await computing])
    finally:
        await a.close()  # the store does not own its client: closing it leaves it open
        await client.aclose()
    assert await _terminal_k_count_for_a_new_transaction(redis_url) == 5.0  # a1, b1, a2, a3, c1
    assert redis_client.hget(f"{PREFIX}v2:term:k", "v") == b"5"
    assert redis_client.hget(f"{PREFIX}v2:cust:cd", "v") == b"1"


async def _terminal_k_count_for_a_new_transaction(redis_url: str) -> float:
    """``terminal_nb_tx_1d_undelayed`` of a new transaction at terminal k, by a fresh store
    (so from what Redis holds)."""
    async with closing(redis_store(redis_url)) as check:
        row = await stored(check, [TransactionEvent("c1", "cc", "k", T0 + 4, 1.0)])
    return float(row.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")])


async def test_late_transactions_are_scored_as_the_windows_are_flagged_and_not_applied(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async with closing(redis_store(redis_url)) as store:
        await stored(store, [TransactionEvent("new", "c", "k", T0 + 40 * DAY, 5.0)])
        computed = await store.compute(
            [
                TransactionEvent("old", "c", "k2", T0 + 5 * DAY, 5.0),
                TransactionEvent("ok", "c", "k2", T0 + 39 * DAY, 5.0),
            ],
            [],
        )
    assert computed.features.late.tolist() == [True, False]
    assert computed.features.transaction_id == ("old", "ok")
    old = computed.features.values[0]
    assert not np.isnan(old).any(), "a late transaction still gets its row"
    assert old[FS.columns.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")] == 1.0, "counted alone"


async def test_a_restarted_store_flags_transactions_late_for_windows_it_read(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """The late check knows the newest event time of windows read from Redis, not only of
    events this process applied."""
    async with closing(redis_store(redis_url)) as store:
        await stored(store, [TransactionEvent("new", "c", "k", T0 + 40 * DAY, 5.0)])
    async with closing(redis_store(redis_url)) as restarted:
        computed = await restarted.compute(
            [
                TransactionEvent("old", "c", "k2", T0 + 5 * DAY, 5.0),
                TransactionEvent("old-at-k", "c2", "k", T0 + 2 * DAY, 5.0),
                TransactionEvent("ok", "c3", "k3", T0 + 5 * DAY, 5.0),
            ],
            [],
        )
    assert computed.features.late.tolist() == [True, True, False]


async def test_the_store_a_config_opens_owns_its_clients(
    redis_client: redis.Redis, redis_url: str
) -> None:
    def connections() -> set[str]:
        return {client["id"] for client in redis_client.client_list()}

    before = connections()
    store = redis_config(redis_url).open()
    await stored(store, [TransactionEvent("a", "c", "k", T0, 5.0)])  # a threaded write
    assert redis_client.hget(f"{PREFIX}v2:cust:c", "v") == b"1"
    opened = connections() - before
    assert len(opened) == 2  # the asyncio client read, the synchronous one wrote
    await store.close()
    deadline = time.monotonic() + 10
    while opened & connections():
        assert time.monotonic() < deadline, "the store's connections stay open"
        await asyncio.sleep(0.01)


async def test_bytes_per_customer(redis_client: redis.Redis, redis_url: str) -> None:
    """30 days of a busy customer (6 transactions a day): the window is bounded by the
    horizon, so the key stops growing; prints MEMORY USAGE for the report."""
    events = [
        TransactionEvent(f"{1_000_000 + i}", "42", f"{i % 97}", T0 + i * 4 * 3_600_000_000, 57.16)
        for i in range(6 * 60)
    ]
    sizes = []
    async with closing(redis_store(redis_url)) as store:
        for day in range(0, len(events), 6):
            await stored(store, events[day : day + 6])
            sizes.append(redis_client.memory_usage(f"{PREFIX}v2:cust:42"))
    print(
        f"\nMEMORY USAGE of a customer key, 30 / 60 days at 6 tx/day: {sizes[29]} / {sizes[-1]} B"
    )
    assert sizes[-1] <= sizes[29] * 1.1
    assert sizes[-1] < 8_000
