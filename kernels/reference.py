"""Plain-numpy references for every kernel, and the registry tests and bench share.

``COMPARISONS[name] = (ours, reference)``: two callables with the same simple
signature (each allocates its own output), so tests assert ``ours(*args) ==
reference(*args)`` and the bench times both uniformly. The references are what
a user would write without zspace: a per-column ``np.histogram`` loop,
``np.linalg.norm``, ``np.cov``, ``np.histogram2d``.
"""

from __future__ import annotations

import numpy as np

from kernels.histogram import component_histograms, histogram_1d, row_norms, uniform_edges
from kernels.moments import block_moments
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
