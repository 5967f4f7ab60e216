"""Structure's heavy parts as Dask tasks over clouds on shared storage: the exact kNN graph in tiles, the null
model in blocks, local PCA per block. The client never sends points; every task reads its rows from Zarr.

The graph: the rows are cut into blocks; each block is joined with itself (``knn_self_join``) and with every
later block (``knn_cross_join``: one pass over the pairs, both ends' lists), so every pair is computed once, as
in one process; the lists of each block merge by (distance, index), so ties go to the lower index, as in one
process. A task holds two blocks, their lists and one 64 MB tile; a local-PCA task its rows' neighbourhoods:
neither grows with N.
``tiles="faiss"`` searches every (query block, base block) by ``faiss.knn`` instead, each pair twice, and merges
the same way (measured on 2 cores: the join tiles are the faster; bench ``knn_exact`` compares the kernels).
"""

from __future__ import annotations

import numpy as np
import zarr

from engine.analysis.cluster import share_cores
from engine.analysis.gaussian import GaussianFit
from engine.analysis.knn import build_index, knn, nearest_distances
from engine.analysis.planes import cloud_rasters
from engine.stores import WRITE_ALL
from kernels.localdim import local_dim_summary, local_pca
from kernels.moments import block_moments, merge_moments
from kernels.selfjoin import knn_cross_join, knn_self_join, merge_neighbours

TILES = ("join", "faiss")  # how the graph's tiles are searched on a cluster
GRAPH_BLOCK = 65536  # rows per block: 64 MB of 256-D float32 per side; fewer, larger tiles spend less of
# their time filling empty lists (measured at 200,000 x 256 on 2 workers: 141 s with 16,384-row blocks, 101 s here)


LOCAL_BLOCK = 16384  # rows per local-PCA task: it holds their neighbourhoods, up to block x (k + 1) rows (285 MB
# at k = 16, D = 256, at any N), read from Zarr by row selection


def _rows(path: str, s: int, e: int) -> np.ndarray:
    return np.ascontiguousarray(zarr.open_array(path, mode="r")[s:e], dtype=np.float32)


