"""Batch and incremental executions agree row for row on random histories."""

from __future__ import annotations

import pytest

from stream_app.features.spec import FeatureSet, feature_set, supported_columns
from tests.unit.feature_histories import both_executions, random_history


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", ["handbook", "default"])
def test_batch_equals_incremental_on_random_histories(seed: int, name: str) -> None:
    table = both_executions(random_history(seed), feature_set(name))
    assert table.values.shape == (1500, len(feature_set(name).columns))


def test_batch_equals_incremental_for_other_windows_delay_and_length() -> None:
    windows = ((2, 5), (3, 10))
    fs = FeatureSet(
        name="custom",
        columns=supported_columns(*windows),
        customer_windows_days=windows[0],
        terminal_windows_days=windows[1],
        label_delay_days=3,
        sequence_length=3,
    )
    table = both_executions(random_history(4, days=40), fs)
    assert table.sequence_index.shape == (1500, 3)


def test_batch_equals_incremental_with_no_delay() -> None:
    both_executions(random_history(5, n=600), feature_set("default", label_delay_days=0))


def test_batch_equals_incremental_for_a_reordered_subset_of_columns() -> None:
    supported = supported_columns((1, 7, 30), (1, 7, 30))
    columns = (supported[-2], supported[16], "TX_AMOUNT", supported[19], supported[8])
    table = both_executions(random_history(6, n=600), FeatureSet("subset", columns))
    assert table.columns == columns
