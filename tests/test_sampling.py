"""Samplers draw what they promise, on planted latents with known moments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sstats

from engine.generation.sampling import SAMPLERS, Sampler, SamplerConfig

D = 6


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D)) * 0.6
    cov = a @ a.T + np.diag(rng.uniform(0.2, 1.0, D))
    mean = rng.normal(size=D) * 3
    z = rng.multivariate_normal(mean, cov, size=40000).astype(np.float32)
    return z, z.astype(np.float64).mean(0), np.cov(z, rowvar=False)


def draw(name, z, n=20000, **kw):
    return Sampler(name, SamplerConfig(**kw), seed=1).fit(z, test_rows=np.arange(100)).sample(n)


def test_uniform_box_gauss(planted):
    z, mean, cov = planted
    u = draw("uniform", z)
    assert np.abs(u).max() <= 1.5 and np.allclose(u.mean(0), 0, atol=0.03) and np.allclose(u.var(0), 1.5**2 / 3, rtol=0.05)
    std = np.sqrt(np.diag(cov))
    b = draw("box", z, box_sigmas=2.0)
    assert (b >= mean - 2 * std - 1e-4).all() and (b <= mean + 2 * std + 1e-4).all()
    np.testing.assert_allclose(b.var(0), (4 * std) ** 2 / 12, rtol=0.05)
    g = draw("gauss", z)
    np.testing.assert_allclose(g.mean(0), mean, atol=0.05 * std.max())
    np.testing.assert_allclose(g.std(0), std, rtol=0.03)
    off = np.corrcoef(g, rowvar=False)[np.triu_indices(D, 1)]
    assert np.abs(off).max() < 0.05, "independent components"


def test_mvn_has_the_full_covariance(planted):
    z, mean, cov = planted
    m = draw("mvn", z, n=40000)
    np.testing.assert_allclose(m.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(m, rowvar=False), cov, atol=0.06 * np.abs(cov).max())


def test_mvn_core_stays_inside_its_radius(planted):
    z, mean, cov = planted
    s = Sampler("mvn-core", SamplerConfig(core_quantile=0.5), seed=2).fit(z)
    x = s.sample(5000)
    r2 = s.mahalanobis2(x)
    assert r2.max() <= sstats.chi2.ppf(0.5, D) * (1 + 1e-4)
    # a truncated chi-square: its median sits at the 25% point of the full one
    assert np.median(r2) == pytest.approx(sstats.chi2.ppf(0.25, D), rel=0.05)


def test_gmm_reproduces_a_mixture():
    rng = np.random.default_rng(3)
    centres = np.array([[-5.0] * D, [5.0] * D])
    z = np.concatenate([rng.normal(size=(3000, D)) + centres[0], rng.normal(size=(1000, D)) + centres[1]]).astype(np.float32)
    x = Sampler("gmm", SamplerConfig(gmm_components=2), seed=0).fit(z).sample(8000)
    share = (x[:, 0] > 0).mean()
    assert share == pytest.approx(0.25, abs=0.02)
    assert abs(x[x[:, 0] < 0].mean(0) - centres[0]).max() < 0.1


def test_gmm_components_keep_their_covariance():
    rng = np.random.default_rng(4)
    mix = np.eye(D) + 0.6 * np.triu(rng.normal(size=(D, D)), 1)  # a correlated first component
    z = np.concatenate([rng.normal(size=(6000, D)) @ mix - 8.0, rng.normal(size=(2000, D)) + 8.0]).astype(np.float32)
    x = Sampler("gmm", SamplerConfig(gmm_components=2), seed=1).fit(z).sample(12000)
    first = x[x.mean(1) < 0]
    np.testing.assert_allclose(np.cov(first, rowvar=False), mix.T @ mix, atol=0.15 * np.abs(mix.T @ mix).max())


def test_origin_and_data(planted):
    z, *_ = planted
    o = draw("origin", z, n=7, origin_radii=(0.5, 1.0, 2.0))
    assert (o[0] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(o[1:], axis=1), [0.5, 1, 2, 0.5, 1, 2], rtol=1e-5)
    d = draw("data", z, n=50)
    pool = {row.tobytes() for row in z[:100]}
    assert all(row.tobytes() in pool for row in d), "data samples are latents of the held-out rows"


def test_every_sampler_is_seeded_and_finite(planted):
    z, *_ = planted
    for name in SAMPLERS:
        a = Sampler(name, SamplerConfig(gmm_components=2), seed=5).fit(z[:3000]).sample(64)
        b = Sampler(name, SamplerConfig(gmm_components=2), seed=5).fit(z[:3000]).sample(64)
        assert a.shape == (64, D) and a.dtype == np.float32 and np.isfinite(a).all(), name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_bad_names_and_settings():
    with pytest.raises(ValueError, match="sampler must be one of"):
        Sampler("normal")
    with pytest.raises(ValueError, match="core_quantile"):
        SamplerConfig(core_quantile=0)


def test_generate_decodes_every_sampler(tmp_path):
    import json

    from engine.data.imagecache import prepare
    from engine.generation.generate import generate
    from engine.model.autoencoder import ModelConfig
    from engine.model.encode import encode
    from engine.model.train import TrainConfig, train

    prepare("synthetic:200", tmp_path, size=32, workers=1, progress=False)
    train(tmp_path, TrainConfig(epochs=1, batch_size=32, device="cpu", grid_images=2),
          ModelConfig(size=32, z_dim=8, widths=(4, 8, 8, 8)), progress=False)
    encode(tmp_path, device="cpu", progress=False)
    for name in SAMPLERS:
        info = generate(tmp_path, name, n=12, seed=3, config=SamplerConfig(gmm_components=2), device="cpu")
        out = tmp_path / "generate" / name
        images = np.load(out / "images.npy")
        z = np.load(out / "z.npy")
        assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and z.shape == (12, 8), name
        assert json.loads((out / "sampler.json").read_text())["sampler"] == name == info["sampler"]
        assert (out / "grid.png").stat().st_size > 0
