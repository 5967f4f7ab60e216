"""Device and mixed-precision choice: one autocast context for training and inference.

``auto``: bf16 autocast on CUDA where the GPU supports it, else fp16 with a
GradScaler; fp32 on CPU (bf16 autocast was measured 12-17x slower there, so it
is used on CPU only when asked for).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise ValueError(f"--device {device}: this torch ({torch.__version__}) is built without CUDA; install a "
                             f"CUDA build (on Linux x86_64 plain 'pip install torch' is one) or use --device cpu or auto")
        raise ValueError(f"--device {device}: torch {torch.__version__} has CUDA {torch.version.cuda} but sees no GPU "
                         f"(driver missing or CUDA_VISIBLE_DEVICES empty); use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0.."
                         f"cuda:{torch.cuda.device_count() - 1}")
    return dev


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def needs_scaler(self) -> bool:
        # bf16 has fp32's exponent range; only fp16 gradients underflow
        return self.name == "fp16"

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    return Precision(precision, device.type)
