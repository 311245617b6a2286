"""The worker child process gets exactly the parent's settings through FRAUDSTREAM_* variables."""

from __future__ import annotations

from pathlib import Path

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


def test_secrets_go_to_private_files_not_to_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({}, redis_password="pw-in-a-file", namespace="demo")
    env = settings_environment(settings, tmp_path)
    assert "FRAUDSTREAM_REDIS_PASSWORD" not in env
    assert not any("pw-in-a-file" in value for value in env.values())
    secret = Path(env["FRAUDSTREAM_REDIS_PASSWORD_FILE"])
    assert secret.parent == tmp_path and secret.stat().st_mode & 0o777 == 0o600
    assert "FRAUDSTREAM_KAFKA_SASL_PASSWORD_FILE" not in env, "an empty secret stays a variable"
    assert Settings.from_env(env) == settings
