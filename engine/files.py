"""Atomic writes: a file is either its old self or its complete new self, never half written."""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None when the file is absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None
