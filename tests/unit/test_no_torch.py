"""The serving package never imports torch, not even through a dependency."""

from __future__ import annotations

import json
import subprocess
import sys

# Imports every stream_app module in a fresh interpreter and reports, per module, whether
# torch was loaded after importing it. ``__main__`` modules are skipped: importing them
# runs the CLI.
_PROBE = """
import importlib, json, pkgutil, sys
import stream_app

report = {}
for info in pkgutil.walk_packages(stream_app.__path__, "stream_app."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue
    importlib.import_module(info.name)
    report[info.name] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps(report))
"""


def test_importing_every_stream_app_module_leaves_torch_unloaded() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"a stream_app module failed to import:\n{result.stderr}"
    report: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])

    assert {"stream_app.settings", "stream_app.errors", "stream_app.local_services"} <= set(
        report
    ), f"the walk missed modules: {sorted(report)}"
    first_with_torch = next((name for name, loaded in report.items() if loaded), None)
    assert first_with_torch is None, f"torch was imported by (or before) {first_with_torch}"
