"""The study's convolutional autoencoder.

Encoder: 4 x (Conv2d stride 2 -> BatchNorm -> LeakyReLU), 96 -> 48 -> 24 -> 12 -> 6,
then a dense layer to ``z_dim``. Decoder: the mirror, a dense layer back to
(w4, 6, 6), 3 x (ConvTranspose2d stride 2 -> BatchNorm -> LeakyReLU), and a last
ConvTranspose2d to 3 channels with a sigmoid. ``forward`` returns logits so that
BCE is computed as ``binary_cross_entropy_with_logits``, which stays exact under
fp16/bf16 autocast; ``decode`` applies the sigmoid.

Families (``ModelConfig.family``), one architecture:

* ``ae``: the study's deterministic autoencoder, z = to_z(h).
* ``vae``: a second dense head gives log sigma^2; in training z = mu + sigma * eps
  (the reparameterisation trick, eps ~ N(0, I)), in eval z = mu. The latent term
  is KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
* ``rae`` (Ghosh et al. 2020): deterministic; the latent term is |z|^2 / 2, and the
  decoder's weights are L2-penalised by the optimizer (``engine.model.train``).

``encode`` gives mu (= z for ae and rae) for every family, so encoding, decoding and
every analysis stage treat the three alike; ``forward`` gives the latent term too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.model.config import ModelConfig


class Autoencoder(nn.Module):
    """x: float (B, 3, S, S) in [0, 1] -> logits (B, 3, S, S); z: (B, z_dim)."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = c = config or ModelConfig()
        k, p = c.kernel, c.kernel // 2
        chans = (3, *c.widths)
        enc = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, k, stride=2, padding=p, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(c.leak)]
        self.encoder_conv = nn.Sequential(*enc)
        self.side = c.size // 16
        flat = c.widths[-1] * self.side * self.side
        self.to_z = nn.Linear(flat, c.z_dim)
        if c.family == "vae":
            self.to_logvar = nn.Linear(flat, c.z_dim)
        self.from_z = nn.Linear(c.z_dim, flat)
        dec = []
        rchans = chans[::-1]  # (w4, w3, w2, w1, 3)
        for i, (cin, cout) in enumerate(zip(rchans[:-1], rchans[1:])):
            dec.append(nn.ConvTranspose2d(cin, cout, k, stride=2, padding=p, output_padding=1, bias=i == 3))
            if i < 3:
                dec += [nn.BatchNorm2d(cout), nn.LeakyReLU(c.leak)]
        self.decoder_conv = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent of each image: z (ae, rae) or the posterior mean mu (vae), (B, z_dim)."""
        return self.to_z(self.encoder_conv(x).flatten(1))

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mu, log sigma^2) of q(z|x) for a vae; (z, None) for the deterministic families."""
        h = self.encoder_conv(x).flatten(1)
        return self.to_z(h), (self.to_logvar(h) if self.config.family == "vae" else None)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, self.config.widths[-1], self.side, self.side)
        return self.decoder_conv(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], float (B, 3, S, S)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits (B, 3, S, S), z (B, z_dim), latent term (B,) float32 or None for ae). For a vae in training
        z = mu + sigma * eps, eps (B, z_dim) given by the caller (training draws it from (seed, epoch, step) so that
        it is the same whatever the ranks) or drawn here; in eval z = mu."""
        mu, logvar = self.encode_stats(x)
        if self.config.family == "ae":
            return self.decode_logits(mu), mu, None
        if self.config.family == "rae":
            return self.decode_logits(mu), mu, 0.5 * mu.float().pow(2).sum(1)
        if self.training:
            eps = torch.randn_like(mu) if eps is None else eps.to(mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        return self.decode_logits(z), z, kl_normal(mu, logvar)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of each row, float32 (B,): 1/2 sum_j (mu^2 + e^logvar - 1 - logvar)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def to_input(batch, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (B, S, S, 3), numpy or a tensor (already on ``device``: a resident feed) -> float (B, 3, S, S) in
    [0, 1] on ``device``.

    The uint8 bytes travel to the device (4x less traffic than float) and are
    converted there. Permuting NHWC to NCHW gives channels_last strides for free.
    """
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
    else:
        t = torch.from_numpy(batch)
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
    x = t.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
