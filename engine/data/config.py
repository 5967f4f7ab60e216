"""Configuration of ``zspace prepare``: every default once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrepareConfig:
    size: int = 96  # output side in pixels, a multiple of 16; the study's 96
    limit: int | None = None  # keep this many images spread evenly over the listing (None: all)
    workers: int | None = None  # decode processes (None: all cores)
