"""What the latent components carry: linear readouts of binary attributes from z.

Pure functions over arrays (no run directory, no I/O), each checked in
tests against a planted structure:

* :func:`linear_readout`: cross-validated ROC AUC of a logistic regression on
  standardised z (scikit-learn ``StandardScaler`` + ``LogisticRegression``), folds
  grouped by identity where identities exist (no person in two folds), else
  stratified at random; the AUC of the pooled out-of-fold scores with the
  Hanley-McNeil (1982) 95% interval.
* :func:`point_biserial`: the Pearson correlation of every component with a 0/1
  label, r_j = (m1_j - m0_j) / s_j * sqrt(p (1 - p)) (population s_j).
* :func:`dominant_test`: the study's claim, that a few dominant components
  carry the important features, as a test with its rule fixed before the
  numbers (``CARRIES_RULE``): the out-of-fold AUC of a linear discriminant on
  the dominant components alone against 200 random sets of as many
  non-dominant ones, same folds, same estimator. The discriminant (class-mean
  difference through the shrunk pooled within-class covariance) is used on
  both sides because it is closed-form: 200 sets x A attributes x 5 folds cost
  seconds, where as many logistic fits would cost minutes.
* :func:`directions`: for each attribute two unit directions in z: the normal
  of the logistic decision plane fitted in the whitened space (GaussianFit),
  mapped back, n = V diag(1/sqrt(lambda)) w, and the difference of class means;
  the angle between them, to the principal axes and to the dominant components.
"""

from __future__ import annotations

import math

import numpy as np

CARRIES_RULE = ("the dominant components carry an attribute when their out-of-fold AUC exceeds that of at least 95% "
                "of 200 random sets of as many non-dominant components (empirical p = (1 + #sets >= it) / 201 < "
                "0.05) and is at least 0.55 (better than chance by a margin)")
MIN_AUC_CARRIES = 0.55
P_CARRIES = 0.05


