"""Scorer throughput by batch size: events/s and µs/event, one ONNX Runtime intra-op thread.

Writes a bundle on the fly (training.models at their default sizes, seeded random weights:
speed does not depend on the weights) for the real ``default`` feature set's F and K, with
the threshold at which ``--alert-share`` of the rows alert; then times
``Scorer.score_batch`` (three ONNX runs, alert decision, the explainer on the alerts and
their top-3 reason arrays) and each graph alone at batch sizes 1, 64, 512 and 4096 (the
explainer on the batch's alerts only, as served). Building the alerts' reason tuples
(``ScoreBatch.reasons_for``) is timed on its own.

    .venv/bin/python benchmarks/bench_scorer.py [--seconds 1.5] [--threads 1]
        [--alert-share 0.01]
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
from training.export import torch_outputs
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


def build_bundle(fs: FeatureSet, directory: Path, alert_share: float) -> Path:
    torch.manual_seed(0)
    fit = Rows(fs, 2048, seed=1)
    normaliser = FeatureNormaliser.fit(fit.values, log_columns(fit.values))
    autoencoder, sequence = Autoencoder(normaliser), SequenceClassifier(normaliser)
    stacker = Stacker(normaliser)
    rows = Rows(fs, max(BATCH_SIZES), seed=3)
    values = rows.values.astype(np.float32)
    (error, _) = torch_outputs(autoencoder, "autoencoder", [values])
    (probability,) = torch_outputs(sequence, "sequence", [rows.sequences, rows.mask])
    (score,) = torch_outputs(stacker, "combined", [values, error, probability])
    threshold = float(np.quantile(score, 1.0 - alert_share))
    return write_bundle(
        directory / "bundle",
        autoencoder=autoencoder,
        sequence_model=sequence,
        stacker=stacker,
        feature_set=fs,
        normalisation=normaliser.statistics(fs.columns),
        threshold=threshold,
        threshold_rule=f"benchmark: {alert_share:.1%} of the timed rows alert, random weights",
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
    """µs/event of score_batch, of each graph alone (the explainer on the alerts), of
    building the alerts' reasons, and the share of alerts."""
    values, sequences, mask = rows.values[:batch], rows.sequences[:batch], rows.mask[:batch]
    features = values.astype(np.float32)
    scored = scorer.score_batch(values, sequences, mask)
    alerts = scored.explained.rows
    feeds: dict[str, dict[str, npt.NDArray[np.float32]]] = {
        "autoencoder": {"features": features},
        "sequence": {"sequence": sequences, "mask": mask},
        "combined": {"features": features, "reconstruction_error": scored.autoencoder_error,
                     "sequence_probability": scored.sequence_probability},
        "explainer": {"features": features[alerts],
                      "reconstruction_error": scored.autoencoder_error[alerts],
                      "sequence_probability": scored.sequence_probability[alerts]},
    }
    sessions = scorer._sessions  # the graphs alone, to show where the time goes

    def score() -> Any:
        return scorer.score_batch(values, sequences, mask)

    def reasons_of_the_alerts() -> Any:
        return scored.reasons_for(alerts)

    def graph(role: ModelRole) -> Callable[[], Any]:
        return lambda: sessions[role].run(None, feeds[role])

    total = per_event_us(score, batch, seconds)
    graphs = [
        per_event_us(graph(role), batch, seconds / 2)
        if len(next(iter(feeds[role].values()))) else 0.0
        for role in ROLES
    ]
    reasons = per_event_us(reasons_of_the_alerts, batch, seconds / 2)
    return [total, *graphs, reasons, len(alerts) / batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per measurement")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--alert-share", type=float, default=0.01,
                        help="share of the rows that alert (and are explained)")
    args = parser.parse_args()

    fs = feature_set("default")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(build_bundle(fs, Path(tmp), args.alert_share))
    scorer = Scorer(bundle, intra_op_threads=args.threads, allow_spinning=False)
    print(f"bundle {bundle.model_version}: F={len(fs.columns)} K={fs.sequence_length}, "
          f"intra-op threads {args.threads}, no spinning")
    print(f"{'batch':>6} {'alerts':>7} {'events/s':>12} {'µs/event':>9} | {'autoenc':>8} "
          f"{'lstm':>8} {'stacker':>8} {'explain':>8} {'reasons*':>9}  (µs/event)")
    rows = Rows(fs, max(BATCH_SIZES), seed=3)
    for batch in BATCH_SIZES:
        total, autoencoder, lstm, stacker, explainer, reasons, share = measure(
            scorer, rows, batch, args.seconds)
        print(f"{batch:>6} {share:>7.1%} {1e6 / total:>12,.0f} {total:>9.2f} | "
              f"{autoencoder:>8.2f} {lstm:>8.2f} {stacker:>8.2f} {explainer:>8.2f} "
              f"{reasons:>9.2f}")
    print("µs/event of the batch's events; explain = the explainer graph on the batch's alerts, "
          "* = building the alerts' reason tuples (outside score_batch)")


if __name__ == "__main__":
    main()
