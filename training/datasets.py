"""Labelled training data built with the shared feature code (``stream_app.features``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from stream_app.errors import InputDataError
from stream_app.sources.history import TransactionHistory
from training.protocol import day_number


class FeatureRows(Protocol):
    """What the datasets need from ``stream_app.features.batch.FeatureTable``."""

    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def values(self) -> npt.NDArray[np.float64]: ...
    @property
    def sequence_index(self) -> npt.NDArray[np.int64]: ...


@dataclass(frozen=True, eq=False)
class Dataset:
    """Feature rows of a history with labels, days and integer customer codes.

    ``values`` float32 [n, F]; ``sequence_index`` int64 [n, K] (rows of the customer's last
    K transactions, oldest first, current last, -1 padding); ``day`` is whole UTC days
    since the epoch; ``customer`` integer codes of ``customer_id``; ``label_time_us`` when
    each label became known (``NO_LABEL_US`` if never).
    """

    feature_set: str
    columns: tuple[str, ...]
    values: npt.NDArray[np.float32]
    sequence_index: npt.NDArray[np.int64]
    is_fraud: npt.NDArray[np.int8]
    day: npt.NDArray[np.int64]
    customer: npt.NDArray[np.int64]
    event_time_us: npt.NDArray[np.int64]
    label_time_us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.values)


def from_feature_rows(
    history: TransactionHistory, rows: FeatureRows, feature_set: str
) -> Dataset:
    """Join computed feature rows with the history's labels, days and customers."""
    n = len(history)
    if rows.values.shape[0] != n or rows.sequence_index.shape[0] != n:
        raise InputDataError(
            f"feature rows {rows.values.shape[0]} / sequences {rows.sequence_index.shape[0]} "
            f"do not match the {n} transactions; compute features on the same history"
        )
    _, customer = np.unique(history.customer_id, return_inverse=True)
    return Dataset(
        feature_set=feature_set,
        columns=tuple(rows.columns),
        values=np.ascontiguousarray(rows.values, dtype=np.float32),
        sequence_index=np.ascontiguousarray(rows.sequence_index, dtype=np.int64),
        is_fraud=np.asarray(history.is_fraud, dtype=np.int8),
        day=day_number(history.event_time_us),
        customer=customer.astype(np.int64),
        event_time_us=np.asarray(history.event_time_us, dtype=np.int64),
        label_time_us=np.asarray(history.label_time_us, dtype=np.int64),
    )


def build_dataset(history: TransactionHistory, feature_set: str) -> Dataset:
    """Compute ``feature_set`` ("handbook" or "default") on ``history`` and label the rows."""
    from stream_app.features.batch import compute_features
    from stream_app.features.spec import feature_set as make_feature_set

    table = compute_features(history, make_feature_set(feature_set))
    return from_feature_rows(history, table, feature_set)


class TensorView:
    """The dataset's features as tensors, for batched gathering of rows and sequences."""

    def __init__(self, dataset: Dataset) -> None:
        self.values = torch.from_numpy(dataset.values)
        self.sequence_index = torch.from_numpy(dataset.sequence_index)
        self.labels = torch.from_numpy(dataset.is_fraud.astype(np.float32))

    def features(self, rows: Tensor) -> Tensor:
        """Feature rows [batch, F]."""
        return self.values[rows]

    def sequences(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(sequence [batch, K, F], mask [batch, K])``; padding steps are zero rows."""
        index = self.sequence_index[rows]
        mask = (index >= 0).to(torch.float32)
        sequence = self.values[torch.clamp(index, min=0)] * mask.unsqueeze(-1)
        return sequence, mask
