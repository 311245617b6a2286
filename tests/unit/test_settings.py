"""Settings: bad values are refused with the variable, the value and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.errors import ConfigError
from stream_app.settings import Settings


def test_defaults_are_valid() -> None:
    Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRAUDSTREAM_BATCH_MAX_EVENTS", "0"),
        ("FRAUDSTREAM_TOPIC_PARTITIONS", "0"),
        ("FRAUDSTREAM_ALIGN_IDLE_MS", "-1"),
        ("FRAUDSTREAM_REDIS_KEY_TTL_DAYS", "0"),
        ("FRAUDSTREAM_LABEL_DELAY_DAYS", "-2"),
    ],
)
def test_a_value_below_the_minimum_names_variable_and_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}={value} is too small; use"):
        Settings.from_env({variable: value})


def test_idle_time_must_be_below_the_label_barrier_timeout() -> None:
    with pytest.raises(ConfigError, match=r"ALIGN_IDLE_MS=2000 must be below .*=2000"):
        Settings(align_idle_ms=2000, label_barrier_timeout_ms=2000)
    Settings(align_idle_ms=0, label_barrier_timeout_ms=1)


def test_heartbeat_must_be_below_the_session_timeout() -> None:
    with pytest.raises(ConfigError, match=r"HEARTBEAT_INTERVAL_S=6\.0 must be below"):
        Settings(broker_heartbeat_interval_s=6.0, broker_session_timeout_s=6.0)


def test_a_secret_comes_from_its_file_and_never_shows_in_repr(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    settings = Settings.from_env(
        {
            "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "FRAUDSTREAM_KAFKA_SASL_USERNAME": "alice",
            "FRAUDSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "FRAUDSTREAM_REDIS_URL": "redis://bob:url-secret@127.0.0.1:6380/0",
        }
    )
    assert settings.kafka_sasl_password == "s3cret-value"
    shown = repr(settings)
    assert "s3cret-value" not in shown and "url-secret" not in shown
    assert "kafka_sasl_password='***'" in shown


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "pw"},
            r"SECURITY_PROTOCOL=SASL_SSL logs in with SASL but FRAUDSTREAM_KAFKA_SASL_USERNAME "
            r"is empty; set FRAUDSTREAM_KAFKA_SASL_USERNAME and",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "alice"},
            r"FRAUDSTREAM_KAFKA_SASL_PASSWORD is empty; .* "
            r"\(or FRAUDSTREAM_KAFKA_SASL_PASSWORD_FILE\)",
        ),
        (
            {"kafka_sasl_username": "alice"},
            r"FRAUDSTREAM_KAFKA_SASL_USERNAME is set but FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL="
            r"PLAINTEXT does not log in; set FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL to SASL_SSL",
        ),
        (
            {"kafka_ssl_cafile": "/etc/hostname"},
            r"FRAUDSTREAM_KAFKA_SSL_CAFILE is set but .*=PLAINTEXT does not use TLS; set "
            r"FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            r"FRAUDSTREAM_KAFKA_SSL_CAFILE='/nonexistent/ca.pem' is not a file; point it at",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/hostname"},
            r"FRAUDSTREAM_KAFKA_SSL_KEYFILE is set without FRAUDSTREAM_KAFKA_SSL_CERTFILE",
        ),
        (
            {"redis_ssl_cafile": "/etc/hostname"},
            r"FRAUDSTREAM_REDIS_SSL_CAFILE is set but FRAUDSTREAM_REDIS_URL="
            r"'redis://127.0.0.1:6379/0' does not use TLS; use a rediss:// URL",
        ),
        (
            {"redis_url": "rediss://127.0.0.1:6380/0", "redis_ssl_certfile": "/nonexistent/c"},
            r"FRAUDSTREAM_REDIS_SSL_CERTFILE='/nonexistent/c' is not a file",
        ),
        (
            {"redis_url": "redis://u:inurl@127.0.0.1:6380/0", "redis_password": "pw"},
            r"REDIS_URL='redis://u:\*\*\*@127.0.0.1:6380/0' has a password and "
            r"FRAUDSTREAM_REDIS_PASSWORD is set too",
        ),
    ],
)
def test_security_settings_that_would_be_ignored_or_cannot_work_are_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Settings(**values)
    assert "inurl" not in str(raised.value)


def test_complete_security_settings_are_accepted(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="alice",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=str(pem),
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="bob",
        redis_password="pw",
        redis_ssl_cafile=str(pem),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FRAUDSTREAM_REDIS_CLUSTER": "maybe"},
            "FRAUDSTREAM_REDIS_CLUSTER='maybe' is not a valid bool",
        ),
        (
            {"FRAUDSTREAM_REDIS_CLUSTER": "true", "FRAUDSTREAM_REDIS_URL": "redis://h:7000/2"},
            "a Redis Cluster has only database 0",
        ),
        (
            {"FRAUDSTREAM_REDIS_CLUSTER": "1", "FRAUDSTREAM_REDIS_URL": "unix:///tmp/r.sock"},
            "cannot name a Redis Cluster node (scheme 'unix')",
        ),
        (
            {"FRAUDSTREAM_REDIS_WAIT_REPLICAS": "-1"},
            "FRAUDSTREAM_REDIS_WAIT_REPLICAS=-1 is too small",
        ),
        (
            {"FRAUDSTREAM_REDIS_WAIT_TIMEOUT_MS": "0"},
            "FRAUDSTREAM_REDIS_WAIT_TIMEOUT_MS=0 is too small",
        ),
    ],
)
def test_bad_cluster_settings_name_the_value_and_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_a_cluster_startup_node_is_accepted() -> None:
    settings = Settings.from_env(
        {"FRAUDSTREAM_REDIS_CLUSTER": "true", "FRAUDSTREAM_REDIS_URL": "rediss://h:7000"}
    )
    assert settings.redis_cluster and settings.redis_wait_replicas == 1
