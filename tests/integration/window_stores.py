"""Redis window stores for the integration tests (in process and in a window process) on
the session's redis-server, and what Redis holds."""

from __future__ import annotations

import redis
import redis.asyncio as redis_asyncio

from stream_app.connections import RedisConnection
from stream_app.features.redis_store import RedisStoreConfig, RedisWindowStore
from tests.unit.window_store_contract import FS

PREFIX = "fraudstream:test:"
TTL_DAYS = 45


def redis_config(url: str) -> RedisStoreConfig:
    """The worker's config of a store on ``url`` (threaded writes)."""
    return RedisStoreConfig(url, FS, PREFIX, TTL_DAYS, redis_timeout_s=1.0)


def cluster_config(url: str, pseudonym_key: bytes = b"") -> RedisStoreConfig:
    """The worker's config of a store on the Redis Cluster of the startup node ``url``."""
    connection = RedisConnection(url, cluster=True)
    return RedisStoreConfig(
        connection, FS, PREFIX, TTL_DAYS, redis_timeout_s=2.0, pseudonym_key=pseudonym_key
    )


def redis_store(url: str, *, threaded_writes: bool = False) -> RedisWindowStore:
    """A store on its own clients (closed with it), writing from the event loop unless
    ``threaded_writes``."""
    writer = redis.Redis.from_url(url) if threaded_writes else None
    return RedisWindowStore(
        redis_asyncio.Redis.from_url(url), FS, key_prefix=PREFIX, ttl_days=TTL_DAYS,
        writer=writer, owns_clients=True,
    )  # fmt: skip


def redis_state(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in sorted(client.scan_iter(f"{PREFIX}*"))}
