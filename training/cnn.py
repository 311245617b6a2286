"""1-D CNN over the customer's last K transactions, in the ``sequence`` role.

``forward(sequence [batch, K, F], mask [batch, K]) -> fraud_probability [batch]``, like
:class:`training.models.SequenceClassifier`: padding steps (mask 0) are zeroed and the mask
is an extra input channel. Two causal convolutions (kernel 2, left padding) run along the
time axis; the head sees the last step's channels, their maximum over the real steps and
the current row's features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from training.models import FeatureNormaliser


class SequenceCNN(nn.Module):
    """Causal 1-D convolutions over the sequence, then a dense head on the latest step."""

    def __init__(self, normaliser: FeatureNormaliser, channels: int = 32, head: int = 32,
                 kernel: int = 2) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.kernel = kernel
        self.conv1 = nn.Conv1d(n_features + 1, channels, kernel)
        self.conv2 = nn.Conv1d(channels, channels, kernel)
        self.head = nn.Sequential(
            nn.Linear(2 * channels + n_features, head), nn.ReLU(), nn.Linear(head, 1)
        )

    def _causal(self, conv: nn.Conv1d, x: Tensor) -> Tensor:
        out: Tensor = torch.relu(conv(functional.pad(x, (self.kernel - 1, 0))))
        return out

    def logits(self, sequence: Tensor, mask: Tensor) -> Tensor:
        """Pre-sigmoid scores [batch]."""
        m = mask.unsqueeze(-1)
        z = self.normaliser(sequence) * m
        x = torch.cat([z, m], dim=-1).transpose(1, 2)  # [batch, F + 1, K]
        h = self._causal(self.conv2, self._causal(self.conv1, x)) * mask.unsqueeze(1)
        pooled = torch.cat([h[:, :, -1], h.amax(dim=2), z[:, -1]], dim=-1)
        out: Tensor = self.head(pooled)
        return out.squeeze(-1)

    def forward(self, sequence: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(sequence, mask))
