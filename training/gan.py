"""GAN-based anomaly detector in the ``autoencoder`` role (GANomaly-style).

The generator is an encoder-decoder-encoder (Akcay et al. 2018, "GANomaly"): ``x`` is
encoded to ``c``, decoded to ``x_hat`` and encoded again to ``c_hat``. It is trained on
genuine transactions against a discriminator that tells normalised rows from their
reconstructions; the generator's loss is the squared reconstruction error, the squared
latent gap ``|c - c_hat|^2`` and feature matching on the discriminator's hidden layer.
Only the generator is exported:

``forward(features) -> (reconstruction_error [batch], feature_errors [batch, F])``, where
``feature_errors`` are the squared errors of the normalised features and
``reconstruction_error`` is their mean plus the mean squared latent gap (the GANomaly
score). Higher means more suspicious.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from training.models import FeatureNormaliser


def _mlp(n_in: int, hidden: int, n_out: int, last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers, nn.ReLU()) if last_relu else nn.Sequential(*layers)


class GanDetector(nn.Module):
    """The generator of a GANomaly: encoder, decoder and a second encoder."""

    def __init__(self, normaliser: FeatureNormaliser, hidden: int = 32, code: int = 8) -> None:
        super().__init__()
        n_features = normaliser.mean.shape[0]
        self.normaliser = normaliser
        self.encoder = _mlp(n_features, hidden, code, last_relu=False)
        self.decoder = _mlp(code, hidden, n_features, last_relu=False)
        self.re_encoder = _mlp(n_features, hidden, code, last_relu=False)

    def generate(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(z, z_hat, c, c_hat)``: normalised rows, reconstructions and both codes."""
        z = self.normaliser(features)
        code = self.encoder(z)
        z_hat = self.decoder(code)
        return z, z_hat, code, self.re_encoder(z_hat)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        z, z_hat, code, code_hat = self.generate(features)
        feature_errors = (z - z_hat) ** 2
        latent_error = ((code - code_hat) ** 2).mean(dim=1)
        return feature_errors.mean(dim=1) + latent_error, feature_errors


class Discriminator(nn.Module):
    """Tells normalised rows (logit > 0) from reconstructions; its hidden layer is the
    feature-matching target."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_features, hidden), nn.LeakyReLU(0.2))
        self.out = nn.Linear(hidden, 1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(z)
        logit: Tensor = self.out(h).squeeze(-1)
        return logit, h


def train_gan(
    normaliser: FeatureNormaliser, features: Callable[[Tensor], Tensor],
    batches: Callable[[], list[list[Tensor]]], hidden: int, code: int, learning_rate: float,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[GanDetector, list[float]]:
    """Alternate discriminator and generator steps over ``batches()`` (one list per epoch,
    row indices of genuine transactions); the generator's mean loss per epoch."""
    generator = GanDetector(copy.deepcopy(normaliser), hidden, code)
    discriminator = Discriminator(int(normaliser.mean.shape[0]), hidden)
    g_optimiser = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=learning_rate,
                                   betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    losses: list[float] = []
    for epoch, epoch_batches in enumerate(batches()):
        total: npt.NDArray[np.float64] = np.zeros(2)
        for batch in epoch_batches:
            z, z_hat, code_, code_hat = generator.generate(features(batch))
            _, real_hidden = discriminator(z)
            _, fake_hidden = discriminator(z_hat)
            g_loss = (((z - z_hat) ** 2).mean() + ((code_ - code_hat) ** 2).mean()
                      + ((real_hidden.detach().mean(0) - fake_hidden.mean(0)) ** 2).mean())
            g_optimiser.zero_grad()
            g_loss.backward()
            g_optimiser.step()
            real_logit, _ = discriminator(z.detach())
            fake_logit, _ = discriminator(z_hat.detach())
            d_loss = (bce(real_logit, torch.ones_like(real_logit))
                      + bce(fake_logit, torch.zeros_like(fake_logit)))
            d_optimiser.zero_grad()
            d_loss.backward()
            d_optimiser.step()
            total += (g_loss.item() * len(batch), len(batch))
        losses.append(float(total[0] / total[1]))
        if on_epoch:
            on_epoch(epoch, losses[-1])
    generator.eval()
    return generator, losses
