"""t-SNE stage: planted clusters stay apart, outputs are valid, runs are seeded, new points land where they belong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from PIL import Image

from engine.analysis.tsne import TSNEConfig, compute_tsne, place_points
from engine.latents.importer import import_latents
from engine.layout import latents_path

D = 20
PER_CLUSTER = 200
N = 3 * PER_CLUSTER
FAST = dict(n=N, perplexity=20, n_iter=300, n_jobs=1)  # 2 threads: 30x slower at 600 points on a busy 2-core box


def _centres() -> np.ndarray:
    rng = np.random.default_rng(123)
    c = rng.standard_normal((3, D))
    return 12.0 * c / np.linalg.norm(c, axis=1, keepdims=True)  # pairwise ~17 apart, unit-variance clusters


def _draw(rng, cluster: int, m: int) -> np.ndarray:
    return (_centres()[cluster] + rng.standard_normal((m, D))).astype(np.float32)


def _planted_run(path):
    """RUN with 3 Gaussian clusters of 200 points in 20-D, rows ordered by cluster; returns (run, labels)."""
    rng = np.random.default_rng(7)
    z = np.concatenate([_draw(rng, k, PER_CLUSTER) for k in range(3)])
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "z.npy", z)
    import_latents(path / "z.npy", path / "run", progress=False)
    return path / "run", np.repeat(np.arange(3), PER_CLUSTER)


def _knn_accuracy(y: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN classification accuracy in the 2-D embedding."""
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nn = np.argsort(d2, axis=1)[:, :k]
    votes = np.array([np.bincount(labels[row], minlength=3).argmax() for row in nn])
    return float((votes == labels).mean())


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    run, labels = _planted_run(tmp_path_factory.mktemp("tsne"))
    result = compute_tsne(run, TSNEConfig(**FAST), progress=False)
    return run, labels, result


def test_clusters_stay_separated_and_outputs_valid(embedded):
    run, labels, result = embedded
    out = run / "tsne"
    with np.load(out / "embedding.npz") as f:
        rows, emb, null = f["rows"], f["embedding"], f["null_embedding"]
        assert "pca_components" not in f
    assert rows.dtype == np.int64 and np.array_equal(rows, np.arange(N)), rows[:10]
    assert emb.shape == (N, 2) and emb.dtype == np.float32, (emb.shape, emb.dtype)
    assert null.shape == (N, 2) and null.dtype == np.float32, (null.shape, null.dtype)
    assert np.isfinite(emb).all() and np.isfinite(null).all()
    acc = _knn_accuracy(emb, labels[rows])
    assert acc > 0.95, f"5-NN accuracy of the planted clusters in 2-D is {acc:.3f}"
    info = json.loads((out / "tsne.json").read_text())
    assert info["n"] == N and info["config"]["perplexity"] == 20 and info["config"]["n_iter"] == 300, info
    assert info["openTSNE"]["n_iter"] == 50 and info["openTSNE"]["early_exaggeration_iter"] == 250, info["openTSNE"]
    assert info["kl_divergence"]["data"] > 0 and info["kl_divergence"]["null"] > 0, info["kl_divergence"]
    assert info["seconds"]["data"]["total"] > 0 and info["seconds"]["null"]["total"] > 0, info["seconds"]
    assert result == info
    with Image.open(out / "tsne.png") as img:
        img.verify()
    with Image.open(out / "tsne.png") as img:
        assert img.width > 1000 and img.height > 500, img.size
    # the null (one Gaussian blob) must not split into the data's three islands
    centre_null = _knn_accuracy(null, labels[rows])
    assert centre_null < 0.8, f"null-model points classified by the data's labels with accuracy {centre_null:.3f}"


def test_seeded_runs_are_identical(embedded, tmp_path):
    run, _, _ = embedded
    with np.load(run / "tsne" / "embedding.npz") as f:
        first = {k: f[k] for k in f}
    run2, _ = _planted_run(tmp_path)
    compute_tsne(run2, TSNEConfig(**FAST), progress=False)
    with np.load(run2 / "tsne" / "embedding.npz") as f:
        for k in first:
            assert np.array_equal(first[k], f[k]), f"{k} differs between seeded runs: max |diff| " \
                                                   f"{np.abs(first[k] - f[k]).max()}"
    # a different seed gives a different embedding (the seed is used)
    compute_tsne(run2, TSNEConfig(**{**FAST, "seed": 1, "null": False}), progress=False)
    with np.load(run2 / "tsne" / "embedding.npz") as f:
        assert not np.array_equal(first["embedding"], f["embedding"])
        assert f["null_embedding"].shape == (0, 2)


