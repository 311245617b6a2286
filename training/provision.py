"""The compose stack's one-shot model service: ``python -m training.provision --store DIR``.

Makes the model store ``--store`` serve a bundle, then exits:

1. a store whose serving bundle loads is kept as it is (a second ``docker compose up``
   trains nothing);
2. else, when ``--seed`` names a bundle directory (with ``manifest.json``) or a model store,
   its (serving) bundle is verified, copied in and promoted;
3. else the demo bundle is trained (``fraudstream demo``'s plan: simulated warm-up days,
   ``training.demo_model``), copied in and promoted.

The worker watches the store (``FRAUDSTREAM_MODEL_DIR``), so ``fraudstream models promote``
swaps bundles later without a restart.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stream_app.errors import BundleError, ConfigError, FraudstreamError
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.manifest import MANIFEST_FILE
from stream_app.scoring.model_store import is_store, promote, read_selection
from stream_app.tools.demo import DemoPlan, Out, demo_bundle


def provision(store: Path, seed: Path | None, out: Out = print) -> str:
    """Make ``store`` serve a bundle (see the module docstring); returns its model version."""
    store.mkdir(parents=True, exist_ok=True)
    if is_store(store):
        serving = read_selection(store).serving
        try:
            bundle = load_bundle(serving)
        except BundleError as exc:
            raise ConfigError(
                f"the model store {str(store)!r} serves {serving.name!r}, which does not load "
                f"({exc}); promote a good bundle with `fraudstream models promote`, or remove "
                "the store's volume (docker compose down -v) to provision a new one"
            ) from None
        out(f"the model store {store} already serves {bundle.model_version}: kept")
        return bundle.model_version
    if seed is not None:
        source = _seed_bundle(seed)
        out(f"copying the bundle {source} into the model store {store}")
        return _install(store, source)
    with tempfile.TemporaryDirectory(prefix="fraudstream-demo-") as work:
        source = _train_demo(Path(work), out)
        return _install(store, source)


def _seed_bundle(seed: Path) -> Path:
    """The bundle directory ``seed`` names: itself, or a store's serving bundle."""
    if is_store(seed):
        return read_selection(seed).serving
    if (seed / MANIFEST_FILE).is_file():
        return seed
    raise ConfigError(
        f"--seed {str(seed)!r} holds neither a model bundle ({MANIFEST_FILE}) nor a model store "
        "(CURRENT); mount a bundle written by `fraudstream train`, or leave the seed empty "
        "to train the demo bundle"
    )


def _train_demo(work: Path, out: Out) -> Path:
    plan = DemoPlan()
    out(f"no bundle given: training the demo bundle ({plan.customers} customers, "
        f"{plan.warmup_days} simulated days)")  # fmt: skip
    history = plan.history()
    return demo_bundle(work, plan, history, out)


def _install(store: Path, source: Path) -> str:
    """Copy the verified bundle ``source`` into ``store`` under its model version; promote it."""
    version = load_bundle(source).model_version
    target = store / version
    if not target.exists():
        staging = Path(tempfile.mkdtemp(dir=store, prefix=f".{version}."))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        staging.rename(target)
    promote(store, version)
    return version


def main(argv: Sequence[str] | None = None) -> int:
    """Provision ``--store``; one ``error:`` line and exit code 2 on a user error."""
    parser = argparse.ArgumentParser(prog="python -m training.provision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, type=Path, help="the model store to fill")
    parser.add_argument("--seed", type=Path, default=None,
                        help="a bundle or model store to serve instead of training the demo "
                        "bundle; an empty or absent directory counts as none")
    args = parser.parse_args(argv)
    seed: Path | None = args.seed
    if seed is not None and (not seed.is_dir() or not any(seed.iterdir())):
        seed = None
    try:
        version = provision(args.store, seed)
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"the model store {args.store} serves {version}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
