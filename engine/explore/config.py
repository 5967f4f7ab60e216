"""Configuration of ``zspace explore``: every default once, light to import (no torch, no bokeh)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import config_from_dict

MAX_THUMB = 64  # thumbnails are at most 64 x 64 pixels


@dataclass
class ExploreConfig:
    n: int | None = None  # points on the map: the t-SNE map's rows (all of them), else at most this many latents
    thumb: int = 48  # thumbnail side in pixels (<= 64); images and reconstructions, from the run's own image cache
    quality: int = 88  # JPEG quality of the thumbnail atlases
    atlas: int = 32  # thumbnails per atlas side: an atlas holds atlas^2 of them (loaded only when one is hovered)
    pcs: int = 10  # principal axes whose coordinates the page carries (any two of them make a plane)
    draw: int = 10000  # points drawn as dots at rest: the first in view of a seeded permutation (every point once
    #                   the view holds no more; a grey shade shows every point in view meanwhile), a fifth of it
    #                   while the ranges move; 0: every point at every zoom (for a GPU)
    neighbours: int = 12  # nearest neighbours in z shown for a clicked point (from the stored graph)
    chunk: int = 4096  # points per latent file (z in float16 and the neighbours), loaded on demand
    seed: int = 0  # the null model's draws on the PCA and dominant planes
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where the reconstructions are decoded

    def __post_init__(self):
        if not 8 <= self.thumb <= MAX_THUMB:
            raise ValueError(f"thumb must be between 8 and {MAX_THUMB} pixels, got {self.thumb}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {self.quality}")
        if self.draw < 0:
            raise ValueError(f"draw must be >= 0 (0: every point), got {self.draw}")
        for name in ("atlas", "pcs", "neighbours", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pcs < 2:
            raise ValueError(f"pcs must be >= 2 (a plane needs two axes), got {self.pcs}")
        if self.n is not None and self.n < 2:
            raise ValueError(f"n must be >= 2, got {self.n}")

    @classmethod
    def from_dict(cls, d: dict) -> "ExploreConfig":
        return config_from_dict(cls, d, "explore")
