"""Plain-numpy references for every kernel, the fastest plain baselines, and the registries tests and bench share.

``COMPARISONS[name] = (ours, reference)``: two callables with the same simple
signature (each allocates its own output), so tests assert ``ours(*args) ==
reference(*args)``. A reference states the exact contract (a per-column
``np.histogram`` with the kernel's own edges, ``np.cov`` in float64).

``BASELINES[name] = [(label, callable), ...]``: what a competent user would
write for speed with numpy's fast paths, same signature; the bench times ours
against each (README and bench/RESULTS.md quote only these ratios), and tests
check that each computes what ours does (to its own rounding):

- histograms: ``np.histogram(col, bins=n, range=(lo, hi))`` per column
  (numpy's uniform-bin path) and one ``np.bincount`` over flattened
  (column, bin) ids;
- row norms: ``np.sqrt(np.einsum("ij,ij->i", x, x))``;
- moments: ``np.cov(x, rowvar=False)`` and ``x.T @ x`` (float32 sgemm) less
  ``n * outer(mean, mean)``;
- local PCA: batched ``eigvalsh`` of the (k x k) Gram matrices of all
  neighbourhoods.
"""

from __future__ import annotations

import numpy as np

from kernels.histogram import component_histograms, histogram_1d, uniform_edges
from kernels.moments import block_moments, row_norms
from kernels.raster import density_raster, linspace_edges

__all__ = ["COMPARISONS"] + [f"{k}_{s}" for k in ("component_histograms", "histogram_1d", "row_norms",
                                                    "block_moments", "density_raster") for s in ("ours", "numpy")]


# --- component_histograms(x, lo, width, nbins) -> int64 (D, nbins)

def component_histograms_ours(x, lo, width, nbins):
    out = np.zeros((x.shape[1], nbins), dtype=np.int64)
    return component_histograms(x, lo, width, nbins, out)


def component_histograms_numpy(x, lo, width, nbins):
    edges = uniform_edges(lo, width, nbins)
    out = np.zeros((x.shape[1], nbins), dtype=np.int64)
    for j in range(x.shape[1]):
        out[j] = np.histogram(x[:, j], bins=edges)[0]
    return out


def component_histograms_range(x, lo, width, nbins):
    """Baseline: numpy's uniform-bin fast path, one ``np.histogram(col, bins=n, range=)`` per column."""
    hi = lo + width * nbins
    out = np.empty((x.shape[1], nbins), dtype=np.int64)
    for j in range(x.shape[1]):
        out[j] = np.histogram(x[:, j], bins=nbins, range=(lo, hi))[0]
    return out


def component_histograms_bincount(x, lo, width, nbins):
    """Baseline: bin ids of all values at once, offset per column, one ``np.bincount``."""
    d = x.shape[1]
    ids = np.floor((x - np.float32(lo)) * np.float32(1.0 / width)).astype(np.int64)
    ids[(ids < 0) | (ids >= nbins)] = -1  # outside the range: dropped below
    flat = ids + np.arange(d, dtype=np.int64) * nbins
    return np.bincount(flat[ids >= 0], minlength=d * nbins).reshape(d, nbins)


# --- histogram_1d(v, lo, width, nbins) -> int64 (nbins,)

def histogram_1d_ours(v, lo, width, nbins):
    return histogram_1d(v, lo, width, nbins, np.zeros(nbins, dtype=np.int64))


def histogram_1d_numpy(v, lo, width, nbins):
    return np.histogram(v, bins=uniform_edges(lo, width, nbins))[0].astype(np.int64)


# --- row_norms(x) -> float64 (N,)

def row_norms_ours(x):
    return row_norms(x, np.empty(x.shape[0], dtype=np.float64))


def row_norms_numpy(x):
    return np.linalg.norm(x.astype(np.float64), axis=1)


def row_norms_einsum(x):
    """Baseline: one fused multiply-add pass in the input's precision."""
    return np.sqrt(np.einsum("ij,ij->i", x, x))


# --- block_moments(x) -> (n, mean float64 (D,), M float64 (D, D))

def block_moments_ours(x):
    return block_moments(x)


def block_moments_numpy(x):
    n, d = x.shape
    if n == 0:
        return 0, np.zeros(d), np.zeros((d, d))
    x64 = x.astype(np.float64)
    # ddof=0 times n is the co-moment, defined (zero) for a single row too.
    m = np.atleast_2d(np.cov(x64, rowvar=False, ddof=0)) * n
    return n, x64.mean(axis=0), m


def block_moments_cov(x):
    """Baseline: ``np.cov`` of the array as it is (numpy converts to float64 itself)."""
    n = x.shape[0]
    return n, x.mean(axis=0, dtype=np.float64), np.cov(x, rowvar=False, ddof=0) * n


def block_moments_gemm(x):
    """Baseline: the raw second moment by one sgemm, ``x.T @ x``, less ``n * outer(mean, mean)``."""
    n = x.shape[0]
    mean = x.mean(axis=0, dtype=np.float64)
    return n, mean, (x.T @ x).astype(np.float64) - n * np.outer(mean, mean)


# --- density_raster(x, mean, basis, window_lo, window_hi, nx, ny) -> int64 (ny, nx)

def density_raster_ours(x, mean, basis, window_lo, window_hi, nx, ny):
    out = np.zeros((ny, nx), dtype=np.int64)
    return density_raster(x, mean, basis, window_lo, window_hi, nx, ny, out)


