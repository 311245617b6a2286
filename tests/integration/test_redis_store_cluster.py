"""RedisWindowStore on a real Redis Cluster (3 masters, a replica each): the window-store
contract suite (in process and in a window process), the bucket-tagged key layout spread
over every master, idempotence down to the bytes, a write stale in some slots only, and a
crash between a batch's customer and terminal writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.cluster import RedisCluster

from stream_app.connections import RedisConnection, check_redis
from stream_app.contracts.events import TransactionEvent
from stream_app.errors import DependencyUnavailable
from stream_app.features.incremental import decode_terminal
from stream_app.features.redis_slots import BUCKETS
from stream_app.features.redis_store import RedisWindowStore
from stream_app.features.store import WindowStore
from stream_app.local_cluster import RunningCluster
from stream_app.local_services import free_port
from stream_app.worker.readiness import RedisPing
from tests.integration.window_stores import PREFIX, TTL_DAYS, cluster_config
from tests.unit.feature_histories import T0, label_events, random_history, transaction_events
from tests.unit.window_store_contract import (
    CONTRACT,
    FS,
    closing,
    drive,
    stored,
    window_process,
)

pytestmark = pytest.mark.integration


def _store(cluster: RunningCluster) -> RedisWindowStore:
    return cluster_config(cluster.url).open()


def _state(client: RedisCluster) -> dict[bytes, dict[bytes, bytes]]:
    keys = sorted(client.scan_iter(f"{PREFIX}*", target_nodes=RedisCluster.PRIMARIES))
    return {key: client.hgetall(key) for key in keys}


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
@pytest.mark.parametrize("kind", ["cluster", "window process"])
async def test_the_window_store_contract_on_a_cluster(
    cluster_client: RedisCluster,
    redis_cluster: RunningCluster,
    kind: str,
    check: Callable[[WindowStore[Any]], Awaitable[None]],
) -> None:
    config = cluster_config(redis_cluster.url)
    store: WindowStore[Any] = config.open() if kind == "cluster" else await window_process(config)
    async with closing(store):
        await check(store)


async def test_keys_carry_a_bucket_tag_spread_over_every_master_with_a_ttl(
    cluster_client: RedisCluster, redis_cluster: RunningCluster
) -> None:
    events = [TransactionEvent(f"t{i}", f"c{i}", f"k{i % 50}", T0 + i, 1.0) for i in range(600)]
    async with closing(_store(redis_cluster)) as store:
        await stored(store, events)
        assert store.customer_key("c1").startswith(f"{PREFIX}v3:{{cust:")
    keys = list(_state(cluster_client))
    assert len(keys) == 650
    tags = {key.partition(b"}")[0] for key in keys if b"{cust:" in key}
    assert 0.85 * BUCKETS < len(tags) <= BUCKETS  # 600 customers: ~90% of the buckets
    for key in keys[:20]:
        assert cluster_client.hget(key, "v") == b"1"
        assert 0 < cluster_client.ttl(key) <= TTL_DAYS * 86_400
    per_master = cluster_client.dbsize(target_nodes=RedisCluster.PRIMARIES)
    assert per_master == 650  # the sum; each master must hold a share:
    for node in cluster_client.get_primaries():
        assert cluster_client.dbsize(target_nodes=node) > 100


async def test_redelivery_leaves_the_cluster_byte_identical(
    cluster_client: RedisCluster, redis_cluster: RunningCluster
) -> None:
    history = random_history(22, n=600)
    async with closing(_store(redis_cluster)) as store:
        await drive(store, history, seed=22)
        before = _state(cluster_client)
        tail = range(len(history) - 80, len(history))
        delivered = [
            label
            for label in label_events(history)
            if label.label_time_us <= history.event_time_us[-1]
        ]
        again = await stored(store, transaction_events(history, tail), delivered)
    assert again.duplicate.all()
    assert _state(cluster_client) == before


async def test_a_write_stale_in_some_slots_stores_the_others_and_redoes_the_stale_ones(
    cluster_client: RedisCluster, redis_cluster: RunningCluster
) -> None:
    async with closing(_store(redis_cluster)) as a, closing(_store(redis_cluster)) as b:
        await stored(a, [TransactionEvent("a1", "ca", "k", T0, 1.0)])
        await stored(b, [TransactionEvent("b1", "cb", "k", T0 + 1, 1.0)])  # k moved behind a
        many = [TransactionEvent(f"a{i}", f"c{i}", f"k{i}", T0 + 2 + i, 1.0) for i in range(2, 40)]
        await stored(a, [*many, TransactionEvent("ax", "ca", "k", T0 + 50, 1.0)])
    async with closing(_store(redis_cluster)) as fresh:  # reads what the cluster holds
        row = await stored(fresh, [TransactionEvent("probe", "cp", "k", T0 + 60, 1.0)])
    count = float(row.values[0, FS.columns.index("terminal_nb_tx_1d_undelayed")])
    assert count == 4.0  # a1, b1, ax, probe: nothing lost, nothing twice
    assert cluster_client.hget(a.terminal_key("k"), "v") == b"4"
    for i in range(2, 40):  # the windows of the other slots were stored once
        assert cluster_client.hget(a.customer_key(f"c{i}"), "v") == b"1"


async def test_a_crash_between_the_customer_and_terminal_writes_is_completed_on_redelivery(
    cluster_client: RedisCluster, redis_cluster: RunningCluster
) -> None:
    events = [TransactionEvent(f"t{i}", f"c{i % 7}", f"k{i % 5}", T0 + i, 2.0) for i in range(60)]
    async with closing(_store(redis_cluster)) as clean:
        await stored(clean, events)
    expected = _state(cluster_client)
    cluster_client.flushall(target_nodes=RedisCluster.PRIMARIES)
    async with closing(_store(redis_cluster)) as crashing:  # stores its customers only
        computed = await crashing.compute(events, [])
        customers = [w for w in computed.writes if ":{cust:" in w.key]
        assert crashing._slots is not None
        crashing._slots.write(TTL_DAYS * 86_400, customers)
    half = _state(cluster_client)
    assert all(b":{cust:" in key for key in half)
    async with closing(_store(redis_cluster)) as restarted:  # the batch re-delivered
        again = await stored(restarted, events)
    assert again.duplicate.all()  # not scored twice
    after = _state(cluster_client)
    assert {key: state[b"s"] for key, state in after.items()} == {
        key: state[b"s"] for key, state in expected.items()
    }
    terminal = decode_terminal(after[restarted.terminal_key("k0").encode()][b"s"])
    assert sorted(terminal.transaction_ids) == sorted(f"t{i}" for i in range(0, 60, 5))


async def test_check_redis_and_the_readiness_ping_reach_every_node(
    redis_cluster: RunningCluster,
) -> None:
    connection = RedisConnection(redis_cluster.url, cluster=True)
    await check_redis(connection)
    ping = RedisPing(connection)
    try:
        assert await ping.failure() is None
    finally:
        await ping.close()
    with pytest.raises(DependencyUnavailable, match=r"\(cluster\)"):
        await check_redis(RedisConnection(f"redis://127.0.0.1:{free_port()}", cluster=True), 1.0)
