"""Redis clients (redis-py) from :class:`RedisConnection`, :func:`check_redis` and
:func:`redis_failure`, the error to report for a failed Redis call.

With ``cluster`` the clients are redis-py's cluster clients (``redis.cluster.RedisCluster``,
``redis.asyncio.cluster.RedisCluster``): the URL names one startup node, the client asks it
for the others and the slot map, follows MOVED/ASK and refreshes the map after a failover.
They take the same login and TLS options, and answer the same commands for keys of one
slot; a PING goes to every node.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib
import redis.asyncio as redis_asyncio
import redis.asyncio.cluster as redis_asyncio_cluster
import redis.cluster as redis_cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream_app.connections.checks import CHECK_TIMEOUT_S, settings_for, tls_failure
from stream_app.errors import AuthenticationFailed, DependencyUnavailable, FraudstreamError
from stream_app.settings import ENV_PREFIX, Settings, mask_url


@dataclass(frozen=True)
class RedisConnection:
    """How to reach Redis: the URL (``rediss://`` for TLS), ACL user and password, TLS files,
    and whether it is a Redis Cluster (the URL then names one of its nodes)."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    cluster: bool = False

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in (
                ("url", mask_url(self.url)),
                ("username", self.username),
                ("ssl_cafile", self.ssl_cafile),
                ("ssl_certfile", self.ssl_certfile),
                ("ssl_keyfile", self.ssl_keyfile),
                ("cluster", self.cluster),
            )
        )
        return f"RedisConnection({shown})"

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisConnection:
        """The connection the ``FRAUDSTREAM_REDIS_*`` settings describe."""
        return cls(**settings_for(cls, settings, "redis_"))

    @property
    def uses_tls(self) -> bool:
        """Whether the URL asks for TLS (``rediss://``)."""
        return self.url.startswith("rediss://")

    def describe(self) -> str:
        """The URL without its password, and the ACL user."""
        user = f" as {self.username!r}" if self.username else ""
        cluster = " (cluster)" if self.cluster else ""
        return f"{mask_url(self.url)}{user}{cluster}"

    def options(self) -> dict[str, Any]:
        """redis-py keyword arguments besides the URL: ACL login, TLS files."""
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.uses_tls:
            options["ssl_ca_certs"] = self.ssl_cafile or None
            options["ssl_certfile"] = self.ssl_certfile or None
            options["ssl_keyfile"] = self.ssl_keyfile or None
        return options

    def client(self, **options: Any) -> redis_lib.Redis | redis_cluster.RedisCluster:
        """A synchronous client with ``options`` (timeouts, retry)."""
        if self.cluster:
            return redis_cluster.RedisCluster.from_url(self.url, **self.options(), **options)
        return redis_lib.Redis.from_url(self.url, **self.options(), **options)

    def async_client(
        self, **options: Any
    ) -> redis_asyncio.Redis | redis_asyncio_cluster.RedisCluster:
        """An asyncio client with ``options`` (timeouts, retry)."""
        if self.cluster:
            return redis_asyncio_cluster.RedisCluster.from_url(
                self.url, **self.options(), **options
            )
        return redis_asyncio.Redis.from_url(self.url, **self.options(), **options)


_FAILURES = (redis_lib.RedisError, redis_lib.exceptions.RedisClusterException, OSError)

Redis = RedisConnection | str
"""A connection, or a bare Redis URL."""


def redis_connection(redis_: Redis) -> RedisConnection:
    """``redis_`` as a :class:`RedisConnection`."""
    return RedisConnection(redis_) if isinstance(redis_, str) else redis_


async def check_redis(redis_: Redis, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """PING Redis once as the worker's clients do: a refused login or TLS failure is
    :class:`AuthenticationFailed`, no answer :class:`DependencyUnavailable`."""
    await asyncio.to_thread(_ping, redis_connection(redis_), timeout_s)


def _ping(connection: RedisConnection, timeout_s: float) -> None:
    # the synchronous client: it closes a TLS socket at once, where an asyncio one that
    # failed its login may still be closing when the caller's event loop ends
    # (a cluster client connects when built: it asks its startup node for the slot map)
    try:
        client = connection.client(
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
    except _FAILURES as exc:
        raise redis_failure(connection, exc) from None
    try:
        client.ping()
    except _FAILURES as exc:
        raise redis_failure(connection, exc) from None
    finally:
        client.close()


def redis_failure(connection: RedisConnection, exc: BaseException) -> FraudstreamError:
    """The error to report for a failed Redis call: :class:`AuthenticationFailed` for a
    refused login or TLS handshake, else :class:`DependencyUnavailable`."""
    where = f"Redis at {connection.describe()}"
    if isinstance(exc, redis_lib.AuthenticationError | redis_lib.exceptions.NoPermissionError):
        return AuthenticationFailed(
            f"{where} refused the login ({type(exc).__name__}); check {ENV_PREFIX}"
            "REDIS_USERNAME and REDIS_PASSWORD(_FILE) against the server's ACL user"
        )
    tls = tls_failure(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return AuthenticationFailed(
            f"{where} presented a certificate that is not trusted ({tls.verify_message}); set "
            f"{ENV_PREFIX}REDIS_SSL_CAFILE to the CA file that signed the server's certificate"
        )
    if tls is not None:
        return AuthenticationFailed(
            f"the TLS handshake with {where} failed ({tls.reason or tls}); check that the "
            f"server speaks TLS on that port and, if it wants client certificates, "
            f"{ENV_PREFIX}REDIS_SSL_CERTFILE / REDIS_SSL_KEYFILE"
        )
    return DependencyUnavailable(
        f"cannot reach {where}: {exc!r}; check that it runs and that {ENV_PREFIX}REDIS_URL is right"
    )
