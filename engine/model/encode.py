"""Encoding every cached image into ``RUN/latents.zarr``.

Layout (the latent-store contract, see README "Outputs" and engine.layout):
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

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from engine.data.imagecache import open_cache
from engine.files import beside, file_sha256, swap_in
from engine.layout import chunk_rows, default_checkpoint, latents_path
from engine.model.autoencoder import to_input
from engine.model.checkpoint import load_checkpoint, settle_replaced
from engine.model.config import EncodeConfig
from engine.model.precision import resolve_device, resolve_precision
from engine.stores import WRITE_ALL, missing_rows, open_partial

logger = logging.getLogger(__name__)

@torch.no_grad()
def _open_store(out: Path, cache, checkpoint: Path, ckpt: dict, sha: str, z_dim: int,
                overwrite: bool) -> tuple[zarr.Group, Path]:
    """(the latent store to fill, where it lives): the existing one when the same checkpoint made it from the same
    cache; else a replacement built beside it (resumed when one was started), swapped in when complete."""
    n = cache["images"].shape[0]
    build = out
    if out.exists():
        try:
            store = zarr.open_group(out, mode="r+")
        except Exception:
            store = None
        same = store is not None and store.attrs.get("checkpoint_sha256") == sha and store.attrs.get("n") == n
        damaged = store is not None and bool(store.attrs.get("complete")) and any(
            name not in store or missing_rows(store[name], out / name) for name in ("z", "recon_mse"))
        if same and not damaged:
            return store, out
        if same:
            logger.warning("%s lacks chunks: encoding it again", out)
        kind = (store.attrs.get("source") or {}).get("kind") if store is not None else None
        if kind == "imported" and not overwrite:
            raise ValueError(f"{out} holds latents brought in with import-latents ({store.attrs['source'].get('file')}); "
                             f"pass --overwrite to replace them with this model's latents")
        build = beside(out)  # the old latents stay readable until the new ones are complete
        partial = open_partial(build, checkpoint_sha256=sha, n=n)
        if partial is not None:
            return partial, build
        logger.warning("%s was made by another checkpoint or cache: encoding again beside it (%s), replacing it "
                       "when complete", out, build.name)
        shutil.rmtree(build, ignore_errors=True)
    rows = chunk_rows(z_dim)
    store = zarr.open_group(build, mode="w", zarr_format=3)
    # NaN fill and every chunk written: an absent chunk can never read as latents
    store.create_array("z", shape=(n, z_dim), chunks=(rows, z_dim), dtype="float32", fill_value=np.nan,
                       config=WRITE_ALL)
    store.create_array("recon_mse", shape=(n,), chunks=(rows,), dtype="float32", fill_value=np.nan, config=WRITE_ALL)
    for name in ("split", "identity"):
        if name in cache:
            src = cache[name][:]
            a = store.create_array(name, shape=(n,), chunks=(max(1, min(n, 65536)),), dtype=src.dtype,
                                   config=WRITE_ALL)
            a[:] = src
    a = store.create_array("ids", shape=(n,), chunks=(max(1, min(n, 65536)),), dtype=str, config=WRITE_ALL)
    a[:] = cache["ids"][:]
    store.attrs.update(
        checkpoint=str(checkpoint), checkpoint_sha256=sha, checkpoint_epoch=int(ckpt["epoch"]),
        z_dim=z_dim, n=n, source=cache.attrs["source"], size=int(cache.attrs["size"]),
        crop=cache.attrs["crop"], model=ckpt["config"]["model"], loss=ckpt["config"]["train"]["loss"],
        cache_fingerprint=cache.attrs.get("fingerprint"),
        complete=False, rows_done=0, seconds=0.0,
    )
    return store, build


@torch.no_grad()
def encode_block(model, block: np.ndarray, dev, prec, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents float32 (n, D) and per-image reconstruction MSE float32 (n,) of uint8 images (n, S, S, 3)."""
    zs = np.empty((len(block), model.config.z_dim), np.float32)
    mse = np.empty(len(block), np.float32)
    for i in range(0, len(block), batch_size):
        # NHWC: 2x faster inference on CPU here, and the fast layout on CUDA
        x = to_input(block[i : i + batch_size], dev, True)
        with prec.autocast():
            z = model.encode(x)
            logits = model.decode_logits(z)
        zs[i : i + len(x)] = z.float().cpu().numpy()
        err = (torch.sigmoid(logits.float()) - x) ** 2
        mse[i : i + len(x)] = err.flatten(1).mean(1).cpu().numpy()
    return zs, mse


