"""The window store in a child process, so the window maths runs beside the event loop.

In process, the worker's event loop was its limit, and the window maths about half of its
work. A :class:`WindowProcess` is a :class:`~stream_app.features.store.WindowStore` whose
calls run on the store a :class:`~stream_app.features.store.WindowStoreConfig` opens in a
child process (``python -m stream_app.worker.window_process FD``): the worker's
:class:`~stream_app.features.redis_store.RedisStoreConfig`, or any other (tests use an
in-memory one). Calls travel over a socket pair in length-prefixed pickled frames; the
worker decodes, scores and publishes while the child applies the next batches
(``FRAUDSTREAM_WINDOW_PROCESS=false`` keeps the store in process).

- **Same semantics.** The child runs computes and cache resets in the order sent, on one
  asyncio loop, and the writes from a task of that loop, as the worker ran them
  in process. A computed batch stays in the child until it is written; its id travels.
- **Computes in flight.** The worker sends a batch's compute without waiting for the one
  before (:attr:`WindowProcess.computes_in_order`). So a compute must not fail where a
  later one could succeed: the child retries retriable errors (Redis's) of a compute
  itself and reports each failed attempt, and the recovery, to the worker's Redis
  :class:`~stream_app.worker.retry.Backoff`. Writes are one at a time; their Redis errors
  come back and the worker's backoff retries them.
- **Errors.** Any other failure raises the child's exception in the worker; if the child
  exits, every call raises :class:`WindowProcessError` and the worker stops.
- **Lifetime.** The child ignores SIGINT and SIGTERM (they reach the worker's whole process
  group; the worker stops the child once its in-flight writes are done) and exits when the
  worker's end of the socket closes, also when the worker is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

import redis

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import FraudstreamError
from stream_app.features.spec import FeatureSet
from stream_app.features.store import (
    ComputedWindows,
    FeatureBatch,
    Progress,
    WindowStore,
    WindowStoreConfig,
)
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
_EXIT_WAIT_S = 5.0
_NO_REPLY = 0  # request id of a call answered by nothing (cache resets)
_LENGTH = struct.Struct("!Q")  # a frame: its length, then a pickled message
_STREAM_LIMIT = 1 << 24
_SOCKET_BUFFER = 1 << 22
# the child's cache is millions of windows the collector need not scan (see stream.app)
_GC_THRESHOLDS = (20_000, 20, 20)


class WindowProcessError(FraudstreamError):
    """The window store's child process exited or could not start."""


@dataclass(frozen=True, eq=False)
class RemoteBatch:
    """A batch computed in the child: its rows here, its window writes there (``batch_id``)."""

    batch_id: int
    features: FeatureBatch
    changed: bool


