"""Secured connections on real servers, with certificates made by openssl for the test.

- Redis: ``redis-server`` speaking only TLS (client certificates required) with an ACL user
  (the default user off).
- Kafka over TLS: tansu cannot serve TLS itself (0.6.0 refuses ``--cert`` with ``--key``),
  so stunnel is its TLS endpoint (client certificates required) and tansu advertises the
  stunnel port: metadata sends the clients back through the tunnel.
- Kafka SASL: tansu with ``--authentication`` offers SCRAM only and keeps no SCRAM users in
  its in-memory storage, so every login is refused: what can be tested there is how a
  refused login ends a client.

A refused login or an untrusted certificate ends the worker and the CLI tools with one
``error:`` line naming what failed and the setting to fix; secrets read from
``FRAUDSTREAM_*_FILE`` never appear in any output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_app.connections import (
    KafkaConnection,
    RedisConnection,
    check_kafka,
    check_redis,
)
from stream_app.errors import AuthenticationFailed
from stream_app.local_services import (
    RunningService,
    start_redis,
    start_tansu,
    start_tansu_tls,
)
from stream_app.local_tls import Certificates, make_certificates
from stream_app.settings import ENV_PREFIX, FILE_SUFFIX, Settings
from stream_app.sources.jsonl import write_jsonl
from stream_app.tools.alerts_consumer import consume_alerts
from stream_app.tools.worker_process import settings_environment, worker_process
from stream_app.topics import stream_topics
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    bundle_with_threshold,
    create_topics,
    read_all,
    replay_history,
    running_worker,
    small_history,
    worker_settings,
)
from tests.secrets import (
    KEY_PASSWORD,
    PLAIN_SASL_PASSWORD,
    REDIS_PASSWORD,
    SASL_PASSWORD,
    WRONG_REDIS_PASSWORD,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

REDIS_USER = "fraudstream"
CLI_TIMEOUT_S = 60.0
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates of another CA: the servers' certificates do not chain to it."""
    return make_certificates(tmp_path_factory.mktemp("stranger"), ca_name="some other CA")


@pytest.fixture(scope="module")
def secure_redis(certs: Certificates) -> Iterator[RunningService]:
    with start_redis(tls=certs, users={REDIS_USER: REDIS_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def tls_kafka(certs: Certificates) -> Iterator[RunningService]:
    with start_tansu_tls(certs) as tunnel:
        yield tunnel


def redis_tls(certs: Certificates, **changes: str) -> dict[str, str]:
    """The Redis settings of a TLS client with an ACL login (besides the URL)."""
    return {
        "redis_username": REDIS_USER,
        "redis_password": REDIS_PASSWORD,
        "redis_ssl_cafile": str(certs.ca),
        "redis_ssl_certfile": str(certs.client_cert),
        "redis_ssl_keyfile": str(certs.client_key),
        **changes,
    }


def kafka_tls(certs: Certificates, **changes: str) -> dict[str, str]:
    """The Kafka settings of a TLS client with its client certificate (besides bootstrap)."""
    return {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": str(certs.ca),
        "kafka_ssl_certfile": str(certs.client_cert),
        "kafka_ssl_keyfile": str(certs.client_key),
        **changes,
    }


def encrypted_key(certs: Certificates, directory: Path) -> Path:
    """The client key encrypted with :data:`KEY_PASSWORD`."""
    path = directory / "client-encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs.client_key), "-aes256", "-out", str(path),
         "-passout", f"pass:{KEY_PASSWORD}"],
        check=True,
    )  # fmt: skip
    return path


def run_cli(
    args: list[str], settings: Settings, tmp_path: Path, secrets: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m stream_app ARGS`` with ``settings`` in its environment, the fields
    named in ``secrets`` as ``FRAUDSTREAM_X_FILE`` only; the result and its duration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_environment(settings))
    env.update(secret_files(settings, tmp_path, secrets))
    for name in secrets:
        env.pop(ENV_PREFIX + name.upper())
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    return done, time.monotonic() - started