def auc_score(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for 0/1 labels ``y`` (Mann-Whitney U over n1 n0, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(y, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"an AUC needs both classes, got {n1} positives and {n0} negatives")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_interval(auc: float, n1: int, n0: int, z: float = 1.959963984540054) -> list[float]:
    """Hanley-McNeil (1982) interval: SE^2 = [A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)] / (n1 n0),
    Q1 = A / (2 - A), Q2 = 2A^2 / (1 + A); clipped to [0, 1]."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt(max(auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2), 0.0) / (n1 * n0))
    return [max(0.0, auc - z * se), min(1.0, auc + z * se)]


def folds_of(y: np.ndarray, groups: np.ndarray | None, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of ``k`` stratified folds; grouped (no group in two folds) when ``groups`` is given
    and holds at least ``k`` groups."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y, np.int8)
    k = max(2, min(k, int(y.sum()), int((1 - y).sum())))
    if groups is not None and len(np.unique(groups)) >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def linear_readout(z: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], c: float = 1.0) -> dict:
    """Out-of-fold ROC AUC of a logistic regression (L2, ``C = c``) on standardised ``z`` (n, D) for 0/1 ``y``.

    Returns {"auc", "ci95", "n_pos", "n_neg", "fold_auc"}; the AUC is of the pooled out-of-fold decision values.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z, y = np.asarray(z, np.float64), np.asarray(y, np.int8)
    score = np.empty(len(y))
    fold_auc = []
    for train, test in folds:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(z[train], y[train])
        score[test] = model.decision_function(z[test])
        fold_auc.append(auc_score(y[test], score[test]))
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    auc = auc_score(y, score)
    return {"auc": auc, "ci95": auc_interval(auc, n1, n0), "n_pos": n1, "n_neg": n0, "fold_auc": fold_auc}


def point_biserial(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64 (D,): Pearson r of each column of ``z`` (n, D) with 0/1 ``y``; 0 for a constant column."""
    z, y = np.asarray(z, np.float64), np.asarray(y, bool)
    p = y.mean()
    s = z.std(axis=0)
    diff = z[y].mean(axis=0) - z[~y].mean(axis=0)
    return np.divide(diff * math.sqrt(p * (1 - p)), s, out=np.zeros_like(s), where=s > 0)


def _fold_moments(z: np.ndarray, y: np.ndarray, folds) -> list[tuple]:
    """Per fold: (class-mean difference (D,), pooled within-class covariance (D, D), test rows) from the train rows."""
    out = []
    for train, test in folds:
        zt, yt = z[train], y[train].astype(bool)
        m1, m0 = zt[yt].mean(axis=0), zt[~yt].mean(axis=0)
        centred = zt - np.where(yt[:, None], m1, m0)
        out.append((m1 - m0, centred.T @ centred / max(len(train) - 2, 1), m1, m0, test))
    return out


def _lda_auc(z: np.ndarray, y: np.ndarray, moments, cols: np.ndarray, shrink: float = 0.1) -> float:
    """Out-of-fold AUC of the discriminant on ``cols``: w = (S + shrink * mean(diag S) I)^-1 (m1 - m0)."""
    score = np.empty(len(y))
    for diff, cov, m1, m0, test in moments:
        s = cov[np.ix_(cols, cols)]
        s = s + shrink * np.trace(s) / len(cols) * np.eye(len(cols))
        w = np.linalg.solve(s, diff[cols])
        score[test] = (z[np.ix_(test, cols)] - (m1[cols] + m0[cols]) / 2) @ w
    return auc_score(y, score)


def dominant_test(z: np.ndarray, y: np.ndarray, dominant: list[int], folds, n_sets: int = 200, seed: int = 0) -> dict:
    """The dominant components' out-of-fold AUC against ``n_sets`` random sets of as many other components.

    Returns {"auc_dominant", "auc_random": [n_sets], "random_median", "random_p95", "p", "carries"} with
    ``carries`` by ``CARRIES_RULE``; None when there is no dominant component or no component outside them.
    """
    d = z.shape[1]
    others = np.setdiff1d(np.arange(d), dominant)
    if len(dominant) == 0 or len(others) < len(dominant):
        return None
    z, y = np.asarray(z, np.float64), np.asarray(y, np.int8)
    moments = _fold_moments(z, y, folds)
    own = _lda_auc(z, y, moments, np.asarray(dominant))
    rng = np.random.default_rng(seed)
    rand = np.array([_lda_auc(z, y, moments, np.sort(rng.choice(others, len(dominant), replace=False)))
                     for _ in range(n_sets)])
    p = (1 + int((rand >= own).sum())) / (n_sets + 1)
    return {"auc_dominant": own, "auc_random": rand.tolist(), "random_median": float(np.median(rand)),
            "random_p95": float(np.quantile(rand, 0.95)), "p": p,
            "carries": bool(p < P_CARRIES and own >= MIN_AUC_CARRIES)}


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two vectors in degrees, 0..180."""
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def directions(z: np.ndarray, y: np.ndarray, fit, dominant: list[int], c: float = 1.0, top_pcs: int = 3) -> dict:
    """Two unit directions in z for 0/1 ``y`` and how they sit in the cloud.

    ``logistic``: the decision-plane normal of a logistic regression on ``fit.whiten(z)``, mapped back to z,
    n = V diag(1/sqrt(lambda)) w (null axes dropped); ``mean_difference``: m1 - m0. Both unit length, float64 (D,).
    ``separation``: (m1 - m0) . u for each direction u (a traversal's step). Angles in degrees: between the two,
    to each direction's ``top_pcs`` nearest principal axes (axes as lines: 0..90), and to the span of the dominant
    components (acos of the norm of the direction's dominant part).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, bool)
    white = fit.whiten(z)
    w = LogisticRegression(C=c, max_iter=2000).fit(white, y).coef_[0]
    logistic = fit.eigenvectors_ @ (w * fit.inv_sqrt_)
    diff = np.asarray(z, np.float64)[y].mean(axis=0) - np.asarray(z, np.float64)[~y].mean(axis=0)
    out = {"angle_between": None}
    units = {"logistic": logistic / np.linalg.norm(logistic), "mean_difference": diff / np.linalg.norm(diff)}
    if units["logistic"] @ diff < 0:  # orient both toward the positive class
        units["logistic"] = -units["logistic"]
    for name, u in units.items():
        cos_pc = np.abs(fit.eigenvectors_.T @ u)
        near = np.argsort(-cos_pc)[:top_pcs]
        dom_share = float(np.linalg.norm(u[list(dominant)])) if len(dominant) else 0.0
        out[name] = {"unit": u, "separation": float(diff @ u),
                     "nearest_pcs": [{"pc": int(k) + 1, "angle": math.degrees(math.acos(min(1.0, cos_pc[k])))}
                                     for k in near],
                     "angle_to_dominant": math.degrees(math.acos(min(1.0, dom_share))),
                     "dominant_share": dom_share**2}
    out["angle_between"] = angle_deg(units["logistic"], units["mean_difference"])
    return out


__all__ = ["CARRIES_RULE", "angle_deg", "auc_interval", "auc_score", "directions", "dominant_test", "folds_of",
           "linear_readout", "point_biserial"]
