"""Run ``fraudstream console`` as a child process (the demo).

Settings reach it as ``FRAUDSTREAM_*`` variables, secrets (the analysts' tokens) as files
in a private temporary folder; it logs to a file and runs in its own process group, stopped
(SIGTERM, then SIGKILL) when the ``with`` block ends. It counts as serving once its page
answers 401 (no token sent).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from stream_app.errors import LocalServiceError
from stream_app.settings import ENV_PREFIX, Settings
from stream_app.tools.worker_process import log_tail, settings_environment, stop_process_group

READY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def console_process(
    settings: Settings, log_path: Path, ready_timeout_s: float = READY_TIMEOUT_S
) -> Iterator[str]:
    """Start a console with ``settings``; yields its URL once it serves."""
    with tempfile.TemporaryDirectory(prefix="fraudstream-secrets-") as secrets:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_environment(settings, Path(secrets)))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "console"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        url = f"http://{settings.console_host}:{settings.console_port}/"
        try:
            _wait_serving(process, url, log_path, ready_timeout_s)
            yield url
        finally:
            stop_process_group(process)


def _wait_serving(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServiceError(
                f"the console exited with code {process.returncode}; its log {log_path} ends "
                f"with:\n{log_tail(log_path)}"
            )
        try:
            urllib.request.urlopen(url, timeout=1.0).close()  # noqa: S310 - our own http URL
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise LocalServiceError(
        f"the console did not answer at {url} within {timeout_s:.0f} s; its log {log_path} "
        f"ends with:\n{log_tail(log_path)}"
    )
