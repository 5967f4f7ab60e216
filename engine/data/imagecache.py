"""The image cache ``RUN/images.zarr``: every image decoded and resized once.

Layout (the run-directory contract, see README "Outputs" and engine.layout):
  images    uint8 (N, S, S, 3), row chunks of ``CHUNK_ROWS``
  ids       (N,) str
  split     int8 (N,)   0 train, 1 validation, 2 test
  identity  int32 (N,)  -1 where unknown
  attributes  int8 (N, A), optional: labels of the source (CelebA's list_attr_celeba.txt, the planted
            attributes of synthetic:N); 1 positive, 0 negative, -1 unlabelled (engine.data.labels)
  attrs     source, size, crop, counts, skipped files, resume state; attribute_names, attribute_counts

``prepare`` decodes in worker processes; each task is one chunk of rows, which
its worker decodes and writes itself. The parent commits tasks in order and
saves the resume state (items done, files skipped) after each, so an
interrupted run continues from the last committed block and a finished one
does nothing. Unreadable files leave holes that are closed once at the end.

Labels are not part of the cache's fingerprint: a label file added to (or
fixed in) a source later is stored by the next prepare without decoding an
image again; labels that differ from stored ones are replaced only with
``overwrite``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from engine.data.config import PrepareConfig
from engine.data.labels import LABELS_ARRAY, store_labels, stored_equal
from engine.data.sources import CROP, SPLIT_NAMES, Source, open_source
from engine.files import beside, swap_in
from engine.layout import cache_path
from engine.stores import WRITE_ALL, StoreDamaged, check_arrays, missing_rows, open_group, open_partial

logger = logging.getLogger(__name__)

CHUNK_ROWS = 256  # 7 MB of 96x96 RGB per chunk before compression
TASK_ITEMS = CHUNK_ROWS  # one task writes exactly one chunk, so workers never share a chunk
LAYOUT_VERSION = 1


def _fingerprint(source: Source, size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"source": source.describe(), "size": size, "layout": LAYOUT_VERSION}, sort_keys=True).encode())
    for i in source.ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


_WORKER: dict = {}


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when its parent dies (a kill -9 of prepare leaves no orphans)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(source: Source, array_path: str, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    # one decode per process; nested BLAS/OpenMP threads would only oversubscribe
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["source"] = source
    _WORKER["images"] = zarr.open_array(array_path, mode="r+").with_config(WRITE_ALL)


def _work(start: int, stop: int, size: int) -> tuple[np.ndarray, list[str]]:
    """Decode items [start, stop) and write them to rows [start, stop): one whole chunk per task,
    so workers never touch the same chunk and the parent never moves pixels."""
    block, ok, errors = _WORKER["source"].load_block(start, stop, size)
    _WORKER["images"][start:stop] = block
    return ok, errors


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _open_store(path: Path, src: Source, size: int, fp: str, overwrite: bool) -> tuple[zarr.Group, Path]:
    """(the cache to fill, where it lives): the existing one when it was made from the same source and size;
    with ``overwrite``, a replacement built beside the old cache (resumed when one was started), else a new one."""
    group = None
    if path.exists():
        try:
            group = zarr.open_group(path, mode="r+")
            old = group.attrs.get("fingerprint")
        except Exception:
            old = None
        if old == fp:
            return group, path
        started = open_partial(beside(path), fingerprint=fp)
        if started is not None:
            logger.info("resuming the replacement of %s in %s", path, beside(path))
            return started, beside(path)
        if not overwrite:
            desc = group.attrs.get("source", {}).get("spec") if group is not None else "unreadable"
            raise ValueError(
                f"{path} holds a different image set (source {desc!r}, size "
                f"{group.attrs.get('size') if group is not None else '?'}); pass overwrite=True "
                f"(--overwrite) to rebuild it for {src.spec!r} at size {size}"
            )
        new = beside(path)  # the old cache stays readable until its replacement is complete
        shutil.rmtree(new, ignore_errors=True)
        path = new
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    # uncompressed: photos shrink only ~1.14x under zstd, while writes got 4x and
    # reads 3.5x slower (measured on CelebA at 96 px), and reads feed training
    group.create_array("images", shape=(len(src), size, size, 3), chunks=(CHUNK_ROWS, size, size, 3), dtype="uint8",
                       compressors=None, config=WRITE_ALL)
    group.attrs.update(fingerprint=fp, source=src.describe(), size=size, crop=CROP, complete=False,
                       items_done=0, skipped=[], seconds=0.0)
    return group, path


def _decode_all(group: zarr.Group, path: Path, src: Source, size: int, workers: int, progress: bool) -> tuple[list[dict], float]:
    """Decode every image not done yet into the cache, in order; returns (skipped files, seconds in all)."""
    n = len(src)
    items_done = int(group.attrs["items_done"])
    skipped = list(group.attrs["skipped"])
    seconds = float(group.attrs["seconds"])
    if items_done:
        logger.info("resuming %s at image %d of %d", path, items_done, n)
    tasks = [(s, min(s + TASK_ITEMS, n)) for s in range(items_done, n, TASK_ITEMS)]
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=items_done, unit="img", desc="prepare", disable=None if progress else True, smoothing=0.1)

    def commit(start, stop, result):
        # tasks are committed in order, so items_done is always a finished prefix
        ok, errors = result
        for k, msg in zip(np.flatnonzero(~ok), errors):
            skipped.append({"id": src.ids[start + k], "error": msg})
            logger.warning("skipped %s: %s", src.ids[start + k], msg)
        group.attrs.update(items_done=stop, skipped=skipped, seconds=seconds + time.perf_counter() - t0)
        bar.update(stop - start)
        bar.set_postfix(skipped=len(skipped), refresh=False)

    array_path = str(path / "images")
    try:
        if workers == 1 or len(tasks) <= 1:
            _init_worker(src, array_path)
            for start, stop in tasks:
                commit(start, stop, _work(start, stop, size))
        else:
            ctx = mp.get_context("spawn")  # zarr's I/O thread makes fork unsafe
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(src.without_labels(), array_path, os.getpid())) as pool:
                window = 3 * workers  # bounded in-flight blocks keep memory flat
                pending = []
                for task in tasks:
                    pending.append((task, pool.submit(_work, *task, size)))
                    if len(pending) >= window:
                        (s, e), fut = pending.pop(0)
                        commit(s, e, fut.result())
                for (s, e), fut in pending:
                    commit(s, e, fut.result())
    finally:
        _WORKER.clear()
        bar.close()
    return skipped, seconds + time.perf_counter() - t0


def _finish(group: zarr.Group, path: Path, src: Source, skipped: list[dict], total: float) -> None:
    """Drop the rows of skipped files, write ids/split/identity and mark the cache complete."""
    n = len(src)
    keep = np.ones(n, bool)
    bad = {d["id"] for d in skipped}
    if bad:
        keep[[i for i, name in enumerate(src.ids) if name in bad]] = False
    rows = int(keep.sum())
    if rows == 0:
        group.attrs.update(no_images=f"first error: {skipped[0]['error']}")
        raise ValueError(f"none of the {n} images of {src.spec!r} could be read (first error: {skipped[0]['error']})")
    images = group["images"].with_config(WRITE_ALL)
    if rows < images.shape[0]:
        group.attrs.update(compacting=True)  # rows move in place: an interrupted compaction cannot be resumed
        _compact(images, keep)
    ids = np.asarray([i for i, k in zip(src.ids, keep) if k], dtype=object).astype(str)
    split = src.split[keep]
    for name, arr in (("ids", ids), ("split", split), ("identity", src.identity[keep])):
        a = group.create_array(name, shape=arr.shape, chunks=(max(1, min(len(arr), 65536)),), config=WRITE_ALL,
                               dtype=str if name == "ids" else arr.dtype, overwrite=True)
        a[:] = arr
    _store_source_labels(group, path, src, np.flatnonzero(keep), overwrite=True)
    counts = {"images": rows, "skipped": len(skipped)}
    counts.update({SPLIT_NAMES[k]: int((split == k).sum()) for k in SPLIT_NAMES})
    group.attrs.update(complete=True, counts=counts, seconds=total, images_per_second=n / max(total, 1e-9))


def prepare(
    source: str | Source,
    run_dir: str | os.PathLike,
    size: int = PrepareConfig.size,
    limit: int | None = PrepareConfig.limit,
    workers: int | None = PrepareConfig.workers,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Decode, crop and resize every image of ``source`` into ``RUN/images.zarr``.

    Returns the store's summary attributes (counts, skipped files, timings).
    Raises ``SourceError`` for a missing or empty source and ``ValueError`` when
    an existing cache was built from something else and ``overwrite`` is false.
    """
    if size < 16 or size % 16:
        raise ValueError(f"size must be a multiple of 16 (the encoder halves it 4 times), got {size}")
    src = open_source(source, limit=limit) if not isinstance(source, Source) else source
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    path = cache_path(run_dir)
    group, build = _open_store(path, src, size, _fingerprint(src, size), overwrite)
    if group.attrs.get("complete") and ("images" not in group or missing_rows(group["images"], build / "images")):
        if not overwrite:
            check_arrays(group, build, ("images",), f"zspace prepare {src.spec} --run {run_dir} --overwrite",
                         required=("images",))
        logger.warning("%s lacks chunks: rebuilding it", path)
        shutil.rmtree(build)
        group, build = _open_store(path, src, size, _fingerprint(src, size), overwrite)
    if group.attrs.get("compacting") and not group.attrs.get("complete"):
        logger.warning("%s was interrupted while closing the gaps of skipped files: building it again", build)
        shutil.rmtree(build)
        group, build = _open_store(path, src, size, _fingerprint(src, size), overwrite)
    if group.attrs.get("complete"):
        _refresh_labels(group, build, src, overwrite)
        if build != path:  # finished beside the old cache, but the swap never happened
            swap_in(build, path)
            group = zarr.open_group(path, mode="r")
        logger.info("%s is complete (%d images); nothing to do", path, group.attrs["counts"]["images"])
        return dict(group.attrs)
    skipped, total = _decode_all(group, build, src, size, workers, progress)
    _finish(group, build, src, skipped, total)
    if build != path:
        swap_in(build, path)
        logger.warning("replaced %s with the images of %s", path, src.spec)
        group = zarr.open_group(path, mode="r")
    logger.info("prepared %d images (%d skipped) into %s in %.1f s", group.attrs["counts"]["images"], len(skipped),
                path, total)
    return dict(group.attrs)