def encode(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = EncodeConfig.checkpoint,
    batch_size: int | None = EncodeConfig.batch_size,
    device: str = EncodeConfig.device,
    precision: str = EncodeConfig.precision,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write the latent of every image in the cache to ``RUN/latents.zarr``; returns its attributes.

    ``checkpoint`` defaults to ``RUN/checkpoints/best.pt`` (else ``last.pt``).
    ``batch_size`` defaults to 64 on CPU (cache-sized activations were fastest
    there) and 1024 on CUDA. Latents brought in with ``import-latents`` are
    replaced only with ``overwrite``; non-finite latents stop the encode before the
    store is marked complete.
    """
    run = Path(run_dir)
    settle_replaced(run, finished=False)  # a train --overwrite killed before its first checkpoint
    cache = open_cache(run)
    images = cache["images"]
    n = images.shape[0]
    checkpoint = Path(default_checkpoint(run) if checkpoint is None else checkpoint)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, ckpt = load_checkpoint(checkpoint, dev)
    model = model.to(memory_format=torch.channels_last)
    batch_size = batch_size or (1024 if dev.type == "cuda" else 64)
    z_dim = model.config.z_dim
    if model.config.size != images.shape[1]:
        raise ValueError(f"checkpoint expects {model.config.size}px images, the cache holds {images.shape[1]}px")
    trained_on = ckpt["config"].get("data", {}).get("cache_fingerprint")
    if trained_on is not None and trained_on != cache.attrs.get("fingerprint"):
        raise ValueError(f"{checkpoint} was trained on another image cache (images.zarr was prepared again since): "
                         f"run 'zspace train --run {run} --overwrite' first")
    out = latents_path(run)
    store, build = _open_store(out, cache, checkpoint, ckpt, file_sha256(checkpoint), z_dim, overwrite)
    if store.attrs.get("complete"):
        if build != out:  # finished beside the old store, but the swap never happened
            swap_in(build, out)
            store = zarr.open_group(out, mode="r")
        logger.info("%s is complete (%d x %d); nothing to do", out, n, z_dim)
        return dict(store.attrs)
    # reopened handles forget write_empty_chunks: give it back, so every chunk lands on disk
    z_arr, mse_arr = store["z"].with_config(WRITE_ALL), store["recon_mse"].with_config(WRITE_ALL)
    rows = z_arr.chunks[0]  # whole chunks per write: a resumed encode never rewrites a finished chunk
    done = int(store.attrs["rows_done"])
    seconds = float(store.attrs["seconds"])
    if done:
        logger.info("resuming encode at row %d of %d", done, n)
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=done, unit="img", desc="encode", disable=None if progress else True, smoothing=0.1)
    for start in range(done, n, rows):
        stop = min(start + rows, n)
        zs, mse = encode_block(model, images[start:stop], dev, prec, batch_size)
        if not np.isfinite(zs).all():
            bad = start + int(np.flatnonzero(~np.isfinite(zs).all(axis=1))[0])
            raise ValueError(f"{checkpoint} gives non-finite latents (first at row {bad}); {out} stays incomplete: "
                             f"retrain with a lower --lr")
        z_arr[start:stop], mse_arr[start:stop] = zs, mse
        store.attrs.update(rows_done=stop, seconds=seconds + time.perf_counter() - t0)
        bar.update(stop - start)
    bar.close()
    total = seconds + time.perf_counter() - t0
    store.attrs.update(complete=True, seconds=total, images_per_second=n / max(total, 1e-9), key=uuid.uuid4().hex)
    if build != out:
        swap_in(build, out)
        store = zarr.open_group(out, mode="r")
    logger.info("encoded %d images into %s (%d x %d) in %.1f s", n, out, n, z_dim, total)
    return dict(store.attrs)
