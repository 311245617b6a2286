"""Kafka clients (aiokafka, Faust) from :class:`KafkaConnection`, and :func:`check_kafka`.

:func:`check_kafka` connects the way the clients do, because aiokafka's clients report
every failed bootstrap as "Unable to bootstrap" (and its SCRAM client a refused login as
a ``KeyError``): it tells a refused login or untrusted certificate from no answer.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from stream_app.connections.checks import CHECK_TIMEOUT_S, settings_for
from stream_app.errors import AuthenticationFailed, ConfigError, DependencyUnavailable
from stream_app.settings import ENV_PREFIX, KAFKA_SASL_PROTOCOLS, KAFKA_TLS_PROTOCOLS, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

_SASL_REFUSED = (SaslAuthenticationFailed, IllegalSaslStateError, KeyError, ValueError)
"""A refused login: the broker's error, or aiokafka's SCRAM client failing to read a final
message without a server signature (``e=unknown-user``, ``e=invalid-proof``)."""
_LOGIN_VARS = "FRAUDSTREAM_KAFKA_SASL_USERNAME and FRAUDSTREAM_KAFKA_SASL_PASSWORD(_FILE)"


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach the Kafka brokers: bootstrap addresses, TLS files, SASL credentials."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection the ``FRAUDSTREAM_KAFKA_*`` settings describe."""
        return cls(**settings_for(cls, settings, "kafka_"))

    @property
    def uses_tls(self) -> bool:
        """Whether connections are TLS (``SSL`` or ``SASL_SSL``)."""
        return self.security_protocol in KAFKA_TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        """Whether connections log in with SASL."""
        return self.security_protocol in KAFKA_SASL_PROTOCOLS

    def describe(self) -> str:
        """Where and how, for messages: ``127.0.0.1:9093 (SASL_SSL, SCRAM-SHA-256 as alice)``."""
        how = self.security_protocol
        if self.uses_sasl:
            how += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        return f"{self.bootstrap} ({how})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of ``SSL`` / ``SASL_SSL`` (None otherwise): the CA file (or the
        system's CAs), the client certificate if set; host names are checked."""
        if not self.uses_tls:
            return None
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
                password=self.ssl_key_password or None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"the Kafka TLS files cannot be loaded ({exc}); check {ENV_PREFIX}"
                "KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE (PEM files) and "
                "KAFKA_SSL_KEY_PASSWORD"
            ) from None
        return context

    def security_options(self) -> dict[str, Any]:
        """The aiokafka keyword arguments of TLS and SASL."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options

    def client_options(self) -> dict[str, Any]:
        """The aiokafka keyword arguments of any client: bootstrap servers, TLS, SASL."""
        return {"bootstrap_servers": self.bootstrap, **self.security_options()}

    def faust_broker(self) -> str:
        """Faust's ``broker`` URL."""
        return f"kafka://{self.bootstrap}"

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials`` (Faust passes them on to aiokafka as above)."""
        import faust  # the worker's dependency; tools import this module without it

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        context = self.ssl_context()
        return faust.SSLCredentials(context) if context is not None else None


Kafka = KafkaConnection | str
"""A connection, or a bare bootstrap address (plaintext)."""


def kafka_connection(kafka: Kafka) -> KafkaConnection:
    """``kafka`` as a :class:`KafkaConnection`."""
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


def kafka_consumer(kafka: Kafka, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An (unstarted) aiokafka consumer on ``kafka`` of ``topics`` with ``options``."""
    return AIOKafkaConsumer(*topics, **kafka_connection(kafka).client_options(), **options)


def kafka_producer(kafka: Kafka, **options: Any) -> AIOKafkaProducer:
    """An (unstarted) aiokafka producer on ``kafka`` with ``options``."""
    return AIOKafkaProducer(**kafka_connection(kafka).client_options(), **options)


def kafka_admin(kafka: Kafka, **options: Any) -> AIOKafkaAdminClient:
    """An (unstarted) aiokafka admin client on ``kafka`` with ``options``."""
    return AIOKafkaAdminClient(**kafka_connection(kafka).client_options(), **options)


async def start_client(client: Any, kafka: Kafka) -> None:
    """:func:`check_kafka`, then ``await client.start()``; a start that still fails is
    :class:`DependencyUnavailable`."""
    connection = kafka_connection(kafka)
    await check_kafka(connection)
    try:
        await client.start()
    except (KafkaError, OSError, TimeoutError, *_SASL_REFUSED) as exc:
        raise _unreachable(connection, exc) from exc


