"""Zarr stores that can be verified: every chunk a reader needs must be on disk.

Zarr reads an absent chunk as the fill value, so a deleted or never-written
chunk of images would pass as black images and one of latents as zeros. zspace
therefore writes every chunk (``write_empty_chunks``), gives float arrays NaN
as fill value (an absent chunk can never pass as numbers), and checks, before
a stage reads a store, that the chunk files of every array it needs exist;
otherwise ``StoreDamaged`` names the store, the array, the missing rows and the
command that rebuilds it.

A store is data, never code: zspace reads no array whose codecs unpickle
(numcodecs' ``pickle``, the one codec that can run what a file names), and
``ids`` are read as fixed strings (zarr's ``vlen-utf8``), not as Python objects.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import zarr

WRITE_ALL = {"write_empty_chunks": True}  # every chunk on disk, so a missing file always means damage


class StoreDamaged(ValueError):
    """A store that lacks chunks, or whose metadata cannot be read."""


def fill_for(dtype) -> float | int:
    """NaN for floating arrays (an absent chunk never reads as numbers), 0 otherwise."""
    return float("nan") if np.dtype(dtype).kind == "f" else 0


def open_group(path: Path, mode: str, rebuild: str) -> zarr.Group:
    """``zarr.open_group`` with a one-line error naming the store when its metadata is damaged."""
    try:
        return zarr.open_group(path, mode=mode)
    except Exception as exc:  # garbage in zarr.json surfaces as JSONDecodeError, KeyError, ValueError...
        raise StoreDamaged(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:100]}); "
                           f"rebuild it with '{rebuild}'") from None


def open_partial(path: Path, **expected) -> zarr.Group | None:
    """The store at ``path`` for writing when its attributes hold ``expected`` (a replacement started for the
    same inputs), else None."""
    if not Path(path).exists():
        return None
    try:
        group = zarr.open_group(path, mode="r+")
    except Exception:
        return None
    return group if all(group.attrs.get(k) == v for k, v in expected.items()) else None


def _chunk_keys_on_disk(array_dir: Path) -> set[tuple[int, ...]]:
    root = array_dir / "c"
    found = set()
    for dirpath, _, files in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        for f in files:
            try:
                found.add(tuple(int(p) for p in (*rel, f)))
            except ValueError:  # a temporary file of an interrupted write, not a chunk
                continue
    return found


def missing_rows(array: zarr.Array, array_dir: Path) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of ``array`` whose chunks are absent from ``array_dir``."""
    if array.size == 0:
        return []
    grid = [range(math.ceil(s / c)) for s, c in zip(array.shape, array.chunks)]
    have = _chunk_keys_on_disk(array_dir)
    rows = sorted({key[0] for key in itertools.product(*grid) if key not in have})
    c0 = array.chunks[0]
    return [(r * c0, min((r + 1) * c0, array.shape[0])) for r in rows]


class UnsafeStore(ValueError):
    """A Zarr array whose codecs would unpickle its chunks: refused before any chunk is read."""


def _codec_names(meta) -> list[str]:
    """Every codec id or name in an array's metadata dict (v2 ``compressor``/``filters``, v3 ``codecs``,
    nested ones inside sharding)."""
    found = []
    if isinstance(meta, dict):
        for key in ("id", "name"):
            if isinstance(meta.get(key), str):
                found.append(meta[key])
        for v in meta.values():
            found += _codec_names(v)
    elif isinstance(meta, (list, tuple)):
        for v in meta:
            found += _codec_names(v)
    return found


def refuse_unpickling(array: zarr.Array, where: str) -> None:
    """``UnsafeStore`` when ``array``'s codecs include one that unpickles (checked on the metadata alone)."""
    meta = array.metadata.to_dict()
    codecs = {k: meta.get(k) for k in ("codecs", "compressor", "filters", "dtype", "data_type")}
    bad = sorted({c for c in _codec_names(codecs) if "pickle" in c.lower()})
    if bad:
        raise UnsafeStore(f"{where} is refused unread: its codec {bad[0]!r} unpickles the chunks, which can run "
                          f"code; save it with numeric codecs (zarr's defaults) instead")


def check_arrays(group: zarr.Group, path: Path, names: tuple[str, ...], rebuild: str,
                 required: tuple[str, ...] = ()) -> None:
    """Raise ``StoreDamaged`` when an array of ``required`` is absent or one of ``names`` lacks chunk files,
    ``UnsafeStore`` when one of them would unpickle its chunks."""
    for name in required:
        if name not in group:
            raise StoreDamaged(f"{path} has no array '{name}'; rebuild it with '{rebuild}'")
    for name in names:
        if name not in group:
            continue
        refuse_unpickling(group[name], f"{path}/{name}")
        gaps = missing_rows(group[name], path / name)
        if gaps:
            shown = ", ".join(f"{a}..{b - 1}" for a, b in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
            raise StoreDamaged(f"{path}: array '{name}' lacks {len(gaps)} chunk(s), rows {shown}; "
                               f"rebuild it with '{rebuild}'")


__all__ = ["StoreDamaged", "UnsafeStore", "WRITE_ALL", "check_arrays", "refuse_unpickling", "fill_for", "missing_rows", "open_group", "open_partial"]
