"""``fraudstream worker`` on a model store, the layout the compose stack's ``model`` service
writes (``training.provision``): it serves the store's ``CURRENT`` bundle."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from stream_app.scoring.bundle import load_bundle
from stream_app.tools.worker_process import worker_process
from tests.integration.worker_support import bundle_with_threshold, worker_settings
from training.provision import provision

pytestmark = [pytest.mark.integration, pytest.mark.train]


def test_the_worker_command_serves_a_model_stores_current_bundle(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    version = provision(store, bundle_with_threshold(0.4), lambda _line: None)
    assert version == load_bundle(bundle_with_threshold(0.4)).model_version
    settings = worker_settings(kafka_bootstrap, redis_url, model_dir=str(store))
    with worker_process(settings, tmp_path / "worker.log") as worker:
        worker.check_alive()
        url = f"http://127.0.0.1:{settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
    assert (
        f'fraudstream_model_info{{model_version="{version}",policy="bundle",'
        'role="serving"} 1.0'
    ) in metrics, [line for line in metrics.splitlines() if "model_info" in line]
