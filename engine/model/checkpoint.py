"""Checkpoints: ``RUN/checkpoints/last.pt`` and ``best.pt``, written atomically, read back as a model.

A checkpoint is a dict: ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch``,
``best_val``, ``val_loss``, ``rng`` (torch, numpy and CUDA generator states) and
``config`` (``{"model": ModelConfig dict, "train": TrainConfig dict}``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from engine.model.autoencoder import Autoencoder, ModelConfig


def rng_state() -> dict:
    """Every generator training draws from, so a resumed run continues the same random stream."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_synced(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename: never half a checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    _replace_synced(tmp, path)


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` over ``dst`` atomically (``best.pt`` from ``last.pt``)."""
    dst = Path(dst)
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    _replace_synced(tmp, dst)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: run 'zspace train' first")
    return torch.load(path, map_location=device, weights_only=False)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """The model of a checkpoint (eval mode) and the checkpoint dict."""
    ckpt = read_checkpoint(path, device)
    model = Autoencoder(ModelConfig.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
