"""The demo's small model: ``python -m training.demo_model --data PATH --out DIR``.

The same training run as ``fraudstream train`` (:mod:`training.pipeline`), with fewer rows
per epoch and fewer epochs (:data:`DEMO_CONFIG`), so ``fraudstream demo`` gets a working
bundle in about a minute on 2 cores. Not the product's model: use ``fraudstream train``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from stream_app.commands.train import progress
from stream_app.features.spec import FEATURE_SET_NAMES
from stream_app.sources.load import load_history
from training.fit import TrainConfig
from training.pipeline import train_run, write_run

DEMO_CONFIG = TrainConfig(
    rows_per_epoch=30_000,
    autoencoder_epochs=4,
    sequence_epochs=3,
    stacker_epochs=10,
    sequence_members=1,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the demo model on ``--data`` and write the bundle to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m training.demo_model", description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--feature-set", choices=FEATURE_SET_NAMES, default="default")
    parser.add_argument("--label-delay-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = load_history(args.data, None, args.label_delay_days)
    progress(f"read {len(history)} transactions from {args.data}")
    config = dataclasses.replace(DEMO_CONFIG, seed=args.seed)
    trained = train_run(history, args.feature_set, None, config, progress)
    path = write_run(trained, args.out, args.feature_set, args.label_delay_days)
    print(f"wrote the demo model bundle to {path} (threshold {trained.models.threshold:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
