"""Window-store fixtures of the integration tests (each on the session's redis-server,
emptied first by ``redis_client``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.integration.window_stores import BlockingProcessStore, BlockingRedisStore


@pytest.fixture
def redis_store(redis_client: redis.Redis, redis_url: str) -> Iterator[BlockingRedisStore]:
    store = BlockingRedisStore(redis_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def process_store(redis_client: redis.Redis, redis_url: str) -> Iterator[BlockingProcessStore]:
    store = BlockingProcessStore(redis_url)
    try:
        yield store
    finally:
        store.close()
