"""docker-compose.yml and the Dockerfile: valid against the Compose Specification and safe.

No Docker engine runs here, so the file is checked statically: the official compose-spec
JSON schema (shipped in the check-jsonschema wheel, Apache-2.0) plus project rules.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

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
        assert "@sha256:" in image or re.match(r"\d+(\.\d+)+", tag), (
            f"{name}: image {image!r} must name a version tag such as :1.2.3"
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
    }
    for name in ("kafka", "redis", "worker"):
        assert "test" in services[name]["healthcheck"], f"{name} has no healthcheck"


def test_models_are_mounted_where_the_worker_looks(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    mounts = {v.split(":")[1]: v for v in worker["volumes"]}
    model_dir = Path(worker["environment"]["FRAUDSTREAM_MODEL_DIR"])
    assert any(model_dir.is_relative_to(target) for target in mounts), mounts


def _short_syntax_ip(entry: object) -> str | None:
    """``[HOST_IP:]HOST_PORT:CONTAINER_PORT`` -> HOST_IP (None when absent)."""
    parts = str(entry).split(":")
    return parts[0] if len(parts) == 3 else None
