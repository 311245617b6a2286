"""Run ``fraudstream worker`` as a child process (demo, benchmarks, parity checks).

The child gets every setting as a ``FRAUDSTREAM_*`` variable, runs in its own process
group (a Ctrl-C in the terminal reaches only the parent, which stops it in order) and
logs to a file. :func:`worker_process` waits until ``/ready`` answers 200 (Redis and the
broker answer, partitions assigned) and, when the ``with`` block ends for any reason,
sends SIGTERM to the group (the worker finishes and commits what is in flight), then
SIGKILL if it is still running after a grace period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import LocalServiceError
from stream_app.settings import ENV_PREFIX, FILE_SUFFIX, Settings

READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class WorkerProcess:
    """A running worker child process and where it logs."""

    process: subprocess.Popen[bytes]
    log_path: Path
    settings: Settings

    def check_alive(self) -> None:
        """Raise :class:`LocalServiceError` (with the log's tail) if the worker exited."""
        if self.process.poll() is not None:
            raise LocalServiceError(
                f"the worker exited with code {self.process.returncode}; its log "
                f"{self.log_path} ends with:\n{log_tail(self.log_path)}"
            )


def settings_environment(settings: Settings, secrets_dir: Path | None = None) -> dict[str, str]:
    """Every field of ``settings`` as the ``FRAUDSTREAM_*`` variable that sets it; with
    ``secrets_dir``, each secret that has a value is written to a file there (mode 0600)
    and passed as ``FRAUDSTREAM_X_FILE`` instead, so it is not in the child's environment."""
    env: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        var = ENV_PREFIX + field.name.upper()
        if secrets_dir is not None and field.metadata.get("secret") and value:
            path = secrets_dir / field.name
            path.touch(mode=0o600)
            path.write_text(value + "\n")
            env[var + FILE_SUFFIX] = str(path)
            continue
        env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


@contextlib.contextmanager
def worker_process(
    settings: Settings,
    log_path: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[WorkerProcess]:
    """Start a worker with ``settings``; stop its process group when the block ends.

    Secrets reach the worker as files in a private temporary folder, removed at the end.
    ``extra_env`` adds variables; a ``FRAUDSTREAM_X_FILE`` among them replaces
    ``FRAUDSTREAM_X``."""
    with tempfile.TemporaryDirectory(prefix="fraudstream-secrets-") as secrets:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_environment(settings, Path(secrets)))
        env.update(extra_env or {})
        for name in extra_env or {}:
            if name.endswith(FILE_SUFFIX):
                env.pop(name.removesuffix(FILE_SUFFIX), None)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path, settings)
        try:
            _wait_ready(worker, ready_timeout_s)
            yield worker
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _wait_ready(worker: WorkerProcess, timeout_s: float) -> None:
    settings = worker.settings
    url = f"http://{settings.web_host}:{settings.web_port}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise LocalServiceError(
        f"the worker did not report ready at {url} within {timeout_s:.0f} s; its log "
        f"{worker.log_path} ends with:\n{log_tail(worker.log_path)}"
    )