def secret_files(settings: Settings, directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``FRAUDSTREAM_X_FILE`` variables of files holding the secrets ``names``."""
    env = {}
    for name in names:
        path = directory / f"{name}.secret"
        path.write_text(getattr(settings, name) + "\n")
        path.chmod(0o600)
        env[ENV_PREFIX + name.upper() + FILE_SUFFIX] = str(path)
    return env


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (nothing else on stdout or stderr)."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# -- Redis over TLS with an ACL login ---------------------------------------------------------


async def test_a_worker_scores_over_tls_to_kafka_and_redis_with_an_acl_login(
    certs: Certificates, secure_redis: RunningService, tls_kafka: RunningService
) -> None:
    """In process: topics created, history replayed, alerts published and read, windows
    stored, every connection TLS (Redis with its ACL user, both with client certificates)."""
    settings = worker_settings(
        tls_kafka.address,
        secure_redis.url,
        **kafka_tls(certs),
        **redis_tls(certs),
    )
    kafka = KafkaConnection.from_settings(settings)
    topics = await create_topics(settings)
    history = small_history()
    async with running_worker(settings, bundle_alerting_on_all()):
        await replay_history(history, settings)
        alerts: list[Any] = []
        while len(alerts) < len(history):
            alerts = await read_all(kafka, topics.alerts)
            await asyncio.sleep(0.2)
    assert len(alerts) == len(history)
    seen: list[Any] = []
    assert await consume_alerts(kafka, topics.alerts, seen.append) == len(history)
    assert {a.transaction_id for a in seen} == set(history.transaction_id)
    client = RedisConnection.from_settings(settings).client()
    try:
        assert client.keys(f"{topics.redis_key_prefix}*")  # the windows went over TLS
    finally:
        client.close()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"redis_password": WRONG_REDIS_PASSWORD},
            r"Redis at rediss://127\.0\.0\.1:\d+/0 as 'fraudstream' refused the login "
            r"\(AuthenticationError\); check FRAUDSTREAM_REDIS_USERNAME and "
            r"REDIS_PASSWORD\(_FILE\)",
        ),
        (
            {"redis_username": "nobody"},
            r"as 'nobody' refused the login",
        ),
        (
            {"redis_ssl_cafile": "STRANGER"},
            r"Redis at rediss://127\.0\.0\.1:\d+/0 as 'fraudstream' presented a certificate "
            r"that is not trusted \(self-signed certificate in certificate chain\); set "
            r"FRAUDSTREAM_REDIS_SSL_CAFILE to the CA file",
        ),
    ],
)
def test_a_refused_redis_login_or_tls_handshake_is_one_clear_error(
    certs: Certificates,
    stranger: Certificates,
    secure_redis: RunningService,
    changes: dict[str, str],
    message: str,
) -> None:
    if changes.get("redis_ssl_cafile") == "STRANGER":
        changes = {"redis_ssl_cafile": str(stranger.ca)}
    settings = Settings(redis_url=secure_redis.url, **redis_tls(certs, **changes))
    with pytest.raises(AuthenticationFailed, match=message) as refused:
        asyncio.run(check_redis(RedisConnection.from_settings(settings), timeout_s=5))
    assert WRONG_REDIS_PASSWORD not in str(refused.value)


def test_the_worker_ends_on_a_wrong_redis_password_with_one_error_line(
    certs: Certificates, secure_redis: RunningService, kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = worker_settings(
        kafka_bootstrap,
        secure_redis.url,
        model_dir=str(bundle_with_threshold(0.0)),
        **redis_tls(certs, redis_password=WRONG_REDIS_PASSWORD),
    )
    done, took_s = run_cli(["worker"], settings, tmp_path, secrets=("redis_password",))
    line = one_error_line(done)
    assert "refused the login" in line and "FRAUDSTREAM_REDIS_USERNAME" in line
    assert WRONG_REDIS_PASSWORD not in line
    assert took_s < 30


# -- Kafka over TLS (stunnel in front of tansu) -----------------------------------------------


def test_worker_replay_and_alerts_commands_over_tls_never_print_a_secret(
    certs: Certificates,
    secure_redis: RunningService,
    tls_kafka: RunningService,
    tmp_path: Path,
) -> None:
    """The worker, ``fraudstream replay`` and ``fraudstream alerts`` as processes, over TLS
    (the client key encrypted, its password and the Redis password from files); no output
    of any of them holds a secret."""
    settings = worker_settings(
        tls_kafka.address,
        secure_redis.url,
        model_dir=str(bundle_with_threshold(0.0)),
        **kafka_tls(
            certs,
            kafka_ssl_keyfile=str(encrypted_key(certs, tmp_path)),
            kafka_ssl_key_password=KEY_PASSWORD,
        ),
        **redis_tls(certs),
    )
    secrets = ("redis_password", "kafka_ssl_key_password")
    history = small_history()
    events = tmp_path / "events.jsonl"
    write_jsonl(history, events)
    log = tmp_path / "worker.log"
    namespace = ["--namespace", settings.namespace]
    with worker_process(settings, log, extra_env=secret_files(settings, tmp_path, secrets)):
        replayed, _ = run_cli(
            ["replay", "--input", str(events), "--no-progress", *namespace],
            settings,
            tmp_path,
            secrets,
        )
        assert replayed.returncode == 0, replayed.stderr
        alerts = asyncio.run(_wait_for_alerts(settings, len(history)))
    printed, _ = run_cli(["alerts", "--json", *namespace], settings, tmp_path, secrets)
    assert printed.returncode == 0, printed.stderr
    assert len(printed.stdout.splitlines()) == len(history) == alerts
    outputs = [log.read_text(), replayed.stdout, replayed.stderr, printed.stdout, printed.stderr]
    for secret in (REDIS_PASSWORD, KEY_PASSWORD):
        assert not any(secret in output for output in outputs)


async def _wait_for_alerts(settings: Settings, expected: int) -> int:
    kafka = KafkaConnection.from_settings(settings)
    alerts = stream_topics(settings.namespace).alerts
    count = 0

    async def poll() -> bool:
        nonlocal count
        count = len(await read_all(kafka, alerts))
        return count >= expected

    deadline = time.monotonic() + TIMEOUT_S
    while not await poll():
        assert time.monotonic() < deadline, f"{count} of {expected} alerts"
        await asyncio.sleep(0.3)
    return count


@pytest.mark.parametrize("command", [["alerts"], ["replay", "--input", "EVENTS"], ["worker"]])
def test_an_untrusted_broker_certificate_ends_each_command_with_one_error_line(
    certs: Certificates,
    stranger: Certificates,
    redis_url: str,
    tls_kafka: RunningService,
    tmp_path: Path,
    command: list[str],
) -> None:
    settings = worker_settings(
        tls_kafka.address,
        redis_url,
        model_dir=str(bundle_with_threshold(0.0)),
        **kafka_tls(certs, kafka_ssl_cafile=str(stranger.ca)),
    )
    if "EVENTS" in command:
        events = tmp_path / "events.jsonl"
        write_jsonl(small_history(n_days=2), events)
        command = [*command[:-1], str(events), "--no-progress"]
    done, took_s = run_cli([*command, "--namespace", settings.namespace], settings, tmp_path)
    line = one_error_line(done)
    assert (
        f"the Kafka broker at {tls_kafka.address} presented a certificate that is not trusted "
        "(self-signed certificate in certificate chain); set FRAUDSTREAM_KAFKA_SSL_CAFILE to "
        "the CA file that signed the broker's certificate"
    ) in line
    assert took_s < 30


def test_a_plaintext_client_of_the_tls_endpoint_is_told_nothing_answered(
    tls_kafka: RunningService,
) -> None:
    """stunnel drops a client that does not speak TLS: that looks like no broker at all."""
    with pytest.raises(Exception, match="cannot reach the Kafka broker") as failed:
        asyncio.run(check_kafka(tls_kafka.address, timeout_s=5))
    assert not isinstance(failed.value, AuthenticationFailed)


# -- Kafka SASL (tansu --authentication refuses every login) ----------------------------------


@pytest.fixture(scope="module")
def sasl_kafka() -> Iterator[RunningService]:
    with start_tansu(authentication=True) as broker:
        yield broker


@pytest.fixture(scope="module")
def sasl_tls_kafka(certs: Certificates) -> Iterator[RunningService]:
    with start_tansu_tls(certs, authentication=True) as tunnel:
        yield tunnel


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("tls", [False, True], ids=["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_refused_sasl_login_ends_the_worker_with_one_error_line(
    certs: Certificates,
    sasl_kafka: RunningService,
    sasl_tls_kafka: RunningService,
    redis_url: str,
    tmp_path: Path,
    mechanism: str,
    tls: bool,
) -> None:
    broker = sasl_tls_kafka if tls else sasl_kafka
    security = kafka_tls(certs, kafka_security_protocol="SASL_SSL") if tls else {}
    settings = worker_settings(
        broker.address,
        redis_url,
        model_dir=str(bundle_with_threshold(0.0)),
        **{"kafka_security_protocol": "SASL_PLAINTEXT", **security},
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="alice",
        kafka_sasl_password=SASL_PASSWORD,
    )
    done, took_s = run_cli(["worker"], settings, tmp_path, secrets=("kafka_sasl_password",))
    line = one_error_line(done)
    assert (
        f"the Kafka broker at {broker.address} refused the SASL {mechanism} login of user "
        "'alice'; check FRAUDSTREAM_KAFKA_SASL_USERNAME and FRAUDSTREAM_KAFKA_SASL_PASSWORD"
    ) in line
    assert SASL_PASSWORD not in done.stderr
    assert took_s < 30


def test_a_mechanism_the_broker_does_not_offer_is_a_refused_login(
    sasl_kafka: RunningService,
) -> None:
    """tansu closes the connection when asked for PLAIN (it offers SCRAM only)."""
    kafka = KafkaConnection(
        sasl_kafka.address, "SASL_PLAINTEXT", "PLAIN", "alice", sasl_password=PLAIN_SASL_PASSWORD
    )
    with pytest.raises(AuthenticationFailed, match=(
        rf"the Kafka broker at {sasl_kafka.address} closed the connection during the SASL "
        r"PLAIN login of 'alice': it does not offer that mechanism or refused the login"
    )):  # fmt: skip
        asyncio.run(check_kafka(kafka, timeout_s=5))


def test_a_client_that_does_not_log_in_is_told_the_broker_wants_a_login(
    sasl_kafka: RunningService,
) -> None:
    with pytest.raises(AuthenticationFailed, match=(
        r"closed the connection on a metadata request: it requires a login that "
        r"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not do"
    )):  # fmt: skip
        asyncio.run(check_kafka(sasl_kafka.address, timeout_s=5))
