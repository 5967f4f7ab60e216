"""k-nearest-neighbour graphs: the exact graph of a cloud by the self-join kernel, queries with FAISS.

``knn_graph`` is the graph of a cloud with itself: exact by ``kernels.selfjoin``
(each pair's distance computed once, half the work of ``faiss.knn``; ties go to
the lower row index), or approximate with a FAISS HNSW or IVF index.
``knn`` searches any queries against a FAISS index (exact flat search in query
blocks, HNSW or IVF). Distances are Euclidean (FAISS returns squared L2; we
take the root once). A point is never its own neighbour: ``knn`` asks for
k + 1 and drops the query row (or, with exact duplicates, the last column).
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
from tqdm.auto import tqdm

from kernels.selfjoin import knn_self_join

logger = logging.getLogger(__name__)

INDEXES = ("exact", "hnsw", "ivf")


def knn_graph(x: np.ndarray, k: int, kind: str = "exact", seed: int = 0, block: int = 8192, progress: bool = False,
              desc: str = "kNN") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of every row of float32 (N, D) ``x``: (distances float32 (N, k), indices int64 (N, k)).

    ``kind="exact"`` runs the self-join kernel (every pair once, ties to the lower index); ``hnsw`` and ``ivf``
    search a FAISS index of ``x`` in query blocks of ``block``.
    """
    x = np.ascontiguousarray(x, np.float32)
    if kind != "exact":
        return knn(build_index(x, kind, seed=seed), x, k, query_ids=np.arange(len(x)), block=block,
                   progress=progress, desc=desc)
    n = len(x)
    bar = tqdm(total=n * (n - 1) // 2, unit="pair", unit_scale=True, desc=desc, disable=None if progress else True,
               leave=False)
    try:
        return knn_self_join(x, k, progress=bar.update)
    finally:
        bar.close()


def build_index(x: np.ndarray, kind: str = "exact", seed: int = 0, hnsw_m: int = 32, ef_search: int = 64,
                nprobe: int | None = None):
    """A FAISS index over float32 (N, D) ``x``; ``kind`` in exact | hnsw | ivf."""
    if kind not in INDEXES:
        raise ValueError(f"index must be one of {INDEXES}, got {kind!r}")
    x = np.ascontiguousarray(x, np.float32)
    n, d = x.shape
    if kind == "exact":
        index = faiss.IndexFlatL2(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efSearch = ef_search
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.train(train)
        index.nprobe = nprobe or max(1, nlist // 16)
    index.add(x)
    return index


def nearest_distances(queries: np.ndarray, points: np.ndarray, query_block: int = 2048,
                      point_block: int = 8192) -> np.ndarray:
    """Euclidean distance from each query (Q, D) to its nearest row of ``points`` (N, D): float32 (Q,), exact.

    Tiles of ``|q|^2 + |p|^2 - 2 q.p`` by numpy's sgemm (the formula FAISS uses) and a running minimum;
    memory: one (query_block, point_block) float32 tile.
    """
    q = np.ascontiguousarray(queries, np.float32)
    p = np.ascontiguousarray(points, np.float32)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1] or len(p) == 0:
        raise ValueError(f"queries (Q, D) and points (N >= 1, D) must share D, got {q.shape} and {p.shape}")
    qn, pn = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", p, p)
    best = np.full(len(q), np.inf, np.float32)
    tile = np.empty((query_block, point_block), np.float32)
    for s in range(0, len(q), query_block):
        e = min(s + query_block, len(q))
        for a in range(0, len(p), point_block):
            b = min(a + point_block, len(p))
            t = tile[: e - s, : b - a]
            np.matmul(q[s:e], p[a:b].T, out=t)
            t *= -2
            t += pn[a:b]
            np.minimum(best[s:e], t.min(axis=1) + qn[s:e], out=best[s:e])
    return np.sqrt(np.maximum(best, 0))


def knn(index, queries: np.ndarray, k: int, query_ids: np.ndarray | None = None, block: int = 8192,
        progress: bool = False, desc: str = "kNN") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest indexed points of each query: (distances float32 (Q, k), indices int64 (Q, k)).

    ``query_ids``: the index rows of the queries when they are indexed points
    themselves, so each drops itself. Memory is bounded by one block of queries.
    """
    q = np.ascontiguousarray(queries, np.float32)
    nq = len(q)
    extra = 1 if query_ids is not None else 0
    dist = np.empty((nq, k), np.float32)
    idx = np.empty((nq, k), np.int64)
    bar = tqdm(total=nq, unit="pt", desc=desc, disable=None if progress else True, leave=False)
    for s in range(0, nq, block):
        e = min(s + block, nq)
        d2, ii = index.search(q[s:e], k + extra)
        if extra:
            own = ii == query_ids[s:e, None]
            # drop the query itself where found, else the farthest candidate
            drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
            keep = np.ones_like(ii, bool)
            keep[np.arange(e - s), drop] = False
            d2 = d2[keep].reshape(e - s, k)
            ii = ii[keep].reshape(e - s, k)
        dist[s:e] = np.sqrt(np.maximum(d2, 0))
        idx[s:e] = ii
        bar.update(e - s)
    bar.close()
    return dist, idx


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact k neighbours that the approximate search found."""
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(approx, exact)]
    return float(np.mean(hits) / exact.shape[1])
