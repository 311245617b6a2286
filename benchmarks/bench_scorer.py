"""Scorer throughput by batch size: events/s and µs/event, one ONNX Runtime intra-op thread.

Writes a bundle on the fly (training.models at their default sizes, seeded random weights:
speed does not depend on the weights) for the real ``default`` feature set's F and K, then
times ``Scorer.score_batch`` (three ONNX runs, alert decision, top-3 reason arrays) and each
graph alone at batch sizes 1, 64, 512 and 4096. Building the reasons' Python tuples for
every row (``ScoreBatch.reasons_for``) is timed on its own: serving builds them for alerts only.

    .venv/bin/python benchmarks/bench_scorer.py [--seconds 1.5] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stream_app.features.spec import FeatureSet, feature_set
from stream_app.scoring import Scorer, load_bundle
from stream_app.scoring.contract import ROLES, ModelRole
from training.bundle import write_bundle
from training.models import Autoencoder, FeatureNormaliser, SequenceClassifier, Stacker, log_columns

BATCH_SIZES = (1, 64, 512, 4096)


class Rows:
    """Count/amount-like feature rows with left-padded sequences."""

    def __init__(self, fs: FeatureSet, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        f, k = len(fs.columns), fs.sequence_length
        self.sequences = rng.gamma(2.0, 10.0, size=(n, k, f)).astype(np.float32)
        lengths = rng.integers(1, k + 1, size=n)
        self.mask = (np.arange(k)[None, :] >= (k - lengths)[:, None]).astype(np.float32)
        self.sequences *= self.mask[:, :, None]
        self.values: npt.NDArray[np.float64] = self.sequences[:, -1].astype(np.float64)


def build_bundle(fs: FeatureSet, directory: Path) -> Path:
    torch.manual_seed(0)
    fit = Rows(fs, 2048, seed=1)
    normaliser = FeatureNormaliser.fit(fit.values, log_columns(fit.values))
    return write_bundle(
        directory / "bundle",
        autoencoder=Autoencoder(normaliser),
        sequence_model=SequenceClassifier(normaliser),
        stacker=Stacker(normaliser),
        feature_set=fs,
        normalisation=normaliser.statistics(fs.columns),
        threshold=0.5,
        threshold_rule="benchmark: fixed 0.5, random weights",
        training_range=(dt.date(2018, 8, 1), dt.date(2018, 8, 8)),
        metrics={},
        sample_inputs=Rows(fs, 64, seed=2),
    )


def per_event_us(call: Callable[[], Any], batch: int, seconds: float) -> float:
    """Median over rounds of µs per event, each round calling ``call`` for ~0.1 s."""
    call()
    calls = max(1, int(0.1 / max(_once(call), 1e-7)))
    rounds: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds) < 3:
        started = time.perf_counter()
        for _ in range(calls):
            call()
        rounds.append((time.perf_counter() - started) / (calls * batch) * 1e6)
    return float(np.median(rounds))


def _once(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(scorer: Scorer, rows: Rows, batch: int, seconds: float) -> list[float]:
    """µs/event of score_batch, of each graph alone, and of building every row's reasons."""
    values, sequences, mask = rows.values[:batch], rows.sequences[:batch], rows.mask[:batch]
    features = values.astype(np.float32)
    scored = scorer.score_batch(values, sequences, mask)
    feeds: dict[str, dict[str, npt.NDArray[np.float32]]] = {
        "autoencoder": {"features": features},
        "sequence": {"sequence": sequences, "mask": mask},
        "combined": {"features": features, "reconstruction_error": scored.autoencoder_error,
                     "sequence_probability": scored.sequence_probability},
    }
    sessions = scorer._sessions  # the graphs alone, to show where the time goes

    def score() -> Any:
        return scorer.score_batch(values, sequences, mask)

    every_row = np.arange(batch)

    def reasons_of_every_row() -> Any:
        return scored.reasons_for(every_row)

    def graph(role: ModelRole) -> Callable[[], Any]:
        return lambda: sessions[role].run(None, feeds[role])

    total = per_event_us(score, batch, seconds)
    graphs = [per_event_us(graph(role), batch, seconds / 2)
              for role in ROLES]
    reasons = per_event_us(reasons_of_every_row, batch, seconds / 2)
    return [total, *graphs, reasons]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per measurement")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    fs = feature_set("default")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(build_bundle(fs, Path(tmp)))
    scorer = Scorer(bundle, intra_op_threads=args.threads, allow_spinning=False)
    print(f"bundle {bundle.model_version}: F={len(fs.columns)} K={fs.sequence_length}, "
          f"intra-op threads {args.threads}, no spinning")
    print(f"{'batch':>6} {'events/s':>12} {'µs/event':>9} | {'autoenc':>8} {'lstm':>8} "
          f"{'stacker':>8} {'reasons*':>9}  (µs/event)")
    rows = Rows(fs, max(BATCH_SIZES), seed=3)
    for batch in BATCH_SIZES:
        total, autoencoder, lstm, stacker, reasons = measure(scorer, rows, batch, args.seconds)
        print(f"{batch:>6} {1e6 / total:>12,.0f} {total:>9.2f} | {autoencoder:>8.2f} "
              f"{lstm:>8.2f} {stacker:>8.2f} {reasons:>9.2f}")
    print("* building every row's reasons tuples (not part of score_batch; serving builds "
          "them for alerts only)")


if __name__ == "__main__":
    main()
