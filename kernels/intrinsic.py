"""Global intrinsic-dimension estimators from nearest-neighbour distances.

Both work on distances a kNN search has already produced (the point itself
excluded), so they are O(N k) vectorised numpy: at N = 202,599 and k = 16 they
take milliseconds, and numba would buy nothing.

- TwoNN (Facco, d'Errico, Rodriguez & Laio 2017, Sci. Rep. 7:12140): with
  r1, r2 the distances to the first and second neighbour, mu = r2 / r1 is
  Pareto distributed, P(mu) = d mu^-(d+1) on [1, inf), whatever the density, as
  long as it is locally constant on the scale of r2. ``twonn_dimension`` is
  the published estimator (the line through the origin of -log(1 - F(mu))
  against log(mu), the largest 10% of mu discarded), as scikit-dimension's
  ``TwoNN`` and DADApy's ``compute_id_2NN`` compute it; ``twonn_mle`` the plain
  maximum-likelihood form n / sum log mu. They agree on clean data; near-
  duplicates (tiny r1, huge mu) drag the MLE down and barely move the fit,
  because the fit discards the largest ratios.
- Levina & Bickel (2004) MLE from the k nearest distances, averaged over points
  as MacKay & Ghahramani (2005) recommend: the inverse of the mean of the
  per-point inverses (the per-point estimates themselves are heavy-tailed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["twonn_dimension", "twonn_mle", "levina_bickel_dimension", "PUBLISHED_DISCARD"]

PUBLISHED_DISCARD = 0.1  # share of the largest ratios mu the published TwoNN fit leaves out


def twonn_mle(r1: np.ndarray, r2: np.ndarray) -> float:
    """The maximum-likelihood form of TwoNN, ``n / sum log(r2 / r1)`` (see :func:`twonn_dimension`)."""
    return twonn_dimension(r1, r2, discard_fraction=0.0)


def twonn_dimension(r1: np.ndarray, r2: np.ndarray, discard_fraction: float = PUBLISHED_DISCARD) -> float:
    """TwoNN intrinsic dimension from first- and second-neighbour distances.

    r1, r2: float (N,), distances to each point's nearest and second-nearest
    other point (r2 >= r1). Points with r1 == 0 (duplicates) are skipped.

    ``discard_fraction = f > 0`` (default 0.1): the paper's estimator. Sort mu ascending,
    take the empirical CDF F_i = i / n, drop the largest fraction f of mu (the
    tail, where the locally-constant-density assumption fails first) and fit
    ``-log(1 - F_i) = d log(mu_i)`` by least squares through the origin over
    the rest: ``d = sum x_i y_i / sum x_i^2``. Facco et al. use f = 0.1.
    (scikit-dimension's ``TwoNN().fit`` computes the same, to rounding.)

    ``discard_fraction = 0``: the maximum-likelihood estimate
    ``d = n / sum_i log(mu_i)``, mu = r2 / r1 over the n kept points.

    Returns d as a float.
    """
    r1 = np.asarray(r1, dtype=np.float64)
    r2 = np.asarray(r2, dtype=np.float64)
    if r1.ndim != 1 or r1.shape != r2.shape:
        raise ValueError(f"r1 and r2 must be 1-D arrays of the same length, got shapes {r1.shape} and {r2.shape}")
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction!r}")
    keep = r1 > 0
    if np.any(r2[keep] < r1[keep]):
        raise ValueError("r2 must be >= r1 for every point (second-nearest distance after the nearest)")
    mu = r2[keep] / r1[keep]
    n = mu.size
    if n < 2:
        raise ValueError(f"need at least 2 points with r1 > 0, got {n}")
    log_mu = np.log(mu)
    if discard_fraction == 0.0:
        total = log_mu.sum()
        # All ratios exactly 1 (a lattice): every second neighbour as close as
        # the first, which no finite dimension produces.
        return float(n / total) if total > 0 else float("inf")
    x = np.sort(log_mu)
    n_fit = int(np.floor(n * (1.0 - discard_fraction)))
    if n_fit < 1:
        raise ValueError(f"discard_fraction={discard_fraction} leaves no points out of {n}")
    # F_i = i / n for i = 1..n; i = n would give log(0), and it is always
    # discarded when f > 0 and n_fit < n; clip anyway for tiny n.
    n_fit = min(n_fit, n - 1)
    f = np.arange(1, n_fit + 1, dtype=np.float64) / n
    y = -np.log1p(-f)
    x = x[:n_fit]
    sxx = float(np.dot(x, x))
    return float(np.dot(x, y) / sxx) if sxx > 0 else float("inf")


def levina_bickel_dimension(dists: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Levina-Bickel MLE of intrinsic dimension, per point and global.

    dists: float (N, K), K >= k, each row sorted ascending: distances T_1 <= ..
    <= T_K from the point to its nearest other points (the point itself
    excluded). k >= 2: the number of neighbours used.

    Per point: ``m_k(x) = [ 1/(k-1) sum_{j=1}^{k-1} log(T_k / T_j) ]^-1``.
    Global (MacKay & Ghahramani): ``m = [ mean_x m_k(x)^-1 ]^-1``.

    Points with T_1 <= 0 (a duplicate at distance zero) or a non-finite
    distance are skipped: their per-point value is NaN and they are left out of
    the mean. A point whose k distances are all equal has m_k = inf (it adds 0
    to the mean of inverses). Returns ``(global float, per_point float64 (N,))``.
    """
    dists = np.asarray(dists)
    if dists.ndim != 2:
        raise ValueError(f"dists must be a 2-D (N, K) array, got shape {dists.shape}")
    if not isinstance(k, (int, np.integer)) or k < 2 or k > dists.shape[1]:
        raise ValueError(f"k must be an integer in [2, {dists.shape[1]}] (the columns of dists), got {k!r}")
    t = dists[:, :k].astype(np.float64)
    if np.any(np.diff(t, axis=1) < 0):
        raise ValueError("each row of dists must be sorted ascending")
    valid = (t[:, 0] > 0) & np.isfinite(t).all(axis=1)
    inv = np.full(t.shape[0], np.nan)
    lt = np.log(t[valid])
    # sum_{j<k} log(T_k / T_j) = (k-1) log T_k - sum_{j<k} log T_j
    inv[valid] = lt[:, k - 1] - lt[:, :k - 1].mean(axis=1)
    # The difference of two logs of sorted values cannot be negative
    # mathematically; clamp the rounding so no point gets a negative inverse.
    np.maximum(inv, 0.0, out=inv, where=valid)
    if not valid.any():
        raise ValueError("every point has a zero or non-finite neighbour distance; nothing to estimate from")
    with np.errstate(divide="ignore"):
        per_point = 1.0 / inv
    mean_inv = float(inv[valid].mean())
    return (1.0 / mean_inv if mean_inv > 0 else float("inf")), per_point
