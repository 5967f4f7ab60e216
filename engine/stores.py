"""Zarr stores that can be verified: every chunk a reader needs must be on disk.

Zarr reads an absent chunk as the fill value, so a deleted or never-written
chunk of images would pass as black images and one of latents as zeros. zspace
therefore writes every chunk (``write_empty_chunks``), gives float arrays NaN
as fill value (an absent chunk can never pass as numbers), and checks, before
a stage reads a store, that the chunk files of every array it needs exist;
otherwise ``StoreDamaged`` names the store, the array, the missing rows and the
command that rebuilds it.
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


def check_arrays(group: zarr.Group, path: Path, names: tuple[str, ...], rebuild: str,
                 required: tuple[str, ...] = ()) -> None:
    """Raise ``StoreDamaged`` when an array of ``required`` is absent or one of ``names`` lacks chunk files."""
    for name in required:
        if name not in group:
            raise StoreDamaged(f"{path} has no array '{name}'; rebuild it with '{rebuild}'")
    for name in names:
        if name not in group:
            continue
        gaps = missing_rows(group[name], path / name)
        if gaps:
            shown = ", ".join(f"{a}..{b - 1}" for a, b in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
            raise StoreDamaged(f"{path}: array '{name}' lacks {len(gaps)} chunk(s), rows {shown}; "
                               f"rebuild it with '{rebuild}'")


__all__ = ["StoreDamaged", "WRITE_ALL", "check_arrays", "fill_for", "missing_rows", "open_group", "open_partial"]
