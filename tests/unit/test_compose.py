"""docker-compose.yml and the Dockerfile: valid against the Compose Specification and safe.

No Docker engine runs here, so the file is checked statically: the official compose-spec
JSON schema (shipped in the check-jsonschema wheel, Apache-2.0) plus project rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream_app.commands import replay as replay_command
from stream_app.commands import simulate as simulate_command
from stream_app.settings import ENV_PREFIX, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    # The spec names draft 07 in a spelling jsonschema does not look up by itself.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_follows_the_compose_spec(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in compose_validator.iter_errors(compose)
    ]
    assert errors == []


def test_compose_spec_schema_rejects_a_broken_service(
    compose_validator: jsonschema.protocols.Validator,
) -> None:
    broken: dict[str, Any] = {
        "services": {"worker": {"image": "x:1", "ports": 9108, "restart_policy": "no"}}
    }
    assert not compose_validator.is_valid(broken)


def test_every_published_port_binds_loopback(compose: dict[str, Any]) -> None:
    published = [
        (name, entry)
        for name, service in compose["services"].items()
        for entry in service.get("ports", [])
    ]
    assert published, "the stack publishes no port at all"
    for name, entry in published:
        host_ip = entry.get("host_ip") if isinstance(entry, dict) else _short_syntax_ip(entry)
        assert host_ip == LOOPBACK, f"{name}: port {entry!r} must be bound to {LOOPBACK}"


def test_images_are_pinned_to_a_version(compose: dict[str, Any]) -> None:
    images = {n: s["image"] for n, s in compose["services"].items() if "image" in s}
    assert images
    for name, image in images.items():
        _, _, tag = image.rpartition(":")
        assert "@sha256:" in image or re.match(r"v?\d+(\.\d+)+", tag), (
            f"{name}: image {image!r} must name a version tag such as :1.2.3 or :v1.2.3"
        )


def test_worker_builds_the_repository_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["worker"]["build"]
    context = REPO_ROOT / build["context"]
    assert context.resolve() == REPO_ROOT
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.(\s|$)", dockerfile, re.MULTILINE)
    installs = re.findall(r"^RUN .*$", dockerfile, re.MULTILINE)
    assert not [line for line in installs if "torch" in line or "[train" in line]
    assert 'ENTRYPOINT ["fraudstream"]' in dockerfile and 'CMD ["worker"]' in dockerfile


def test_docker_build_context_leaves_out_local_state() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "models", "training", "tests"} <= ignored


def test_worker_environment_names_real_settings(compose: dict[str, Any]) -> None:
    environment = compose["services"]["worker"]["environment"]
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    used = set(environment)
    assert {"FRAUDSTREAM_KAFKA_BOOTSTRAP", "FRAUDSTREAM_REDIS_URL", "FRAUDSTREAM_MODEL_DIR"} <= used
    assert used <= fields, f"not Settings fields: {sorted(used - fields)}"
    # Each value must parse as its field's type, as the worker will parse it.
    Settings.from_env({k: str(v) for k, v in environment.items()})


def test_worker_reaches_kafka_and_redis_on_the_compose_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"://{worker['environment']['FRAUDSTREAM_KAFKA_BOOTSTRAP']}" in advertised
    assert worker["environment"]["FRAUDSTREAM_REDIS_URL"].startswith("redis://redis:6379/")
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "model": {"condition": "service_completed_successfully"},
    }
    for name in ("kafka", "redis", "worker"):
        assert "test" in services[name]["healthcheck"], f"{name} has no healthcheck"


def test_models_are_mounted_where_the_worker_looks(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    mounts = {v.split(":")[1]: v for v in worker["volumes"]}
    model_dir = Path(worker["environment"]["FRAUDSTREAM_MODEL_DIR"])
    assert any(model_dir.is_relative_to(target) for target in mounts), mounts


STACK = {"kafka", "redis", "init-secrets", "model", "worker", "console", "prometheus", "grafana"}
ONE_SHOT = {"init-secrets", "model"}
_DEFAULTED = re.compile(r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}")


def test_the_stack_runs_every_service_and_the_replay_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == STACK | {"replay"}
    # `docker compose up` starts every service but replay, which only its profile starts.
    assert {n for n, s in services.items() if "profiles" not in s} == STACK
    assert services["replay"]["profiles"] == ["replay"]


def test_dependencies_wait_for_what_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "worker": {"kafka": "service_healthy", "redis": "service_healthy",
                   "model": "service_completed_successfully"},
        "console": {"kafka": "service_healthy", "worker": "service_started",
                    "init-secrets": "service_completed_successfully"},
        "grafana": {"prometheus": "service_healthy",
                    "init-secrets": "service_completed_successfully"},
        "replay": {"worker": "service_healthy"},
    }  # fmt: skip
    for name, service in services.items():
        conditions = {dep: c["condition"] for dep, c in service.get("depends_on", {}).items()}
        assert conditions == expected.get(name, {}), name
        for dep, condition in conditions.items():
            if condition == "service_healthy":
                assert "test" in services[dep]["healthcheck"], f"{name} waits on {dep}'s health"
            if condition == "service_completed_successfully":
                assert dep in ONE_SHOT
    for name in ONE_SHOT | {"replay"}:
        assert services[name]["restart"] == "no", f"{name} runs once"
        assert "ports" not in services[name]
    for name in STACK - ONE_SHOT:
        assert services[name]["restart"] == "unless-stopped", name


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert not log_dirs.startswith("/tmp")
    assert _mounts(kafka)[log_dirs] == "kafka-data"
    assert _mounts(services["redis"])["/data"] == "redis-data"
    assert "--appendonly" in services["redis"]["command"]
    assert _mounts(services["prometheus"])["/prometheus"] == "prometheus-data"
    assert "--storage.tsdb.path=/prometheus" in services["prometheus"]["command"]
    assert _mounts(services["grafana"])["/var/lib/grafana"] == "grafana-data"
    used = {
        source
        for service in services.values()
        for source in _mounts(service).values()
        if not source.startswith((".", "/", "$"))
    }
    assert used == set(compose["volumes"]), "every named volume declared, every one used"


def test_the_model_service_fills_the_store_the_worker_watches(compose: dict[str, Any]) -> None:
    services = compose["services"]
    model, worker = services["model"], services["worker"]
    store = worker["environment"]["FRAUDSTREAM_MODEL_DIR"]
    assert _mounts(worker)[store] == "models"
    assert f"models:{store}:ro" in worker["volumes"]  # the worker only reads it
    assert _mounts(model)[store] == "models" and f"models:{store}" in model["volumes"]
    command = model["command"]
    assert command[command.index("--store") + 1] == store
    seed = command[command.index("--seed") + 1]
    assert any(v.endswith(f":{seed}:ro") for v in model["volumes"])

    dockerfile_path = REPO_ROOT / model["build"]["dockerfile"]
    dockerfile = dockerfile_path.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install .*torch==2\.13\.0$", dockerfile, re.MULTILINE)
    assert "RUN pip install '.[train]'" in dockerfile
    assert re.search(r"^COPY training \./training$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["python", "-m", "training.provision"]' in dockerfile
    assert (REPO_ROOT / "training" / "provision.py").is_file()
    # BuildKit reads <Dockerfile>.dockerignore instead of .dockerignore: training/ goes in.
    ignored = set(Path(f"{dockerfile_path}.dockerignore").read_text().split())
    assert "training" not in ignored and {".git", ".venv", "models", "tests"} <= ignored


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    secret_words = re.compile(r"PASSWORD|TOKEN|SECRET|KEY(?!_FILE)", re.IGNORECASE)
    for name, service in services.items():
        for var in service.get("environment", {}):
            if secret_words.search(var):
                assert var.endswith("_FILE"), f"{name}: {var} must name a file, not hold a value"
    written = services["init-secrets"]["command"][0]
    secrets_dir = "/run/fraudstream-secrets"
    assert _mounts(services["init-secrets"])[secrets_dir] == "secrets"
    for service, var in (("console", "FRAUDSTREAM_CONSOLE_TOKENS_FILE"),
                         ("grafana", "GF_SECURITY_ADMIN_PASSWORD__FILE")):
        path = Path(services[service]["environment"][var])
        assert str(path.parent) == secrets_dir and f"{secrets_dir}:ro" in " ".join(
            services[service]["volumes"]
        )
        assert f"[ -s {path.name} ] ||" in written, f"init-secrets does not write {path.name}"
        assert f"chmod 0400 {path.name}" in written


def test_init_secrets_writes_each_secret_once_for_its_reader_only(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the script gives files to other users: run as root (as CI does)")
    script = compose["services"]["init-secrets"]["command"][0].replace("$$", "$")
    script = script.replace("/run/fraudstream-secrets", str(tmp_path))
    python_dir = str(Path(sys.executable).parent)  # the image's `python`
    env = {"PATH": f"{python_dir}:/usr/bin:/bin"}
    subprocess.run(["sh", "-c", script], check=True, env=env, timeout=30)
    tokens, password = tmp_path / "console_tokens", tmp_path / "grafana_admin_password"
    assert re.fullmatch(r"analyst:[A-Za-z0-9_-]{32,}\n", tokens.read_text())
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}\n", password.read_text())
    for path, uid in ((tokens, 10001), (password, 472)):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (uid, 0o400)
    first = tokens.read_text(), password.read_text()
    subprocess.run(["sh", "-c", script], check=True, env=env, timeout=30)
    assert (tokens.read_text(), password.read_text()) == first  # kept on a restart


def test_console_environment_names_real_settings(compose: dict[str, Any]) -> None:
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    if "FRAUDSTREAM_CONSOLE_PORT" not in fields:
        pytest.skip("the console's settings (issue 16) are not on this branch yet")
    console = compose["services"]["console"]
    assert console["command"] == ["console"]
    used = {v.removesuffix("_FILE") for v in console["environment"]}
    assert used <= fields, f"not Settings fields: {sorted(used - fields)}"
    port = console["environment"]["FRAUDSTREAM_CONSOLE_PORT"]
    assert console["ports"] == [f"{LOOPBACK}:{port}:{port}"]


def test_the_replay_profile_feeds_the_workers_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    replay = services["replay"]
    assert replay["entrypoint"] == ["sh", "-c"]
    commands = _shell_commands(replay["command"][0])
    simulate = next(c for c in commands if c[:2] == ["fraudstream", "simulate"])
    publish = next(c for c in commands if c[:2] == ["fraudstream", "replay"])
    # The real parsers take the arguments as written (with the defaults of ${VAR:-default}).
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    simulate_command.add_parser(subparsers)
    replay_command.add_parser(subparsers)
    made = parser.parse_args(simulate[1:])
    fed = parser.parse_args(publish[1:])
    assert fed.input == made.output
    assert float(fed.rate) > 0
    worker_env = {k: str(v) for k, v in services["worker"]["environment"].items()}
    assert fed.namespace == Settings.from_env(worker_env).namespace
    assert replay["environment"]["FRAUDSTREAM_KAFKA_BOOTSTRAP"] == worker_env[
        "FRAUDSTREAM_KAFKA_BOOTSTRAP"
    ]
    Settings.from_env({k: str(v) for k, v in replay["environment"].items()})


def test_prometheus_and_grafana_read_the_shipped_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    port = services["worker"]["environment"]["FRAUDSTREAM_WEB_PORT"]
    assert job["static_configs"] == [{"targets": [f"worker:{port}"]}]
    for rule_file in config["rule_files"]:
        assert (REPO_ROOT / "deploy/prometheus" / rule_file).is_file()
    mounts = _mounts(grafana)
    provider = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/dashboards/fraudstream.yml").read_text()
    )
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO_ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
    assert str(Path(home).parent) == dashboards
    sources = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    assert prometheus["ports"] == [f"{LOOPBACK}:9090:9090"]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each short-syntax volume of ``service``."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = _DEFAULTED.sub(lambda m: m["default"], volume).split(":")
        mounts[target] = source
    return mounts


def _shell_commands(script: str) -> list[list[str]]:
    """The commands of a ``sh -c`` script, ``${VAR:-default}`` as its default."""
    text = _DEFAULTED.sub(lambda m: m["default"], script).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line)
        if words and words[0] == "exec":
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def _short_syntax_ip(entry: object) -> str | None:
    """``[HOST_IP:]HOST_PORT:CONTAINER_PORT`` -> HOST_IP (None when absent)."""
    parts = str(entry).split(":")
    return parts[0] if len(parts) == 3 else None
