"""Atomic writes: a file is either its old self or its complete new self, never half written."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 1) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent))


def swap_in(new: Path, path: Path) -> None:
    """Put the finished store ``new`` at ``path``; an old store there is removed only after the swap."""
    if not path.exists():
        os.replace(new, path)
        return
    old = path.with_name(path.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old)


def beside(path: Path) -> Path:
    """Where the replacement of ``path`` is built until it is complete."""
    return path.with_name(path.name + ".new")


class RunBusy(ValueError):
    """Another zspace process is writing the same run directory."""


LOCK_NAME = ".zspace.lock"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str):
    """Hold ``RUN/.zspace.lock`` while ``what`` writes the run directory; ``RunBusy`` names the holder.

    An advisory ``flock``: the kernel releases it when the holder exits, however it
    exits (kill -9 included), so a lock is never left stale.
    """
    run = Path(run_dir)
    try:
        run.mkdir(parents=True, exist_ok=True)
        f = open(run / LOCK_NAME, "a+")
    except OSError as exc:  # --run names a file, or a directory zspace may not write
        raise RunBusy(f"cannot use {run} as a run directory: {exc.strerror or exc}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunBusy(f"{run} is in use by {holder}; wait for it to finish (one zspace process at a time writes "
                      f"a run directory)") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} (zspace {what})")
    f.flush()
    try:
        yield
    finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
