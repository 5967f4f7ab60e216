"""The latent store ``RUN/latents.zarr``: open it, stream it in row blocks, add row-aligned arrays.

Analysis verbs need only ``z`` (N, D) float32; ``ids`` and ``split`` are used
when present. The store's layout (row chunks of at least 1 MB) is the contract
of ``engine.layout``; readers go through ``open_latents`` and ``iter_blocks``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr
from tqdm.auto import tqdm

from engine.layout import cache_path, chunk_rows, latents_path
from engine.stores import WRITE_ALL, check_arrays, fill_for, open_group

BLOCK_BYTES = 16 << 20  # rows per streamed block: ~16 MB of float32; each block makes a few float64 temporaries


class LatentsError(ValueError):
    """Latents that cannot be analysed: wrong rank, non-numeric, non-finite rows."""


def block_size(z: zarr.Array, target_bytes: int = BLOCK_BYTES) -> int:
    """Rows per block: a whole number of chunks, about ``target_bytes`` of float32."""
    chunk = z.chunks[0]
    rows = max(1, target_bytes // (4 * z.shape[1] * chunk)) * chunk
    return int(rows)


def iter_blocks(z, rows: int | None = None, progress: bool = False, desc: str = "") -> Iterator[tuple[int, np.ndarray]]:
    """(start, float32 C-contiguous block) over the rows of ``z``; the next block is read while the caller works."""
    n = z.shape[0]
    rows = rows or (block_size(z) if hasattr(z, "chunks") else 65536)
    starts = list(range(0, n, rows))
    read = lambda s: np.ascontiguousarray(z[s : min(s + rows, n)], dtype=np.float32)  # noqa: E731
    bar = tqdm(total=n, unit="row", desc=desc, disable=None if progress else True, leave=False)
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(read, starts[0]) if starts else None
        for k, s in enumerate(starts):
            block = nxt.result()
            nxt = pool.submit(read, starts[k + 1]) if k + 1 < len(starts) else None
            yield s, block
            bar.update(len(block))
    bar.close()


def create_rows_array(group: zarr.Group, name: str, n: int, d: int, dtype="float32", chunk: int | None = None) -> zarr.Array:
    """An (n, d) array in row chunks of ``chunk`` rows (default >= 1 MB, as ``z``), replacing any old one."""
    rows = min(n, chunk or chunk_rows(d)) or 1
    return group.create_array(name, shape=(n, d), chunks=(rows, d), dtype=dtype, overwrite=True,
                              fill_value=fill_for(dtype), config=WRITE_ALL)


def open_latents(run_dir: str | os.PathLike) -> zarr.Group:
    """The finished latent store of ``run_dir``; a clear error when it is missing or partial."""
    path = latents_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run 'zspace encode --run {run_dir}' or 'zspace import-latents FILE --run {run_dir}'"
        )
    rebuild = f"zspace encode --run {run_dir} (or import-latents FILE --overwrite)"
    group = open_group(path, "r", rebuild)
    if not group.attrs.get("complete", True):
        raise ValueError(f"{path} is incomplete (interrupted encode): rerun 'zspace encode --run {run_dir}'")
    check_arrays(group, path, ("z", "recon_mse"), rebuild, required=("z",))
    made_from = group.attrs.get("cache_fingerprint")
    if made_from is not None:
        now = _attrs(cache_path(run_dir)).get("fingerprint")
        if now is not None and now != made_from:
            raise ValueError(f"{path} was encoded from another image cache (images.zarr was prepared again since): "
                             f"run 'zspace train --run {run_dir} --overwrite' and 'zspace encode --run {run_dir}'")
    return group


def latents_key(run_dir: str | os.PathLike) -> str | None:
    """The key of the finished latent store (new on every encode or import), or None."""
    return _attrs(latents_path(run_dir)).get("key")


def _attrs(path: str | os.PathLike) -> dict:
    """The attributes of the Zarr group at ``path``; empty when it is absent or unreadable (its readers say why)."""
    try:
        return dict(zarr.open_group(path, mode="r").attrs)
    except Exception:
        return {}


__all__ = ["BLOCK_BYTES", "LatentsError", "block_size", "create_rows_array", "iter_blocks", "latents_key", "open_latents"]
