"""Encoding every cached image into ``RUN/latents.zarr``.

Layout (the latent-store contract in DESIGN.md):
  z          float32 (N, D), row chunks of ``chunk_rows(D)`` (>= 1 MB each)
  ids        (N,) str
  split      int8 (N,)
  recon_mse  float32 (N,)  mean squared error of each image's reconstruction, pixels in [0, 1]
  attrs      checkpoint sha256, source and preprocessing, z_dim, resume state

Images are read one chunk-aligned block at a time and written as whole Z
chunks, so memory is bounded by one block whatever N is. ``rows_done`` is
saved after each block; an interrupted encode resumes there, and a finished
one with the same checkpoint does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from engine.imagecache import open_cache
from engine.store import chunk_rows, latents_path
from engine.precision import resolve_device, resolve_precision
from engine.train import load_checkpoint, to_input

logger = logging.getLogger(__name__)

def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def encode(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Write the latent of every image in the cache to ``RUN/latents.zarr``; returns its attributes.

    ``checkpoint`` defaults to ``RUN/checkpoints/best.pt`` (else ``last.pt``).
    ``batch_size`` defaults to 64 on CPU (cache-sized activations were fastest
    there) and 1024 on CUDA.
    """
    run = Path(run_dir)
    cache = open_cache(run)
    images = cache["images"]
    n = images.shape[0]
    if checkpoint is None:
        best = run / "checkpoints" / "best.pt"
        checkpoint = best if best.exists() else run / "checkpoints" / "last.pt"
    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, ckpt = load_checkpoint(checkpoint, dev)
    # NHWC: 2x faster inference on CPU here, and the fast layout on CUDA
    channels_last = True
    model = model.to(memory_format=torch.channels_last)
    batch_size = batch_size or (1024 if dev.type == "cuda" else 64)
    z_dim = model.config.z_dim
    if model.config.size != images.shape[1]:
        raise ValueError(f"checkpoint expects {model.config.size}px images, the cache holds {images.shape[1]}px")
    sha = file_sha256(checkpoint)
    rows = chunk_rows(z_dim)
    out = latents_path(run)

    store = None
    if out.exists():
        try:
            store = zarr.open_group(out, mode="r+")
        except Exception:
            store = None
        if store is None or store.attrs.get("checkpoint_sha256") != sha or store.attrs.get("n") != n:
            logger.info("%s was made by another checkpoint or cache: encoding again", out)
            shutil.rmtree(out)
            store = None
        elif store.attrs.get("complete"):
            logger.info("%s is complete (%d x %d); nothing to do", out, n, z_dim)
            return dict(store.attrs)
    if store is None:
        store = zarr.open_group(out, mode="w")
        store.create_array("z", shape=(n, z_dim), chunks=(rows, z_dim), dtype="float32")
        store.create_array("recon_mse", shape=(n,), chunks=(rows,), dtype="float32")
        for name in ("split", "identity"):
            if name in cache:
                src = cache[name][:]
                a = store.create_array(name, shape=(n,), chunks=(max(1, min(n, 65536)),), dtype=src.dtype)
                a[:] = src
        ids = cache["ids"][:]
        a = store.create_array("ids", shape=(n,), chunks=(max(1, min(n, 65536)),), dtype=str)
        a[:] = ids
        store.attrs.update(
            checkpoint=str(checkpoint), checkpoint_sha256=sha, checkpoint_epoch=int(ckpt["epoch"]),
            z_dim=z_dim, n=n, source=cache.attrs["source"], size=int(cache.attrs["size"]),
            crop=cache.attrs["crop"], model=ckpt["config"]["model"], loss=ckpt["config"]["train"]["loss"],
            complete=False, rows_done=0, seconds=0.0,
        )
    z_arr, mse_arr = store["z"], store["recon_mse"]
    done = int(store.attrs["rows_done"])
    seconds = float(store.attrs["seconds"])
    if done:
        logger.info("resuming encode at row %d of %d", done, n)

    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=done, unit="img", desc="encode", disable=None if progress else True, smoothing=0.1)
    for start in range(done, n, rows):
        stop = min(start + rows, n)
        block = images[start:stop]
        zs = np.empty((stop - start, z_dim), np.float32)
        mse = np.empty(stop - start, np.float32)
        for i in range(0, stop - start, batch_size):
            x = to_input(block[i : i + batch_size], dev, channels_last)
            with prec.autocast():
                z = model.encode(x)
                logits = model.decode_logits(z)
            zs[i : i + len(x)] = z.float().cpu().numpy()
            err = (torch.sigmoid(logits.float()) - x) ** 2
            mse[i : i + len(x)] = err.flatten(1).mean(1).cpu().numpy()
        z_arr[start:stop] = zs
        mse_arr[start:stop] = mse
        store.attrs.update(rows_done=stop, seconds=seconds + time.perf_counter() - t0)
        bar.update(stop - start)
    bar.close()
    total = seconds + time.perf_counter() - t0
    store.attrs.update(complete=True, seconds=total, images_per_second=n / max(total, 1e-9))
    logger.info("encoded %d images into %s (%d x %d) in %.1f s", n, out, n, z_dim, total)
    return dict(store.attrs)
