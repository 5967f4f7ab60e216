"""Configuration of the model, its training and encoding: every default once, no torch import."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.config import config_from_dict


@dataclass
class ModelConfig:
    size: int = 96  # input side in pixels; must be divisible by 16 (four stride-2 layers)
    z_dim: int = 256  # latent dimension, as in the study
    widths: tuple[int, ...] = (32, 64, 64, 64)  # conv channels, encoder order
    kernel: int = 3  # conv kernel size, as in the study's Keras model
    leak: float = 0.2  # LeakyReLU negative slope

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 4:
            raise ValueError(f"widths must have 4 entries (one per conv layer), got {self.widths}")
        if min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if self.size % 16 or self.size < 16:
            raise ValueError(f"size must be a positive multiple of 16, got {self.size}")
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same padding at stride 2), got {self.kernel}")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return config_from_dict(cls, d, "model")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


LOSSES = ("bce", "mse")
RANK_TIMEOUT_S = 600.0  # with several ranks, a collective that waits longer than this on a lost rank fails


@dataclass
class TrainConfig:
    epochs: int = 24  # total epochs, as in the study
    batch_size: int = 64
    lr: float = 5e-4  # Adam learning rate
    loss: str = "bce"  # bce | mse, per pixel
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    in_memory: bool | None = None  # None: keep the train split in memory when it fits
    grid_images: int = 8  # fixed test images in the reconstruction grid
    log_every: int = 20  # steps between progress-bar loss updates (each costs a device sync)
    channels_last: bool = True  # NHWC activations: faster on CUDA and, measured here, ~25% on CPU too

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return config_from_dict(cls, d, "train")


@dataclass
class EncodeConfig:
    checkpoint: str | None = None  # default RUN/checkpoints/best.pt (else last.pt)
    batch_size: int | None = None  # None: 64 on CPU (cache-sized activations were fastest there), 1024 on CUDA
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N


class RankFailed(RuntimeError):
    """A rank of a ``--nproc`` job failed; the message names the rank(s) and the cause (engine.model.launch)."""

    def __init__(self, message: str, exit_code: int = 1, detail: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.detail = detail  # the failed rank's traceback when the error was not a user's
