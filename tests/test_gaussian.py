"""GaussianFit, the one fitted normal: against numpy and scipy.stats.multivariate_normal."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import stats as sstats

from engine.analysis.gaussian import GaussianFit, principal_axes


@pytest.fixture(scope="module")
def cloud() -> np.ndarray:
    """A correlated, off-centre 12-D cloud (float32, as latents are stored)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 12))
    x = rng.normal(size=(5000, 12)) @ a + np.linspace(-3, 5, 12)
    return x.astype(np.float32)


def test_moments_and_axes_equal_numpy(cloud):
    fit = GaussianFit(block_rows=700).fit(cloud)  # several blocks: the pairwise merge is exercised
    x = cloud.astype(np.float64)
    cov = np.cov(x, rowvar=False)
    assert fit.n_samples_ == len(x)
    np.testing.assert_allclose(fit.mean_, x.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fit.covariance_, cov, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit.std_, x.std(0, ddof=1), rtol=1e-9)
    w = np.linalg.eigvalsh(cov)[::-1]
    np.testing.assert_allclose(fit.eigenvalues_, w, rtol=1e-8)
    v = fit.eigenvectors_
    np.testing.assert_allclose(v.T @ v, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(v @ np.diag(fit.eigenvalues_) @ v.T, cov, rtol=1e-8, atol=1e-8)
    assert np.all(np.diff(fit.eigenvalues_) <= 0), "eigenvalues must be descending"
    assert fit.rank_ == 12 and fit.retained_.all()


def test_blockwise_equals_one_shot_and_zarr_equals_numpy(cloud, tmp_path):
    one = GaussianFit(block_rows=len(cloud)).fit(cloud)
    blocks = GaussianFit(block_rows=333).fit(cloud)
    z = zarr.open_array(tmp_path / "z.zarr", mode="w", shape=cloud.shape, chunks=(512, 12), dtype="float32")
    z[:] = cloud
    stored = GaussianFit().fit(z)
    for other in (blocks, stored):
        np.testing.assert_allclose(other.mean_, one.mean_, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(other.covariance_, one.covariance_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(other.eigenvectors_, one.eigenvectors_, atol=1e-8)


def test_sign_convention_is_deterministic(cloud):
    """The largest-magnitude entry of every axis is positive, whatever sign LAPACK returns."""
    fit = GaussianFit().fit(cloud)
    v = fit.eigenvectors_
    assert np.all(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] > 0)
    w2, v2 = principal_axes(fit.covariance_ * 1.0)
    flipped = -v2  # the same basis with every sign flipped must map back to the same convention
    w3, v3 = principal_axes(flipped @ np.diag(w2) @ flipped.T)
    np.testing.assert_allclose(v3, v, atol=1e-8)


def test_mahalanobis_and_whitening_equal_scipy(cloud):
    fit = GaussianFit().fit(cloud)
    q = cloud[:200].astype(np.float64)
    ref = sstats.multivariate_normal(mean=fit.mean_, cov=fit.covariance_)
    # log pdf = -0.5 (d^2 + D log 2 pi + log det cov)
    logdet = np.linalg.slogdet(fit.covariance_)[1]
    d2_ref = -2 * ref.logpdf(q) - 12 * np.log(2 * np.pi) - logdet
    np.testing.assert_allclose(fit.mahalanobis2(q), d2_ref, rtol=1e-7)
    np.testing.assert_allclose(fit.mahalanobis(q), np.sqrt(d2_ref), rtol=1e-7)
    y = fit.whiten(cloud)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(12), atol=1e-8)
    np.testing.assert_allclose(fit.project(q, 3), (q - fit.mean_) @ fit.eigenvectors_[:, :3], rtol=1e-12)


def test_singular_cloud_whitens_on_its_retained_axes():
    """Points on a 3-D plane in 6-D: three null axes, whitened to 0, Mahalanobis against the pseudo-inverse."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 6))).astype(np.float32)
    fit = GaussianFit().fit(x)
    assert fit.rank_ == 3 and fit.retained_.tolist() == [True] * 3 + [False] * 3
    y = fit.whiten(x)
    np.testing.assert_allclose(y[:, 3:], 0.0)
    pinv = np.linalg.pinv(fit.covariance_, rcond=1e-6, hermitian=True)
    c = x.astype(np.float64) - fit.mean_
    np.testing.assert_allclose(fit.mahalanobis2(x[:50]), np.einsum("ij,jk,ik->i", c[:50], pinv, c[:50]), rtol=1e-4)


def test_samples_have_the_fitted_moments(cloud):
    fit = GaussianFit().fit(cloud)
    s = fit.sample(200_000, np.random.default_rng(2))
    assert s.dtype == np.float32 and s.shape == (200_000, 12)
    np.testing.assert_allclose(s.mean(0), fit.mean_, atol=0.05 * fit.std_.max())
    np.testing.assert_allclose(np.cov(s, rowvar=False), fit.covariance_, atol=0.02 * fit.eigenvalues_[0])
    same = fit.sample(200_000, np.random.default_rng(2))
    assert np.array_equal(s, same), "the same seed must give the same draws"
    # drawn in blocks, the stream equals one draw of the whole
    g = np.random.default_rng(3).standard_normal((70_000, 12))
    np.testing.assert_allclose(fit.sample(70_000, np.random.default_rng(3)),
                               (fit.mean_ + g @ fit.root_.T).astype(np.float32), rtol=1e-6, atol=1e-5)


def test_bad_input_is_a_clear_error(cloud):
    with pytest.raises(ValueError, match="shape"):
        GaussianFit().fit(cloud[0])
    bad = cloud.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        GaussianFit().fit(bad)
    with pytest.raises(ValueError, match="more than ddof"):
        GaussianFit().fit(cloud[:1])
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        GaussianFit().fit(cloud).mahalanobis2(np.zeros((3, 5)))
