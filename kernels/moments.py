"""Mean and co-moment matrix of row blocks, their pairwise merge, and row norms.

A block of rows x (n, D) is summarised by (n, mean, M) with
``mean = x.sum(0) / n`` and ``M = sum_i (x_i - mean)(x_i - mean)^T`` (D, D), all
in float64. Blocks merge exactly (up to rounding) by Chan, Golub & LeVeque's
pairwise formula, so streaming ``latents.zarr`` in row blocks gives the same
covariance as one pass over the whole array: ``covariance(n, M) == np.cov(x, rowvar=False)``.

``row_norms`` (the L2 norm of every row, the radius of each point about the
origin) is the per-row second moment and lives here with the others.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.checks import check_out, check_rows, use_threads

__all__ = ["block_moments", "merge_moments", "covariance", "column_sums", "row_norms", "row_norms_serial"]

# Rows centred per BLAS call: 16384 x 256 float64 is 32 MB, big enough that the
# rank-k update runs at full speed, small enough not to double the memory of a block.
_CHUNK_ROWS = 16384


def _column_sums_body(x, nthreads):
    n, d = x.shape
    partial = np.zeros((nthreads, d), dtype=np.float64)
    per = (n + nthreads - 1) // nthreads
    for t in numba.prange(nthreads):
        start = t * per
        stop = min(n, start + per)
        for i in range(start, stop):
            for j in range(d):
                partial[t, j] += np.float64(x[i, j])
    s = np.zeros(d, dtype=np.float64)
    for t in range(nthreads):
        for j in range(d):
            s[j] += partial[t, j]
    return s


# Only the serial variant is cached (parallel=True caching is unreliable, see histogram.py).
_column_sums_par = numba.njit(parallel=True)(_column_sums_body)
_column_sums_ser = numba.njit(cache=True)(_column_sums_body)


def column_sums(x: np.ndarray, parallel: bool | None = None) -> np.ndarray:
    """``x.sum(0)`` in float64: x float32/float64 (N, D) C-contiguous -> float64 (D,).

    Per-thread partial sums over contiguous row slabs (row-major), added in
    thread order at the end (one slab when serial).
    """
    check_rows(x, "x")
    if use_threads(parallel, x.size):
        return _column_sums_par(x, numba.get_num_threads())
    return _column_sums_ser(x, 1)


def block_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Moments of one row block: ``(n, mean, M)``.

    x: float32 or float64 (N, D), C-contiguous (N may be 0).
    Returns n = N (int), mean float64 (D,) and the co-moment
    ``M = sum_i (x_i - mean)(x_i - mean)^T``, float64 (D, D), symmetric.
    An empty block gives ``(0, zeros(D), zeros((D, D)))``.

    Two passes: the mean first (numba, per-thread partial sums), then the rows
    centred in float64 chunks and accumulated with BLAS ``chunk.T @ chunk``
    (numpy's BLAS, the same thread pool ``np.cov`` uses; no full float64 copy of
    x). Centring before the product keeps the result accurate when the mean is
    large relative to the spread. scipy's ``dsyrk`` (half the flops) was tried:
    it runs in a second OpenBLAS pool and, alternating with numba's threads on
    2 cores, measured slower.
    """
    check_rows(x, "x")
    n, d = x.shape
    if n == 0:
        return 0, np.zeros(d), np.zeros((d, d))
    mean = column_sums(x) / n
    comoment = np.zeros((d, d), dtype=np.float64)
    buf = np.empty((min(n, _CHUNK_ROWS), d), dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        m = min(_CHUNK_ROWS, n - start)
        chunk = buf[:m]
        np.subtract(x[start:start + m], mean, out=chunk, dtype=np.float64)
        comoment += chunk.T @ chunk
    # BLAS may round the two triangles differently; make M exactly symmetric.
    comoment = 0.5 * (comoment + comoment.T)
    return n, mean, comoment


def merge_moments(n_a, mean_a, m_a, n_b, mean_b, m_b):
    """Merge the moments of two disjoint blocks (Chan et al.'s pairwise formula).

    n = n_a + n_b, delta = mean_b - mean_a, mean = mean_a + delta * n_b / n,
    M = M_a + M_b + outer(delta, delta) * n_a * n_b / n.
    mean_*: float64 (D,), m_*: float64 (D, D). Either block may be empty
    (n = 0); the other is returned as a copy. Returns (n, mean, M).
    """
    n_a = int(n_a)
    n_b = int(n_b)
    if n_a < 0 or n_b < 0:
        raise ValueError(f"block sizes must be >= 0, got n_a={n_a}, n_b={n_b}")
    if n_b == 0:
        return n_a, np.array(mean_a, dtype=np.float64), np.array(m_a, dtype=np.float64)
    if n_a == 0:
        return n_b, np.array(mean_b, dtype=np.float64), np.array(m_b, dtype=np.float64)
    n = n_a + n_b
    delta = np.asarray(mean_b, dtype=np.float64) - np.asarray(mean_a, dtype=np.float64)
    mean = mean_a + delta * (n_b / n)
    m = m_a + m_b + np.outer(delta, delta) * (n_a * n_b / n)
    return n, mean, m


def covariance(n: int, m: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Covariance ``M / (n - ddof)`` from a co-moment, float64 (D, D)."""
    if n - ddof <= 0:
        raise ValueError(f"covariance needs n > ddof, got n={n}, ddof={ddof}")
    return m / (n - ddof)


def _row_norms_body(x, out):
    n, d = x.shape
    for i in numba.prange(n):
        s = 0.0
        for j in range(d):
            # Widen before squaring: a float32 square is exact in float64.
            v = np.float64(x[i, j])
            s += v * v
        out[i] = np.sqrt(s)


# Only the serial variant is cached (parallel=True caching is unreliable, see histogram.py).
# reassoc lets LLVM split the float64 sum of squares over SIMD lanes (a strictly sequential sum waits on
# each add); the result differs from the sequential sum only in the last bits of a float64
_row_norms_par = numba.njit(parallel=True, fastmath={"reassoc"})(_row_norms_body)
_row_norms_ser = numba.njit(cache=True, fastmath={"reassoc"})(_row_norms_body)


def row_norms(x: np.ndarray, out: np.ndarray, parallel: bool | None = None) -> np.ndarray:
    """L2 norm of every row, ``out[i] = sqrt(sum_j float64(x[i, j])**2)``.

    x: float32 or float64 (N, D), C-contiguous. out: float64 (N,). Returns ``out``.
    Each row is summed left to right in float64 by one thread, so serial and
    parallel results are bit-identical.
    """
    check_rows(x, "x")
    check_out(out, "out", np.float64, (x.shape[0],))
    (_row_norms_par if use_threads(parallel, x.size) else _row_norms_ser)(x, out)
    return out


def row_norms_serial(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``row_norms`` compiled without threads."""
    return row_norms(x, out, parallel=False)
