"""The study's convolutional autoencoder.

Encoder: 4 x (Conv2d stride 2 -> BatchNorm -> LeakyReLU), 96 -> 48 -> 24 -> 12 -> 6,
then a dense layer to ``z_dim``. Decoder: the mirror, a dense layer back to
(w4, 6, 6), 3 x (ConvTranspose2d stride 2 -> BatchNorm -> LeakyReLU), and a last
ConvTranspose2d to 3 channels with a sigmoid. ``forward`` returns logits so that
BCE is computed as ``binary_cross_entropy_with_logits``, which stays exact under
fp16/bf16 autocast; ``decode`` applies the sigmoid.
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
        self.from_z = nn.Linear(c.z_dim, flat)
        dec = []
        rchans = chans[::-1]  # (w4, w3, w2, w1, 3)
        for i, (cin, cout) in enumerate(zip(rchans[:-1], rchans[1:])):
            dec.append(nn.ConvTranspose2d(cin, cout, k, stride=2, padding=p, output_padding=1, bias=i == 3))
            if i < 3:
                dec += [nn.BatchNorm2d(cout), nn.LeakyReLU(c.leak)]
        self.decoder_conv = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder_conv(x)
        return self.to_z(h.flatten(1))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, self.config.widths[-1], self.side, self.side)
        return self.decoder_conv(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], float (B, 3, S, S)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode_logits(z), z


def to_input(batch: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (B, S, S, 3) numpy -> float (B, 3, S, S) in [0, 1] on ``device``.

    The uint8 bytes travel to the device (4x less traffic than float) and are
    converted there. Permuting NHWC to NCHW gives channels_last strides for free.
    """
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    x = t.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
