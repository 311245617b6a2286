"""The local Redis Cluster (stream_app/local_cluster.py): 3 masters with a replica each,
from the redis-server binary, usable by a cluster client and able to fail over."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from stream_app.local_cluster import RunningCluster, start_redis_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[RunningCluster]:
    with start_redis_cluster(masters=3, replicas=1) as running:
        yield running


def _client(cluster: RunningCluster) -> RedisCluster:
    nodes = [ClusterNode(node.host, node.port) for node in cluster.nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, socket_timeout=2.0)


def _roles(cluster: RunningCluster) -> dict[int, str]:
    """Each node's port and role, as the first node sees them."""
    nodes = redis.Redis(port=cluster.nodes[0].port).cluster("NODES")
    return {
        int(address.rpartition(":")[2]): "replica" if "slave" in info["flags"] else "master"
        for address, info in nodes.items()
    }


def test_three_masters_with_a_replica_each_cover_every_slot(cluster: RunningCluster) -> None:
    roles = _roles(cluster)
    assert sorted(roles) == sorted(node.port for node in cluster.nodes)
    assert sorted(roles.values()) == ["master"] * 3 + ["replica"] * 3
    info = redis.Redis(port=cluster.nodes[0].port).cluster("INFO")
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384


def test_a_replica_promoted_keeps_every_key(cluster: RunningCluster) -> None:
    client = _client(cluster)
    try:
        for i in range(300):
            client.set(f"k{i}", i)
        replica = next(port for port, role in _roles(cluster).items() if role == "replica")
        redis.Redis(port=replica).cluster("FAILOVER")
        deadline = time.monotonic() + 20
        while _roles(cluster)[replica] != "master":
            assert time.monotonic() < deadline, "the replica was not promoted"
            time.sleep(0.1)
        assert [client.get(f"k{i}") for i in range(300)] == [str(i).encode() for i in range(300)]
    finally:
        client.close()
