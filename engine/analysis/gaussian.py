"""The fitted normal of a latent cloud: the one place its mean, covariance and axes are computed.

``GaussianFit`` follows scikit-learn: ``__init__`` stores settings, ``fit`` streams
the rows of an (N, D) array (NumPy, Zarr, anything sliceable) in blocks, merging
block moments with the pairwise formula (Chan et al.), and returns self. Learned:

  n_samples_     N
  mean_          float64 (D,)
  covariance_    float64 (D, D), ``ddof`` = 1 by default
  eigenvalues_   float64 (D,), descending, clipped at 0
  eigenvectors_  float64 (D, D), column k the k-th principal axis; the sign of each axis
                 makes its largest-magnitude entry positive, so axes never flip between
                 runs, stages or LAPACK builds
  retained_      bool (D,), axes with eigenvalue > rel_tol * the largest (others are null)
  rank_          number of retained axes
  std_           float64 (D,), per-component standard deviations

and knows how to use itself: ``project`` (principal coordinates), ``whiten``
(unit variance on retained axes, 0 on null ones), ``mahalanobis2`` (squared
Mahalanobis distance on the retained axes: the pseudo-inverse covariance) and
``sample`` (draws mean + g @ root.T with g standard normal, root = V sqrt(lambda)).
"""

from __future__ import annotations

import numpy as np

from engine.latents.store import iter_blocks
from kernels.moments import block_moments, covariance, merge_moments

SAMPLE_BLOCK = 65536  # rows drawn per block: bounds the float64 temporaries of sample()


def principal_axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors (columns, deterministic signs) of ``cov``."""
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    # as scikit-learn's svd_flip: the largest-magnitude entry of each axis is positive
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    signs[signs == 0] = 1
    return np.clip(w, 0, None), v * signs


class GaussianFit:
    """Mean, covariance and principal axes of a cloud, fitted from streamed block moments."""

    def __init__(self, ddof: int = 1, rel_tol: float = 1e-10, block_rows: int | None = None):
        self.ddof = ddof
        self.rel_tol = rel_tol  # eigenvalues below rel_tol * max count as null axes
        self.block_rows = block_rows  # rows per streamed block (default: the store's block size)

    def fit(self, z, progress: bool = False, desc: str = "fit normal") -> "GaussianFit":
        """Fit to the rows of ``z`` (N, D): a NumPy or Zarr array, read block by block."""
        if getattr(z, "ndim", None) != 2:
            raise ValueError(f"z must have shape (N, D), got shape {getattr(z, 'shape', None)}")
        n, mean, m = 0, np.zeros(z.shape[1]), np.zeros((z.shape[1], z.shape[1]))
        for start, x in iter_blocks(z, self.block_rows, progress, desc):
            if not np.isfinite(x).all():
                bad = start + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
                raise ValueError(f"row {bad} of z holds NaN or inf; the normal cannot be fitted")
            n, mean, m = merge_moments(n, mean, m, *block_moments(x))
        return self.fit_moments(n, mean, m)

    def fit_moments(self, n: int, mean: np.ndarray, comoment: np.ndarray) -> "GaussianFit":
        """Fit from merged moments: count, mean (D,) and co-moment sum((x - mean)(x - mean)^T) (D, D)."""
        if n <= self.ddof:
            raise ValueError(f"fitting a normal needs more than ddof = {self.ddof} points, got {n}")
        self.n_samples_ = int(n)
        self.mean_ = np.asarray(mean, np.float64)
        self.covariance_ = covariance(n, comoment, ddof=self.ddof)
        self.std_ = np.sqrt(np.diag(self.covariance_))
        self.eigenvalues_, self.eigenvectors_ = principal_axes(self.covariance_)
        top = max(float(self.eigenvalues_.max()), np.finfo(float).tiny)
        self.retained_ = self.eigenvalues_ > self.rel_tol * top
        self.rank_ = int(self.retained_.sum())
        self.inv_sqrt_ = np.zeros_like(self.eigenvalues_)
        self.inv_sqrt_[self.retained_] = 1.0 / np.sqrt(self.eigenvalues_[self.retained_])
        self.root_ = self.eigenvectors_ * np.sqrt(self.eigenvalues_)  # covariance = root @ root.T
        return self

    @property
    def dim_(self) -> int:
        return len(self.mean_)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim_:
            raise ValueError(f"points must have shape (n, {self.dim_}), got {x.shape}")
        return x

    def project(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        """Principal coordinates (x - mean) @ V[:, :k], float64 (n, k)."""
        return (self._check(x) - self.mean_) @ self.eigenvectors_[:, :k]

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """Principal coordinates over sqrt(eigenvalue), float64 (n, D); null axes give 0."""
        y = self.project(x)
        y *= self.inv_sqrt_  # in place: one (n, D) temporary, not three
        return y

    def mahalanobis2(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``x``, float64 (n,), on the retained axes."""
        y = self.whiten(x)
        return np.einsum("ij,ij->i", y, y)

    def mahalanobis(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(self.mahalanobis2(x))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` float32 points of the fitted normal, drawn in blocks of ``SAMPLE_BLOCK`` rows."""
        out = np.empty((n, self.dim_), np.float32)
        for s in range(0, n, SAMPLE_BLOCK):
            e = min(s + SAMPLE_BLOCK, n)
            out[s:e] = self.mean_ + rng.standard_normal((e - s, self.dim_)) @ self.root_.T
        return out


__all__ = ["GaussianFit", "principal_axes"]
