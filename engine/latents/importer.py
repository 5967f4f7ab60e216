"""Bring your own latents: any (N, D) numeric array in .npy, .npz or Zarr becomes ``RUN/latents.zarr``.

So zspace analyses latents of any model, not only its own encoder's. The file is
data, never code: .npy and .npz are read with ``allow_pickle=False`` (an object
array is refused, not unpickled) and a Zarr array whose codecs unpickle is
refused on its metadata, before any chunk is read.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr

from engine.files import swap_in
from engine.latents.store import LatentsError, create_rows_array, iter_blocks
from engine.layout import latents_path
from engine.stores import WRITE_ALL, refuse_unpickling

logger = logging.getLogger(__name__)


_OBJECTS = ("{path} holds Python objects (dtype {dtype}), not numbers, and zspace never unpickles what a file "
            "brings: save a numeric (N, D) array, e.g. numpy.save(path, np.asarray(z, dtype=np.float32))")


def _open_input(path: Path):
    """The (N, D) array in ``path``, lazily where the format allows."""
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            with open(path, "rb") as f:  # the header alone: an object array is refused before it is mapped
                version = np.lib.format.read_magic(f)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                          np.lib.format.read_array_header_2_0)(f)
            if np.dtype(header[2]).hasobject:
                raise LatentsError(_OBJECTS.format(path=path, dtype=header[2]))
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # truncated, corrupt or not an .npy at all
            if isinstance(exc, LatentsError):
                raise
            raise LatentsError(f"{path} is not a readable .npy file ({type(exc).__name__}: {exc}); "
                               f"save it again with numpy.save") from None
        return arr
    if name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.keys())
                if not keys:
                    raise LatentsError(f"{path} holds no arrays")
                key = "z" if "z" in keys else keys[0]
                if len(keys) > 1 and key != "z":
                    logger.warning("%s holds %s; using %r (name the latents 'z' to choose)", path, keys, key)
                return f[key]
        except ValueError as exc:  # numpy refuses an object array under allow_pickle=False
            if isinstance(exc, LatentsError) or "allow_pickle" not in str(exc):
                raise
            raise LatentsError(_OBJECTS.format(path=path, dtype="object")) from None
    if name.endswith(".zarr") or path.is_dir():
        try:
            node = zarr.open(path, mode="r")
            if isinstance(node, zarr.Group):
                if "z" not in node:
                    raise LatentsError(f"{path} is a Zarr group without a 'z' array (has {sorted(node.array_keys())})")
                node = node["z"]
        except LatentsError:
            raise
        except Exception as exc:  # zarr refuses unknown data types and codecs (pickled objects among them) here
            raise LatentsError(f"{path} cannot be read as a numeric Zarr array ({type(exc).__name__}: "
                               f"{(str(exc).splitlines() or [''])[0][:120]})") from None
        refuse_unpickling(node, str(path))
        return node
    raise LatentsError(f"{path}: expected a .npy, .npz or .zarr file of shape (N, D)")


def import_latents(
    file: str | os.PathLike,
    run_dir: str | os.PathLike,
    drop_nonfinite: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the (N, D) array in ``file`` to ``RUN/latents.zarr`` as float32 ``z``.

    Rank other than 2, non-numeric dtypes and rows holding NaN or inf raise
    ``LatentsError`` naming the file, the shape and the first bad row; with
    ``drop_nonfinite`` such rows are dropped, counted and listed (first 100)
    instead. ``ids`` records each kept row's index in the input.
    """
    path = Path(file)
    if not path.exists():
        raise FileNotFoundError(f"latents file {path} does not exist")
    arr = _open_input(path)
    shape = tuple(arr.shape)
    if len(shape) != 2:
        raise LatentsError(f"{path}: latents must have shape (N, D), got shape {shape} (rank {len(shape)})")
    n, d = shape
    if n < 2 or d < 1:
        raise LatentsError(f"{path}: need at least 2 rows and 1 column, got shape {shape}")
    if np.dtype(arr.dtype).kind not in "fiub":
        raise LatentsError(f"{path}: latents must be numeric, got dtype {arr.dtype} for shape {shape}")

    out = latents_path(run_dir)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it with {path}")
    # the new store is built beside the old one and swapped in only when complete:
    # a failed import leaves the old latents as they were
    tmp = out.with_name(out.name + ".importing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    z = create_rows_array(group, "z", n, d)
    keep_rows = []
    dropped: list[int] = []
    written = 0
    rows = max(1, (64 << 20) // (4 * d))
    for start, block in iter_blocks(arr, rows, progress=progress, desc="import"):
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            idx = start + np.flatnonzero(bad)
            if not drop_nonfinite:
                shutil.rmtree(tmp)
                first = int(idx[0])
                raise LatentsError(
                    f"{path}: shape {shape}: row {first} holds non-finite values ({int(bad.sum())} bad rows in rows "
                    f"{start}..{start + len(block) - 1} alone); fix the file or pass --drop-nonfinite"
                )
            dropped.extend(idx.tolist())
            block = block[~bad]
        z[written : written + len(block)] = block
        keep_rows.append(start + np.flatnonzero(~bad))
        written += len(block)
    if written < 2:
        shutil.rmtree(tmp)
        raise LatentsError(f"{path}: shape {shape}: fewer than 2 finite rows")
    z.resize((written, d))
    ids = np.concatenate(keep_rows).astype(str)
    a = group.create_array("ids", shape=(written,), chunks=(min(written, 65536),), dtype=str, config=WRITE_ALL)
    a[:] = ids
    group.attrs.update(
        source={"kind": "imported", "file": str(path.resolve()), "shape": list(shape), "dtype": str(arr.dtype)},
        z_dim=d, n=written, dropped_nonfinite=len(dropped), dropped_rows=dropped[:100], complete=True,
        key=uuid.uuid4().hex,
    )
    swap_in(tmp, out)
    if dropped:
        logger.warning("dropped %d rows with NaN or inf (first: %s)", len(dropped), dropped[:5])
    logger.info("imported %d x %d latents from %s into %s", written, d, path, out)
    return dict(zarr.open_group(out, mode="r").attrs)


__all__ = ["import_latents"]