def _pad(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if dist.shape[1] == k:
        return dist, idx
    n = len(dist)
    return (np.concatenate([dist, np.full((n, k - dist.shape[1]), np.inf, np.float32)], axis=1),
            np.concatenate([idx, np.full((n, k - idx.shape[1]), -1, np.int64)], axis=1))


def self_tile(path: str, s: int, e: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A block's graph among its own rows (global indices; fewer than k rows: padded)."""
    share_cores()
    if e - s < 2:
        return _pad(np.empty((e - s, 0), np.float32), np.empty((e - s, 0), np.int64), k)
    dist, idx = knn_self_join(_rows(path, s, e), min(k, e - s - 1))
    return _pad(dist, idx + s, k)


def cross_tile(path: str, s: int, e: int, s2: int, e2: int, k: int):
    """Two blocks' lists of each other's rows: ((dist, idx) of block 1, (dist, idx) of block 2), global indices."""
    share_cores()
    da, ia, db, ib = knn_cross_join(_rows(path, s, e), _rows(path, s2, e2), k)
    return (da, np.where(ia >= 0, ia + s2, -1)), (db, np.where(ib >= 0, ib + s, -1))


def faiss_tile(path: str, s: int, e: int, s2: int, e2: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of block s2..e2 to each row of block s..e by ``faiss.knn`` (exact, squared L2 by
    sgemm; a block against itself drops each row itself), global indices, padded to k."""
    share_cores()
    q = _rows(path, s, e)
    base = q if (s2, e2) == (s, e) else _rows(path, s2, e2)
    own = (s2, e2) == (s, e)
    want = min(k, len(base) - 1 if own else len(base))
    if want < 1:
        return _pad(np.empty((e - s, 0), np.float32), np.empty((e - s, 0), np.int64), k)
    dist, idx = knn(build_index(base), q, want, query_ids=np.arange(e - s) if own else None, block=e - s)
    return _pad(dist, idx + s2, k)


def merge_pair(a, b, k: int):
    return merge_neighbours([a, b], k)


def knn_graph_on(cluster, path, n: int, k: int, block: int = GRAPH_BLOCK, desc: str = "kNN", tiles: str = "join"):
    """The exact graph of the n rows of the Zarr array at ``path`` on ``cluster``: (dist (n, k), idx (n, k)),
    equal to ``knn_self_join`` of the whole array (ties to the lower index), in tiles of blocks of at most
    ``block`` rows. ``tiles``: "join" (each pair of blocks once, by the join kernels) or "faiss" (every query
    block x base block by ``faiss.knn``)."""
    import dask

    if not 1 <= k < n:
        raise ValueError(f"k must be in 1 .. N - 1 = {n - 1}, got {k}")
    if tiles not in TILES:
        raise ValueError(f"tiles must be one of {TILES}, got {tiles!r}")
    path = str(path)
    size = -(-n // -(-n // block))  # blocks of at most ``block`` rows, all of one size (200,000 in 4 of 50,000,
    # not 3 of 65,536 and one of 3,392): the tiles come in equal shares for the workers
    bounds = [(s, min(s + size, n)) for s in range(0, n, size)]
    # row-major order (block i with itself, then with each later block), each block's lists merged in the
    # order they arrive, merges before new tiles: a block's lists are merged as soon as they exist, so what
    # waits in memory is one growing list per unfinished block, not the tiles' outputs
    nb, acc = len(bounds), [None] * len(bounds)
    for i, (s, e) in enumerate(bounds):
        if tiles == "faiss":
            for j, (s2, e2) in enumerate(bounds):
                tile = _prioritised(nb, i, j, dask.delayed(faiss_tile, pure=True), path, s, e, s2, e2, k)
                acc[i] = _merged(acc[i], tile, k)
            continue
        acc[i] = _merged(acc[i], _prioritised(nb, i, i, dask.delayed(self_tile, pure=True), path, s, e, k), k)
        for j in range(i + 1, nb):
            a, b = _prioritised(nb, i, j, dask.delayed(cross_tile, nout=2, pure=True), path, s, e, *bounds[j], k)
            acc[i], acc[j] = _merged(acc[i], a, k), _merged(acc[j], b, k)
    count = f"{nb ** 2} FAISS tiles" if tiles == "faiss" else f"{nb * (nb + 1) // 2} tiles"
    results = cluster.compute(acc, f"{desc}: {count} of {block} rows")
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _prioritised(nb: int, i: int, j: int, fn, *args):
    """Tile (i, j) with a priority that makes Dask start tiles in row-major order."""
    import dask

    with dask.annotate(priority=-(i * nb + j)):
        return fn(*args)


def _merged(acc, part, k: int):
    """``part`` merged into the running lists ``acc`` (None: none yet), before any tile not yet started."""
    import dask

    if acc is None:
        return part
    with dask.annotate(priority=1):
        return dask.delayed(merge_pair, pure=True)(acc, part, k)


def null_block(path: str, s: int, e: int, fit: GaussianFit, seed: int, b: int) -> int:
    """Block b of the null model: rows s..e drawn from ``fit`` with block b's own stream (the b-th child of the
    seed's ``SeedSequence``, independent of the seed's own stream, which draws the void probes), into ``path``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,)))
    zarr.open_array(path, mode="r+").with_config(WRITE_ALL)[s:e] = fit.sample(e - s, rng)
    return e - s


def write_null(cluster, path, n: int, d: int, fit: GaussianFit, seed: int, block: int = GRAPH_BLOCK) -> None:
    """The null cloud (n points of the fitted normal), block by block on the workers, into a Zarr array."""
    zarr.create_array(str(path), shape=(n, d), chunks=(block, d), dtype="float32", overwrite=True,
                      fill_value=np.nan, config=WRITE_ALL)
    fit_f = cluster.client.scatter(fit, broadcast=True, hash=False)
    cluster.map_calls(null_block, [(str(path), s, min(s + block, n), fit_f, seed, b)
                                   for b, s in enumerate(range(0, n, block))], "null model")


