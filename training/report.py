"""The evaluation report: our rows beside the published table, and PNG plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.evaluate import METRICS, Evaluation

REPORT_FILE = "report.md"
PUBLISHED_SOURCE = (
    "Le Borgne, Siblini, Lebichot, Bontempi (2022), Reproducible Machine Learning for Credit "
    "Card Fraud Detection - Practical Handbook (table copied from "
    "shared/data/handbook/README.md)"
)
PUBLISHED: tuple[tuple[str, float, float, float], ...] = (
    ("Decision tree", 0.797, 0.579, 0.284),
    ("Logistic regression", 0.868, 0.623, 0.297),
    ("Random forest", 0.870, 0.678, 0.299),
    ("XGBoost", 0.869, 0.687, 0.303),
    ("Feed-forward network", 0.876, 0.675, 0.303),
    ("1-D CNN over sequences", 0.872, 0.599, 0.288),
    ("LSTM over sequences", 0.876, 0.665, 0.297),
    ("LSTM with attention", 0.874, 0.667, 0.295),
)
PUBLISHED_AUTOENCODER = (
    "Autoencoder (trained 2018-07-11..07-17, tested 2018-07-25..07-31)", 0.836, 0.180, 0.217
)
_LABELS = {"autoencoder": "Autoencoder (reconstruction error)",
           "lstm": "LSTM over the last 5 transactions",
           "combined": "Combined (calibrated stacker), the served score",
           "gan": "GAN anomaly detector (GANomaly score)",
           "cnn": "1-D CNN over the last 5 transactions"}
_SEQUENCE_LABELS = {"lstm": "LSTM", "cnn": "1-D CNN", "lstm+cnn": "LSTM and 1-D CNN"}
_ERROR_MODELS = ("autoencoder", "gan")


def label(evaluation: Evaluation, model: str) -> str:
    """The row label of ``model``; the two roles say which architecture filled them."""
    config = evaluation.config
    if model == "autoencoder" and config.anomaly_model == "gan":
        return "GAN anomaly detector in the autoencoder role"
    if model == "lstm" and (config.sequence_model != "lstm" or config.sequence_members > 1):
        members = "" if config.sequence_members == 1 else (
            f", ensemble of {config.sequence_members}")
        return f"{_SEQUENCE_LABELS[config.sequence_model]} over the last 5 transactions{members}"
    return _LABELS[model]


def _cell(summary: dict[str, dict[str, object]], metric: str) -> str:
    entry = summary[metric]
    assert isinstance(entry, dict)
    return f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def markdown(evaluation: Evaluation, plots: list[str]) -> str:
    """The report text."""
    summary = evaluation.summary()
    p = evaluation.params
    lines = [
        "# fraudstream evaluation",
        "",
        f"Feature set `{evaluation.feature_set}`. Prequential protocol: {p.n_folds} folds; "
        f"train {p.train_days} days (`handbook`) or all history before the delay window "
        f"(`all_history`), skip {p.delay_days} days, test {p.test_days} days; customers "
        "already known compromised are removed from each test day; both variants are scored "
        "on the same test rows. Figures are mean ± std over folds.",
        "",
        "| model | training | AUC ROC | AP | CP@100 |",
        "|---|---|---|---|---|",
    ]
    for model in evaluation.models:
        for training, by_metric in summary[model].items():
            cells = " | ".join(_cell(by_metric, m) for m in METRICS)
            lines.append(f"| **ours: {label(evaluation, model)}** | {training} | {cells} |")
    lines += ["", "Published (handbook protocol, 7-day training):", "",
              "| model | AUC ROC | AP | CP@100 |", "|---|---|---|---|"]
    for name, auc, ap, cp in (*PUBLISHED, PUBLISHED_AUTOENCODER):
        lines.append(f"| {name} | {auc:.3f} | {ap:.3f} | {cp:.3f} |")
    lines += ["", f"Source: {PUBLISHED_SOURCE}.", "", "## Folds", ""]
    for training, results in evaluation.folds.items():
        for r in results:
            f = r.fold
            figures = "; ".join(
                f"{m} " + "/".join(f"{r.metrics[m][k]:.3f}" for k in METRICS)
                for m in evaluation.models
            )
            lines.append(
                f"- {training} fold {f.index + 1}: train {f.train_start}..{f.train_end}, test "
                f"{f.test_start}..{f.test_end} ({len(f.test_rows)} rows, "
                f"{int(np.count_nonzero(r.labels))} frauds), threshold {r.threshold:.3f}, "
                f"{r.train_seconds:.0f}s training: {figures} (AUC/AP/CP@100)"
            )
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _precision_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    hits = np.cumsum(labels[order] != 0)
    precision = hits / np.arange(1, len(hits) + 1)
    recall = hits / max(int(hits[-1]), 1)
    return recall, precision


def plot_precision_recall(evaluation: Evaluation, out_dir: Path) -> list[str]:
    """One PNG per training variant: precision-recall curves, all folds pooled, per model."""
    names = []
    for training, results in evaluation.folds.items():
        labels = np.concatenate([r.labels for r in results])
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for model in evaluation.models:
            scores = np.concatenate([r.scores[model] for r in results])
            recall, precision = _precision_recall(labels, scores)
            ax.plot(recall, precision, label=label(evaluation, model))
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"Precision-recall, {training} training (test folds pooled)")
        ax.legend(loc="lower left")
        name = f"precision_recall_{training}.png"
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def plot_score_distributions(evaluation: Evaluation, out_dir: Path) -> list[str]:
    """One PNG per training variant: score histograms of frauds vs genuine, per model."""
    names = []
    for training, results in evaluation.folds.items():
        labels = np.concatenate([r.labels for r in results]) != 0
        models = evaluation.models
        fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.5))
        for ax, model in zip(axes, models, strict=True):
            scores = np.concatenate([r.scores[model] for r in results])
            if model in _ERROR_MODELS:
                scores = np.log10(scores + 1e-6)
            bins = np.linspace(float(scores.min()), float(scores.max()) + 1e-9, 50)
            ax.hist(scores[~labels], bins=bins, density=True, alpha=0.6, label="genuine")
            ax.hist(scores[labels], bins=bins, density=True, alpha=0.6, label="fraud")
            xlabel = "log10 reconstruction error" if model in _ERROR_MODELS else "score"
            ax.set(xlabel=xlabel, yscale="log")
            ax.set_title(label(evaluation, model), fontsize=9)
            ax.legend()
        name = f"score_distribution_{training}.png"
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def write_report(evaluation: Evaluation, out_dir: Path) -> Path:
    """Write the plots and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_precision_recall(evaluation, out_dir) + plot_score_distributions(
        evaluation, out_dir
    )
    path = out_dir / REPORT_FILE
    path.write_text(markdown(evaluation, plots))
    return path


def table(evaluation: Evaluation) -> str:
    """A plain-text table of the means, for the terminal."""
    summary = evaluation.summary()
    rows = [f"{'model':<12} {'training':<12} {'AUC ROC':>8} {'AP':>8} {'CP@100':>8}"]
    for model in evaluation.models:
        for training, by_metric in summary[model].items():
            means = [by_metric[m]["mean"] for m in METRICS]
            rows.append(f"{model:<12} {training:<12} " + " ".join(f"{v:>8.3f}" for v in means))
    rows.append("published best (handbook): AUC 0.876, AP 0.687 (XGBoost), CP@100 0.303; "
                "autoencoder AP 0.180")
    return "\n".join(rows)
