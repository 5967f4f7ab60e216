"""Encoding every cached image into ``RUN/latents.zarr``.

Layout (the latent-store contract, see README "Outputs" and engine.layout):
  z          float32 (N, D), row chunks of ``chunk_rows(D)`` (>= 1 MB each)
  ids        (N,) str
  split      int8 (N,)
  recon_mse  float32 (N,)  mean squared error of each image's reconstruction, pixels in [0, 1]
  logvar     float32 (N, D), a vae's only: log sigma^2 of q(z|x), whose mean is z
  attrs      checkpoint sha256, source and preprocessing, z_dim, resume state

Images are read one chunk-aligned block at a time and written as whole Z
chunks, so memory is bounded by one block whatever N is. ``chunks_done`` (the
row chunks written) is saved after each block; an interrupted encode resumes
with the others, and a finished one with the same checkpoint does nothing.

Under torchrun (``--nproc N``) the chunks still to do are split into N
contiguous ranges, one per rank; ranks write their own chunks (never one
another's), and after each round of blocks rank 0, the only one that touches
the attributes, records every rank's. A resumed encode may use any N.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
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
from engine.model.config import RANK_TIMEOUT_S, EncodeConfig
from engine.model.precision import resolve_precision
from engine.model.ranks import Ranks, all_gather, barrier, on_main, process_group
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
    if ckpt["config"]["model"].get("family") == "vae":  # the posterior's log-variance beside its mean z
        store.create_array("logvar", shape=(n, z_dim), chunks=(rows, z_dim), dtype="float32", fill_value=np.nan,
                           config=WRITE_ALL)
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
        complete=False, chunks_done=[], seconds=0.0,
    )
    return store, build


@torch.no_grad()
def encode_block(model, block: np.ndarray, dev, prec, batch_size: int) -> tuple[np.ndarray, ...]:
    """Latents float32 (n, D) and per-image reconstruction MSE float32 (n,) of uint8 images (n, S, S, 3); for a
    vae also log sigma^2 float32 (n, D). The latent is mu for a vae (its reconstruction decodes mu)."""
    zs = np.empty((len(block), model.config.z_dim), np.float32)
    mse = np.empty(len(block), np.float32)
    vae = model.config.family == "vae"
    logvars = np.empty_like(zs) if vae else None
    for i in range(0, len(block), batch_size):
        # NHWC: 2x faster inference on CPU here, and the fast layout on CUDA
        x = to_input(block[i : i + batch_size], dev, True)
        with prec.autocast():
            z, logvar = model.encode_stats(x)
            logits = model.decode_logits(z)
        zs[i : i + len(x)] = z.float().cpu().numpy()
        if vae:
            logvars[i : i + len(x)] = logvar.float().cpu().numpy()
        err = (torch.sigmoid(logits.float()) - x) ** 2
        mse[i : i + len(x)] = err.flatten(1).mean(1).cpu().numpy()
    return (zs, mse) if not vae else (zs, mse, logvars)


def encode(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = EncodeConfig.checkpoint,
    batch_size: int | None = EncodeConfig.batch_size,
    device: str = EncodeConfig.device,
    precision: str = EncodeConfig.precision,
    progress: bool = True,
    overwrite: bool = False,
    rank_timeout: float = RANK_TIMEOUT_S,
) -> dict:
    """Write the latent of every image in the cache to ``RUN/latents.zarr``; returns its attributes.

    ``checkpoint`` defaults to ``RUN/checkpoints/best.pt`` (else ``last.pt``).
    ``batch_size`` defaults to 64 on CPU (cache-sized activations were fastest
    there) and 1024 on CUDA. Latents brought in with ``import-latents`` are
    replaced only with ``overwrite``; non-finite latents stop the encode before the
    store is marked complete. Under torchrun every rank calls this (module docstring).
    """
    run = Path(run_dir)
    with process_group(device, rank_timeout) as (ranks, dev):
        if ranks.main:
            settle_replaced(run, finished=False)  # a train --overwrite killed before its first checkpoint
        barrier(ranks)
        cache = open_cache(run)
        checkpoint = Path(default_checkpoint(run) if checkpoint is None else checkpoint)
        model, ckpt = load_checkpoint(checkpoint, dev)
        _check_model(model, ckpt, cache, checkpoint, run)
        out = latents_path(run)
        sha = file_sha256(checkpoint)
        build, complete = on_main(ranks, lambda: _open_or_finish(out, cache, checkpoint, ckpt, sha, overwrite))
        if complete:
            return dict(zarr.open_group(out, mode="r").attrs)
        job = _Job(model.to(memory_format=torch.channels_last), dev, resolve_precision(precision, dev),
                   batch_size or (1024 if dev.type == "cuda" else 64), checkpoint, out, ranks)
        _encode_chunks(job, cache["images"], zarr.open_group(build, mode="r+"), progress and ranks.main)
        if ranks.main and build != out:
            swap_in(build, out)
        barrier(ranks)
        attrs = dict(zarr.open_group(out, mode="r").attrs)
    logger.info("encoded %d images into %s (%d x %d) in %.1f s", attrs["n"], out, attrs["n"], attrs["z_dim"],
                attrs["seconds"])
    return attrs


def _check_model(model, ckpt: dict, cache, checkpoint: Path, run: Path) -> None:
    if model.config.size != cache["images"].shape[1]:
        raise ValueError(f"checkpoint expects {model.config.size}px images, the cache holds {cache['images'].shape[1]}px")
    trained_on = ckpt["config"].get("data", {}).get("cache_fingerprint")
    if trained_on is not None and trained_on != cache.attrs.get("fingerprint"):
        raise ValueError(f"{checkpoint} was trained on another image cache (images.zarr was prepared again since): "
                         f"run 'zspace train --run {run} --overwrite' first")


def _open_or_finish(out: Path, cache, checkpoint: Path, ckpt: dict, sha: str, overwrite: bool) -> tuple[Path, bool]:
    """(where the store is built, whether it is complete): rank 0 opens or creates it; a complete one built beside
    the old store but never swapped in is swapped now."""
    store, build = _open_store(out, cache, checkpoint, ckpt, sha, ckpt["config"]["model"]["z_dim"], overwrite)
    if not store.attrs.get("complete"):
        return build, False
    if build != out:  # finished beside the old store, but the swap never happened
        swap_in(build, out)
    logger.info("%s is complete (%d x %d); nothing to do", out, store.attrs["n"], store.attrs["z_dim"])
    return out, True


@dataclass
class _Job:
    model: torch.nn.Module
    dev: torch.device
    prec: object
    batch_size: int
    checkpoint: Path
    out: Path
    ranks: Ranks


def chunks_to_do(attrs: dict, n_rows: int, chunk: int) -> np.ndarray:
    """Row chunks not yet recorded as written (stores of older zspace versions kept ``rows_done``)."""
    done = set(attrs.get("chunks_done", []))
    if "rows_done" in attrs and "chunks_done" not in attrs:
        done = set(range(-(-int(attrs["rows_done"]) // chunk)))
    return np.array([c for c in range(-(-n_rows // chunk)) if c not in done], np.int64)


def _encode_chunks(job: _Job, images, store: zarr.Group, progress: bool) -> None:
    """Encode this rank's share of the chunks still to do, in rounds of one block per rank; rank 0 records
    each round's chunks, and marks the store complete after the last."""
    ranks = job.ranks
    # reopened handles forget write_empty_chunks: give it back, so every chunk lands on disk
    z_arr, mse_arr = store["z"].with_config(WRITE_ALL), store["recon_mse"].with_config(WRITE_ALL)
    logvar_arr = store["logvar"].with_config(WRITE_ALL) if "logvar" in store else None
    n, rows = z_arr.shape[0], z_arr.chunks[0]
    todo = chunks_to_do(dict(store.attrs), n, rows)
    mine = np.array_split(todo, ranks.world)[ranks.rank]  # contiguous, disjoint row ranges
    n_chunks = -(-n // rows)
    done, seconds = sorted(set(range(n_chunks)) - set(todo.tolist())), float(store.attrs["seconds"])
    if done:
        logger.info("resuming encode: %d of %d chunks written", len(done), n_chunks)
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=n - sum(min(rows, n - c * rows) for c in todo), unit="img", desc="encode",
               disable=None if progress else True, smoothing=0.1)
    for step in range(-(-len(todo) // ranks.world)):
        report = None
        if step < len(mine):
            c = int(mine[step])
            start, stop = c * rows, min((c + 1) * rows, n)
            zs, mse, *logvar = encode_block(job.model, images[start:stop], job.dev, job.prec, job.batch_size)
            finite = np.isfinite(zs).all(axis=1) & (np.isfinite(logvar[0]).all(axis=1) if logvar else True)
            report = (c, stop - start, None if finite.all() else start + int(np.flatnonzero(~finite)[0]))
            if report[2] is None:
                z_arr[start:stop], mse_arr[start:stop] = zs, mse
                if logvar:
                    logvar_arr[start:stop] = logvar[0]
        reports = [r for r in all_gather(ranks, report) if r is not None]
        bad = [r[2] for r in reports if r[2] is not None]
        if bad:
            raise ValueError(f"{job.checkpoint} gives non-finite latents (first at row {min(bad)}); {job.out} stays "
                             f"incomplete: retrain with a lower --lr")
        done += [r[0] for r in reports]
        if ranks.main:
            store.attrs.update(chunks_done=sorted(done), seconds=seconds + time.perf_counter() - t0)
        bar.update(sum(r[1] for r in reports))
    bar.close()
    total = seconds + time.perf_counter() - t0
    if ranks.main:
        store.attrs.update(complete=True, seconds=total, images_per_second=n / max(total, 1e-9), key=uuid.uuid4().hex)