def density_raster_numpy(x, mean, basis, window_lo, window_hi, nx, ny):
    c = x.astype(np.float64) - np.asarray(mean, dtype=np.float64)
    u, v = (c @ np.asarray(basis, dtype=np.float64).T).T
    # Our cells are half-open on the upper window edge too; histogram2d closes
    # its last bin, so drop points exactly on that edge first.
    keep = (u != window_hi[0]) & (v != window_hi[1])
    counts, _, _ = np.histogram2d(v[keep], u[keep],
                                  bins=[linspace_edges(window_lo[1], window_hi[1], ny),
                                        linspace_edges(window_lo[0], window_hi[0], nx)])
    return counts.astype(np.int64)


COMPARISONS = {
    "component_histograms": (component_histograms_ours, component_histograms_numpy),
    "histogram_1d": (histogram_1d_ours, histogram_1d_numpy),
    "row_norms": (row_norms_ours, row_norms_numpy),
    "block_moments": (block_moments_ours, block_moments_numpy),
    "density_raster": (density_raster_ours, density_raster_numpy),
}


# Imported here rather than at the top: the local-dimension block was appended
# as a unit (see kernels/localdim.py).
from kernels.localdim import local_dim_summary, local_pca  # noqa: E402

# --- local_pca(z, neighbours) -> float64 (M, min(k, D)), descending

def local_pca_ours(z, neighbours):
    m = min(neighbours.shape[1], z.shape[1])
    return local_pca(z, neighbours, np.empty((neighbours.shape[0], m), dtype=np.float64))


def _neighbourhood_eigvals(z, neighbours, batch, gram):
    """Descending eigenvalues of each centred neighbourhood's covariance, ``batch`` neighbourhoods at a time:
    of the (k x k) Gram matrices when ``gram`` (their nonzero eigenvalues are the covariance's), else of the
    (D x D) covariances themselves."""
    n, k = neighbours.shape
    m = min(k, z.shape[1])
    out = np.empty((n, m), dtype=np.float64)
    for s in range(0, n, batch):
        x = z[neighbours[s:s + batch]].astype(np.float64)  # (b, k, D)
        xc = x - x.mean(axis=1, keepdims=True)
        a, b = (xc, xc.transpose(0, 2, 1)) if gram else (xc.transpose(0, 2, 1), xc)
        lam = np.linalg.eigvalsh(np.matmul(a, b) / (k - 1))[:, ::-1][:, :m]
        out[s:s + batch] = np.clip(lam, 0, None) if gram else lam
    return out


def local_pca_numpy(z, neighbours, batch=512):
    """What a user would write: np.cov of each neighbourhood (D x D, ddof=1),
    eigenvalues of a (batch, D, D) stack at once. ``eigvalsh``, not ``eigh``:
    only eigenvalues are wanted, and skipping the eigenvectors makes the
    baseline faster (LAPACK syevd with jobz='N'), so ratios against it are
    conservative."""
    return _neighbourhood_eigvals(z, neighbours, batch, gram=False)


def local_pca_gram(z, neighbours, batch=4096):
    """Baseline: eigenvalues of the (k x k) Gram matrices of the centred neighbourhoods (they equal the nonzero
    eigenvalues of the (D x D) covariances), ``np.linalg.eigvalsh`` on batches of them at once."""
    return _neighbourhood_eigvals(z, neighbours, batch, gram=True)


# --- local_dim_summary(eigvals) -> (n90 int32 (M,), pr float32 (M,), lin float32 (M,))

def local_dim_summary_ours(eigvals):
    n = eigvals.shape[0]
    return local_dim_summary(eigvals, np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.float32))


def local_dim_summary_numpy(eigvals):
    lam = np.asarray(eigvals, dtype=np.float64)
    csum = np.cumsum(lam, axis=1)
    total = csum[:, -1]
    ok = total > 0
    n90 = np.where(ok, np.argmax(csum >= 0.9 * total[:, None], axis=1) + 1, 0).astype(np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        pr = np.where(ok, total ** 2 / (lam ** 2).sum(axis=1), 0.0).astype(np.float32)
        l2 = lam[:, 1] if lam.shape[1] > 1 else np.zeros(lam.shape[0])
        lin = np.where(ok, (lam[:, 0] - l2) / lam[:, 0], 0.0).astype(np.float32)
    return n90, pr, lin


COMPARISONS.update({
    "local_pca": (local_pca_ours, local_pca_numpy),
    "local_dim_summary": (local_dim_summary_ours, local_dim_summary_numpy),
})
__all__ += [f"{k}_{s}" for k in ("local_pca", "local_dim_summary") for s in ("ours", "numpy")]


BASELINES = {
    "component_histograms": [("np.histogram(col, bins=n, range=) per column", component_histograms_range),
                             ("np.bincount of flattened bin ids", component_histograms_bincount)],
    "row_norms": [('np.sqrt(np.einsum("ij,ij->i", x, x))', row_norms_einsum)],
    "block_moments": [("np.cov(x, rowvar=False)", block_moments_cov), ("x.T @ x (float32 sgemm)", block_moments_gemm)],
    "local_pca": [("batched np.linalg.eigvalsh of the (k x k) Gram matrices", local_pca_gram)],
}
__all__ += ["BASELINES", "component_histograms_range", "component_histograms_bincount", "row_norms_einsum",
            "block_moments_cov", "block_moments_gemm", "local_pca_gram"]
