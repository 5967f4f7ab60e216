"""Samplers of z-points: from independent boxes to distributions fitted to the latent cloud.

Each sampler follows scikit-learn: ``__init__`` stores the settings, ``fit(z)``
learns from an (N, D) cloud and returns self (learned attributes end in ``_``),
``sample(n, rng)`` returns float32 (n, D).

  uniform   every component uniform in [-b, b] (the study's b = 1.5), blind to the cloud
  box       every component uniform in its own mean +- k sigma
  gauss     independent normals with the fitted means and sigmas (no correlations)
  mvn       the multivariate normal with the full covariance
  mvn-core  the same, kept only inside a Mahalanobis-radius quantile (the dense core)
  gmm       a Gaussian mixture with full covariances (10 components, as in the RAE comparison)
  origin    z = 0, then points on small spheres around it (radii ``origin_radii``)
  data      latents of held-out test images: decoded, they are the reference reconstructions
  prior     N(0, I), blind to the cloud: the prior a vae is trained toward (compare adds it for a vae)
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sstats

from engine.analysis.gaussian import GaussianFit
from engine.generation.config import ALL_SAMPLERS, SAMPLERS, SamplerConfig


class Sampler:
    """One of ``ALL_SAMPLERS``; see the module docstring."""

    def __init__(self, name: str, config: SamplerConfig | None = None, seed: int = 0):
        if name not in ALL_SAMPLERS:
            raise ValueError(f"sampler must be one of {ALL_SAMPLERS}, got {name!r}")
        self.name = name
        self.config = config or SamplerConfig()
        self.seed = seed

    def fit(self, z: np.ndarray, test_rows: np.ndarray | None = None) -> "Sampler":
        """Learn from float (N, D) ``z``; ``test_rows`` (indices of held-out images) for ``data``."""
        z = np.ascontiguousarray(z, np.float32)
        if z.ndim != 2 or len(z) < 2:
            raise ValueError(f"z must have shape (N >= 2, D), got {z.shape}")
        self.normal_ = GaussianFit().fit(z)
        n = self.normal_.n_samples_
        self.mean_, self.std_, self.dim_ = self.normal_.mean_, self.normal_.std_, z.shape[1]
        cfg = self.config
        if self.name == "mvn-core":
            self.core_radius2_ = float(sstats.chi2.ppf(cfg.core_quantile, self.normal_.rank_))
        elif self.name == "gmm":
            from sklearn.mixture import GaussianMixture

            rng = np.random.default_rng(self.seed)
            fit = z if n <= cfg.gmm_fit_points else z[rng.choice(n, cfg.gmm_fit_points, replace=False)]
            self.gmm_ = GaussianMixture(cfg.gmm_components, covariance_type="full", random_state=self.seed,
                                        reg_covar=1e-4).fit(fit)
            # sampled here by Cholesky factors: sklearn's sample() goes through rng.multivariate_normal,
            # which warns on round-off-level asymmetry of the fitted covariances
            self.gmm_chol_ = np.linalg.cholesky(self.gmm_.covariances_)
        elif self.name == "data":
            rows = np.arange(n) if test_rows is None or len(test_rows) == 0 else np.asarray(test_rows)
            self.pool_ = z[rows]
            self.pool_rows_ = rows
        return self

    def sample(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """float32 (n, D) z-points."""
        rng = rng or np.random.default_rng(self.seed)
        d, cfg = self.dim_, self.config
        if self.name == "uniform":
            out = rng.uniform(-cfg.bound, cfg.bound, (n, d))
        elif self.name == "box":
            half = cfg.box_sigmas * self.std_
            out = rng.uniform(self.mean_ - half, self.mean_ + half, (n, d))
        elif self.name == "gauss":
            out = self.mean_ + rng.standard_normal((n, d)) * self.std_
        elif self.name == "prior":
            out = rng.standard_normal((n, d))
        elif self.name == "mvn":
            out = self.normal_.sample(n, rng)
        elif self.name == "mvn-core":
            # a standard normal g maps to mean + root g with Mahalanobis radius |g| (on the retained
            # axes), so drawing |g|^2 below the quantile is exact rejection, accepting core_quantile
            kept = []
            while sum(len(k) for k in kept) < n:
                g = rng.standard_normal((max(n, 64), d))
                r2 = (g[:, self.normal_.retained_] ** 2).sum(1)
                kept.append(g[r2 <= self.core_radius2_])
            g = np.concatenate(kept)[:n]
            out = self.mean_ + g @ self.normal_.root_.T
        elif self.name == "gmm":
            w = self.gmm_.weights_
            comp = rng.choice(len(w), size=n, p=w / w.sum())
            out = rng.standard_normal((n, d))
            for k in range(len(w)):
                rows = comp == k
                out[rows] = self.gmm_.means_[k] + out[rows] @ self.gmm_chol_[k].T
        elif self.name == "origin":
            out = np.zeros((n, d))
            if n > 1:
                u = rng.standard_normal((n - 1, d))
                u /= np.linalg.norm(u, axis=1, keepdims=True)
                radii = np.resize(np.asarray(cfg.origin_radii), n - 1)
                out[1:] = u * radii[:, None]
        else:  # data
            out = self.pool_[rng.choice(len(self.pool_), size=n, replace=n > len(self.pool_))]
        return np.ascontiguousarray(out, np.float32)

    def mahalanobis2(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances of rows of ``x`` under the fitted normal, float64 (n,)."""
        return self.normal_.mahalanobis2(x)
