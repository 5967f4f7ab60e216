"""Paths and layout of the latent store ``RUN/latents.zarr``, without heavy imports.

Analysis stages import this (not the encoder) so they never load torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import zarr

MIN_CHUNK_BYTES = 1 << 20


def chunk_rows(z_dim: int, target_bytes: int = 4 << 20) -> int:
    """Rows per Z chunk: about 4 MB, never under 1 MB, a multiple of 256."""
    rows = max(target_bytes, MIN_CHUNK_BYTES) // (4 * z_dim)
    return max(256, rows // 256 * 256)


def latents_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "latents.zarr"


def open_latents(run_dir: str | os.PathLike) -> zarr.Group:
    """The finished latent store of ``run_dir``; a clear error when it is missing or partial."""
    path = latents_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run 'zspace encode --run {run_dir}' or 'zspace import-latents FILE --run {run_dir}'"
        )
    group = zarr.open_group(path, mode="r")
    if not group.attrs.get("complete", True):
        raise ValueError(f"{path} is incomplete (interrupted encode): rerun 'zspace encode --run {run_dir}'")
    return group
