"""The analysis on a device: exact k-nearest neighbours as blocked fp32 torch, and local PCA of neighbourhoods.

``knn_device`` / ``knn_graph_device``: the graph of a cloud and queries against it.

The same graph as the CPU self-join (``kernels.selfjoin``), up to float32 rounding of near ties (the sums run in
another order): for a tile of query rows Q against base rows B,
one fp32 matmul gives ``|q|^2 + |b|^2 - 2 q.b`` (the formula FAISS and the self-join use), a point is masked
out of its own list, and every row keeps the k candidates smallest in (squared distance, row index), so equal
distances go to the lower index whatever the tile order. Per tile one ``topk`` of k + 1: where a row's k-th and
(k+1)-th values differ its first k are the set; where they tie (``topk`` may return any of equal values) that
row takes the exact selection, every entry below the k-th value and then the lowest indices of those equal to
it. Tiles merge by a lexicographic (distance, index) sort of 2k candidates.

On CUDA, TF32 is switched off for the call (and restored after): with it, 2.3% of the 16 nearest neighbours of
a 202,599 x 256 cloud changed on an H200. Tiles are sized from the device's free memory; the base is held on
the device when it fits in a quarter of it, else streamed tile by tile from the host array (a numpy array, a
memory map or a Zarr array: anything sliced by rows), so clouds larger than device memory work.

On a CPU the numba self-join is faster (each pair once, threads over tiles); this module is what runs on a GPU,
and it is tested on CPU torch against the self-join and a numpy reference.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

CPU_TILE = (2048, 8192)  # query rows x base rows of one tile on a CPU: 64 MB of float32
MAX_TILE_BYTES = 1 << 30  # at most 1 GB of float32 distances per tile on a GPU (more buys nothing)


@contextlib.contextmanager
def exact_fp32(device: torch.device):
    """fp32 matmuls without TF32 for the duration (restored after): exact neighbours, not 97.7% of them."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def tile_shape(device: torch.device, n_base: int, d: int) -> tuple[int, int]:
    """(query rows, base rows) of one tile: fixed on a CPU, from free memory on a GPU (a quarter of it for the
    distance tile, its selection temporaries and the query block)."""
    if device.type != "cuda":
        return CPU_TILE
    free, _ = torch.cuda.mem_get_info(device)
    budget = min(free // 4, MAX_TILE_BYTES)
    cols = int(min(n_base, max(8192, budget // (4 * 4096))))
    rows = int(max(256, min(65536, budget // (4 * (cols + d)) // 3)))
    return rows, cols


def _select_exact(d2: torch.Tensor, k: int) -> torch.Tensor:
    """The columns of the k entries of each row of ``d2`` (R, C) smallest in (value, column), ascending: every
    entry below the k-th value, then the lowest columns of those equal to it. Several passes over the tile: run
    only on the rows whose k-th and (k+1)-th values tie."""
    kth = torch.topk(d2, k, dim=1, largest=False, sorted=True).values[:, -1:]
    below = d2 < kth
    equal = d2 == kth
    need = k - below.sum(dim=1, keepdim=True)
    keep = below | (equal & (torch.cumsum(equal, dim=1, dtype=torch.int32) <= need))
    # the largest k of (C - column) where kept, 0 elsewhere: the kept columns ascending, without nonzero()
    rank = torch.where(keep, torch.arange(d2.shape[1], 0, -1, device=d2.device, dtype=torch.int32), 0)
    return torch.topk(rank, k, dim=1, sorted=True).indices


def _select(d2: torch.Tensor, cols: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k entries of each row of ``d2`` (R, C) smallest in (value, column) (``cols`` (C,) their global indices):
    (values (R, k), indices (R, k)), in any order (``_merge`` sorts). Needs C >= k.

    One ``topk`` of k + 1: where the k-th and (k+1)-th values differ, its first k are the set (ties inside it are
    ordered by the merge); rows where they tie, rare outside exact duplicates, take the exact selection."""
    if d2.shape[1] == k:
        return d2, cols.expand(len(d2), k)
    v, c = torch.topk(d2, k + 1, dim=1, largest=False, sorted=True)
    tie = v[:, k - 1] == v[:, k]
    v, c = v[:, :k], c[:, :k]
    if bool(tie.any()):  # one small sync per tile
        rows = tie.nonzero().squeeze(1)
        exact = _select_exact(d2[rows], k)
        c = c.index_put((rows,), exact)
        v = v.index_put((rows,), torch.gather(d2[rows], 1, exact))
    return v, cols[c]


def _merge(bd: torch.Tensor, bi: torch.Tensor, td: torch.Tensor, ti: torch.Tensor, k: int):
    """The k smallest in (distance, index) of the running best and a tile's candidates."""
    d = torch.cat([bd, td], dim=1)
    i = torch.cat([bi, ti], dim=1)
    order = torch.argsort(i, dim=1, stable=True)  # by index, then stably by distance: lexicographic
    d, i = torch.gather(d, 1, order), torch.gather(i, 1, order)
    order = torch.argsort(d, dim=1, stable=True)[:, :k]
    return torch.gather(d, 1, order), torch.gather(i, 1, order)


def knn_device(queries, base, k: int, device: str | torch.device = "cpu", query_ids: np.ndarray | None = None,
               tile: tuple[int, int] | None = None, progress=None, resident: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``base`` (N, D) to each row of ``queries`` (Q, D): (distances float32 (Q, k),
    indices int64 (Q, k)), exact in fp32, ties to the lower index.

    ``query_ids`` (Q,): the base rows the queries are, so none is its own neighbour (an exact duplicate is, at
    distance 0). ``tile``: (query rows, base rows) per tile (default ``tile_shape``). ``progress``: called with
    the number of query rows done after each query block. ``resident``: hold the base on the device (default:
    when it takes at most a quarter of the device's free memory, or of the host's available memory on a CPU);
    otherwise each tile's base rows are read from ``base`` (a Zarr array streams from disk).
    """
    dev = torch.device(device)
    nq, n, d = queries.shape[0], base.shape[0], base.shape[1]
    extra = 0 if query_ids is None else 1
    if queries.shape[1] != d:
        raise ValueError(f"queries and base must share D, got {queries.shape} and {base.shape}")
    if not 1 <= k <= n - extra:
        raise ValueError(f"k must be between 1 and {n - extra} (the base's other rows), got {k}")
    rows, cols = tile or tile_shape(dev, n, d)
    cols = max(cols, k)
    if resident is None:
        import psutil

        free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else psutil.virtual_memory().available
        resident = 4 * n * d <= free // 4
    held = torch.as_tensor(np.ascontiguousarray(base[:], np.float32), device=dev) if resident else None
    dist = np.empty((nq, k), np.float32)
    idx = np.empty((nq, k), np.int64)
    with exact_fp32(dev), torch.no_grad():
        for s in range(0, nq, rows):
            e = min(s + rows, nq)
            q = torch.as_tensor(np.ascontiguousarray(queries[s:e], np.float32), device=dev)
            qn = (q * q).sum(1, keepdim=True)
            own = None if query_ids is None else torch.as_tensor(np.asarray(query_ids[s:e]), device=dev)[:, None]
            bd = torch.full((e - s, k), float("inf"), device=dev)
            bi = torch.full((e - s, k), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
            for a in range(0, n, cols):
                b_ = min(a + cols, n)
                b = held[a:b_] if held is not None else torch.as_tensor(
                    np.ascontiguousarray(base[a:b_], np.float32), device=dev)
                d2 = torch.addmm(qn + (b * b).sum(1)[None, :], q, b.T, alpha=-2.0)
                ids = torch.arange(a, b_, device=dev)
                if own is not None:  # each query's own row, where it falls in this tile
                    hit = ((own >= a) & (own < b_)).squeeze(1).nonzero().squeeze(1)
                    if len(hit):
                        d2[hit, own[hit, 0] - a] = float("inf")
                if b_ - a < k:  # a last sliver narrower than k: pad with nothing-candidates
                    pad = k - (b_ - a)
                    d2 = torch.cat([d2, torch.full((e - s, pad), float("inf"), device=dev)], 1)
                    ids = torch.cat([ids, torch.full((pad,), torch.iinfo(torch.int64).max, device=dev)])
                td, ti = _select(d2, ids, k)
                bd, bi = _merge(bd, bi, td, ti, k)
            dist[s:e] = bd.clamp_min_(0).sqrt_().cpu().numpy()
            idx[s:e] = bi.cpu().numpy()
            if progress is not None:
                progress(e - s)
    return dist, idx


def knn_graph_device(x, k: int, device: str | torch.device = "cpu", tile: tuple[int, int] | None = None,
                     progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The graph of a cloud with itself on ``device``: ``knn_device(x, x, k, query_ids=arange(N))``."""
    return knn_device(x, x, k, device, query_ids=np.arange(len(x)), tile=tile, progress=progress)


def local_pca_device(x, hood: np.ndarray, device: str | torch.device = "cpu", block: int = 16384) -> np.ndarray:
    """Eigenvalues of every neighbourhood's covariance, as ``kernels.localdim.local_pca`` computes them: float64
    (M, m), m = min(k, D), descending, ddof 1, from the k x k Gram matrix of the centred neighbourhood, negatives
    clamped to 0. ``x`` float32 (N, D); ``hood`` int64 (M, k) row indices. Blocks of ``block`` neighbourhoods,
    gathered and reduced in float64 on ``device``."""
    dev = torch.device(device)
    hood = np.ascontiguousarray(hood, np.int64)
    m_rows, k = hood.shape
    m = min(k, x.shape[1])
    out = np.empty((m_rows, m), np.float64)
    xs = torch.as_tensor(np.ascontiguousarray(x, np.float32), device=dev)
    with torch.no_grad():
        for s in range(0, m_rows, block):
            h = torch.as_tensor(hood[s : s + block], device=dev)
            nb = xs[h].double()  # (B, k, D)
            nb = nb - nb.mean(dim=1, keepdim=True)
            gram = nb @ nb.transpose(1, 2) / (k - 1)  # (B, k, k): the covariance's nonzero eigenvalues
            lam = torch.linalg.eigvalsh(gram).flip(1)[:, :m].clamp_min_(0)
            out[s : s + len(h)] = lam.cpu().numpy()
    return out


__all__ = ["exact_fp32", "knn_device", "knn_graph_device", "local_pca_device", "tile_shape"]
