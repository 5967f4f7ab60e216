"""Local PCA and intrinsic dimension: the kernels equal their numpy references
(kernels/reference.py: np.cov + eigvalsh of every D x D neighbourhood
covariance), serial equals parallel, and on a planted cloud (a helix and a
10-D Gaussian blob, both embedded in 64-D) the estimators recover the
dimensions that were put in."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from kernels.intrinsic import levina_bickel_dimension, twonn_dimension, twonn_mle
from kernels.localdim import local_dim_summary, local_dim_summary_serial, local_pca, local_pca_serial
from kernels.reference import COMPARISONS


def random_neighbourhoods(rng, n, k):
    """(n, k) int64: k distinct random rows per point, point i first (as kNN with self gives)."""
    r = rng.random((n, n))
    np.fill_diagonal(r, -1.0)
    nb = np.argsort(r, axis=1)[:, :k]
    return np.ascontiguousarray(nb, dtype=np.int64)


def cloud(rng, n, d):
    # Off-centre and anisotropic like real latents: the offset makes the
    # centring cancel, the scales spread the eigenvalues over two decades.
    scales = np.geomspace(0.1, 3.0, d)
    return (rng.standard_normal((n, d)) * scales + 4.0).astype(np.float32)


def summaries(eig, serial=False):
    n = eig.shape[0]
    f = local_dim_summary_serial if serial else local_dim_summary
    return f(eig, np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.float32))


@pytest.mark.parametrize("k,d", [(8, 32), (16, 32), (8, 256), (16, 256), (16, 8)])
def test_local_pca_matches_numpy_eigh(k, d):
    rng = np.random.default_rng(1000 * k + d)
    n = 150
    # k extra copies of row 7 after the n generic rows: row 0's neighbourhood
    # is those identical points; row 1 repeats one neighbour (rank k - 2).
    z = cloud(rng, n + k, d)
    z[n:] = z[7]
    nb = random_neighbourhoods(rng, n, k)
    nb[0] = np.arange(n, n + k)
    nb[1, 2] = nb[1, 1]
    ours_f, ref_f = COMPARISONS["local_pca"]
    ours, ref = ours_f(z, nb), ref_f(z, nb)
    m = min(k, d)
    assert ours.shape == ref.shape == (n, m)
    assert np.all(ours[0] == 0.0), f"identical points must give exactly zero eigenvalues, got {ours[0]}"
    assert np.all(np.diff(ours, axis=1) <= 0), "eigenvalues must be descending"
    scale = ref[:, :1].copy()
    scale[0] = 1.0
    err = np.abs(ours - ref) / scale
    assert err.max() < 1e-10, f"max |ours - eigh| / l_max = {err.max():.3g} at row {np.unravel_index(err.argmax(), err.shape)}"
    # The leading (well separated from the null space) eigenvalues, relatively.
    rank = min(k - 1, d)
    lead = slice(2, None)  # rows 0 and 1 are the planted degenerate ones
    rel = np.abs(ours[lead, :rank] / ref[lead, :rank] - 1)
    assert rel.max() < 1e-6, f"max relative error on the nonzero eigenvalues {rel.max():.3g}"


def test_local_pca_serial_equals_parallel_and_summary_matches_numpy():
    rng = np.random.default_rng(5)
    n, k, d = 400, 16, 64
    z = cloud(rng, n, d)
    nb = random_neighbourhoods(rng, n, k)
    z[-k:] = z[3]
    nb[10] = np.arange(n - k, n)  # all-zero eigenvalues -> degenerate summary
    par = local_pca(z, nb, np.empty((n, k)))
    ser = local_pca_serial(z, nb, np.empty((n, k)))
    assert np.array_equal(par, ser), f"serial and parallel differ by up to {np.abs(par - ser).max():.3g}"

    sp, ss = summaries(par), summaries(par, serial=True)
    for a, b in zip(sp, ss):
        assert np.array_equal(a, b), "local_dim_summary: serial and parallel differ"
    n90, pr, lin = sp
    rn90, rpr, rlin = COMPARISONS["local_dim_summary"][1](par)
    bad = np.flatnonzero(n90 != rn90)
    assert bad.size == 0, f"n90 differs at {bad[:5]}: ours {n90[bad[:5]]} vs numpy {rn90[bad[:5]]}"
    np.testing.assert_allclose(pr, rpr, rtol=1e-6, err_msg="participation ratio vs numpy")
    np.testing.assert_allclose(lin, rlin, rtol=1e-6, atol=1e-7, err_msg="linearity vs numpy")
    assert (n90[10], pr[10], lin[10]) == (0, 0.0, 0.0), f"degenerate row gave {(n90[10], pr[10], lin[10])}"
    rest = np.delete(n90, 10)
    assert np.all((rest >= 1) & (rest <= k)), f"n90 out of [1, {k}]: {np.unique(rest)}"


def test_local_dim_summary_hand_values():
    eig = np.array([[4.0, 0.0, 0.0],     # one direction: n90 1, pr 1, lin 1
                    [1.0, 1.0, 1.0],     # three equal: n90 3, pr 3, lin 0
                    [9.0, 0.5, 0.5],     # 9 / 10 = 0.9 exactly reaches 90%: n90 1
                    [0.0, 0.0, 0.0],     # degenerate
                    [np.nan, 1.0, 0.0]])  # NaN (a row local_pca could not solve)
    n90, pr, lin = summaries(eig)
    assert n90.tolist() == [1, 3, 1, 0, 0], n90
    np.testing.assert_allclose(pr, [1.0, 3.0, 100 / 81.5, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(lin, [1.0, 0.0, 8.5 / 9, 0.0, 0.0], rtol=1e-6)


def test_local_pca_nan_row_and_bad_input():
    rng = np.random.default_rng(2)
    z = cloud(rng, 40, 8)
    nb = random_neighbourhoods(rng, 40, 4)
    z[5, 3] = np.nan
    out = local_pca(z, nb, np.empty((40, 4)))
    has_nan = (nb == 5).any(axis=1)
    assert np.isnan(out[has_nan]).all() and np.isfinite(out[~has_nan]).all()
    with pytest.raises(ValueError, match="float32"):
        local_pca(z.astype(np.float64), nb, np.empty((40, 4)))
    with pytest.raises(ValueError, match="index rows"):
        local_pca(z, nb + 1, np.empty((40, 4)))
    with pytest.raises(ValueError, match="k >= 2"):
        local_pca(z, nb[:, :1].copy(), np.empty((40, 1)))
    with pytest.raises(ValueError, match="out_eigvals"):
        local_pca(z, nb, np.empty((40, 8)))


# --- planted cloud -----------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    """2,000 points on a helix and 5,000 from a 10-D standard Gaussian, rotated
    at random into 64-D, the blob 50 away (so no kNN crosses between them);
    exact brute-force kNN of the union (k = 16, self included for local PCA)."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    t = np.sort(rng.uniform(0, 6 * np.pi, 2000))
    helix = np.stack([np.cos(t), np.sin(t), 0.3 * t], axis=1) @ basis[:3]
    blob = rng.normal(size=(5000, 10)) @ basis[3:13] + 50 * basis[13]
    z = np.concatenate([helix, blob]).astype(np.float32)
    dist, ind = NearestNeighbors(n_neighbors=17, algorithm="brute").fit(z).kneighbors(z)
    assert np.all(ind[:, 0] == np.arange(len(z))), "self must be its own nearest neighbour (no duplicates)"
    assert (ind[:2000] < 2000).all() and (ind[2000:] >= 2000).all(), "kNN crosses between curve and blob"
    nb = np.ascontiguousarray(ind[:, :16], dtype=np.int64)
    eig = local_pca(z, nb, np.empty((len(z), 16)))
    return {"eig": eig, "dist": dist[:, 1:].astype(np.float64), "curve": slice(0, 2000), "blob": slice(2000, None)}


