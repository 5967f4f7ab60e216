"""Exact k-nearest-neighbour graph of one cloud, each pair's distance computed once.

``faiss.knn(x, x, k)`` (and any search of a cloud against itself) computes the
distance of every pair twice: once with i as the query, once with j. This
kernel walks the upper triangle of the distance matrix in tiles: for a tile of
rows I against columns J >= I, one sgemm (numpy's BLAS) gives the inner
products, ``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` the squared distances (the same
formula FAISS uses), and a numba pass offers every distance of the tile to
both ends of the pair: to row i's top-k list and to row j's. Half the
floating-point work of a search, the same graph.

Ties: each row keeps the k candidates smallest in (squared distance, index),
so among equally distant points the lower row index wins, whatever the tile
order and thread count. A point is never its own neighbour; an exact duplicate
of it is (at distance 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from kernels.checks import check_rows

__all__ = ["knn_self_join", "tile_pairs"]

ROW_TILE = 2048  # rows of one tile; the sgemm is (ROW_TILE, D) x (D, COL_TILE)
COL_TILE = 8192
SPAN = 64  # distances counted against the threshold before any is looked at one by one


@numba.njit(inline="always")
def _worse(d, j, hd, hi, r):
    """True when candidate (d, j) is smaller than the root (the largest kept) of row r's heap."""
    return d < hd[r, 0] or (d == hd[r, 0] and j < hi[r, 0])


@numba.njit
def _replace_root(hd, hi, r, d, j):
    """Put (d, j) in place of the root of row r's max-heap (ordered by (d, index)) and sift it down."""
    k = hd.shape[1]
    p = 0
    while True:
        c = 2 * p + 1
        if c >= k:
            break
        if c + 1 < k and (hd[r, c + 1] > hd[r, c] or (hd[r, c + 1] == hd[r, c] and hi[r, c + 1] > hi[r, c])):
            c += 1
        if hd[r, c] > d or (hd[r, c] == d and hi[r, c] > j):
            hd[r, p] = hd[r, c]
            hi[r, p] = hi[r, c]
            p = c
        else:
            break
    hd[r, p] = d
    hi[r, p] = j


@numba.njit
def _merge_tile(g, ni, nj, i0, j0, hd, hi, nslabs):
    """Offer the squared distances of tile g (rows i0.., columns j0..) to both ends of each pair.

    Only pairs with column > row are offered (the tile may straddle the diagonal), so every
    unordered pair of the walk is seen once, and a point never meets itself.

    Nearly every distance is larger than the k-th kept one, so each run of SPAN distances is first
    counted against the threshold(s) without branches (a loop LLVM vectorises; plain IEEE arithmetic,
    so the count sees exactly the values the heap update sees), and only runs with a hit take the
    scalar path.
    """
    _merge_rows(g, ni, nj, i0, j0, hd, hi)
    _merge_cols(g, ni, nj, i0, j0, hd, hi, nslabs)


@numba.njit(parallel=True)
def _merge_rows(g, ni, nj, i0, j0, hd, hi):
    """Row i of the tile updates heap i0 + i, one row per task."""
    bi, bj = g.shape
    two = np.float32(2.0)
    for i in numba.prange(bi):
        r = i0 + i
        thr = hd[r, 0]
        for c0 in range(max(0, r + 1 - j0), bj, SPAN):
            c1 = min(c0 + SPAN, bj)
            hits = 0
            for j in range(c0, c1):
                hits += ni[i] + nj[j] - two * g[i, j] <= thr
            if hits == 0:
                continue
            for j in range(c0, c1):
                d = ni[i] + nj[j] - two * g[i, j]
                if d <= thr and _worse(d, j0 + j, hd, hi, r):
                    _replace_root(hd, hi, r, d, j0 + j)
                    thr = hd[r, 0]