def test_subsample_and_pca(tmp_path):
    run, labels = _planted_run(tmp_path)
    cfg = TSNEConfig(**{**FAST, "n": 450, "pca": 5, "null": False})
    info = compute_tsne(run, cfg, progress=False)
    assert info["embedded_dim"] == 5 and info["pca_source"].startswith("computed"), info
    with np.load(run / "tsne" / "embedding.npz") as f:
        rows, emb, comps = f["rows"], f["embedding"], f["pca_components"]
    assert len(rows) == 450 and len(np.unique(rows)) == 450 and rows.max() < N and np.all(np.diff(rows) > 0)
    assert emb.shape == (450, 2) and comps.shape == (5, D), (emb.shape, comps.shape)
    assert np.allclose(comps @ comps.T, np.eye(5), atol=1e-8), "principal axes are not orthonormal"
    acc = _knn_accuracy(emb, labels[rows])
    assert acc > 0.95, f"5-NN accuracy after PCA to 5 components is {acc:.3f}"

    # axes written by `zspace stats` are used when present
    g = zarr.open_group(latents_path(run), mode="r+")
    axes = np.eye(D)[::-1]
    g.create_array("pca_components", shape=axes.shape, dtype="float64", overwrite=True)[...] = axes
    g.create_array("pca_mean", shape=(D,), dtype="float64", overwrite=True)[...] = np.zeros(D)
    info = compute_tsne(run, cfg, progress=False)
    assert info["pca_source"].startswith("stats"), info["pca_source"]
    with np.load(run / "tsne" / "embedding.npz") as f:
        assert np.array_equal(f["pca_components"], axes[:5])


@pytest.mark.parametrize("key, value", [("perplexity", -1), ("perplexity", float("nan")), ("n_iter", 200),
                                        ("n", 3), ("pca", 1), ("early_exaggeration", 0.5), ("n_jobs", 0),
                                        ("seed", -2), ("null", "yes")])
def test_bad_config_names_the_parameter(key, value):
    with pytest.raises(ValueError, match=key):
        TSNEConfig(**{key: value})


def test_unknown_key_and_impossible_settings(embedded, tmp_path):
    with pytest.raises(ValueError, match="unknown tsne config keys"):
        TSNEConfig.from_dict({"perplexty": 10})
    run, _, _ = embedded
    with pytest.raises(ValueError, match="perplexity"):
        compute_tsne(run, TSNEConfig(**{**FAST, "perplexity": 250}), progress=False)
    with pytest.raises(ValueError, match="pca"):
        compute_tsne(run, TSNEConfig(**{**FAST, "pca": D + 1}), progress=False)
    with pytest.raises(ValueError, match="differs from the saved embedding"):
        place_points(run, np.zeros((1, D)), TSNEConfig(**{**FAST, "perplexity": 10}))
    with pytest.raises(ValueError, match=r"z_new must have shape"):
        place_points(run, np.zeros((2, D + 1)))
    with pytest.raises(FileNotFoundError, match="no embedding"):
        place_points(tmp_path, np.zeros((1, D)))


def test_place_points_lands_in_the_right_cluster(embedded):
    run, labels, _ = embedded
    with np.load(run / "tsne" / "embedding.npz") as f:
        rows, emb = f["rows"], f["embedding"]
    lab = labels[rows]
    for cluster in (0, 2):
        new = _draw(np.random.default_rng(99 + cluster), cluster, 60)
        placed = place_points(run, new)
        assert placed.shape == (60, 2) and placed.dtype == np.float32
        nearest = ((placed[:, None, :] - emb[None, :, :]) ** 2).sum(-1).argmin(axis=1)
        share = float((lab[nearest] == cluster).mean())
        assert share > 0.9, f"only {share:.2f} of new cluster-{cluster} points have a cluster-{cluster} nearest neighbour"
        # same coordinates as the saved embedding (transform re-centres its reference; the shift is undone)
        own = emb[lab == cluster]
        offset = float(np.linalg.norm(placed.mean(0) - own.mean(0)))
        spread = float(np.sqrt(((own - own.mean(0)) ** 2).sum(1).mean()))
        assert offset < 0.5 * spread, f"placed cluster-{cluster} centre is {offset:.2f} from its embedded centre " \
                                      f"(cluster rms radius {spread:.2f})"
    # the saved embedding is untouched by placing
    with np.load(run / "tsne" / "embedding.npz") as f:
        assert np.array_equal(f["embedding"], emb)


