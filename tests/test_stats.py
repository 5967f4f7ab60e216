"""zspace stats on planted latents: the JSON reports what was planted, blockwise equals one-shot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from PIL import Image
from scipy import stats as sstats

from engine.analysis.distributions import sigma_probability
from engine.analysis.stats import StatsConfig, compute_stats
from engine.latents.importer import import_latents

D = 24
DOMINANT = {5: (5.0, 4.0), 17: (-3.0, 3.0)}  # index: (centre, width), as the study saw them
PAIRS = {(2, 9): 0.8, (4, 12): -0.6}


def planted(n=30000, seed=0):
    """A multivariate normal with unit bulk, two off-centre wide components and two correlated pairs."""
    rng = np.random.default_rng(seed)
    cov = np.eye(D)
    mean = np.zeros(D)
    for (i, j), r in PAIRS.items():
        cov[i, j] = cov[j, i] = r
    std = np.ones(D)
    for k, (c, s) in DOMINANT.items():
        mean[k], std[k] = c, s
    cov = cov * np.outer(std, std)
    return rng.multivariate_normal(mean, cov, size=n).astype(np.float32), mean, cov


@pytest.fixture(scope="module")
def stats_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("stats")
    z, mean, cov = planted()
    np.save(run / "z.npy", z)
    import_latents(run / "z.npy", run, progress=False)
    res = compute_stats(run, StatsConfig(block_rows=7000), progress=False)
    return run, z, mean, cov, res


def test_json_reports_the_planted_cloud(stats_run):
    run, z, mean, cov, res = stats_run
    saved = json.loads((run / "stats" / "stats.json").read_text())
    assert saved["dominant"] == sorted(DOMINANT) == res["dominant"]
    comps = saved["components"]
    assert [c["index"] for c in comps] == list(range(D))
    assert all(c["dominant"] == (c["index"] in DOMINANT) for c in comps)
    for c in comps:
        want_std = DOMINANT.get(c["index"], (0, 1))[1]
        assert abs(c["mean"] - mean[c["index"]]) < 0.06 * want_std, c
        assert abs(c["std"] / want_std - 1) < 0.03, c
        assert abs(c["fit_sigma"] / want_std - 1) < 0.05, c
        assert c["fwhm"] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * c["fit_sigma"], rel=1e-12) and c["fit_r2"] > 0.98, c
    np.testing.assert_allclose([c["mean"] for c in comps], z.astype(np.float64).mean(0), atol=1e-9)
    np.testing.assert_allclose([c["std"] for c in comps], z.astype(np.float64).std(0, ddof=1), rtol=1e-9)
    top = saved["correlation"]["top_pairs"]
    assert {(p["i"], p["j"]) for p in top[:2]} == set(PAIRS)
    for p in top[:2]:
        assert abs(p["r"] - PAIRS[(p["i"], p["j"])]) < 0.02, p
    assert "rule" in saved["dominant_rule"]


def test_radius_and_pca_match_numpy(stats_run):
    run, z, mean, cov, res = stats_run
    z64 = z.astype(np.float64)
    r = np.linalg.norm(z64, axis=1)
    rad = res["radius"]
    assert rad["mean"] == pytest.approx(r.mean(), rel=1e-9) and rad["max"] == pytest.approx(r.max(), rel=1e-9)
    var = z64.var(0, ddof=1)
    assert rad["expected"] == pytest.approx(np.sqrt((z64.mean(0) ** 2 + var).sum()), rel=1e-9)
    assert rad["sqrt_d"] == pytest.approx(np.sqrt(D))
    for w in (0.5, 0.05):
        counts, edges = np.histogram(r, bins=np.arange(0, r.max() + w, w))
        assert rad["peak_by_bin_width"][str(w)] == pytest.approx(edges[counts.argmax()] + w / 2), w
    ev = np.sort(np.linalg.eigvalsh(np.cov(z64, rowvar=False)))[::-1]
    np.testing.assert_allclose(res["pca"]["explained_variance_ratio"], ev / ev.sum(), rtol=1e-8)
    cum = np.cumsum(ev / ev.sum())
    assert res["pca"]["n_components_90"] == int(np.searchsorted(cum, 0.9) + 1)
    # PCA coordinates streamed into latents.zarr equal the projection onto the eigenvectors, up to sign
    g = zarr.open_group(run / "latents.zarr", mode="r")
    y = g["pca"][:]
    comps = g["pca_components"][:]
    np.testing.assert_allclose(y, (z64 - z64.mean(0)) @ comps.T, atol=2e-4)
    w, v = np.linalg.eigh(np.cov(z64, rowvar=False))
    ref = (z64 - z64.mean(0)) @ v[:, ::-1][:, :3]
    for k in range(3):
        assert abs(np.corrcoef(y[:, k], ref[:, k])[0, 1]) > 0.9999


def test_normal_cloud_passes_the_normality_checks(stats_run):
    *_, res = stats_run
    for part in ("full", "core"):
        s = res["normality"][part]
        assert s["ks_distance"] < 0.02, (part, s["ks_distance"])
        for e in s["ellipsoids"]:
            assert abs(e["share"] - e["expected"]) < 0.01, (part, e)
    assert res["normality"]["core"]["share_of_points"] == pytest.approx(sigma_probability(3), abs=0.002)


def test_non_normal_cloud_fails_them(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, size=(20000, 12)) ** 3  # heavy centre, light shoulders
    np.save(tmp_path / "z.npy", z)
    import_latents(tmp_path / "z.npy", tmp_path, progress=False)
    res = compute_stats(tmp_path, StatsConfig(figures=False), progress=False)
    assert res["normality"]["full"]["ks_distance"] > 0.05
    one = res["normality"]["full"]["ellipsoids"][0]
    assert abs(one["share"] - one["expected"]) > 0.03, one


def test_blockwise_equals_one_shot(stats_run, tmp_path):
    run, z, *_, res = stats_run
    np.save(tmp_path / "z.npy", z)
    import_latents(tmp_path / "z.npy", tmp_path, progress=False)
    one = compute_stats(tmp_path, StatsConfig(block_rows=len(z), figures=False), progress=False)
    for key, tol in (("mean", 1e-12), ("std", 1e-12), ("fit_center", 1e-6), ("fwhm", 1e-6)):
        # moments agree to rounding; the fits start from them and stop at the optimiser's tolerance
        np.testing.assert_allclose([c[key] for c in one["components"]], [c[key] for c in res["components"]],
                                   rtol=tol, atol=tol, err_msg=key)
    np.testing.assert_allclose(np.load(tmp_path / "stats" / "covariance.npy"), np.load(run / "stats" / "covariance.npy"),
                               rtol=1e-10, atol=1e-12)
    a, b = np.load(tmp_path / "stats" / "density.npz"), np.load(run / "stats" / "density.npz")
    np.testing.assert_array_equal(a["counts"], b["counts"])
    assert one["normality"]["full"]["ks_distance"] == pytest.approx(res["normality"]["full"]["ks_distance"], abs=1e-9)


def test_density_counts_equal_np_histogram(stats_run):
    run, z, *_ = stats_run
    dens = np.load(run / "stats" / "density.npz")
    for j in (0, 5, 17, D - 1):
        ref, _ = np.histogram(z[:, j], bins=dens["edges"])
        np.testing.assert_array_equal(dens["counts"][j], ref)
    assert np.diff(dens["edges"]) == pytest.approx(0.25)


def test_outputs_and_figures(stats_run):
    run, *_, res = stats_run
    out = run / "stats"
    expect = {"density_all.png", "dominant.png", "radius.png", "correlation.png", "scree.png", "pairs.png", "qq.png"}
    assert set(res["figures"]) == expect
    for name in expect:
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert np.load(out / "correlation.npy").shape == (D, D)
    assert (out / "components.csv").read_text().splitlines()[0].startswith("index,mean,std")
    assert len((out / "top_pairs.csv").read_text().splitlines()) == 1 + len(res["correlation"]["top_pairs"])


def test_nan_rows_in_the_store_are_an_error(tmp_path):
    g = zarr.open_group(tmp_path / "latents.zarr", mode="w")
    z = np.zeros((100, 3), np.float32)
    z[:, 0] = np.arange(100)
    z[42, 1] = np.nan
    g.create_array("z", shape=z.shape, dtype="float32", chunks=(50, 3))[:] = z
    with pytest.raises(ValueError, match="row 42"):
        compute_stats(tmp_path, StatsConfig(figures=False), progress=False)


def test_in_sample_reference_is_exact_when_n_is_a_few_times_d():
    from engine.analysis.distributions import MahalanobisReference, ks_distance

    rng = np.random.default_rng(3)
    n, d = 600, 240
    x = rng.normal(size=(n, d))
    xc = x - x.mean(0)
    d2 = np.sort(np.einsum("ij,jk,ik->i", xc, np.linalg.inv(np.cov(x, rowvar=False)), xc))
    exact = ks_distance(d2, MahalanobisReference(n, d))
    cdf = sstats.chi2.cdf(d2, d)
    naive = np.abs(np.arange(1, n + 1) / n - cdf).max()
    assert exact < 0.05 < naive, f"Beta reference KS {exact:.3f}, plain chi-square KS {naive:.3f}"
    assert MahalanobisReference(10**7, d).ppf(0.5) == pytest.approx(sstats.chi2.ppf(0.5, d), rel=1e-4)
