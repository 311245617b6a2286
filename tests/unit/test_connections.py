"""connections: the client options every Kafka and Redis client gets, and its secrets kept."""

from __future__ import annotations

import asyncio
import pickle
import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream_app.connections import (
    KafkaConnection,
    RedisConnection,
    check_kafka,
    check_redis,
    kafka_connection,
)
from stream_app.errors import ConfigError, DependencyUnavailable
from stream_app.local_services import free_port
from stream_app.local_tls import Certificates, make_certificates
from stream_app.settings import Settings


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _sasl_ssl(certs: Certificates) -> Settings:
    return Settings(
        kafka_bootstrap="127.0.0.1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="alice",
        kafka_sasl_password="kafka-secret",
        kafka_ssl_cafile=str(certs.ca),
        kafka_ssl_certfile=str(certs.client_cert),
        kafka_ssl_keyfile=str(certs.client_key),
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="bob",
        redis_password="redis-secret",
        redis_ssl_cafile=str(certs.ca),
        redis_ssl_certfile=str(certs.client_cert),
        redis_ssl_keyfile=str(certs.client_key),
    )


def test_plaintext_kafka_gets_only_the_bootstrap_servers() -> None:
    assert kafka_connection("127.0.0.1:9092").client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert KafkaConnection("127.0.0.1:9092").faust_credentials() is None


def test_sasl_ssl_kafka_gets_a_verifying_tls_context_and_the_login(certs: Certificates) -> None:
    kafka = KafkaConnection.from_settings(_sasl_ssl(certs))
    options = kafka.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "kafka-secret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "fraudstream test CA"),),)
    ]


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT"])
def test_faust_is_handed_the_same_security_options(certs: Certificates, protocol: str) -> None:
    changes: dict[str, str] = {"kafka_security_protocol": protocol}
    if protocol == "SSL":
        changes |= {"kafka_sasl_username": "", "kafka_sasl_password": ""}
    if protocol == "SASL_PLAINTEXT":
        changes |= {f"kafka_ssl_{name}": "" for name in ("cafile", "certfile", "keyfile")}
    kafka = KafkaConnection.from_settings(_sasl_ssl(certs).replace(**changes))
    ours = kafka.security_options()
    faust_options = credentials_to_aiokafka_auth(kafka.faust_credentials())
    assert {k: v for k, v in faust_options.items() if k != "ssl_context"} == {
        k: v for k, v in ours.items() if k != "ssl_context"
    }
    assert (faust_options.get("ssl_context") is None) == (ours.get("ssl_context") is None)


def test_no_secret_in_a_repr_or_a_description(certs: Certificates) -> None:
    settings = _sasl_ssl(certs).replace(
        redis_url="rediss://bob:url-secret@127.0.0.1:6380/0", redis_password=""
    )
    kafka = KafkaConnection.from_settings(settings)
    redis = RedisConnection.from_settings(settings)
    shown = " ".join([repr(kafka), kafka.describe(), repr(redis), redis.describe()])
    assert "kafka-secret" not in shown and "url-secret" not in shown
    assert "bob:***@127.0.0.1:6380" in shown
    assert "SCRAM-SHA-256 as 'alice'" in shown


def test_a_redis_connection_is_picklable_and_builds_tls_clients(certs: Certificates) -> None:
    redis = RedisConnection.from_settings(_sasl_ssl(certs))
    assert pickle.loads(pickle.dumps(redis)) == redis
    client = redis.client(socket_timeout=1.0)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["username"] == "bob" and kwargs["password"] == "redis-secret"
    assert kwargs["ssl_ca_certs"] == str(certs.ca)
    assert kwargs["ssl_certfile"] == str(certs.client_cert)
    assert kwargs["ssl_keyfile"] == str(certs.client_key)
    assert kwargs["socket_timeout"] == 1.0
    client.close()


def test_a_tls_file_that_is_no_pem_is_a_config_error(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    kafka = KafkaConnection("127.0.0.1:9093", "SSL", ssl_cafile=str(garbage))
    with pytest.raises(ConfigError, match=r"Kafka TLS files cannot be loaded .*KAFKA_SSL_CAFILE"):
        kafka.ssl_context()


def test_nothing_listening_is_unavailable_not_a_refused_login() -> None:
    port = free_port()
    with pytest.raises(DependencyUnavailable, match=rf"Kafka broker at 127.0.0.1:{port} "):
        asyncio.run(check_kafka(f"127.0.0.1:{port}", timeout_s=2))
    with pytest.raises(DependencyUnavailable, match=r"cannot reach Redis at redis://127"):
        asyncio.run(check_redis(f"redis://127.0.0.1:{port}/0", timeout_s=2))
