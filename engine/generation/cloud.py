"""The training latents as decoded z-points are measured against them: fitted normal, radii, exact index, scale.

Shared by ``zspace compare`` (distance to the data and radius ratio of each sampler) and ``zspace facemap``
(void depth and radius of each probe), so both speak of the same distances.
"""

from __future__ import annotations

import numpy as np

from engine.analysis.gaussian import GaussianFit
from engine.analysis.knn import build_index, knn
from engine.analysis.torch_kernels import knn_device
from engine.data.sources import TRAIN

__all__ = ["TrainingCloud", "search_device", "training_rows", "NN_REFERENCE_POINTS"]

NN_REFERENCE_POINTS = 5000  # training latents whose nearest-neighbour distance sets the scale


def training_rows(group, n: int, minimum: int = 2) -> np.ndarray:
    """Rows of the training split in the latent store ``group`` of n rows; all rows without a split or when
    fewer than ``minimum`` are training rows."""
    split = group["split"][:] if "split" in group else None
    rows = np.flatnonzero(split == TRAIN) if split is not None else np.arange(n)
    return rows if len(rows) >= minimum else np.arange(n)


def search_device(dev):
    """The torch device exact searches run on: ``dev`` when it is a GPU, else None (FAISS on the CPU)."""
    return dev if dev is not None and getattr(dev, "type", None) == "cuda" else None


class TrainingCloud:
    """Fitted normal, Mahalanobis radii, exact search and typical nearest-neighbour distance of ``zt``.

    ``device``: a torch device for the exact searches (blocked fp32 torch, ``engine.analysis.torch_kernels``),
    or None for a FAISS flat index on the CPU; both give the exact neighbours."""

    def __init__(self, zt: np.ndarray, seed: int = 0, device=None):
        zt = np.ascontiguousarray(zt, np.float32)
        self.zt = zt
        self.device = device
        self.normal = GaussianFit().fit(zt)
        self.radii = self.normal.mahalanobis(zt)
        self.median_radius = float(np.median(self.radii))
        self.index = build_index(zt, "exact") if device is None else None
        rng = np.random.default_rng(seed)
        q = np.sort(rng.choice(len(zt), size=min(NN_REFERENCE_POINTS, len(zt)), replace=False))
        d, _ = self.search(zt[q], 1, query_ids=q)
        self.nn_scale = float(np.median(d[:, 0]))  # median distance of a training latent to its nearest other one

    def search(self, zs: np.ndarray, k: int, query_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest training latents of each row: (distances float32 (n, k), indices int64 (n, k));
        ``query_ids``: the rows the queries are, so none finds itself."""
        zs = np.ascontiguousarray(zs, np.float32)
        if self.device is None:
            return knn(self.index, zs, k, query_ids=query_ids)
        return knn_device(zs, self.zt, k, self.device, query_ids=query_ids)

    def ratio(self, zs: np.ndarray) -> np.ndarray:
        """Mahalanobis radius of each row over the training latents' median radius, float64."""
        return self.normal.mahalanobis(zs) / self.median_radius

    def nearest(self, zs: np.ndarray) -> np.ndarray:
        """Distance of each row to the nearest training latent (exact), float32."""
        return self.search(zs, 1)[0][:, 0]

    def depth(self, zs: np.ndarray) -> np.ndarray:
        """Distance to the nearest training latent over the typical nearest-neighbour distance, float64."""
        return self.nearest(zs).astype(np.float64) / self.nn_scale