def test_structure_graph_is_reused_and_equals_openTSNE_with_the_same_neighbours(tmp_path):
    """All rows embedded after `structure`: its exact graph is reused; the map is openTSNE's ``TSNE.fit`` given
    those neighbours, and the graph is openTSNE's own exact one (sklearn brute force), so the affinities agree."""
    import openTSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    from engine.analysis.structure import StructureConfig, compute_structure

    run, _ = _planted_run(tmp_path)
    compute_structure(run, StructureConfig(k=10, graph_k=60, bootstrap=10, void_probes=200), progress=False)
    cfg = TSNEConfig(**FAST, null=False)  # perplexity 20: 60 neighbours, all there
    result = compute_tsne(run, cfg, progress=False)
    assert result["neighbours"]["data"].startswith("reused") and result["seconds"]["data"]["knn"] == 0
    g = zarr.open_group(latents_path(run), mode="r")
    x, idx, dist = g["z"][:], g["knn_indices"][:], g["knn_distances"][:]
    settings = dict(perplexity=cfg.perplexity, early_exaggeration=cfg.early_exaggeration, n_iter=cfg.n_iter - 250,
                    random_state=cfg.seed, n_jobs=1)
    given = PerplexityBasedNN(knn_index=PrecomputedNeighbors(idx, dist), perplexity=cfg.perplexity, n_jobs=1,
                              random_state=cfg.seed)
    ref = openTSNE.TSNE(**settings).fit(x, affinities=given)
    with np.load(run / "tsne" / "embedding.npz") as f:
        np.testing.assert_array_equal(f["embedding"], np.asarray(ref, np.float32))
    # the graph is openTSNE's own exact one (sklearn brute force), but for near-ties at the k-th neighbour
    from openTSNE.affinity import get_knn_index

    own_idx, own_dist = get_knn_index(x, "exact", k=60, metric="euclidean", n_jobs=1, random_state=0).build()
    np.testing.assert_allclose(dist, own_dist, rtol=1e-5)
    differ = np.flatnonzero((np.sort(idx, axis=1) != np.sort(own_idx, axis=1)).any(axis=1))
    assert len(differ) <= 0.02 * len(x), len(differ)
    for r in differ:  # only the last neighbour swaps, with one at the same distance to rounding
        assert set(idx[r, :-1]) == set(own_idx[r, :-1]) and own_dist[r, -1] == pytest.approx(dist[r, -1], rel=1e-5)
    # and a map of the same quality as openTSNE's exact path (t-SNE's sign-driven gains make maps from
    # affinities equal only to rounding differ point by point, so compare quality, not coordinates)
    alone = openTSNE.TSNE(**settings, neighbors="exact").fit(x)
    assert result["kl_divergence"]["data"] == pytest.approx(alone.kl_divergence, rel=0.02)

    # too few neighbours for the perplexity: computed afresh
    again = compute_tsne(run, TSNEConfig(**{**FAST, "perplexity": 25}, null=False), progress=False)
    assert again["neighbours"]["data"].startswith("exact, computed") and again["neighbours"]["k"] == 75


def test_uniform_affinity_equals_openTSNE_uniform_on_the_same_neighbours(tmp_path):
    """The faster setting: uniform weights on k neighbours. The map is openTSNE's ``TSNE.fit`` with ``Uniform``
    affinities on the same exact neighbours, keeps the planted clusters apart, and place_points uses it too."""
    import openTSNE
    from openTSNE.affinity import Uniform
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    from engine.analysis.knn import knn_graph

    run, labels = _planted_run(tmp_path)
    cfg = TSNEConfig(**FAST, null=False, affinity="uniform", uniform_k=10)
    result = compute_tsne(run, cfg, progress=False)
    assert result["neighbours"]["k"] == 10 and result["config"]["affinity"] == "uniform"
    x = zarr.open_group(latents_path(run), mode="r")["z"][:]
    dist, idx = knn_graph(x, 10)
    ref = openTSNE.TSNE(perplexity=cfg.perplexity, early_exaggeration=cfg.early_exaggeration, n_iter=cfg.n_iter - 250,
                        random_state=cfg.seed, n_jobs=1).fit(
        x, affinities=Uniform(knn_index=PrecomputedNeighbors(idx, dist), k_neighbors=10, n_jobs=1, random_state=cfg.seed))
    with np.load(run / "tsne" / "embedding.npz") as f:
        emb = f["embedding"]
    np.testing.assert_array_equal(emb, np.asarray(ref, np.float32))
    assert _knn_accuracy(emb, labels) > 0.98
    placed = place_points(run, _draw(np.random.default_rng(5), 1, 20))
    nearest = ((placed[:, None, :] - emb[None, :, :]) ** 2).sum(-1).argmin(axis=1)
    assert (labels[nearest] == 1).mean() > 0.9
    with pytest.raises(ValueError, match="uniform_k"):
        TSNEConfig(affinity="uniform", uniform_k=0)
    with pytest.raises(ValueError, match="affinity"):
        TSNEConfig(affinity="gaussian")
