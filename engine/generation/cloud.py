"""The training latents as decoded z-points are measured against them: fitted normal, radii, exact index, scale.

Shared by ``zspace compare`` (distance to the data and radius ratio of each sampler) and ``zspace facemap``
(void depth and radius of each probe), so both speak of the same distances.
"""

from __future__ import annotations

import numpy as np

from engine.analysis.gaussian import GaussianFit
from engine.analysis.knn import build_index, knn
from engine.data.sources import TRAIN

__all__ = ["TrainingCloud", "training_rows", "NN_REFERENCE_POINTS"]

NN_REFERENCE_POINTS = 5000  # training latents whose nearest-neighbour distance sets the scale


def training_rows(group, n: int, minimum: int = 2) -> np.ndarray:
    """Rows of the training split in the latent store ``group`` of n rows; all rows without a split or when
    fewer than ``minimum`` are training rows."""
    split = group["split"][:] if "split" in group else None
    rows = np.flatnonzero(split == TRAIN) if split is not None else np.arange(n)
    return rows if len(rows) >= minimum else np.arange(n)


class TrainingCloud:
    """Fitted normal, Mahalanobis radii, exact FAISS index and typical nearest-neighbour distance of ``zt``."""

    def __init__(self, zt: np.ndarray, seed: int = 0):
        zt = np.ascontiguousarray(zt, np.float32)
        self.zt = zt
        self.normal = GaussianFit().fit(zt)
        self.radii = self.normal.mahalanobis(zt)
        self.median_radius = float(np.median(self.radii))
        self.index = build_index(zt, "exact")
        rng = np.random.default_rng(seed)
        q = np.sort(rng.choice(len(zt), size=min(NN_REFERENCE_POINTS, len(zt)), replace=False))
        d, _ = knn(self.index, zt[q], 1, query_ids=q)
        self.nn_scale = float(np.median(d[:, 0]))  # median distance of a training latent to its nearest other one

    def ratio(self, zs: np.ndarray) -> np.ndarray:
        """Mahalanobis radius of each row over the training latents' median radius, float64."""
        return self.normal.mahalanobis(zs) / self.median_radius

    def nearest(self, zs: np.ndarray) -> np.ndarray:
        """Distance of each row to the nearest training latent (exact), float32."""
        d, _ = knn(self.index, np.ascontiguousarray(zs, np.float32), 1)
        return d[:, 0]

    def depth(self, zs: np.ndarray) -> np.ndarray:
        """Distance to the nearest training latent over the typical nearest-neighbour distance, float64."""
        return self.nearest(zs).astype(np.float64) / self.nn_scale
