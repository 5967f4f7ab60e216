"""``zspace generate``: draw z-points from a sampler fitted to the cloud and decode them.

Writes RUN/generate/<sampler>/: grid.png (the first 64 images), z.npy (n, D)
float32, images.npy (n, S, S, 3) uint8 and sampler.json (settings, seed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.data.sources import TEST
from engine.figures import save_image_grid
from engine.files import file_sha256, write_json_atomic
from engine.generation.config import GenerateConfig
from engine.generation.sampling import Sampler, SamplerConfig
from engine.latents.store import iter_blocks, open_latents
from engine.layout import default_checkpoint, latents_path
from engine.model.autoencoder import to_input
from engine.model.checkpoint import load_checkpoint
from engine.model.precision import resolve_device, resolve_precision

logger = logging.getLogger(__name__)


def load_z(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """All latents, float32 (N, D), and the rows of held-out test images (all rows when there is no split)."""
    group = open_latents(run_dir)
    z = group["z"]
    out = np.empty(z.shape, np.float32)
    for s, block in iter_blocks(z):
        out[s : s + len(block)] = block
    test = np.flatnonzero(group["split"][:] == TEST) if "split" in group else np.arange(len(out))
    return out, test


def load_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None, device: str = "auto"):
    """The run's trained autoencoder in eval mode: (model, device, precision); ``best.pt`` unless given."""
    run = Path(run_dir)
    default = checkpoint is None
    if default:
        checkpoint = default_checkpoint(run)
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint} does not exist: run 'zspace train --run {run}' first")
    encoded_by = open_latents(run).attrs.get("checkpoint_sha256") if default else None
    if encoded_by is not None and encoded_by != file_sha256(checkpoint):
        # the decoder must belong to the encoder that made the latents it decodes near
        raise ValueError(f"{latents_path(run)} was encoded by another checkpoint than {checkpoint}: run "
                         f"'zspace encode --run {run}' first")
    dev = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, dev)  # in eval mode
    model = model.to(memory_format=torch.channels_last)  # as zspace encode runs it
    return model, dev, resolve_precision("auto", dev)


@torch.no_grad()
def decode_with(model, z: np.ndarray, dev, prec, batch_size: int = 256) -> np.ndarray:
    """Images of z-points: float (n, D) -> uint8 (n, S, S, 3)."""
    if z.ndim != 2 or z.shape[1] != model.config.z_dim:
        raise ValueError(f"z-points must have shape (n, {model.config.z_dim}) for this model, got {z.shape}")
    out = []
    for s in range(0, len(z), batch_size):
        zb = torch.from_numpy(np.ascontiguousarray(z[s : s + batch_size], np.float32)).to(dev)
        with prec.autocast():
            img = model.decode(zb)
        out.append(img.float().mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.size, model.config.size, 3), np.uint8)


@torch.no_grad()
def encode_with(model, images: np.ndarray, dev, prec, batch_size: int = 256) -> np.ndarray:
    """Latents of uint8 (n, S, S, 3) images -> float32 (n, D), exactly as ``zspace encode`` computes them."""
    out = []
    for s in range(0, len(images), batch_size):
        x = to_input(np.ascontiguousarray(images[s : s + batch_size]), dev, channels_last=True)
        with prec.autocast():
            z = model.encode(x)
        out.append(z.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.z_dim), np.float32)


def decode(run_dir: str | os.PathLike, z: np.ndarray, checkpoint: str | os.PathLike | None = None,
           device: str = "auto", batch_size: int = 256) -> np.ndarray:
    """Images of z-points: float (n, D) -> uint8 (n, S, S, 3), with the run's best checkpoint."""
    model, dev, prec = load_model(run_dir, checkpoint, device)
    return decode_with(model, np.asarray(z), dev, prec, batch_size)


def write_samples(out: Path, zs: np.ndarray, images: np.ndarray, info: dict) -> None:
    """RUN/generate/NAME/: z.npy, images.npy, grid.png (the first 64 images) and sampler.json."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "z.npy", zs)
    np.save(out / "images.npy", images)
    save_image_grid(out / "grid.png", images[:64], ncols=8, scale=2)
    write_json_atomic(out / "sampler.json", info)


def sampler_info(s: Sampler, n: int, seed: int, zs: np.ndarray) -> dict:
    return {"sampler": s.name, "n": n, "seed": seed, "config": {**asdict(s.config), "origin_radii": list(s.config.origin_radii)},
            "z_norm_mean": float(np.linalg.norm(zs, axis=1).mean()),
            "files": {"grid": "grid.png", "z": "z.npy", "images": "images.npy"}}


def generate(run_dir: str | os.PathLike, sampler: str, n: int = GenerateConfig.n, seed: int = GenerateConfig.seed,
             config: SamplerConfig | None = None, device: str = GenerateConfig.device) -> dict:
    """Fit ``sampler`` to the run's latents, draw ``n`` z-points, decode them; returns sampler.json."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    run = Path(run_dir)
    z, test = load_z(run)
    s = Sampler(sampler, config, seed=seed).fit(z, test_rows=test)
    zs = s.sample(n, np.random.default_rng(seed))
    images = decode(run, zs, device=device)
    info = sampler_info(s, n, seed, zs)
    write_samples(run / "generate" / sampler, zs, images, info)
    logger.info("%s: %d images into %s", sampler, n, run / "generate" / sampler)
    return info
