"""The one frozen settings object; the only reader of ``FRAUDSTREAM_*`` environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from stream_app.contracts.codec import DEFAULT_MAX_PAYLOAD_BYTES
from stream_app.errors import ConfigError

ENV_PREFIX = "FRAUDSTREAM_"


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Each field is read from ``FRAUDSTREAM_<FIELD_NAME_UPPER>``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "live"
    label_delay_days: int = 7
    feature_set: str = "default"
    model_dir: str = "models/current"
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
    window_process: bool = True  # the window store in a child process (False: in process)
    onnx_intra_op_threads: int = 1
    onnx_allow_spinning: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then apply ``overrides``."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            if var in env:
                values[f.name] = _parse(var, env[var], hints[f.name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


_LEAST: dict[str, float] = {
    "label_delay_days": 0,
    "batch_max_events": 1,
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
    "onnx_intra_op_threads": 1,
    "web_port": 0,
    "max_payload_bytes": 64,
}
"""The smallest value each numeric setting accepts."""


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
