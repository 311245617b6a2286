"""The window store in a child process, on a real redis-server: the same bytes in Redis as
the store in process, computes sent at once applied in order (Redis and in-memory stores),
the child's errors raised in the worker, a frozen Redis retried in the child and reported,
and a child that never outlives its worker. (The window-store contract suite runs it too:
test_redis_store, and on an in-memory store test_features_store.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy.testing as npt
import pytest
import redis

from stream_app.contracts.events import TransactionEvent
from stream_app.errors import InputDataError
from stream_app.features.store import InMemoryStoreConfig, InMemoryWindowStore, WindowStore
from stream_app.local_services import start_redis
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.window_process import WindowProcessError
from tests.integration.window_stores import PREFIX, redis_config, redis_state, redis_store
from tests.unit.feature_histories import T0, random_history, transaction_events
from tests.unit.window_store_contract import FS, closing, drive, stored, window_process

pytestmark = pytest.mark.integration


async def test_the_child_writes_the_same_bytes_as_the_store_in_process(
    redis_client: redis.Redis, redis_url: str
) -> None:
    history = random_history(5, n=600)
    states = {}
    for name in ("process", "in process"):
        redis_client.flushall()
        store: WindowStore[Any] = (
            await window_process(redis_config(redis_url))
            if name == "process"
            else redis_store(redis_url)
        )
        async with closing(store):
            await drive(store, history, seed=5)
        states[name] = redis_state(redis_client)
    assert states["process"] == states["in process"]
    windows = len(set(history.customer_id)) + len(set(history.terminal_id))
    assert len(states["process"]) == windows


@pytest.mark.parametrize("kind", ["redis", "in-memory"])
async def test_computes_sent_at_once_are_applied_in_order(
    redis_client: redis.Redis, redis_url: str, kind: str
) -> None:
    history = random_history(8, n=400)
    chunks = [transaction_events(history, range(lo, lo + 50)) for lo in range(0, 400, 50)]
    config = redis_config(redis_url) if kind == "redis" else InMemoryStoreConfig(FS)
    async with closing(await window_process(config)) as store:
        assert store.computes_in_order
        computed = await asyncio.gather(*(store.compute(chunk, []) for chunk in chunks))
        await store.write_all(computed)
    in_memory = InMemoryWindowStore(FS)
    for chunk, got in zip(chunks, computed, strict=True):
        npt.assert_array_equal(got.features.values, in_memory.apply(chunk, []).values)


async def test_the_childs_error_is_raised_in_the_worker_and_the_child_goes_on(
    redis_client: redis.Redis, redis_url: str
) -> None:
    redis_client.hset(f"{PREFIX}v2:cust:broken", mapping={"v": 1, "s": b"\x01not msgpack"})
    async with closing(await window_process(redis_config(redis_url))) as store:
        with pytest.raises(
            InputDataError, match="customer window state of 12 bytes cannot be read"
        ):
            await stored(store, [TransactionEvent("a", "broken", "k", T0, 1.0)])
        row = await stored(store, [TransactionEvent("b", "fine", "k", T0, 1.0)])
    assert row.values.shape == (1, len(FS.columns))


async def test_a_frozen_redis_is_retried_in_the_child_and_reported() -> None:
    metrics = WorkerMetrics()
    registry = metrics.registry

    def sample(name: str) -> float:
        return registry.get_sample_value(name, {"dependency": "redis"}) or 0.0

    with start_redis() as private:
        async with closing(await window_process(redis_config(private.url), metrics)) as store:
            os.kill(private.process.pid, signal.SIGSTOP)
            try:
                computing = asyncio.ensure_future(
                    store.compute([TransactionEvent("a", "c", "k", T0, 7.0)], [])
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
            up = sample("fraudstream_dependency_up")
    assert (down, up) == (0.0, 1.0)
    assert computed.features.values[0, 0] == 7.0


@pytest.mark.parametrize("kind", ["redis", "in-memory"])
async def test_a_dead_child_fails_every_call_with_a_clear_error(
    redis_client: redis.Redis, redis_url: str, kind: str
) -> None:
    config = redis_config(redis_url) if kind == "redis" else InMemoryStoreConfig(FS)
    async with closing(await window_process(config)) as store:
        os.kill(store.pid, signal.SIGKILL)
        with pytest.raises(WindowProcessError, match="exited with code -9"):
            await stored(store, [TransactionEvent("a", "c", "k", T0, 1.0)])


async def test_a_child_that_cannot_open_its_store_fails_the_start() -> None:
    with pytest.raises(WindowProcessError, match=r"did not start .* \(exit code 1\)"):
        await window_process(redis_config("nonsense://"))  # the child's open() raises


def test_the_child_exits_when_its_worker_is_killed(redis_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from tests.integration.window_stores import redis_config
        from tests.unit.window_store_contract import window_process

        async def main():
            store = await window_process(redis_config({redis_url!r}))
            print(store.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
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