class WindowProcess:
    """A window store in a child process; start with :meth:`start`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        redis_backoff: Backoff,
        feature_set: FeatureSet,
    ) -> None:
        self._process = process
        self._redis_backoff = redis_backoff
        self._feature_set = feature_set
        self._reader = reader
        self._writer = writer
        self._ids = count(_NO_REPLY + 1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._lost: WindowProcessError | None = None
        self._replies = asyncio.create_task(self._read_replies(), name="fraudstream-window-replies")

    @classmethod
    async def start(cls, config: WindowStoreConfig, redis_backoff: Backoff) -> WindowProcess:
        """Start the child, which opens ``config``'s store, and wait until it answers with
        the store's feature set; the child's Redis retries are reported to
        ``redis_backoff`` (the pipeline's)."""
        process, ours = _spawn()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=_STREAM_LIMIT)
        writer.transport.max_size = _SOCKET_BUFFER  # type: ignore[attr-defined]
        writer.write(_frame(config))
        try:
            feature_set = await asyncio.wait_for(_read_frame(reader), _START_TIMEOUT_S)
        except (TimeoutError, EOFError, OSError):
            writer.close()  # the child exits once the worker's end is closed
            await _stop(process)
            raise WindowProcessError(
                f"the window process did not start within {_START_TIMEOUT_S:.0f} s (exit code "
                f"{process.poll()}); its errors are in the worker's log above"
            ) from None
        return cls(process, reader, writer, redis_backoff, feature_set)

    @property
    def feature_set(self) -> FeatureSet:
        """The feature set of the child's store."""
        return self._feature_set

    async def compute(
        self,
        transactions: Sequence[TransactionEvent],
        labels: Sequence[LabelEvent],
        progress: Progress | None = None,
    ) -> RemoteBatch:
        """The store's ``compute`` in the child."""
        # as plain tuples: pickling a NamedTuple calls back into Python, ~4x slower
        batch: RemoteBatch = await self._call(
            "compute", list(map(tuple, transactions)), list(map(tuple, labels)), progress
        )
        return batch

    async def write_all(self, batches: Sequence[RemoteBatch]) -> None:
        """The store's ``write_all`` in the child, of the batches computed there."""
        await self._call("write", [batch.batch_id for batch in batches])

    @property
    def computes_in_order(self) -> bool:
        """True: the child runs computes in the order called (each is sent at once)."""
        return True

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """The store's ``reset_cache`` in the child (ordered after the computes already
        sent)."""
        self._send(_NO_REPLY, "reset", shared_terminals)

    def supersede(self, generation: int) -> None:
        """The store's ``supersede`` in the child, at once (not after the computes sent)."""
        self._send(_NO_REPLY, "supersede", generation)

    async def close(self) -> None:
        """Let the child finish its writes, close its store and exit; kill it if it does
        not within 30 s."""
        with contextlib.suppress(WindowProcessError):
            self._send(_NO_REPLY, "stop")
        await _stop(self._process)
        self._writer.close()
        self._replies.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._replies

    # -- the wire --------------------------------------------------------------------------

    async def _call(self, operation: str, *args: Any) -> Any:
        request_id = next(self._ids)
        reply = self._pending[request_id] = asyncio.get_running_loop().create_future()
        try:
            self._send(request_id, operation, *args)
            return await reply
        finally:
            self._pending.pop(request_id, None)

    def _send(self, request_id: int, operation: str, *args: Any) -> None:
        if self._lost is not None:
            raise self._lost
        self._writer.write(_frame((request_id, operation, args)))

    async def _read_replies(self) -> None:
        """Resolve each reply's call; once the child is gone, fail every call."""
        try:
            while True:
                request_id, ok, payload = await _read_frame(self._reader)
                if request_id == _NO_REPLY:  # the child's Redis retries
                    if ok:
                        self._redis_backoff.succeeded_elsewhere()
                    else:
                        self._redis_backoff.failed_elsewhere(payload)
                    continue
                reply = self._pending.get(request_id)
                if reply is None or reply.done():  # its caller was cancelled
                    continue
                if ok:
                    reply.set_result(payload)
                else:
                    reply.set_exception(payload)
        except (EOFError, OSError):  # the child closed its end: let it exit, for its code
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._process.wait, _EXIT_WAIT_S)
        except Exception:
            log.exception("unreadable reply from the window process")
            self._process.kill()
        finally:
            self._lost = self._exited()
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(self._lost)

    def _exited(self) -> WindowProcessError:
        code = self._process.poll()
        state = "stopped answering" if code is None else f"exited with code {code}"
        return WindowProcessError(
            f"the window process {state}; the worker stops (its batches not yet committed "
            "are redelivered on restart)"
        )


