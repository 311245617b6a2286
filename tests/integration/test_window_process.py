"""The window store in a child process, on a real redis-server: the same bytes in Redis as
the store in process, computes sent at once applied in order, the child's errors raised in
the worker, a frozen Redis retried in the child and reported, and a child that never
outlives its worker. (The window-store contract suite runs it too: test_redis_store.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import numpy.testing as npt
import pytest
import redis

from stream_app.contracts.events import TransactionEvent
from stream_app.errors import InputDataError
from stream_app.features.store import InMemoryWindowStore
from stream_app.local_services import start_redis
from stream_app.worker.window_process import WindowProcessError
from tests.integration.window_stores import (
    FS,
    PREFIX,
    BlockingProcessStore,
    BlockingRedisStore,
    drive,
    redis_state,
)
from tests.unit.feature_histories import T0, random_history, transaction_events

pytestmark = pytest.mark.integration


def test_the_child_writes_the_same_bytes_as_the_store_in_process(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(5, n=600)
    stores = {
        "process": BlockingProcessStore(redis_url),
        "in process": BlockingRedisStore(redis_url),
    }
    states = {}
    for name, store in stores.items():
        redis_client.flushall()
        try:
            drive(store, history, seed=5)
        finally:
            store.close()
        states[name] = redis_state(redis_client)
    assert states["process"] == states["in process"]
    windows = len(set(history.customer_id)) + len(set(history.terminal_id))
    assert len(states["process"]) == windows


def test_computes_sent_at_once_are_applied_in_order(
    process_store: BlockingProcessStore,
) -> None:
    history = random_history(8, n=400)
    chunks = [transaction_events(history, range(lo, lo + 50)) for lo in range(0, 400, 50)]
    store = process_store.store

    async def all_at_once() -> list[np.ndarray]:
        computed = await asyncio.gather(*(store.compute(chunk, []) for chunk in chunks))
        await store.write_all(computed)
        return [c.features.values for c in computed]

    values = process_store.run(all_at_once())
    in_memory = InMemoryWindowStore(FS)
    for chunk, got in zip(chunks, values, strict=True):
        npt.assert_array_equal(got, in_memory.process(chunk, []).values)


def test_the_childs_error_is_raised_in_the_worker_and_the_child_goes_on(
    process_store: BlockingProcessStore, redis_client: redis.Redis
) -> None:
    redis_client.hset(f"{PREFIX}v2:cust:broken", mapping={"v": 1, "s": b"\x01not msgpack"})
    with pytest.raises(InputDataError, match="customer window state of 12 bytes cannot be read"):
        process_store.process([TransactionEvent("a", "broken", "k", T0, 1.0)], [])
    row = process_store.process([TransactionEvent("b", "fine", "k", T0, 1.0)], [])
    assert row.values.shape == (1, len(FS.columns))


def test_a_frozen_redis_is_retried_in_the_child_and_reported() -> None:
    with start_redis() as private:
        store = BlockingProcessStore(private.url)
        registry = store.metrics.registry

        def sample(name: str) -> float:
            return registry.get_sample_value(name, {"dependency": "redis"}) or 0.0

        async def through_an_outage() -> tuple[float, float, np.ndarray]:
            os.kill(private.process.pid, signal.SIGSTOP)
            try:
                computing = asyncio.ensure_future(
                    store.store.compute([TransactionEvent("a", "c", "k", T0, 7.0)], [])
                )
                deadline = time.monotonic() + 30
                while sample("fraudstream_dependency_retries_total") == 0:
                    assert time.monotonic() < deadline, "no Redis failure reported"
                    await asyncio.sleep(0.1)
                down = sample("fraudstream_dependency_up")
                assert not computing.done()
            finally:
                os.kill(private.process.pid, signal.SIGCONT)
            computed = await asyncio.wait_for(computing, 30)
            return down, sample("fraudstream_dependency_up"), computed.features.values

        try:
            down, up, values = store.run(through_an_outage())
        finally:
            store.close()
    assert (down, up) == (0.0, 1.0)
    assert values[0, 0] == 7.0


def test_a_dead_child_fails_every_call_with_a_clear_error(
    process_store: BlockingProcessStore,
) -> None:
    os.kill(process_store.store.pid, signal.SIGKILL)
    with pytest.raises(WindowProcessError, match="exited with code -9"):
        process_store.process([TransactionEvent("a", "c", "k", T0, 1.0)], [])


def test_the_child_exits_when_its_worker_is_killed(redis_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from tests.integration.window_stores import BlockingProcessStore
        store = BlockingProcessStore({redis_url!r})
        print(store.store.pid, flush=True)
        store.run(asyncio.sleep(60))
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        with worker.stdout:
            child = int(worker.stdout.readline())
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 10
        while _running(child):
            assert time.monotonic() < deadline, f"the window process {child} outlived its worker"
            time.sleep(0.05)
    finally:
        worker.kill()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