def _store_source_labels(group: zarr.Group, path: Path, src: Source, index: np.ndarray, overwrite: bool,
                         lab: tuple | None = None) -> None:
    """Store the labels of the source's items ``index`` (the cache's rows, in order) unless the cache holds them.

    ``lab``: ``src.labels()`` when the caller has it already. Labels differing from
    stored ones replace them only with ``overwrite``; a stored array that lacks
    chunks is rewritten either way (a repair, nothing is lost).
    """
    lab = src.labels() if lab is None else lab
    if lab is None:
        err = src.attribute_info.get("error")
        if err and LABELS_ARRAY not in group:
            group.attrs.update(attribute_error=err)
        return
    names, values, info = lab
    kept = values[index]
    # labelled images that could not be read: their rows are as unused as rows without an image
    dropped = int((values != -1).any(axis=1).sum() - (kept != -1).any(axis=1).sum())
    info = dict(info, unused_rows=int(info.get("unused_rows", 0)) + dropped)
    if stored_equal(group, path, names, kept):
        return
    damaged = LABELS_ARRAY in group and bool(missing_rows(group[LABELS_ARRAY], path / LABELS_ARRAY))
    if LABELS_ARRAY in group and not (overwrite or damaged):
        logger.warning("the labels of %s differ from those in %s; pass overwrite=True (--overwrite) to replace "
                       "them (the images stay)", src.spec, path)
        return
    store_labels(group, path, names, kept, info)
    logger.info("stored %d labels (%s) in %s", len(names), info.get("source", src.spec), path)