async def check_kafka(kafka: Kafka, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect to the bootstrap brokers as the clients do (TLS, SASL) and ask for metadata.

    Returns once one broker answered. A refused login, an untrusted certificate or a
    broker closing the connection of a client that did not log in is
    :class:`AuthenticationFailed`; no broker answering is :class:`DependencyUnavailable`.
    """
    connection = kafka_connection(kafka)
    options = connection.security_options()
    unreachable: DependencyUnavailable | None = None
    for host, port, _ in collect_hosts(connection.bootstrap):
        try:
            await asyncio.wait_for(_probe(connection, host, port, options), timeout_s)
            return
        except DependencyUnavailable as exc:
            unreachable = exc
        except TimeoutError as exc:
            unreachable = _unreachable(connection, exc)
    if unreachable is None:
        raise ConfigError(
            f"{ENV_PREFIX}KAFKA_BOOTSTRAP={connection.bootstrap!r} names no broker; set it "
            "to host:port[,host:port...]"
        )
    raise unreachable


async def _probe(
    connection: KafkaConnection, host: str, port: int, options: dict[str, Any]
) -> None:
    where = f"the Kafka broker at {host}:{port}"
    try:
        conn = await create_conn(host, port, **options)
    except ssl.SSLCertVerificationError as exc:
        raise AuthenticationFailed(
            f"{where} presented a certificate that is not trusted ({exc.verify_message}); set "
            f"{ENV_PREFIX}KAFKA_SSL_CAFILE to the CA file that signed the broker's certificate"
        ) from None
    except ssl.SSLError as exc:
        raise AuthenticationFailed(
            f"the TLS handshake with {where} failed ({exc.reason or exc}); check that the "
            f"listener speaks TLS ({ENV_PREFIX}KAFKA_SECURITY_PROTOCOL="
            f"{connection.security_protocol}) and, if it wants client certificates, "
            f"{ENV_PREFIX}KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE"
        ) from None
    except UnsupportedSaslMechanismError as exc:
        raise AuthenticationFailed(
            f"{where} does not offer SASL {connection.sasl_mechanism} ({exc}); set "
            f"{ENV_PREFIX}KAFKA_SASL_MECHANISM to one it offers"
        ) from None
    except _SASL_REFUSED:
        raise _refused(connection, where) from None
    except KafkaConnectionError as exc:
        if connection.uses_sasl and await _answers_without_sasl(host, port, options):
            raise AuthenticationFailed(
                f"{where} closed the connection during the SASL {connection.sasl_mechanism} "
                f"login of {connection.sasl_username!r}: it does not offer that mechanism or "
                f"refused the login; check {ENV_PREFIX}KAFKA_SASL_MECHANISM and "
                f"{_LOGIN_VARS}"
            ) from None
        raise _unreachable(connection, exc) from None
    except (KafkaError, OSError) as exc:
        raise _unreachable(connection, exc) from None
    try:
        await conn.send(MetadataRequest([]))
    except KafkaConnectionError:
        raise AuthenticationFailed(
            f"{where} answered the handshake but closed the connection on a metadata "
            f"request: it requires a login that {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL="
            f"{connection.security_protocol} does not do; set it to SASL_SSL or "
            "SASL_PLAINTEXT with the broker's mechanism and credentials"
        ) from None
    except KafkaError as exc:
        raise _unreachable(connection, exc) from None
    finally:
        conn.close()


async def _answers_without_sasl(host: str, port: int, options: dict[str, Any]) -> bool:
    """Whether the broker takes a connection (TLS as configured) that does not log in."""
    tls = options["security_protocol"] == "SASL_SSL"
    try:
        conn = await create_conn(
            host,
            port,
            security_protocol="SSL" if tls else "PLAINTEXT",
            ssl_context=options.get("ssl_context"),
        )
    except (KafkaError, OSError):
        return False
    conn.close()
    return True


def _refused(connection: KafkaConnection, where: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"{where} refused the SASL {connection.sasl_mechanism} login of user "
        f"{connection.sasl_username!r}; check {_LOGIN_VARS} (and that the user exists "
        "for that mechanism)"
    )


def _unreachable(connection: KafkaConnection, exc: BaseException) -> DependencyUnavailable:
    certificate = (
        f" and, if its TLS listener wants client certificates, {ENV_PREFIX}KAFKA_SSL_CERTFILE"
        " / KAFKA_SSL_KEYFILE (a missing one shows only as a closed connection)"
        if connection.uses_tls
        else ""
    )
    return DependencyUnavailable(
        f"cannot reach the Kafka broker at {connection.describe()}: {exc!r}; check that it "
        f"runs, that {ENV_PREFIX}KAFKA_BOOTSTRAP is right{certificate}"
    )