def test_planted_cloud_local_dimension(planted):
    n90, pr, lin = summaries(planted["eig"])
    c, b = planted["curve"], planted["blob"]
    # Curve: an arc of 16 neighbours (length ~0.16 against a radius of
    # curvature ~1.1) is a line to within its sagitta: measured median PR
    # 1.001, linearity 1.000 (5th percentile 0.999) over seeds 0-3.
    assert np.median(n90[c]) == 1, f"curve median n90 {np.median(n90[c])}"
    assert np.percentile(pr[c], 95) < 1.05, f"curve PR 95th percentile {np.percentile(pr[c], 95):.3f}"
    assert np.percentile(lin[c], 5) > 0.95, f"curve linearity 5th percentile {np.percentile(lin[c], 5):.3f}"
    # Blob: 16 points in 10 isotropic dims have a sample covariance with
    # Wishart-spread eigenvalues, E[PR] ~ p / (1 + p / (k - 1)) = 10 / (1 + 10/15)
    # = 6.0; measured median PR 6.03-6.05 and median n90 7 over seeds 0-3.
    assert 5.0 < np.median(pr[b]) < 7.0, f"blob median PR {np.median(pr[b]):.2f} (expected ~6.0)"
    assert 6 <= np.median(n90[b]) <= 8, f"blob median n90 {np.median(n90[b])}"
    assert np.median(lin[b]) < 0.5, f"blob median linearity {np.median(lin[b]):.3f}"
    # Nothing of the blob's 10 dims leaks past the null space of 16 points.
    assert n90[b].max() <= 10


