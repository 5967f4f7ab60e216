"""Point-density raster of a 2-D projection of the latent cloud.

Each row x_i (D,) is projected on two basis vectors after subtracting a centre:
``u_i = sum_j (x_ij - mean_j) * basis[0, j]``, ``v_i = sum_j (x_ij - mean_j) * basis[1, j]``
(float64, summed left to right over j), and counted in an ``ny x nx`` raster.

Binning: column edges ``np.linspace(window_lo[0], window_hi[0], nx + 1)``, row
edges likewise for v; every cell is half-open ``[a, b)``, including the last,
so a point exactly on the upper window edge is outside the window. (numpy's
``histogram2d`` closes its last bin; the reference in ``reference.py`` drops
such points first.) NaN coordinates are outside.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.checks import check_out, check_rows, check_shape, use_threads

__all__ = ["density_raster", "density_raster_serial", "linspace_edges"]


def linspace_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``np.linspace(lo, hi, n + 1)``: the raster's cell edges along one axis."""
    return np.linspace(float(lo), float(hi), int(n) + 1)


@numba.njit(inline="always", cache=True)
def _cell(p, edges, lo, inv_w, n):
    """Half-open cell of ``p`` among ``edges`` (n + 1,), or -1 outside [edges[0], edges[n])."""
    if not (p >= edges[0] and p < edges[n]):  # False for NaN
        return -1
    k = int(np.floor((p - lo) * inv_w))
    k = min(max(k, 0), n - 1)
    # The estimate can be one off next to an edge: fix it against the edges.
    while k > 0 and p < edges[k]:
        k -= 1
    while k < n - 1 and p >= edges[k + 1]:
        k += 1
    return k


def _density_raster_body(x, mean, basis, xedges, yedges, nslabs, out):
    n, d = x.shape
    nx = xedges.shape[0] - 1
    ny = yedges.shape[0] - 1
    inv_wx = nx / (xedges[nx] - xedges[0])
    inv_wy = ny / (yedges[ny] - yedges[0])
    # Partial rasters over nslabs contiguous row slabs (one per thread, 1
    # serially), summed at the end.
    partial = np.zeros((nslabs, ny, nx), dtype=np.int64)
    per = (n + nslabs - 1) // nslabs
    for t in numba.prange(nslabs):
        start = t * per
        stop = min(n, start + per)
        raster = partial[t]
        for i in range(start, stop):
            u = 0.0
            v = 0.0
            for j in range(d):
                c = np.float64(x[i, j]) - mean[j]
                u += c * basis[0, j]
                v += c * basis[1, j]
            col = _cell(u, xedges, xedges[0], inv_wx, nx)
            row = _cell(v, yedges, yedges[0], inv_wy, ny)
            if col >= 0 and row >= 0:
                raster[row, col] += 1
    for t in range(nslabs):
        for r in range(ny):
            for c in range(nx):
                out[r, c] += partial[t, r, c]


# Only the serial variant is cached: numba's cache of parallel=True functions
# is unreliable (pynndescent PR #175). nslabs is passed in because
# numba.get_num_threads() in the body is a dynamic global and blocks caching.
_density_raster_par = numba.njit(parallel=True)(_density_raster_body)
_density_raster_ser = numba.njit(cache=True)(_density_raster_body)


def density_raster(x, mean, basis, window_lo, window_hi, nx, ny, out, parallel=None):
    """Count projected points per cell, accumulating into ``out``.

    x: float32 or float64 (N, D), C-contiguous. mean: float64 (D,).
    basis: float64 (2, D), rows are the u and v directions (need not be unit).
    window_lo, window_hi: (u, v) lower and upper window corners, lo < hi.
    nx, ny: raster columns (u) and rows (v). out: int64 (ny, nx),
    ``out[row, col]`` counts points with v in row ``row`` and u in column ``col``.

    Cells are half-open on every side (see the module docstring). Returns ``out``.
    """
    check_rows(x, "x")
    d = x.shape[1]
    mean = np.ascontiguousarray(mean, dtype=np.float64)
    basis = np.ascontiguousarray(basis, dtype=np.float64)
    check_shape(mean, "mean", (d,))
    check_shape(basis, "basis", (2, d))
    if int(nx) < 1 or int(ny) < 1:
        raise ValueError(f"nx and ny must be >= 1, got nx={nx}, ny={ny}")
    lo = [float(window_lo[0]), float(window_lo[1])]
    hi = [float(window_hi[0]), float(window_hi[1])]
    if not all(np.isfinite(lo + hi)) or not (lo[0] < hi[0] and lo[1] < hi[1]):
        raise ValueError(f"window must be finite with window_lo < window_hi, got lo={lo}, hi={hi}")
    check_out(out, "out", np.int64, (int(ny), int(nx)))
    xedges = linspace_edges(lo[0], hi[0], nx)
    yedges = linspace_edges(lo[1], hi[1], ny)
    if use_threads(parallel, x.size):
        _density_raster_par(x, mean, basis, xedges, yedges, numba.get_num_threads(), out)
    else:
        _density_raster_ser(x, mean, basis, xedges, yedges, 1, out)
    return out


def density_raster_serial(x, mean, basis, window_lo, window_hi, nx, ny, out):
    """``density_raster`` on one thread."""
    return density_raster(x, mean, basis, window_lo, window_hi, nx, ny, out, parallel=False)
