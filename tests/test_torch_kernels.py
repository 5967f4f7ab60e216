"""The blocked torch kNN (what the analysis runs on a GPU), on CPU torch: against the numba self-join and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from engine.analysis.torch_kernels import knn_device, knn_graph_device, local_pca_device
from kernels.localdim import local_pca
from kernels.selfjoin import knn_self_join


def numpy_reference(q: np.ndarray, b: np.ndarray, k: int, own: np.ndarray | None = None):
    """Every distance in float64, then a lexicographic (distance, index) sort per row."""
    d2 = ((q[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)
    if own is not None:
        d2[np.arange(len(q)), own] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(len(b)), d2.shape), d2), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, 1)), order


@pytest.mark.parametrize("tile", [(64, 100), (500, 37), (7, 1000)])
def test_the_graph_equals_the_self_join_and_numpy(tile):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 24)).astype(np.float32) * np.linspace(3, 0.5, 24).astype(np.float32)
    d, i = knn_graph_device(x, 9, "cpu", tile=tile)
    sd, si = knn_self_join(x, 9)
    rd, ri = numpy_reference(x, x, 9, np.arange(len(x)))
    np.testing.assert_array_equal(i, si)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(d, sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d, rd, rtol=1e-5, atol=1e-4)
    assert d.dtype == np.float32 and i.dtype == np.int64 and (np.diff(d, axis=1) >= 0).all()


def test_duplicates_and_ties_go_to_the_lower_index_across_tiles():
    # a lattice: many points at exactly equal distances; and exact duplicates of some rows
    g = np.stack(np.meshgrid(np.arange(6), np.arange(6), np.arange(6)), -1).reshape(-1, 3).astype(np.float32)
    x = np.concatenate([g, g[[5, 5, 17, 100]], g[::-1][:20]])
    for tile in ((16, 16), (50, 7), (400, 400)):
        d, i = knn_graph_device(x, 12, "cpu", tile=tile)
        sd, si = knn_self_join(x, 12)
        rd, ri = numpy_reference(x, x, 12, np.arange(len(x)))
        np.testing.assert_array_equal(i, ri, err_msg=f"tile {tile}")
        np.testing.assert_array_equal(i, si, err_msg=f"tile {tile}")
        np.testing.assert_allclose(d, rd, atol=1e-6)
    # a row's exact duplicate is its first neighbour, at distance 0; never the row itself
    d, i = knn_graph_device(x, 3, "cpu", tile=(32, 32))
    assert i[5, 0] == 216 and d[5, 0] == 0 and (i != np.arange(len(x))[:, None]).all()


def test_queries_against_a_streamed_zarr_base(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal((130, 16)).astype(np.float32)
    store = zarr.open_array(tmp_path / "b.zarr", mode="w", shape=base.shape, chunks=(128, 16), dtype="float32")
    store[:] = base
    seen = []
    d, i = knn_device(q, store, 5, "cpu", tile=(50, 300), progress=seen.append, resident=False)
    rd, ri = numpy_reference(q, base, 5)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(d, rd, rtol=1e-5, atol=1e-5)
    assert sum(seen) == 130 and len(seen) == 3


def test_bad_calls_name_what_is_wrong():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="k must be between 1 and 4"):
        knn_graph_device(x, 5, "cpu")
    with pytest.raises(ValueError, match="share D"):
        knn_device(np.zeros((2, 4), np.float32), x, 2, "cpu")


@pytest.mark.parametrize("d", [24, 5])  # Gram matrix (k + 1 <= D) and covariance-rank (k + 1 > D) cases
def test_local_pca_equals_the_numba_kernel_and_numpy(d):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, d)).astype(np.float32) * np.linspace(2, 0.2, d).astype(np.float32)
    _, idx = knn_self_join(x, 9)
    hood = np.concatenate([np.arange(len(x))[:, None], idx], axis=1)
    got = local_pca_device(x, hood, "cpu", block=128)
    want = np.empty_like(got)
    local_pca(x, hood, want)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    ref = np.linalg.eigvalsh(np.cov(x[hood[17]].astype(np.float64), rowvar=False))[::-1][: got.shape[1]]
    np.testing.assert_allclose(got[17], np.clip(ref, 0, None), rtol=1e-9, atol=1e-9)


def test_structure_through_the_torch_path_equals_the_numba_path(tmp_path, monkeypatch):
    """compute_structure with the device branch taken on CPU torch: the same graph, statistics and verdicts."""
    import engine.analysis.structure as structure
    import torch
    from engine.analysis.config import StructureConfig
    from engine.latents.importer import import_latents

    rng = np.random.default_rng(3)
    t = rng.uniform(0, 2 * np.pi, 1200)  # a planted cylinder: a circle times a line, in 12 dimensions
    z = np.zeros((1200, 12), np.float32)
    z[:, 0], z[:, 1], z[:, 2] = 4 * np.cos(t), 4 * np.sin(t), rng.uniform(-3, 3, 1200)
    z[:, 3:] = 0.05 * rng.standard_normal((1200, 9))
    np.save(tmp_path / "z.npy", z)
    cfg = StructureConfig(k=8, graph_k=12, void_probes=400, bootstrap=20)
    res = {}
    for name, dev in (("numba", None), ("torch", torch.device("cpu"))):
        run = tmp_path / name
        import_latents(tmp_path / "z.npy", run, progress=False)
        monkeypatch.setattr(structure, "graph_device", lambda cfg, dev=dev: dev)
        res[name] = structure.compute_structure(run, cfg, progress=False)
        res[name + "_idx"] = zarr.open_group(run / "latents.zarr", mode="r")["knn_indices"][:]
    np.testing.assert_array_equal(res["numba_idx"], res["torch_idx"])
    for stat, v in res["numba"]["statistics"].items():
        w = res["torch"]["statistics"][stat]
        assert v["differs"] == w["differs"], stat
        np.testing.assert_allclose([w["data"], w["null"]], [v["data"], v["null"]], rtol=1e-4, err_msg=stat)
    # the cylinder's verdict: its local dimension differs from the fitted normal's
    ld = res["torch"]["statistics"]["local_dimension"]
    assert ld["differs"] and ld["data"] < ld["null"], ld


def test_the_training_cloud_searches_alike_on_a_torch_device_and_with_faiss():
    """compare's and facemap's exact searches: blocked torch on a device (CPU torch here) equal FAISS's."""
    import torch
    from engine.generation.facemap import FaceMapCloud

    rng = np.random.default_rng(4)
    zt = rng.standard_normal((900, 16)).astype(np.float32) * np.linspace(2, 0.5, 16).astype(np.float32)
    faiss_cloud, torch_cloud = FaceMapCloud(zt, 1), FaceMapCloud(zt, 1, torch.device("cpu"))
    assert torch_cloud.index is None and faiss_cloud.index is not None
    assert torch_cloud.nn_scale == pytest.approx(faiss_cloud.nn_scale, rel=1e-5)
    probes = rng.standard_normal((200, 16)).astype(np.float32)
    np.testing.assert_allclose(torch_cloud.depth(probes), faiss_cloud.depth(probes), rtol=1e-5)
    rows = np.arange(0, 900, 7)
    d1, i1 = torch_cloud.search(zt[rows], 5, query_ids=rows)
    d2, i2 = faiss_cloud.search(zt[rows], 5, query_ids=rows)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-5)
