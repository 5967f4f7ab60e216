"""Configuration of the model, its training and encoding: every default once, no torch import."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.config import config_from_dict


FAMILIES = ("ae", "vae", "rae")  # plain autoencoder (the study's), variational, regularised (Ghosh et al. 2020)
FAMILY_TERMS = {"ae": (), "vae": ("beta",), "rae": ("z_reg", "decoder_l2")}  # the TrainConfig weights each uses


@dataclass
class ModelConfig:
    family: str = "ae"  # ae | vae (encoder also gives a log-variance) | rae; see engine.model.autoencoder
    size: int = 96  # input side in pixels; must be divisible by 16 (four stride-2 layers)
    z_dim: int = 256  # latent dimension, as in the study
    widths: tuple[int, ...] = (32, 64, 64, 64)  # conv channels, encoder order
    kernel: int = 3  # conv kernel size, as in the study's Keras model
    leak: float = 0.2  # LeakyReLU negative slope

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
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
    resident: bool | None = None  # the train split's uint8 images on the device, batches gathered there; None: on
    #                               CUDA when the split is in memory and takes at most half the GPU's free memory
    fused: bool | None = None  # Adam's fused kernel; None: on CUDA, where it is one launch for every parameter and
    #                           lets GradScaler's inf check stay on the device (fp16 then waits on no host sync)
    # the latent terms, per image and divided by its 3 S^2 pixel values like the reconstruction term, so that
    # loss = mean pixel loss + beta * KL / (3 S^2) is the VAE's negative ELBO per pixel at beta 1 (bce)
    beta: float = 1.0  # vae: weight of KL(q(z|x) || N(0, I))
    z_reg: float = 1.0  # rae: weight of |z|^2 / 2 (at 1 the same pull as the KL's mean term at beta 1)
    decoder_l2: float = 1e-4  # rae: L2 penalty decoder_l2 / 2 * |theta|^2 on the decoder's weights (Adam's coupled
    #                           weight decay on the decoder's parameter group: the penalty's exact gradient)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("beta", "z_reg", "decoder_l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

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


CLASSIFIER_SIZES = (32, 48, 64, 80, 96)  # image sides the attribute classifier takes (four stride-2 stages)


@dataclass
class ClassifierConfig:
    """The attribute classifier (``engine.model.classifier``): a small CNN trained on real images only."""

    epochs: int = 10  # most passes over the train rows; the epoch with the best validation mean AUC is kept
    patience: int | None = 3  # stop after this many epochs without a better validation mean AUC; None: run all
    batch_size: int = 128
    lr: float = 1e-3  # AdamW peak learning rate, cosine-decayed to 0 over ``epochs``
    weight_decay: float = 1e-2  # AdamW's decoupled decay (per step p -= lr * weight_decay * p)
    widths: tuple[int, ...] = (32, 64, 128, 256)  # conv channels of the four stride-2 stages
    convs_per_stage: int = 2  # 3x3 convs per stage, the first of stride 2; 2 sees 4x the receptive field of 1
    features_dim: int = 128  # width F of the dense penultimate layer: features(), the Frechet space
    dropout: float = 0.2  # on the features, before the logits (training only)
    flip: bool = True  # random horizontal flips: faces are near-symmetric and CelebA's attributes are unsided
    val_fraction: float = 0.1  # when no val_rows are given, this seeded share of train_rows validates instead
    seed: int = 0  # initial weights, batch order, flips and dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on CUDA, fp32 on CPU)
    in_memory: bool | None = None  # None: keep the train rows in memory when they fit (BatchFeed's rule)
    channels_last: bool = True  # NHWC activations, as the autoencoder's training measured faster
    log_every: int = 20  # steps between progress-bar updates (each costs a device sync)

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts (one per stride-2 stage), got {self.widths}")
        for name in ("epochs", "batch_size", "convs_per_stage", "features_dim", "log_every"):
            if getattr(self, name) < (2 if name == "batch_size" else 1):
                raise ValueError(f"{name} must be >= {2 if name == 'batch_size' else 1}, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None (run every epoch), got {self.patience}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be one of auto, fp32, bf16, fp16, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        return config_from_dict(cls, d, "classifier")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d
