"""RedisWindowStore with a pseudonym key on a real redis-server: no key holds a customer or
terminal id, the windows work as without a key (the contract suite, in process and in a
window process), the same key finds the same windows again, and shared terminals still
lose no update (a stale write is redone by id, not by key)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.testing as npt
import pytest
import redis
import redis.asyncio as redis_asyncio

from stream_app.contracts.events import TransactionEvent
from stream_app.features.batch import compute_features
from stream_app.features.redis_store import RedisStoreConfig, RedisWindowStore
from stream_app.features.store import WindowStore
from stream_app.pseudonyms import CUSTOMER, TERMINAL, Pseudonymizer
from tests.integration.window_stores import PREFIX, TTL_DAYS
from tests.secrets import STORE_PSEUDONYM_KEY
from tests.unit.feature_histories import T0, random_history
from tests.unit.window_store_contract import CONTRACT, FS, closing, drive, stored, window_process

pytestmark = pytest.mark.integration

KEY = STORE_PSEUDONYM_KEY.encode()
PSEUDONYMOUS = re.compile(rb"fraudstream:test:v2:(cust|term):[0-9a-f]{32}")


def _store(url: str, key: bytes = KEY, **options: Any) -> RedisWindowStore:
    return RedisWindowStore(
        redis_asyncio.Redis.from_url(url), FS, key_prefix=PREFIX, ttl_days=TTL_DAYS,
        owns_clients=True, pseudonym_key=key, **options,
    )  # fmt: skip


def _clear_keys(client: redis.Redis) -> list[bytes]:
    return [key for key in client.scan_iter("*") if not PSEUDONYMOUS.fullmatch(key)]


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
@pytest.mark.parametrize("kind", ["redis", "window process"])
async def test_the_window_store_contract_holds_with_pseudonyms(
    redis_client: redis.Redis,
    redis_url: str,
    kind: str,
    check: Callable[[WindowStore[Any]], Awaitable[None]],
) -> None:
    config = RedisStoreConfig(redis_url, FS, PREFIX, TTL_DAYS, 1.0, pseudonym_key=KEY)
    store: WindowStore[Any] = _store(redis_url) if kind == "redis" else await window_process(config)
    async with closing(store):
        await check(store)
    assert _clear_keys(redis_client) == []


async def test_redis_holds_exactly_the_pseudonyms_of_the_ids_and_the_same_key_finds_them(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(31, n=800)
    expected = compute_features(history, FS)
    async with closing(_store(redis_url)) as first:
        await drive(first, history, seed=3, stop=500)
    pseudonym = Pseudonymizer(KEY).pseudonym
    customers, terminals = set(history.customer_id.tolist()), set(history.terminal_id.tolist())
    assert set(redis_client.scan_iter("*")) == {
        *(f"{PREFIX}v2:cust:{pseudonym(CUSTOMER, c)}".encode() for c in customers),
        *(f"{PREFIX}v2:term:{pseudonym(TERMINAL, t)}".encode() for t in terminals),
    }
    async with closing(_store(redis_url)) as second:  # same key, nothing cached
        batches = await drive(second, history, seed=4, start=500)
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values[500:], rtol=1e-9, atol=1e-9
    )
    assert _clear_keys(redis_client) == []


async def test_another_key_finds_none_of_the_windows(
    redis_client: redis.Redis, redis_url: str
) -> None:
    async with closing(_store(redis_url)) as store:
        await stored(store, [TransactionEvent("a", "c1", "k1", T0, 5.0)])
    async with closing(_store(redis_url, b"another-key-of-32-bytes-or-more!!")) as other:
        row = await stored(other, [TransactionEvent("b", "c1", "k1", T0 + 1, 5.0)])
    assert row.values[0, FS.columns.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")] == 1.0  # b alone
    assert redis_client.dbsize() == 4


@pytest.mark.parametrize("threaded_writes", [False, True], ids=["async", "threaded"])
@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
async def test_stale_writes_are_redone_by_id_and_lose_no_update(
    redis_client: redis.Redis, redis_url: str, threaded_writes: bool, shared: bool
) -> None:
    writer = redis.Redis.from_url(redis_url) if threaded_writes else None
    async with closing(_store(redis_url, writer=writer)) as a, closing(_store(redis_url)) as b:
        a.reset_cache(shared_terminals=shared)
        await stored(a, [TransactionEvent("a1", "ca", "k", T0, 1.0)])
        await stored(b, [TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)])  # behind a's back
        first = await a.compute([TransactionEvent("a2", "ca", "k", T0 + 2, 1.0)], [])
        second = await a.compute([TransactionEvent("a3", "cd", "k", T0 + 3, 1.0)], [])
        await a.write_all([first, second])
        await stored(a, [TransactionEvent("a4", "ca", "k", T0 + 4, 1.0)])
        await stored(b, [TransactionEvent("b2", "cb", "k", T0 + 5, 1.0)])  # b's k is stale
    async with closing(_store(redis_url)) as check:
        row = await stored(check, [TransactionEvent("c1", "cc", "k", T0 + 6, 1.0)])
    # a1, b1, a2, a3, a4, b2 and c1, each once: version 7
    assert row.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")] == 7.0
    assert redis_client.hget(check.terminal_key("k"), "v") == b"7"
    assert _clear_keys(redis_client) == []


async def test_pseudonyms_are_cached_only_as_long_as_the_windows(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(32, n=600)
    expected = compute_features(history, FS)
    store = _store(redis_url, max_cached_windows=8)  # of 20 ids: forgets again and again
    async with closing(store):
        batches = await drive(store, history, seed=5)
        names = [set(keys) for keys in store._pseudonym_keys]
        assert names == [set(store._customers), set(store._terminals)]
    npt.assert_allclose(
        np.concatenate([b.values for b in batches]), expected.values, rtol=1e-9, atol=1e-9
    )
