"""The self-join kNN kernel: each pair once, the same graph as a full search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from kernels.selfjoin import knn_self_join, tile_pairs


def lexicographic_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: all pairwise distances in float64, each row sorted by (distance, index), self removed."""
    x64 = x.astype(np.float64)
    d2 = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    n = len(x)
    idx = np.empty((n, k), np.int64)
    for r in range(n):
        others = np.delete(np.arange(n), r)
        idx[r] = others[np.lexsort((others, d2[r, others]))[:k]]
    return np.sqrt(np.take_along_axis(d2, idx, axis=1)), idx


@pytest.mark.parametrize("tiles", [(64, 100), (100, 64), (37, 37), (4096, 8192)])
def test_ties_and_duplicates_go_to_the_lower_index(tiles):
    # small integers: every distance is exact in float32, so ties are exact and many; duplicates abound
    x = np.random.default_rng(0).integers(0, 3, size=(500, 5)).astype(np.float32)
    assert len(np.unique(x, axis=0)) < len(x) / 2  # many exact duplicates
    ref_d, ref_i = lexicographic_knn(x, 7)
    d, i = knn_self_join(x, 7, row_tile=tiles[0], col_tile=tiles[1])
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-6)
    assert (i != np.arange(len(x))[:, None]).all(), "a point is never its own neighbour"


def test_equals_faiss_knn_on_a_latent_like_cloud():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3000, 64)) @ rng.normal(size=(64, 64)) + 2).astype(np.float32)
    k = 16
    d, i = knn_self_join(x, k, row_tile=512, col_tile=1024)
    fd, fi = faiss.knn(x, x, k + 1)
    # the query itself is faiss's first hit on this tie-free cloud
    assert (fi[:, 0] == np.arange(len(x))).all()
    fd, fi = np.sqrt(np.maximum(fd[:, 1:], 0)), fi[:, 1:]
    scale = float(np.median(fd))
    np.testing.assert_allclose(d, fd, atol=1e-5 * scale)
    same = (i == fi).all(axis=1)
    # rows that differ may only swap neighbours whose distances agree to rounding
    for r in np.flatnonzero(~same):
        np.testing.assert_allclose(d[r], fd[r], atol=1e-5 * scale)
        assert set(i[r, :-1]) <= set(fi[r]), r
    assert same.mean() > 0.99, same.mean()


def test_equals_faiss_knn_on_a_cloud_of_duplicates_and_ties():
    """faiss.knn breaks ties its own way and may drop a duplicate instead of the query itself: the distances
    agree exactly, and the neighbours wherever the k-th distance is not tied with the next."""
    x = np.random.default_rng(5).integers(0, 4, size=(800, 4)).astype(np.float32)
    k = 6
    d, i = knn_self_join(x, k)
    fd, fi = faiss.knn(x, x, k + 1)  # the query is among its k + 1 nearest (at distance 0)
    rows = np.arange(len(x))
    f_dist = np.empty((len(x), k), np.float32)
    f_idx = np.empty((len(x), k), np.int64)
    for r in rows:
        own = np.flatnonzero(fi[r] == r)
        keep = np.delete(np.arange(k + 1), own[0] if len(own) else k)
        f_dist[r], f_idx[r] = np.sqrt(np.maximum(fd[r, keep], 0)), fi[r, keep]
    np.testing.assert_array_equal(d, f_dist)
    _, ref_k1 = lexicographic_knn(x, k + 1)
    d2_next = ((x - x[ref_k1[:, k]]) ** 2).sum(1)
    untied = np.sqrt(d2_next) > d[:, -1]  # the k-th and (k+1)-th distances differ: the set is unique
    assert untied.sum() > 50
    for r in np.flatnonzero(untied):
        assert set(i[r]) == set(f_idx[r]), r


def test_every_pair_is_in_exactly_one_tile():
    n = 1000
    seen = np.zeros((n, n), np.int64)
    for i0, i1, j0, j1 in tile_pairs(n, 96, 250):
        block = np.zeros((i1 - i0, j1 - j0), bool)
        rows, cols = np.arange(i0, i1)[:, None], np.arange(j0, j1)[None, :]
        block[:] = cols > rows
        seen[i0:i1, j0:j1] += block
    assert (seen[np.triu_indices(n, 1)] == 1).all() and (np.tril(seen) == 0).all()


def test_progress_counts_every_pair_once():
    x = np.random.default_rng(2).standard_normal((777, 8)).astype(np.float32)
    done = []
    knn_self_join(x, 3, row_tile=100, col_tile=128, progress=done.append)
    assert sum(done) == 777 * 776 // 2


def test_bad_input():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="k must be in 1 .. N - 1"):
        knn_self_join(x, 10)
    with pytest.raises(ValueError, match="x must be a C-contiguous float32"):
        knn_self_join(x.astype(np.float64), 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        knn_self_join(np.zeros((4, 10), np.float32).T, 3)


def test_nearest_distances_equal_brute_force():
    from engine.analysis.knn import nearest_distances

    rng = np.random.default_rng(3)
    pts = rng.standard_normal((1500, 24)).astype(np.float32)
    q = np.concatenate([rng.standard_normal((700, 24)), pts[:5]]).astype(np.float32)  # 5 probes on points
    ref = np.sqrt(((q[:, None, :].astype(np.float64) - pts[None, :, :]) ** 2).sum(-1).min(axis=1))
    got = nearest_distances(q, pts, query_block=256, point_block=400)
    np.testing.assert_allclose(got[:-5], ref[:-5], rtol=1e-5)
    assert (got[-5:] < 1e-3 * ref.mean()).all(), got[-5:]  # cancellation in |q|^2 + |p|^2 - 2 q.p, as in FAISS
    with pytest.raises(ValueError, match="must share D"):
        nearest_distances(q, pts[:, :3])