def _refresh_labels(group: zarr.Group, path: Path, src: Source, overwrite: bool) -> None:
    """A complete cache: store the source's labels when they are new, fixed or damaged in the cache."""
    lab = src.labels()
    if lab is None and not src.attribute_info.get("error"):
        return
    pos = {name: k for k, name in enumerate(src.ids)}
    index = [pos.get(str(i)) for i in group["ids"][:].tolist()]
    if any(k is None for k in index):  # cannot happen with an equal fingerprint; never mislabel rows
        logger.warning("%s lists images its source does not: its labels are left as they are", path)
        return
    _store_source_labels(group, path, src, np.asarray(index, dtype=np.int64), overwrite, lab)


def _compact(images: zarr.Array, keep: np.ndarray) -> None:
    """Close the holes left by skipped files, in place, then shrink the array.

    Rows only move towards the front, so reading block k after writing the
    blocks before it is safe. Costs one pass over the rows after the first hole,
    and only when some file was unreadable.
    """
    first = int(np.argmin(keep))
    step = images.chunks[0] * 16
    write = first
    for start in range(first - first % images.chunks[0], images.shape[0], step):
        stop = min(start + step, images.shape[0])
        mask = keep[start:stop].copy()
        mask[: max(0, first - start)] = False  # rows before the first hole stay where they are
        good = images[start:stop][mask]
        images[write : write + len(good)] = good
        write += len(good)
    images.resize((write, *images.shape[1:]))


def open_cache(run_dir: str | os.PathLike) -> zarr.Group:
    """The finished image cache of ``run_dir``; a clear error when it is missing or partial."""
    path = cache_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run 'zspace prepare SOURCE --run {run_dir}' first")
    group = open_group(path, "r", f"zspace prepare SOURCE --run {run_dir} --overwrite")
    if not group.attrs.get("complete"):
        if group.attrs.get("no_images"):
            raise ValueError(f"{path} holds no image: prepare could read none of its source's files "
                             f"({group.attrs['no_images']}); fix the source and rerun 'zspace prepare SOURCE "
                             f"--run {run_dir} --overwrite'")
        raise ValueError(f"{path} is incomplete (interrupted prepare): rerun 'zspace prepare' to finish it")
    check_arrays(group, path, ("images", "ids", "split", "identity"),
                 f"zspace prepare SOURCE --run {run_dir} --overwrite", required=("images", "ids", "split"))
    if LABELS_ARRAY in group:  # optional; prepare rewrites damaged labels without decoding an image again
        check_arrays(group, path, (LABELS_ARRAY,), f"zspace prepare SOURCE --run {run_dir}")
        if group[LABELS_ARRAY].shape[0] != group["images"].shape[0]:
            raise StoreDamaged(f"{path}: array '{LABELS_ARRAY}' has {group[LABELS_ARRAY].shape[0]} rows for "
                               f"{group['images'].shape[0]} images; rebuild it with 'zspace prepare SOURCE --run "
                               f"{run_dir} --overwrite'")
    return group