@numba.njit(parallel=True)
def _merge_cols(g, ni, nj, i0, j0, hd, hi, nslabs):
    """Column j of the tile updates heap j0 + j. Each task owns a slab of columns and sweeps the rows in
    memory order (streaming reads), the slab's thresholds in a local array that stays in cache."""
    bi, bj = g.shape
    two = np.float32(2.0)
    per = (bj + nslabs - 1) // nslabs
    for t in numba.prange(nslabs):
        c0 = t * per
        c1 = min(c0 + per, bj)
        if c0 >= c1:
            continue
        thr = np.empty(c1 - c0, np.float32)
        for j in range(c0, c1):
            thr[j - c0] = hd[j0 + j, 0]
        for i in range(bi):
            for s0 in range(c0, c1, SPAN):
                s1 = min(s0 + SPAN, c1)
                hits = 0
                for j in range(s0, s1):
                    hits += ni[i] + nj[j] - two * g[i, j] <= thr[j - c0]
                if hits == 0:
                    continue
                for j in range(max(s0, i0 + i + 1 - j0), s1):
                    d = ni[i] + nj[j] - two * g[i, j]
                    if d <= thr[j - c0] and _worse(d, i0 + i, hd, hi, j0 + j):
                        _replace_root(hd, hi, j0 + j, d, i0 + i)
                        thr[j - c0] = hd[j0 + j, 0]


@numba.njit(parallel=True)
def _finish(hd, hi, dist, idx):
    """Sort each heap by (d, index) ascending; distances as sqrt(max(d, 0))."""
    n, k = hd.shape
    for r in numba.prange(n):
        for a in range(1, k):  # insertion sort: k is small
            d, j = hd[r, a], hi[r, a]
            b = a
            while b > 0 and (hd[r, b - 1] > d or (hd[r, b - 1] == d and hi[r, b - 1] > j)):
                hd[r, b] = hd[r, b - 1]
                hi[r, b] = hi[r, b - 1]
                b -= 1
            hd[r, b] = d
            hi[r, b] = j
        for a in range(k):
            dist[r, a] = np.sqrt(max(hd[r, a], np.float32(0.0)))
            idx[r, a] = hi[r, a]


def tile_pairs(n: int, row_tile: int = ROW_TILE, col_tile: int = COL_TILE) -> list[tuple[int, int, int, int]]:
    """The tiles (i0, i1, j0, j1) of the upper triangle of an n x n matrix, row tiles in order.

    Columns of a row tile start at its own first row, so every pair (i, j), i < j, lies in exactly one tile
    (the merge skips the pairs of a tile with j <= i).
    """
    out = []
    for i0 in range(0, n, row_tile):
        i1 = min(i0 + row_tile, n)
        for j0 in range(i0, n, col_tile):
            out.append((i0, i1, j0, min(j0 + col_tile, n)))
    return out


def knn_self_join(x: np.ndarray, k: int, row_tile: int = ROW_TILE, col_tile: int = COL_TILE,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest neighbours of every row of x among the other rows.

    x: float32 (N, D), C-contiguous, finite; 1 <= k < N.
    Returns (distances float32 (N, k), ascending; indices int64 (N, k)): Euclidean
    distances, ties broken by the lower index (see the module docstring).
    ``progress(pairs)`` is called after each tile with the number of pairs it held (N (N - 1) / 2 in all).
    Memory: the graph (12 bytes per neighbour) plus one float32 tile of
    ``row_tile x col_tile`` (64 MB by default).
    """
    check_rows(x, "x", dtypes=(np.float32,))
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1 .. N - 1 = {n - 1} (a point is not its own neighbour), got {k}")
    norms = np.einsum("ij,ij->i", x, x)
    hd = np.full((n, k), np.inf, np.float32)
    hi = np.full((n, k), n, np.int64)  # the sentinel index n loses every tie
    tile = np.empty(row_tile * col_tile, np.float32)
    slabs = 4 * numba.get_num_threads()  # column slabs of the merge: a few per thread, for balance
    for i0, i1, j0, j1 in tile_pairs(n, row_tile, col_tile):
        g = tile.reshape(-1)[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)  # C-contiguous
        np.matmul(x[i0:i1], x[j0:j1].T, out=g)
        _merge_tile(g, norms[i0:i1], norms[j0:j1], i0, j0, hd, hi, slabs)
        if progress is not None:
            r = np.arange(i0, i1)
            progress(int(np.clip(j1 - np.maximum(j0, r + 1), 0, None).sum()))
    dist = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    _finish(hd, hi, dist, idx)
    return dist, idx
