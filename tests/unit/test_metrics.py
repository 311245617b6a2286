"""Metric functions against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from stream_app.errors import InputDataError
from training.metrics import (
    auc_roc,
    average_precision,
    card_precision_top_k,
    card_precision_top_k_day,
    fraud_metrics,
)


def test_auc_and_ap_of_a_hand_computed_ranking() -> None:
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # positive pairs won: 0.9 beats all 3 negatives, 0.7 beats 2 of 3 -> 5/6
    assert auc_roc(labels, scores) == pytest.approx(5 / 6)
    # precision at the two positives: 1/1 and 2/3, each worth half the recall
    assert average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_tied_scores_count_half_in_auc_and_as_one_threshold_in_ap() -> None:
    labels = np.array([1, 0, 0])
    scores = np.array([0.5, 0.5, 0.1])
    assert auc_roc(labels, scores) == pytest.approx(0.75)
    assert average_precision(labels, scores) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_ap_match_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(2000) < 0.05).astype(np.int64)
    scores = np.round(rng.random(2000) + labels * 0.4, 2)  # rounding makes many ties
    assert auc_roc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_metrics_refuse_a_single_class_or_mismatched_lengths() -> None:
    with pytest.raises(InputDataError, match="both classes"):
        auc_roc(np.zeros(4, dtype=np.int64), np.arange(4.0))
    with pytest.raises(InputDataError, match="3 labels but 2 scores"):
        average_precision(np.array([0, 1, 0]), np.array([0.1, 0.2]))


def test_card_precision_day_uses_each_cards_maximum_score_and_label() -> None:
    customer = np.array([7, 7, 8, 9, 9])
    labels = np.array([0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.95])
    detected, precision = card_precision_top_k_day(customer, labels, scores, top_k=2)
    # card scores: 7 -> 0.9 (compromised), 8 -> 0.5, 9 -> 0.95; the top 2 are 9 and 7
    assert detected.tolist() == [7]
    assert precision == 0.5


def test_card_precision_drops_cards_detected_on_earlier_days() -> None:
    day = np.array([0, 0, 0, 1, 1, 1])
    customer = np.array([1, 2, 3, 1, 2, 3])
    labels = np.array([1, 0, 0, 1, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.9, 0.3, 0.1])
    daily, mean = card_precision_top_k(day, customer, labels, scores, top_k=1)
    # day 0: card 1 detected; day 1: card 1 is dropped, the best left is card 2 (fraud)
    assert daily == [1.0, 1.0]
    assert mean == 1.0
    # a top-k larger than the cards still divides by k (the handbook's definition)
    daily, mean = card_precision_top_k(day, customer, labels, scores, top_k=4)
    assert daily == [0.25, 0.25]


def test_fraud_metrics_names_the_three_published_metrics() -> None:
    day = np.zeros(4, dtype=np.int64)
    customer = np.arange(4, dtype=np.int64)
    result = fraud_metrics(day, customer, np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]))
    assert result == {"auc_roc": 1.0, "average_precision": 1.0, "card_precision_at_100": 0.02}
