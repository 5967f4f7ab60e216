"""FAISS kNN: exact search equals brute force; approximate indexes report a measured recall."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.knn import build_index, knn, recall_at_k


def brute(x, k):
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(d2, idx, 1)), idx


def test_exact_equals_brute_force_in_blocks():
    x = np.random.default_rng(0).normal(size=(700, 24)).astype(np.float32)
    d_ref, i_ref = brute(x, 8)
    d, i = knn(build_index(x), x, 8, query_ids=np.arange(700), block=128)
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-4)
    assert (i == i_ref).mean() > 0.999, "ties aside, the same neighbours in the same order"
    assert not (i == np.arange(700)[:, None]).any(), "a point is never its own neighbour"


def test_duplicates_never_list_the_point_itself():
    x = np.repeat(np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32), 3, axis=0)
    d, i = knn(build_index(x), x, 2, query_ids=np.arange(150))
    assert not (i == np.arange(150)[:, None]).any()
    assert (d == 0).all(), "each point has two exact copies"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_is_measured(kind):
    x = np.random.default_rng(2).normal(size=(4000, 16)).astype(np.float32)
    q = np.arange(0, 4000, 20)
    _, exact = knn(build_index(x), x[q], 10, query_ids=q)
    _, approx = knn(build_index(x, kind), x[q], 10, query_ids=q)
    r = recall_at_k(approx, exact)
    assert 0.5 < r <= 1.0, f"{kind} recall@10 = {r:.3f}"
    assert recall_at_k(exact, exact) == 1.0


def test_unknown_index_is_an_error():
    with pytest.raises(ValueError, match="index must be one of"):
        build_index(np.zeros((3, 2), np.float32), "annoy")