def local_block(path: str, s: int, e: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local PCA of the neighbourhoods of rows s..e (each row and its neighbours ``idx``), reading only those
    rows: (n90, participation ratio, linearity). Runs through ``Cluster.map_calls``, which shares the cores."""
    if idx.min(initial=0) < 0:
        raise ValueError(f"rows {s}..{e} of {path}: a neighbour list holds -1 (fewer rows than k + 1, or NaN rows)")
    hood = np.concatenate([np.arange(s, e)[:, None], idx], axis=1)
    need = np.unique(hood)
    pts = np.ascontiguousarray(zarr.open_array(path, mode="r").get_orthogonal_selection((need, slice(None))),
                               dtype=np.float32)
    local = np.ascontiguousarray(np.searchsorted(need, hood))
    m = min(idx.shape[1] + 1, pts.shape[1])
    eig = np.empty((e - s, m), np.float64)
    local_pca(pts, local, eig)
    n90, pr, lin = np.empty(e - s, np.int32), np.empty(e - s, np.float32), np.empty(e - s, np.float32)
    local_dim_summary(eig, n90, pr, lin)
    return n90, pr, lin


def local_dims_on(cluster, path, idx: np.ndarray, block: int = LOCAL_BLOCK):
    """``local_block`` of every block of rows as tasks: (n90, pr, lin) of all rows."""
    n = len(idx)
    calls = [(str(path), s, min(s + block, n), idx[s : s + block]) for s in range(0, n, block)]
    parts = cluster.map_calls(local_block, calls, "local PCA")
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _moments(path: str, s: int, e: int):
    x = _rows(path, s, e)
    bad = ~np.isfinite(x).all(axis=1)
    return s + int(np.flatnonzero(bad)[0]) if bad.any() else block_moments(x)


def fit_on(cluster, path, n: int, d: int, block: int = GRAPH_BLOCK) -> GaussianFit:
    """The fitted normal of the rows at ``path`` from block moments merged in block order (as ``zspace stats``)."""
    n_acc, mean_acc, m_acc = 0, np.zeros(d), np.zeros((d, d))
    for res in cluster.map_calls(_moments, [(str(path), s, min(s + block, n)) for s in range(0, n, block)], "moments"):
        if not isinstance(res, tuple):
            raise ValueError(f"{path}: row {res} holds NaN or inf; re-import with --drop-nonfinite")
        n_acc, mean_acc, m_acc = merge_moments(n_acc, mean_acc, m_acc, *res)
    return GaussianFit().fit_moments(n_acc, mean_acc, m_acc)


def _nearest(path: str, s: int, e: int, probes: np.ndarray) -> np.ndarray:
    return nearest_distances(probes, _rows(path, s, e))


def void_on(cluster, path, n: int, probes: np.ndarray, block: int = GRAPH_BLOCK) -> np.ndarray:
    """Distance of every probe to its nearest row at ``path``: the minimum over the blocks' nearest."""
    shared = cluster.client.scatter(probes, broadcast=True, hash=False)
    parts = cluster.map_calls(_nearest, [(str(path), s, min(s + block, n), shared) for s in range(0, n, block)],
                              "void probes")
    return np.minimum.reduce(parts)


def _rasters(path: str, s: int, e: int, mean: np.ndarray, windows) -> np.ndarray:
    return cloud_rasters([_rows(path, s, e)], mean, windows)


def rasters_on(cluster, path, n: int, mean: np.ndarray, windows, block: int = GRAPH_BLOCK) -> np.ndarray:
    """``cloud_rasters`` of the rows at ``path``: each block's rasters on a worker, summed here."""
    return np.sum(cluster.map_calls(_rasters, [(str(path), s, min(s + block, n), mean, windows)
                                               for s in range(0, n, block)], "plane rasters"), axis=0)
