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
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from kernels.checks import check_rows

__all__ = ["knn_cross_join", "knn_self_join", "merge_neighbours", "tile_pairs"]

ROW_TILE = 2048  # rows of one tile; the sgemm is (ROW_TILE, D) x (D, COL_TILE)
COL_TILE = 8192
SPAN = 64  # distances counted against the threshold before any is looked at one by one


@numba.njit(inline="always", cache=True)
def _worse(d, j, hd, hi, r):
    """True when candidate (d, j) is smaller than the root (the largest kept) of row r's heap."""
    return d < hd[r, 0] or (d == hd[r, 0] and j < hi[r, 0])


@numba.njit(cache=True)
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


# The merge kernels are serial, cached and release the GIL; a thread pool runs one task per share of the
# rows or columns (numba's cache of parallel=True functions is unreliable, and compiling these took ~7 s
# in every process).

@numba.njit(nogil=True, cache=True)
def _merge_rows(g, ni, nj, i0, j0, hd, hi, r0, r1):
    """Rows r0..r1 of the tile update heaps i0 + r0 .. i0 + r1."""
    bj = g.shape[1]
    two = np.float32(2.0)
    for i in range(r0, r1):
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


@numba.njit(nogil=True, cache=True)
def _merge_cols_collect(g, ni, nj, i0, j0, hd, hi, c0, c1, thr_rows, bi_, bj_, bd_, per_row):
    """Columns c0..c1 of the tile update heaps j0 + c0 .. j0 + c1; distances at most ``thr_rows[i]`` are
    collected for row i into this slab's buffers (bi_, bj_, bd_: one row of the (slabs, cap) arrays).

    Sweeps the rows in memory order (streaming reads), the slab's thresholds in a local array that stays in
    cache. Returns the number collected, or -1 when the buffer overflowed (its row candidates are then
    incomplete and must not be applied).
    """
    bi = g.shape[0]
    two = np.float32(2.0)
    cap = bi_.shape[0]
    per_row[:] = 0
    thr = np.empty(c1 - c0, np.float32)
    for j in range(c0, c1):
        thr[j - c0] = hd[j0 + j, 0]
    m, full = 0, False
    for i in range(bi):
        tr = thr_rows[i]
        for s0 in range(c0, c1, SPAN):
            s1 = min(s0 + SPAN, c1)
            hits = 0
            for j in range(s0, s1):
                hits += ni[i] + nj[j] - two * g[i, j] <= max(thr[j - c0], tr)
            if hits == 0:
                continue
            for j in range(max(s0, i0 + i + 1 - j0), s1):
                d = ni[i] + nj[j] - two * g[i, j]
                if d <= thr[j - c0] and _worse(d, i0 + i, hd, hi, j0 + j):
                    _replace_root(hd, hi, j0 + j, d, i0 + i)
                    thr[j - c0] = hd[j0 + j, 0]
                if d <= tr and not full:
                    if m == cap:
                        full = True
                    else:
                        bi_[m] = i
                        bj_[m] = j
                        bd_[m] = d
                        per_row[i] += 1
                        m += 1
    return -1 if full else m


@numba.njit(nogil=True, cache=True)
def _apply_rows(i0, j0, hd, hi, bj_, bd_, start, r0, r1):
    """Offer the collected candidates of rows r0..r1 to their heaps; ``start[t, i]``: where row i's candidates
    begin in slab t's buffer (each slab's buffer is in row order)."""
    for i in range(r0, r1):
        r = i0 + i
        for t in range(start.shape[0]):
            for m in range(start[t, i], start[t, i + 1]):
                d, j = bd_[t, m], j0 + bj_[t, m]
                if _worse(d, j, hd, hi, r):
                    _replace_root(hd, hi, r, d, j)


@numba.njit(nogil=True, cache=True)
def _finish(hd, hi, dist, idx, r0, r1):
    """Sort heaps r0..r1 by (d, index) ascending; distances as sqrt(max(d, 0))."""
    k = hd.shape[1]
    for r in range(r0, r1):
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