def _spawn() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """The child process, and the worker's end of the socket pair it serves."""
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
    with theirs:
        process = subprocess.Popen(  # noqa: S603 - this interpreter running this module
            [sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
    return process, ours


async def _stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for the child to exit (it was asked to); kill it if it does not within 30 s."""
    try:
        await asyncio.to_thread(process.wait, _STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("the window process did not stop in %.0f s; killing it", _STOP_TIMEOUT_S)
        process.kill()
        await asyncio.to_thread(process.wait)


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message of the socket pair (written only by this module's two ends)."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return _load(await reader.readexactly(length))


def _load(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - not untrusted: our own process pickled it


# -- the child -----------------------------------------------------------------------------


class _Server:
    """The child's side: one store; computes and cache resets in order, writes beside them."""

    def __init__(self, writer: asyncio.StreamWriter, store: WindowStore[Any]) -> None:
        self._writer = writer
        self._store = store
        self._computed: dict[int, ComputedWindows] = {}
        self._redis = _RelayedBackoff(self._reply)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Run requests until ``stop`` or the worker's end closes; then finish the writes."""
        computes: asyncio.Queue[tuple[int, str, tuple[Any, ...]]] = asyncio.Queue()
        writes: asyncio.Queue[tuple[int, list[int]] | None] = asyncio.Queue()
        compute_task = asyncio.create_task(self._compute_loop(computes))
        write_task = asyncio.create_task(self._write_loop(writes))
        try:
            while True:
                request_id, operation, args = await _read_frame(reader)
                if operation == "write":
                    writes.put_nowait((request_id, args[0]))
                elif operation == "supersede":
                    self._store.supersede(args[0])
                elif operation == "stop":
                    break
                else:
                    computes.put_nowait((request_id, operation, args))
        except (EOFError, OSError):
            pass  # the worker is gone: what it asked to write is still written
        finally:
            compute_task.cancel()
            writes.put_nowait(None)
            await write_task

    async def _compute_loop(
        self, computes: asyncio.Queue[tuple[int, str, tuple[Any, ...]]]
    ) -> None:
        store = self._store
        while True:
            request_id, operation, args = await computes.get()
            if operation == "reset":
                store.reset_cache(shared_terminals=args[0])
                continue
            transactions = list(map(TransactionEvent._make, args[0]))
            labels = list(map(LabelEvent._make, args[1]))
            try:
                computed = await self._compute(transactions, labels, args[2])
            except Exception as exc:  # every failure goes back to the caller
                self._reply(request_id, False, exc)
                continue
            if computed.changed:
                self._computed[request_id] = computed
            remote = RemoteBatch(request_id, computed.features, computed.changed)
            self._reply(request_id, True, remote)

    async def _compute(
        self,
        transactions: list[TransactionEvent],
        labels: list[LabelEvent],
        progress: Progress | None,
    ) -> ComputedWindows:
        """``store.compute``, retried while Redis fails: the worker sends the next batches
        without waiting, so a failed one must not let them pass."""
        return await self._redis.call(lambda: self._store.compute(transactions, labels, progress))

    async def _write_loop(self, writes: asyncio.Queue[tuple[int, list[int]] | None]) -> None:
        while (request := await writes.get()) is not None:
            request_id, batch_ids = request
            batches = [self._computed[i] for i in batch_ids if i in self._computed]
            try:
                await self._store.write_all(batches)
            except Exception as exc:  # kept for the caller's retry
                self._reply(request_id, False, exc)
                continue
            if batch_ids:  # written in order: batches computed before these never will be
                last = max(batch_ids)
                for batch_id in [i for i in self._computed if i <= last]:
                    del self._computed[batch_id]
            self._reply(request_id, True, None)

    def _reply(self, request_id: int, ok: bool, payload: Any) -> None:
        if not ok:
            payload = _picklable(payload)
        self._writer.write(_frame((request_id, ok, payload)))


class _RelayedBackoff(Backoff):
    """The worker's retry schedule for Redis in the child: each failed attempt, and the
    recovery, go to the worker's own Redis :class:`Backoff` (its log and metrics)."""

    def __init__(self, reply: Callable[[int, bool, Any], None]) -> None:
        super().__init__("redis", WorkerMetrics())
        self._reply = reply
        self._reported = False

    def _failed(self, exc: BaseException) -> None:
        self._reported = True
        self._reply(_NO_REPLY, False, exc)

    def _succeeded(self) -> None:
        if self._reported:
            self._reported = False
            self._reply(_NO_REPLY, True, None)


def _picklable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        _load(pickle.dumps(error))
    except Exception:  # any type can fail to round-trip
        return RuntimeError(f"{type(error).__name__}: {error}")
    if not isinstance(error, FraudstreamError | redis.RedisError | OSError):
        log.error("window process: %r", error, exc_info=error)
    return error


def main(argv: Sequence[str]) -> None:
    """The child: serve the worker on the socket whose descriptor is ``argv[1]``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(socket.socket(fileno=int(argv[1]))))


async def _serve(connection: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=connection, limit=_STREAM_LIMIT)
    writer.transport.max_size = _SOCKET_BUFFER  # type: ignore[attr-defined]
    config: WindowStoreConfig = await _read_frame(reader)
    store = config.open()
    writer.write(_frame(store.feature_set))  # started: the worker's start() returns
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        await _Server(writer, store).serve(reader)
    finally:
        await store.close()
        writer.close()


if __name__ == "__main__":  # run as a script, this module is __main__: pickle names the
    from stream_app.worker.window_process import main as imported_main  # importable one

    imported_main(sys.argv)
