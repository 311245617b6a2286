"""A throw-away Redis Cluster on loopback: masters with replicas, from ``redis-server``.

:func:`start_redis_cluster` starts ``masters * (1 + replicas)`` cluster-enabled servers on
free 127.0.0.1 ports (no persistence), joins them with ``redis-cli --cluster create``,
waits until every node reports ``cluster_state:ok`` and stops them all at the end. For
tests and benchmarks of the window store on a cluster; nothing here touches a server it
did not start.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from stream_app.errors import LocalServiceError
from stream_app.local_services import HOST, RunningService, free_port, start_redis

READY_TIMEOUT_S = 30.0
NODE_TIMEOUT_MS = 2000
"""How long a master may be unreachable before its replica is promoted."""
BUS_PORT_OFFSET = 10_000
"""A node's cluster bus listens on its port + this."""


@dataclass(frozen=True)
class RunningCluster:
    """The nodes of a cluster started by :func:`start_redis_cluster`."""

    nodes: tuple[RunningService, ...]

    @property
    def startup_nodes(self) -> list[str]:
        """``host:port`` of every node (what a cluster client is given)."""
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://host:port`` of the first node: a cluster client finds the others."""
        return f"redis://{self.nodes[0].address}"

    def replicas_in_sync(self) -> int:
        """How many replicas are in sync with their master (``online``: a ``WAIT`` can
        count them)."""
        return sum(map(_online_replicas, self.nodes))

    def node(self, port: int) -> RunningService:
        """The node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)


@contextlib.contextmanager
def start_redis_cluster(masters: int = 3, replicas: int = 1) -> Iterator[RunningCluster]:
    """Run a cluster of ``masters`` masters with ``replicas`` replicas each."""
    if masters < 3:
        raise LocalServiceError(f"a Redis Cluster needs 3 masters or more, not {masters}")
    options = (
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        nodes = tuple(
            stack.enter_context(start_redis(_node_port(), options=options))
            for _ in range(masters * (1 + replicas))
        )
        cluster = RunningCluster(nodes)
        _create(cluster, replicas)
        _wait_ok(cluster, masters * replicas)
        yield cluster


def _node_port() -> int:
    """A free port that leaves room for the node's cluster bus port (port + 10000) below
    65536 and finds that one free too."""
    for _ in range(1000):
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((HOST, port + BUS_PORT_OFFSET))
                except OSError:
                    continue
            return port
    raise LocalServiceError("no free port pair (port, port + 10000) for a cluster node")


def _create(cluster: RunningCluster, replicas: int) -> None:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise LocalServiceError(
            "redis-cli not found on PATH; install it with redis-server "
            "(apt-get install -y redis-tools), or run `make setup`"
        )
    done = subprocess.run(  # noqa: S603 - argv built here, no shell
        [cli, "--cluster", "create", *cluster.startup_nodes,
         "--cluster-replicas", str(replicas), "--cluster-yes"],
        capture_output=True, text=True, timeout=READY_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise LocalServiceError(
            f"redis-cli --cluster create failed (exit {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-500:]}"
        )


def _wait_ok(cluster: RunningCluster, replicas: int) -> None:
    """Until every node says ``cluster_state:ok`` and sees all ``replicas`` replicas, and
    the masters have each replica in sync (``online``: a ``WAIT`` can count it)."""
    expected = ("ok", replicas)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(_state(node) == expected for node in cluster.nodes) and (
            cluster.replicas_in_sync() == replicas
        ):
            return
        time.sleep(0.1)
    states = {node.address: _state(node) for node in cluster.nodes}
    raise LocalServiceError(
        f"the Redis Cluster did not become ok with {replicas} replicas in time: {states}"
    )


def _online_replicas(node: RunningService) -> int:
    """How many replicas of ``node`` (if a master) are in sync with it."""
    client = redis.Redis(host=HOST, port=node.port, socket_timeout=1.0)
    try:
        info = client.info("replication")
        return sum(
            1 for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict)
            and value.get("state") == "online"
        )  # fmt: skip
    except redis.RedisError:
        return 0
    finally:
        client.close()


def _state(node: RunningService) -> tuple[str, int]:
    """The node's cluster state and how many replicas it sees."""
    client = redis.Redis(host=HOST, port=node.port, socket_timeout=1.0)
    try:
        seen = client.cluster("NODES").values()
        replicas = sum("slave" in info["flags"].split(",") for info in seen)
        return str(client.cluster("INFO")["cluster_state"]), replicas
    except (redis.RedisError, KeyError):
        return "unreachable", 0
    finally:
        client.close()
