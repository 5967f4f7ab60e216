"""Distributions the statistics are judged against: the normal in one dimension and in many.

``MahalanobisReference`` is the exact law of in-sample squared Mahalanobis distances
of normal points; ``normality_summary`` compares a cloud's distances with it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special
from scipy import stats as sstats

SIGMA_LEVELS = (1, 2, 3)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))



def sigma_probability(k: float) -> float:
    """P(|X| <= k) for a standard normal X: 0.6827, 0.9545, 0.9973 for k = 1, 2, 3."""
    return float(special.erf(k / math.sqrt(2.0)))


def gaussian(x, a, mu, s):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2)


def fit_gaussian(centres: np.ndarray, density: np.ndarray, mean: float, std: float) -> dict:
    """Least-squares Gaussian through a number-density curve; R^2 as goodness of fit."""
    p0 = (density.max(), mean, max(std, 1e-6))
    a, mu, s = p0  # a component narrower than a few bins, or a failed fit, keeps its moments
    if np.count_nonzero(density) >= 3:
        try:
            (a, mu, s), _ = optimize.curve_fit(gaussian, centres, density, p0=p0, maxfev=2000)
            s = abs(s)
        except (RuntimeError, ValueError):
            a, mu, s = p0
    resid = density - gaussian(centres, a, mu, s)
    ss_tot = float(((density - density.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"fit_center": float(mu), "fit_sigma": float(s), "fwhm": float(FWHM_PER_SIGMA * s), "fit_r2": r2,
            "fit_amplitude": float(a)}


def robust_sigma(v: np.ndarray) -> float:
    """1.4826 x median absolute deviation: the standard deviation for normal data, blind to outliers."""
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


class MahalanobisReference:
    """Distribution of in-sample squared Mahalanobis distances of n normal points in ``dof`` dimensions.

    With the mean and covariance estimated from the same n points,
    d^2 * n / (n - 1)^2 ~ Beta(dof / 2, (n - dof - 1) / 2) exactly (Gnanadesikan and
    Kettenring 1972); it tends to chi-square(dof) as n / dof grows. Using it keeps
    the test fair when n is only a few times dof (6,000 points in 256-D).
    """

    def __init__(self, n: int, dof: int):
        self.n, self.dof = n, dof
        self.scale = (n - 1) ** 2 / n
        self.exact = n - dof - 1 > 0
        self.dist = sstats.beta(dof / 2, (n - dof - 1) / 2) if self.exact else sstats.chi2(dof)

    def cdf(self, d2):
        return self.dist.cdf(np.asarray(d2) / self.scale) if self.exact else self.dist.cdf(d2)

    def ppf(self, q):
        return self.dist.ppf(q) * self.scale if self.exact else self.dist.ppf(q)

    def describe(self) -> str:
        if self.exact:
            return f"d^2 * n/(n-1)^2 ~ Beta({self.dof}/2, ({self.n}-{self.dof}-1)/2), n = {self.n} (chi-square({self.dof}) as n grows)"
        return f"chi-square({self.dof})"


def ks_distance(d2_sorted: np.ndarray, ref: MahalanobisReference) -> float:
    """Kolmogorov-Smirnov distance between sorted squared distances and the reference distribution."""
    n = len(d2_sorted)
    cdf = ref.cdf(d2_sorted)
    i = np.arange(1, n + 1)
    return float(max((i / n - cdf).max(), (cdf - (i - 1) / n).max()))


def normality_summary(d2: np.ndarray, dof: int) -> dict:
    """Shares inside the 1/2/3-sigma ellipsoids against the normal expectation, and the KS distance."""
    d2s = np.sort(d2)
    ref = MahalanobisReference(len(d2s), dof)
    out = {"n": int(len(d2)), "dof": int(dof), "reference": ref.describe(), "ks_distance": ks_distance(d2s, ref),
           "mahalanobis_median": float(np.sqrt(np.median(d2s))), "expected_median": float(np.sqrt(ref.ppf(0.5))),
           "ellipsoids": []}
    for k in SIGMA_LEVELS:
        p = sigma_probability(k)
        r2 = float(ref.ppf(p))
        share = float(np.searchsorted(d2s, r2, side="right") / len(d2s))
        out["ellipsoids"].append({"sigma": k, "radius": math.sqrt(r2), "share": share, "expected": p})
    q = (np.arange(200) + 0.5) / 200  # QQ points for the figure
    out["qq"] = {"reference": ref.ppf(q).tolist(), "data": np.quantile(d2s, q).tolist()}
    return out
