"""The worker child process gets exactly the parent's settings through FRAUDSTREAM_* variables."""

from __future__ import annotations

from stream_app.settings import Settings
from stream_app.tools.worker_process import settings_environment


def test_settings_round_trip_through_the_environment() -> None:
    settings = Settings.from_env({}, namespace="demo", publish_scores=True, web_port=6123,
                                 broker_session_timeout_s=4.5, model_dir=".run/demo/bundle")
    env = settings_environment(settings)
    assert env["FRAUDSTREAM_PUBLISH_SCORES"] == "1"
    assert env["FRAUDSTREAM_NAMESPACE"] == "demo"
    assert Settings.from_env(env) == settings


def test_every_setting_is_passed() -> None:
    env = settings_environment(Settings())
    assert len(env) == len(Settings.__dataclass_fields__)
    assert all(name.startswith("FRAUDSTREAM_") for name in env)