def _shares(n: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n // parts)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _on_pool(pool: ThreadPoolExecutor, fn, ranges, *args) -> list:
    """``fn(*args, lo, hi)`` for every (lo, hi) in ``ranges``, on the pool; their results in order."""
    return [f.result() for f in [pool.submit(fn, *args, lo, hi) for lo, hi in ranges]]


class _Merger:
    """Merges tiles into the heaps: column slabs on the pool, then the collected row candidates by rows."""

    def __init__(self, pool: ThreadPoolExecutor, threads: int, row_tile: int, col_tile: int):
        self.pool, self.threads = pool, threads
        self.nslabs = 4 * threads  # a few column slabs per thread, for balance
        cap = max(4096, row_tile * col_tile // (8 * self.nslabs))
        self.bi = np.empty((self.nslabs, cap), np.int32)
        self.bj = np.empty((self.nslabs, cap), np.int32)
        self.bd = np.empty((self.nslabs, cap), np.float32)
        self.per_row = np.zeros((self.nslabs, row_tile), np.int32)

    def merge(self, g, ni, nj, i0, j0, hd, hi) -> None:
        """Offer the squared distances of tile g (rows i0.., columns j0..) to both ends of each pair.

        Only pairs with column > row are offered (the tile may straddle the diagonal), so every unordered
        pair of the walk is seen once, and a point never meets itself. The tile (64 MB) is read from memory
        once: column slabs update their columns' heaps as they sweep the rows and collect the few distances
        that may enter a row's heap (at most the row's k-th distance when the tile began: thresholds only
        fall, so the snapshot admits a superset); the rows then take them, in parallel over rows. Where a
        collection overflows (the first tiles, while heaps fill), the rows are merged from the tile again.
        """
        bi, bj = g.shape
        thr_rows = hd[i0 : i0 + bi, 0].copy()
        slabs = _shares(bj, self.nslabs)
        counts = [f.result() for f in [
            self.pool.submit(_merge_cols_collect, g, ni, nj, i0, j0, hd, hi, c0, c1, thr_rows, self.bi[t], self.bj[t],
                             self.bd[t], self.per_row[t, :bi]) for t, (c0, c1) in enumerate(slabs)]]
        rows = _shares(bi, self.threads)
        if min(counts) < 0:
            _on_pool(self.pool, _merge_rows, rows, g, ni, nj, i0, j0, hd, hi)
            return
        start = np.zeros((len(slabs), bi + 1), np.int64)
        np.cumsum(self.per_row[: len(slabs), :bi], axis=1, out=start[:, 1:])
        _on_pool(self.pool, _apply_rows, rows, i0, j0, hd, hi, self.bj, self.bd, start)


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


def _join(y: np.ndarray, k: int, tiles, row_tile: int, col_tile: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The walk shared by the self- and cross-join: offer every pair of ``tiles`` (pairs with column > row) to
    both ends' heaps; (distances, indices) of every row of ``y``, rows that met fewer than k points padded with
    inf and index len(y)."""
    n = y.shape[0]
    norms = np.einsum("ij,ij->i", y, y)
    hd = np.full((n, k), np.inf, np.float32)
    hi = np.full((n, k), n, np.int64)  # the sentinel index n loses every tie
    tile = np.empty(row_tile * col_tile, np.float32)
    threads = numba.get_num_threads()
    dist = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    with ThreadPoolExecutor(threads) as pool:
        merger = _Merger(pool, threads, row_tile, col_tile)
        for i0, i1, j0, j1 in tiles:
            g = tile.reshape(-1)[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)  # C-contiguous
            np.matmul(y[i0:i1], y[j0:j1].T, out=g)
            merger.merge(g, norms[i0:i1], norms[j0:j1], i0, j0, hd, hi)
            if progress is not None:
                r = np.arange(i0, i1)
                progress(int(np.clip(j1 - np.maximum(j0, r + 1), 0, None).sum()))
        _on_pool(pool, _finish, _shares(n, threads), hd, hi, dist, idx)
    return dist, idx


def knn_self_join(x: np.ndarray, k: int, row_tile: int = ROW_TILE, col_tile: int = COL_TILE,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest neighbours of every row of x among the other rows.

    x: float32 (N, D), C-contiguous, finite; 1 <= k < N.
    Returns (distances float32 (N, k), ascending; indices int64 (N, k)): Euclidean
    distances, ties broken by the lower index (see the module docstring).
    ``progress(pairs)`` is called after each tile with the number of pairs it held (N (N - 1) / 2 in all).
    Memory: the graph (12 bytes per neighbour) plus one float32 tile of
    ``row_tile x col_tile`` (64 MB by default) and the row candidates' buffers (a third of that).

    Speed: OpenBLAS's threads spin for ~0.1 s after each call by default, and the numba merge that follows
    every sgemm then shares the cores with them (half speed, measured). The ``zspace`` command sets
    ``OPENBLAS_THREAD_TIMEOUT=4`` before numpy loads; set it yourself when calling this from Python.
    """
    check_rows(x, "x", dtypes=(np.float32,))
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1 .. N - 1 = {n - 1} (a point is not its own neighbour), got {k}")
    return _join(x, k, tile_pairs(n, row_tile, col_tile), row_tile, col_tile, progress)


def knn_cross_join(a: np.ndarray, b: np.ndarray, k: int, row_tile: int = ROW_TILE,
                   col_tile: int = COL_TILE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest rows of ``b`` to every row of ``a``, and of ``a`` to every row of ``b``, from one pass
    over the pairs (each distance computed once, offered to both ends, as in ``knn_self_join``).

    Returns (dist_a, idx_a into b, dist_b, idx_b into a), float32 / int64 (rows, k), ascending, ties to the
    lower index; where the other side has fewer than k rows the lists end in inf with index -1. Blocks of one
    cloud joined pairwise this way, plus each block's self-join, give its whole graph (``merge_neighbours``).
    """
    check_rows(a, "a", dtypes=(np.float32,))
    check_rows(b, "b", dtypes=(np.float32,))
    na, nb = len(a), len(b)
    y = np.concatenate([a, b])
    tiles = [(i0, min(i0 + row_tile, na), j0, min(j0 + col_tile, na + nb))
             for i0 in range(0, na, row_tile) for j0 in range(na, na + nb, col_tile)]
    dist, idx = _join(y, k, tiles, row_tile, col_tile)
    found = idx < na + nb
    idx = np.where(found, np.where(idx >= na, idx - na, idx), -1)
    return dist[:na], idx[:na], dist[na:], idx[na:]


def merge_neighbours(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest (distance, index) of each row over several candidate lists of the same rows (padding:
    inf, -1); ties to the lower index, as the joins order them."""
    dist = np.concatenate([p[0] for p in parts], axis=1)
    idx = np.concatenate([p[1] for p in parts], axis=1)
    key = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((key, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
