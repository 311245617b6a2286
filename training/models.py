"""The torch models behind the ONNX contract (docs/design.md, "Models").

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
    [batch]) -> score [batch]``: a small MLP logit over :meth:`inputs`, then Platt scaling
    ``sigmoid(scale * logit + bias)`` fitted on a later, held-out window.
    """

    error_mean: Tensor
    error_std: Tensor
    sequence_logit_mean: Tensor
    platt_scale: Tensor
    platt_bias: Tensor

    def __init__(self, normaliser: FeatureNormaliser, hidden: int = 16) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.net = nn.Sequential(nn.Linear(n_features + 2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("error_mean", torch.zeros(()))
        self.register_buffer("error_std", torch.ones(()))
        self.register_buffer("sequence_logit_mean", torch.zeros(()))
        self.register_buffer("platt_scale", torch.ones(()))
        self.register_buffer("platt_bias", torch.zeros(()))

    def set_error_statistics(self, reconstruction_error: Tensor) -> None:
        """Standardise ``log(error)`` with the statistics of the stacker's training rows."""
        logged = torch.log(reconstruction_error + _EPS)
        self.error_mean.copy_(logged.mean())
        self.error_std.copy_(torch.clamp(logged.std(), min=_EPS))

    def set_sequence_baseline(self, sequence_probability: Tensor) -> None:
        """The mean sequence logit of the stacker's training rows (the explanation baseline's
        sequence input, :meth:`baseline_inputs`)."""
        self.sequence_logit_mean.copy_(_logit(sequence_probability).mean())

    def inputs(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        """The MLP's inputs [batch, F+2]: normalised features, standardised log error,
        sequence logit."""
        error = (torch.log(reconstruction_error + _EPS) - self.error_mean) / self.error_std
        sequence_logit = _logit(sequence_probability)
        return torch.cat(
            [self.normaliser(features), error.unsqueeze(-1), sequence_logit.unsqueeze(-1)], dim=-1
        )

    def baseline_inputs(self) -> Tensor:
        """The inputs [F+2] of an average training transaction: every feature at the
        normaliser's mean (0), the error at its training mean (0), the sequence logit at
        its training mean."""
        zeros = torch.zeros(self.normaliser.mean.shape[0] + 1)
        return torch.cat([zeros, self.sequence_logit_mean.reshape(1)])

    def logits(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        """Uncalibrated logits [batch]."""
        out: Tensor = self.net(self.inputs(features, reconstruction_error, sequence_probability))
        return out.squeeze(-1)

    def calibrate(self, logits: Tensor) -> Tensor:
        """Platt scaling of ``logits``: the score."""
        return torch.sigmoid(self.platt_scale * logits + self.platt_bias)

    def forward(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        return self.calibrate(self.logits(features, reconstruction_error, sequence_probability))


def _logit(probability: Tensor) -> Tensor:
    p = torch.clamp(probability, min=_EPS, max=1.0 - _EPS)
    return torch.log(p) - torch.log(1.0 - p)


_SERIES_BELOW = 0.1
"""``(1 - exp(-t)) / t`` by its Taylor series below this ``t`` (float32 cancellation)."""


class StackerExplainer(nn.Module):
    """Each stacker input's contribution to the score, DeepLIFT's rescale rule.

    ``forward(features, reconstruction_error, sequence_probability) -> contributions
    [batch, F+2]`` (the F features, the autoencoder error, the sequence probability), in
    probability units, summing to ``score - baseline_score()``: the stacker's score minus
    that of :meth:`Stacker.baseline_inputs`. With ``Δx`` the inputs' distance from the
    baseline's, each hidden ReLU unit gets the multiplier ``m = Δrelu(h) / Δh`` (its slope
    when ``Δh`` is 0), so ``c_i = Δx_i · Σ_j W1[j, i] m_j W2[j]`` sums exactly to the logit's
    ``Δz``; the Platt sigmoid rescales them by ``Δscore / Δz`` (its slope when ``Δz`` is 0).
    """

    def __init__(self, stacker: Stacker) -> None:
        super().__init__()
        layers = list(stacker.net)
        if not (
            len(layers) == 3 and isinstance(layers[0], nn.Linear)
            and isinstance(layers[1], nn.ReLU) and isinstance(layers[2], nn.Linear)
            and layers[2].out_features == 1
        ):
            raise TypeError(
                f"StackerExplainer needs a stacker net Linear -> ReLU -> Linear(.., 1), got "
                f"{stacker.net}; extend the rescale rule to the new layers"
            )
        self.stacker = stacker
        self.hidden: nn.Linear = layers[0]
        self.output: nn.Linear = layers[2]

    def forward(
        self, features: Tensor, reconstruction_error: Tensor, sequence_probability: Tensor
    ) -> Tensor:
        x = self.stacker.inputs(features, reconstruction_error, sequence_probability)
        x0 = self.stacker.baseline_inputs().unsqueeze(0)
        h, h0 = self.hidden(x), self.hidden(x0)
        multiplier = self._multipliers(h, h0)
        w2 = self.output.weight[0]
        logit_contributions = (x - x0) * ((multiplier * w2) @ self.hidden.weight)
        z = self.output(torch.relu(h)).squeeze(-1)
        z0 = self.output(torch.relu(h0)).squeeze(-1)
        return logit_contributions * self._sigmoid_slope(z, z0).unsqueeze(-1)

    def _multipliers(self, h: Tensor, h0: Tensor) -> Tensor:
        """Rescale rule of each hidden ReLU: ``Δrelu(h) / Δh``, its slope where ``Δh`` is ~0."""
        dh = h - h0
        steep = dh.abs() > _EPS
        return torch.where(
            steep, (torch.relu(h) - torch.relu(h0)) / torch.where(steep, dh, 1.0),
            (h > 0).to(h.dtype),
        )

    def _sigmoid_slope(self, z: Tensor, z0: Tensor) -> Tensor:
        """``(score(z) - score(z0)) / (z - z0)`` of the Platt sigmoid, written as
        ``a sigmoid(hi) sigmoid(-lo) (1 - exp(-t)) / t`` with ``u = a z + b``, ``hi`` and
        ``lo`` the larger and smaller of ``u`` and ``u0``, ``t = hi - lo``: it neither
        cancels nor overflows, and tends to the slope as ``z -> z0``."""
        a, b = self.stacker.platt_scale, self.stacker.platt_bias
        u, u0 = a * z + b, a * z0 + b
        hi, lo = torch.maximum(u, u0), torch.minimum(u, u0)
        t = hi - lo
        small = t < _SERIES_BELOW
        series = 1 - t / 2 * (1 - t / 3 * (1 - t / 4 * (1 - t / 5)))
        safe = torch.where(small, 1.0, t)
        ratio = torch.where(small, series, (1 - torch.exp(-safe)) / safe)
        return a * torch.sigmoid(hi) * torch.sigmoid(-lo) * ratio

    @torch.no_grad()
    def baseline_score(self) -> float:
        """The stacker's score at its baseline inputs."""
        x0 = self.stacker.baseline_inputs().unsqueeze(0)
        return float(self.stacker.calibrate(self.stacker.net(x0).squeeze(-1))[0])
