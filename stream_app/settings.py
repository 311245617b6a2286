"""The one frozen settings object; the only reader of ``FRAUDSTREAM_*`` environment variables.

Every field ``x`` is read from ``FRAUDSTREAM_X``, or from the file named by
``FRAUDSTREAM_X_FILE`` (its content, one trailing newline removed): the way to pass secrets
(passwords, keys) without putting them in the environment. Secret fields never appear in
``repr(settings)``; neither does a password inside ``redis_url``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from stream_app.contracts.codec import DEFAULT_MAX_PAYLOAD_BYTES
from stream_app.errors import ConfigError
from stream_app.pseudonyms import check_key

ENV_PREFIX = "FRAUDSTREAM_"
FILE_SUFFIX = "_FILE"
SECRET = {"secret": True}
"""Field metadata of a secret: masked in ``repr`` and never logged."""
MASK = "***"

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
KAFKA_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
EVENT_CLOCKS = ("wall", "watermark")
REDIS_CLUSTER_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Each field is read from ``FRAUDSTREAM_<FIELD_NAME_UPPER>``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "live"
    label_delay_days: int = 7
    feature_set: str = "default"
    model_dir: str = "models/current"  # a bundle, or a model store (scoring.model_store)
    model_poll_ms: int = 1000  # how often a model store's pointers and the policy are read
    alert_policy: str = ""  # a policy.v1 file (scoring.policy); empty: the bundle's threshold
    batch_max_events: int = 4000
    batch_max_wait_ms: int = 20
    fetch_max_wait_ms: int = 10
    fetch_max_wait_busy_ms: int = 50  # from 1,000 records/s on (see worker.fetch.FetchPacing)
    label_barrier_timeout_ms: int = 2000
    commit_interval_ms: int = 100
    align_max_buffered_events: int = 50_000
    align_max_wait_ms: int = 10_000
    align_idle_ms: int = 1_000
    publish_scores: bool = False
    topic_partitions: int = 4
    topic_replication: int = 1
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 1.0
    redis_key_ttl_days: int = 45
    # Redis Cluster: REDIS_URL names one startup node; the windows use the bucket-tagged
    # key layout and each master must have WAIT_REPLICAS replicas acknowledge a batch's
    # writes (WAIT, within WAIT_TIMEOUT_MS a try) before the batch counts as stored
    redis_cluster: bool = False
    redis_wait_replicas: int = 1
    redis_wait_timeout_ms: int = 1000
    window_process: bool = True  # the window store in a child process (False: in process)
    onnx_intra_op_threads: int = 1
    onnx_allow_spinning: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # /ready fails when batches are in flight, none got through for this long, and lag > 0
    ready_stall_s: float = 20.0
    # window-key counts and Redis memory are sampled this often (0: never)
    redis_stats_interval_s: float = 15.0
    # PSI of the last DRIFT_WINDOW scored transactions vs the bundle's training distribution
    drift_window: int = 10_000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # event-time safety: how far ahead of the reference clock an event may be
    max_event_ahead_s: float = 300.0
    event_clock: str = "wall"  # wall: the worker's clock; watermark: the stream's (replays)
    # Kafka security (one module builds every client: stream_app.connections)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", metadata=SECRET)
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_key_password: str = field(default="", metadata=SECRET)
    # Redis security: ACL user and password; TLS when redis_url starts with rediss://
    redis_username: str = ""
    redis_password: str = field(default="", metadata=SECRET)
    redis_ssl_cafile: str = ""
    redis_ssl_certfile: str = ""
    redis_ssl_keyfile: str = ""
    # pseudonymous ids: a key turns customer and terminal ids into keyed HMACs in Redis keys
    pseudonym_key: str = field(default="", metadata=SECRET)
    # the operations console (`fraudstream console`, stream_app/console)
    console_host: str = "127.0.0.1"
    console_port: int = 6067
    console_metrics_url: str = ""  # the worker's /metrics; empty: http://WEB_HOST:WEB_PORT/metrics
    # the analysts, one `name:token` line each: pass it as CONSOLE_TOKENS_FILE (a file)
    console_tokens: str = field(default="", metadata=SECRET)
    console_audit_log: str = "console-audit.jsonl"  # JSON lines: who decided what, when
    console_max_alerts: int = 2000  # the latest alerts the console keeps in memory

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = MASK
            elif f.name == "redis_url":
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        for name, least in _LEAST.items():
            value = getattr(self, name)
            if value < least:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}={value!r} is too small; use {least} or more"
                )
        if self.align_idle_ms >= self.label_barrier_timeout_ms:
            raise ConfigError(
                f"{ENV_PREFIX}ALIGN_IDLE_MS={self.align_idle_ms} must be below "
                f"{ENV_PREFIX}LABEL_BARRIER_TIMEOUT_MS={self.label_barrier_timeout_ms}: the "
                "label barrier would give up before a quiet labels partition counts as caught "
                "up; lower the first or raise the second"
            )
        if self.broker_heartbeat_interval_s >= self.broker_session_timeout_s:
            raise ConfigError(
                f"{ENV_PREFIX}BROKER_HEARTBEAT_INTERVAL_S={self.broker_heartbeat_interval_s} "
                f"must be below {ENV_PREFIX}BROKER_SESSION_TIMEOUT_S="
                f"{self.broker_session_timeout_s}; use about a third of the session timeout"
            )

        _check_choice(
            "kafka_security_protocol", self.kafka_security_protocol, KAFKA_SECURITY_PROTOCOLS
        )
        _check_choice("kafka_sasl_mechanism", self.kafka_sasl_mechanism, KAFKA_SASL_MECHANISMS)
        _check_choice("event_clock", self.event_clock, EVENT_CLOCKS)
        self._check_kafka_security()
        self._check_redis_security()
        if self.redis_cluster:
            self._check_redis_cluster()
        if self.pseudonym_key:
            check_key(self.pseudonym_key.encode())

    def _check_kafka_security(self) -> None:
        protocol = f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
        login = ("kafka_sasl_username", "kafka_sasl_password")
        fix = f"set {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL to"
        if self.kafka_security_protocol in KAFKA_SASL_PROTOCOLS:
            for name in login:
                if not getattr(self, name):
                    raise ConfigError(
                        f"{protocol} logs in with SASL but {_var(name)} is empty; set "
                        f"{_var(login[0])} and {_var(login[1])} (or {_var(login[1])}_FILE)"
                    )
        else:
            _check_unused(login, self, f"{protocol} does not log in", f"{fix} SASL_SSL")
        tls_files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        if self.kafka_security_protocol in KAFKA_TLS_PROTOCOLS:
            _check_files(tls_files, self)
        else:
            _check_unused(tls_files, self, f"{protocol} does not use TLS", f"{fix} SSL or SASL_SSL")

    def _check_redis_cluster(self) -> None:
        url = f"{ENV_PREFIX}REDIS_URL={mask_url(self.redis_url)!r}"
        parts = urlsplit(self.redis_url)
        if parts.scheme not in REDIS_CLUSTER_SCHEMES:
            raise ConfigError(
                f"{url} cannot name a Redis Cluster node (scheme {parts.scheme!r}); use "
                f"redis://host:port or rediss://host:port, or unset {ENV_PREFIX}REDIS_CLUSTER"
            )
        if parts.path.strip("/") not in ("", "0") or "db=" in parts.query:
            raise ConfigError(
                f"{url} selects a database; a Redis Cluster has only database 0: drop the "
                "database from the URL (e.g. redis://host:port)"
            )

    def _check_redis_security(self) -> None:
        tls_files = ("redis_ssl_cafile", "redis_ssl_certfile", "redis_ssl_keyfile")
        if self.redis_url.startswith("rediss://"):
            _check_files(tls_files, self)
        else:
            url = f"{ENV_PREFIX}REDIS_URL={mask_url(self.redis_url)!r}"
            _check_unused(tls_files, self, f"{url} does not use TLS", "use a rediss:// URL")
        if self.redis_password and urlsplit(self.redis_url).password is not None:
            raise ConfigError(
                f"{ENV_PREFIX}REDIS_URL={mask_url(self.redis_url)!r} has a password and "
                f"{ENV_PREFIX}REDIS_PASSWORD is set too; keep only {ENV_PREFIX}REDIS_PASSWORD "
                "(or its _FILE)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then apply ``overrides``."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            from_file = var + FILE_SUFFIX
            if var in env and from_file in env:
                raise ConfigError(f"both {var} and {from_file} are set; unset one of them")
            if var in env:
                values[f.name] = _parse(var, env[var], hints[f.name])
            elif from_file in env:
                values[f.name] = _parse(
                    from_file, _read_file(from_file, env[from_file]), hints[f.name]
                )
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


_LEAST: dict[str, float] = {
    "label_delay_days": 0,
    "batch_max_events": 1,
    "model_poll_ms": 10,
    "batch_max_wait_ms": 0,
    "fetch_max_wait_ms": 0,
    "fetch_max_wait_busy_ms": 0,
    "label_barrier_timeout_ms": 1,
    "commit_interval_ms": 0,
    "align_max_buffered_events": 1,
    "align_max_wait_ms": 0,
    "align_idle_ms": 0,
    "topic_partitions": 1,
    "topic_replication": 1,
    "broker_session_timeout_s": 0.1,
    "broker_heartbeat_interval_s": 0.01,
    "redis_key_ttl_days": 1,
    "redis_wait_replicas": 0,
    "redis_wait_timeout_ms": 1,
    "onnx_intra_op_threads": 1,
    "web_port": 0,
    "max_payload_bytes": 64,
    "max_event_ahead_s": 0,
    "console_port": 0,
    "console_max_alerts": 1,
    "ready_stall_s": 1,
    "redis_stats_interval_s": 0,
    "drift_window": 100,
}
"""The smallest value each numeric setting accepts."""


def mask_url(url: str) -> str:
    """``url`` with the password of its user part (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def _var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _check_unused(names: tuple[str, ...], settings: Settings, why: str, fix: str) -> None:
    """A setting that would be ignored is a mistake (a forgotten security protocol would
    otherwise connect without the TLS or login the user asked for)."""
    for name in names:
        if getattr(settings, name):
            raise ConfigError(f"{_var(name)} is set but {why}; {fix} or unset {_var(name)}")


def _check_files(names: tuple[str, str, str], settings: Settings) -> None:
    """TLS files (CA, certificate, key) that are set must exist; a key needs its certificate."""
    for name in names:
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise ConfigError(
                f"{_var(name)}={path!r} is not a file; point it at the PEM file or unset it"
            )
    _, cert, key = names
    if getattr(settings, key) and not getattr(settings, cert):
        raise ConfigError(
            f"{_var(key)} is set without {_var(cert)}; set the client certificate too"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={value!r} is not supported; use one of "
            f"{', '.join(choices)}"
        )


def _read_file(var: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{var}={path!r} cannot be read ({exc.__class__.__name__}); point it at a "
            "readable UTF-8 file"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")


def _parse(var: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(
            f"{var}={raw!r} is not a valid {name}; set it to a {name} or unset it"
        ) from None