def test_planted_cloud_global_dimension(planted):
    d, c, b = planted["dist"], planted["curve"], planted["blob"]
    # Measured (seeds 0-3): TwoNN blob 9.65-9.92, curve 0.99-1.04;
    # Levina-Bickel k=16 blob 9.39-9.48 (the MLE is biased low at d=10 by the
    # density falling off across the 16-neighbour ball).
    twonn_blob = twonn_mle(d[b, 0], d[b, 1])
    twonn_blob_paper = twonn_dimension(d[b, 0], d[b, 1])
    twonn_curve = twonn_dimension(d[c, 0], d[c, 1])
    lb_blob, lb_per_point = levina_bickel_dimension(d[b], 16)
    lb_curve, _ = levina_bickel_dimension(d[c], 16)
    assert abs(twonn_blob - 10) < 1.5, f"TwoNN on the 10-D blob: {twonn_blob:.2f}"
    assert abs(twonn_blob_paper - 10) < 1.5, f"TwoNN (10% discarded) on the 10-D blob: {twonn_blob_paper:.2f}"
    assert abs(twonn_curve - 1) < 0.2, f"TwoNN on the curve: {twonn_curve:.2f}"
    assert abs(lb_blob - 10) < 2, f"Levina-Bickel on the 10-D blob: {lb_blob:.2f}"
    assert abs(lb_curve - 1) < 0.2, f"Levina-Bickel on the curve: {lb_curve:.2f}"
    assert lb_per_point.shape == (5000,) and np.isfinite(lb_per_point).all()


def test_twonn_on_exact_pareto_and_duplicates():
    # mu = r2 / r1 is exactly Pareto(d) for a locally uniform d-dim density;
    # the MLE n / sum(log mu) is then within ~d / sqrt(n) of d.
    rng = np.random.default_rng(3)
    n, dim = 200_000, 7.0
    mu = (1 - rng.random(n)) ** (-1 / dim)
    r1 = rng.uniform(0.5, 2.0, n)
    r2 = r1 * mu
    assert abs(twonn_mle(r1, r2) - dim) < 0.05
    assert abs(twonn_dimension(r1, r2) - dim) < 0.1
    # Duplicates (r1 == 0) are skipped, not turned into inf/NaN.
    r1d, r2d = np.append(r1, [0.0, 0.0]), np.append(r2, [0.0, 1.0])
    assert twonn_mle(r1d, r2d) == twonn_mle(r1, r2)
    assert twonn_dimension(r1d, r2d) == twonn_dimension(r1, r2)
    with pytest.raises(ValueError, match="r2 must be >= r1"):
        twonn_dimension(r2, r1)
    with pytest.raises(ValueError, match="discard_fraction"):
        twonn_dimension(r1, r2, discard_fraction=1.0)


