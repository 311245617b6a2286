"""Settings: bad values are refused with the variable, the value and the fix."""

from __future__ import annotations

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
