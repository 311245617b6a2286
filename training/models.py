"""The three torch models behind the ONNX contract (docs/design.md, "Models").

Every model takes raw float32 features in ``FeatureSet.columns`` order; its first layer is
a :class:`FeatureNormaliser` whose statistics are buffers, so they travel with the
weights into the ONNX graph. Scores: higher means more suspicious.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

_EPS = 1e-6


def log_columns(values: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """Columns that get ``log1p``: non-negative with values above 1 (counts, amounts, times).

    Binary flags and fractions (values within [0, 1]) and signed columns stay linear.
    """
    if len(values) == 0:
        return np.zeros(values.shape[1], dtype=np.bool_)
    return np.asarray((values.min(axis=0) >= 0) & (values.max(axis=0) > 1), dtype=np.bool_)


class FeatureNormaliser(nn.Module):
    """``log1p`` on the flagged columns, then standardisation with training statistics."""

    log_mask: Tensor
    mean: Tensor
    std: Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("log_mask", torch.zeros(n_features, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    @classmethod
    def fit(
        cls, values: npt.NDArray[np.floating], log_mask: npt.NDArray[np.bool_]
    ) -> FeatureNormaliser:
        """Statistics of ``values`` [n, F] after the log transform of ``log_mask`` columns."""
        normaliser = cls(values.shape[1])
        normaliser.log_mask.copy_(torch.from_numpy(np.asarray(log_mask, dtype=np.bool_)))
        transformed = normaliser.transform(torch.from_numpy(values.astype(np.float32)))
        normaliser.mean.copy_(transformed.mean(dim=0))
        std = transformed.std(dim=0)
        normaliser.std.copy_(torch.where(std > _EPS, std, torch.ones_like(std)))
        return normaliser

    def transform(self, x: Tensor) -> Tensor:
        """The log step alone (``log(max(x, 0) + 1)`` on flagged columns)."""
        return torch.where(self.log_mask, torch.log(torch.clamp(x, min=0.0) + 1.0), x)

    def forward(self, x: Tensor) -> Tensor:
        return (self.transform(x) - self.mean) / self.std

    def statistics(self, columns: tuple[str, ...]) -> dict[str, dict[str, float | bool]]:
        """Per column: ``log1p`` flag, mean and std (for the bundle manifest)."""
        return {
            name: {
                "log1p": bool(self.log_mask[i]),
                "mean": float(self.mean[i]),
                "std": float(self.std[i]),
            }
            for i, name in enumerate(columns)
        }


class Autoencoder(nn.Module):
    """Dense autoencoder trained on genuine transactions; score = reconstruction error.

    ``forward(features) -> (reconstruction_error [batch], feature_errors [batch, F])``:
    the squared error of each normalised feature and their mean.
    """

    def __init__(self, normaliser: FeatureNormaliser, hidden: int = 32, code: int = 8) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.encoder = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU()
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, n_features)
        )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        z = self.normaliser(features)
        feature_errors = (z - self.decoder(self.encoder(z))) ** 2
        return feature_errors.mean(dim=1), feature_errors


class SequenceClassifier(nn.Module):
    """LSTM over the customer's last K transactions, predicting fraud for the latest one.

    ``forward(sequence [batch, K, F], mask [batch, K]) -> fraud_probability [batch]``;
    padding steps (mask 0) are zeroed and the mask is an extra input channel. The head sees
    the LSTM state after the current (last) step and the current row's features.
    """

    def __init__(self, normaliser: FeatureNormaliser, hidden: int = 32, head: int = 32) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.lstm = nn.LSTM(n_features + 1, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + n_features, head), nn.ReLU(), nn.Linear(head, 1)
        )

    def logits(self, sequence: Tensor, mask: Tensor) -> Tensor:
        """Pre-sigmoid scores [batch]."""
        m = mask.unsqueeze(-1)
        z = self.normaliser(sequence) * m
        states, _ = self.lstm(torch.cat([z, m], dim=-1))
        out: Tensor = self.head(torch.cat([states[:, -1], z[:, -1]], dim=-1))
        return out.squeeze(-1)

    def forward(self, sequence: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(sequence, mask))


class SequenceMember(Protocol):
    """A sequence model with pre-sigmoid scores (LSTM or ``training.cnn.SequenceCNN``)."""

    def logits(self, sequence: Tensor, mask: Tensor) -> Tensor: ...


class SequenceEnsemble(nn.Module):
    """Several sequence models (different seeds or architectures): the sigmoid of their mean
    logit.

    Same inputs and output as one classifier, so it exports to the same ONNX contract.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def logits(self, sequence: Tensor, mask: Tensor) -> Tensor:
        """Mean of the members' logits [batch]."""
        members = [cast(SequenceMember, m) for m in self.members]
        return torch.stack([m.logits(sequence, mask) for m in members]).mean(dim=0)

    def forward(self, sequence: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(sequence, mask))


class Stacker(nn.Module):
    """Calibrated combination of the features, the AE error and the sequence probability.

    ``forward(features [batch, F], reconstruction_error [batch], sequence_probability
    [batch]) -> score [batch]``: a small MLP logit, then Platt scaling
    ``sigmoid(scale * logit + bias)`` fitted on a later, held-out window.
    """

    error_mean: Tensor
    error_std: Tensor
    platt_scale: Tensor
    platt_bias: Tensor

    def __init__(self, normaliser: FeatureNormaliser, hidden: int = 16) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.net = nn.Sequential(nn.Linear(n_features + 2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("error_mean", torch.zeros(()))
        self.register_buffer("error_std", torch.ones(()))
        self.register_buffer("platt_scale", torch.ones(()))
        self.register_buffer("platt_bias", torch.zeros(()))

    def set_error_statistics(self, reconstruction_error: Tensor) -> None:
        """Standardise ``log(error)`` with the statistics of the stacker's training rows."""
        logged = torch.log(reconstruction_error + _EPS)
        self.error_mean.copy_(logged.mean())
        self.error_std.copy_(torch.clamp(logged.std(), min=_EPS))

    def logits(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        """Uncalibrated logits [batch]."""
        error = (torch.log(reconstruction_error + _EPS) - self.error_mean) / self.error_std
        p = torch.clamp(sequence_probability, min=_EPS, max=1.0 - _EPS)
        sequence_logit = torch.log(p) - torch.log(1.0 - p)
        inputs = torch.cat(
            [self.normaliser(features), error.unsqueeze(-1), sequence_logit.unsqueeze(-1)], dim=-1
        )
        out: Tensor = self.net(inputs)
        return out.squeeze(-1)

    def forward(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        raw = self.logits(features, reconstruction_error, sequence_probability)
        return torch.sigmoid(self.platt_scale * raw + self.platt_bias)