def test_levina_bickel_on_poisson_distances_and_duplicates():
    # For a Poisson process in d dims, T_j^d are the arrival times of a 1-D
    # unit Poisson process, and E[mean_j log(T_k / T_j)] = 1/d exactly, so the
    # MacKay-Ghahramani average recovers d.
    rng = np.random.default_rng(4)
    n, dim, k = 40_000, 5.0, 12
    t = np.cumsum(rng.exponential(size=(n, k)), axis=1) ** (1 / dim)
    est, per_point = levina_bickel_dimension(t, k)
    assert abs(est - dim) < 0.1, f"Levina-Bickel on exact Poisson distances: {est:.3f}"
    # Per-point values are the inverses of the per-point mean log ratios.
    lt = np.log(t[0])
    assert per_point[0] == pytest.approx(1 / np.mean(lt[-1] - lt[:-1]), rel=1e-12)
    t[:10, 0] = 0.0  # duplicates: skipped
    est2, per_point2 = levina_bickel_dimension(t, k)
    assert np.isnan(per_point2[:10]).all() and np.isfinite(per_point2[10:]).all()
    inv = 1 / per_point[10:]
    assert est2 == pytest.approx(1 / inv.mean(), rel=1e-12)
    with pytest.raises(ValueError, match="sorted ascending"):
        levina_bickel_dimension(t[:, ::-1], k)
    with pytest.raises(ValueError, match="k must be"):
        levina_bickel_dimension(t, k + 1)


def _skdim_clouds():
    """Planted clouds: a 10-D normal in 64-D, a 3-D curve-like set, and a 20-D normal 5% of whose points are
    near-duplicates (a copy of another point plus noise 0.02), where the MLE form of TwoNN collapses."""
    rng = np.random.default_rng(7)
    blob = np.zeros((3000, 64))
    blob[:, :10] = rng.standard_normal((3000, 10))
    t = rng.uniform(0, 4 * np.pi, 3000)
    curve = np.stack([np.cos(t), np.sin(t), t / 4], 1) + rng.normal(0, 0.01, (3000, 3)) @ np.eye(3)
    base = rng.standard_normal((3800, 20))
    near = base[rng.choice(3800, 200, replace=False)] + rng.normal(0, 0.02, (200, 20))
    return {"blob10": blob, "curve": curve, "normal20_dups": np.concatenate([base, near])}


def test_twonn_and_levina_bickel_equal_scikit_dimension():
    # The field's reference implementations: zspace's estimators, fed the exact neighbour distances, must read
    # what scikit-dimension reads from the raw points (1e-3 relative).
    skdim = pytest.importorskip("skdim")
    from sklearn.neighbors import NearestNeighbors

    for name, x in _skdim_clouds().items():
        dist, _ = NearestNeighbors(n_neighbors=17).fit(x).kneighbors(x)
        dist = dist[:, 1:]  # the point itself excluded
        ours = twonn_dimension(dist[:, 0], dist[:, 1])
        theirs = skdim.id.TwoNN().fit(x).dimension_
        assert ours == pytest.approx(theirs, rel=1e-3), (name, ours, theirs)
        ours_lb, _ = levina_bickel_dimension(dist, 16)
        theirs_lb = skdim.id.MLE().fit(x, n_neighbors=16).dimension_
        assert ours_lb == pytest.approx(theirs_lb, rel=1e-3), (name, ours_lb, theirs_lb)
        if name == "normal20_dups":
            # near-duplicates: mu = r2 / r1 is huge for 2 x 200 points; the MLE's sum of log mu explodes, the
            # published fit discards the largest 10% of mu and stays near the cloud's dimension
            mle = twonn_mle(dist[:, 0], dist[:, 1])
            assert mle < 5 and ours > 10, (mle, ours)
