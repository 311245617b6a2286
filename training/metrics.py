"""Threshold-free fraud metrics: AUC ROC, average precision and card precision@k.

Scores follow the project convention (higher = more suspicious). Card precision@k is the
Fraud Detection Handbook's ``card_precision_top_k``: per day, each card's score is its
maximum transaction score and its label the maximum transaction label; the k best-scored
cards are checked; cards found compromised on earlier days are dropped; the daily
precisions are averaged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream_app.errors import InputDataError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _check_binary(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]) -> None:
    if len(labels) != len(scores):
        raise InputDataError(
            f"{len(labels)} labels but {len(scores)} scores; pass one score per label"
        )
    positives = int(np.count_nonzero(labels))
    if positives == 0 or positives == len(labels):
        raise InputDataError(
            f"metrics need both classes, got {positives} frauds among {len(labels)} rows; "
            "evaluate on a window that holds frauds and genuine transactions"
        )


def auc_roc(labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, tied scores count one half)."""
    _check_binary(labels, scores)
    y = np.asarray(labels) != 0
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average rank (1-based) over each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(s)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    n_pos = float(np.count_nonzero(y))
    n_neg = float(len(y)) - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(
    labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating]
) -> float:
    """Average precision: sum over score thresholds of (recall gain) x precision.

    Tied scores form one threshold, as in scikit-learn's ``average_precision_score``.
    """
    _check_binary(labels, scores)
    y = (np.asarray(labels) != 0).astype(np.float64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    true_pos = np.cumsum(y_sorted)[last_of_tie]
    predicted_pos = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    precision = true_pos / predicted_pos
    recall_gain = np.diff(np.r_[0.0, true_pos]) / true_pos[-1]
    return float(np.sum(recall_gain * precision))


def card_precision_top_k_day(
    customer: IntArray, labels: npt.NDArray[np.integer], scores: npt.NDArray[np.floating],
    top_k: int,
) -> tuple[IntArray, float]:
    """One day's card precision@k: the compromised cards among the k best and the precision.

    ``customer`` holds integer card codes. Ties in score keep ascending card order.
    """
    cards, inverse = np.unique(customer, return_inverse=True)
    card_score = np.full(len(cards), -np.inf)
    np.maximum.at(card_score, inverse, np.asarray(scores, dtype=np.float64))
    card_fraud = np.zeros(len(cards), dtype=np.int64)
    np.maximum.at(card_fraud, inverse, (np.asarray(labels) != 0).astype(np.int64))
    top = np.argsort(-card_score, kind="mergesort")[:top_k]
    detected = cards[top][card_fraud[top] == 1]
    return detected.astype(np.int64), len(detected) / top_k


def card_precision_top_k(
    day: IntArray, customer: IntArray, labels: npt.NDArray[np.integer],
    scores: npt.NDArray[np.floating], top_k: int = 100,
) -> tuple[list[float], float]:
    """Daily card precision@k over the days present (ascending) and their mean.

    Cards detected as compromised on a day are removed from every later day.
    """
    if top_k < 1:
        raise InputDataError(f"top_k={top_k} must be at least 1")
    detected: IntArray = np.empty(0, dtype=np.int64)
    daily: list[float] = []
    for d in np.unique(day):
        rows = (day == d) & ~np.isin(customer, detected)
        found, precision = card_precision_top_k_day(
            customer[rows], labels[rows], scores[rows], top_k
        )
        daily.append(precision)
        detected = np.concatenate([detected, found])
    if not daily:
        raise InputDataError("card precision needs at least one day of scored transactions")
    return daily, float(np.mean(daily))


def fraud_metrics(
    day: IntArray, customer: IntArray, labels: npt.NDArray[np.integer],
    scores: npt.NDArray[np.floating], top_k: int = 100,
) -> dict[str, float]:
    """``auc_roc``, ``average_precision`` and ``card_precision_at_{top_k}`` of one test set."""
    return {
        "auc_roc": auc_roc(labels, scores),
        "average_precision": average_precision(labels, scores),
        f"card_precision_at_{top_k}": card_precision_top_k(
            day, customer, labels, scores, top_k
        )[1],
    }
