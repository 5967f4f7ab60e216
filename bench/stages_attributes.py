"""The latent side of ``zspace attributes`` at CelebA's size: planted attributes on a latent-like cloud.

Labels are planted as noisy linear functions of a few components (some dominant, some not), at CelebA-like
prevalences, so both sides measure the same problem a run with 40 attributes poses. The image side of the stage
(training the attribute classifier, decoding traversals) scales with images and steps, not with latents: the
README's real-data section states its time.
"""

from __future__ import annotations

import time

import numpy as np

from bench.measure import measure
from bench.results import Row
from bench.stages_analysis import latent_cloud

SETS, FOLDS, ROWS_PER_ATTRIBUTE = 200, 5, 2000  # the stage's defaults (AttributesConfig)


def planted_labels(x: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """int8 (n, count) 0/1: attribute a is 1 where a random mix of three components plus noise exceeds a quantile
    drawn between 5% and 50% prevalence; every third attribute leans on the dominant components 0-3."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(x), count), np.int8)
    for a in range(count):
        cols = rng.choice(4, 3, replace=False) if a % 3 == 0 else rng.choice(np.arange(4, x.shape[1]), 3, replace=False)
        s = x[:, cols] @ rng.normal(size=3) + rng.normal(scale=1.5, size=len(x))
        out[:, a] = s > np.quantile(s, 1 - rng.uniform(0.05, 0.5))
    return out


def sklearn_sets(z: np.ndarray, y: np.ndarray, folds, dominant: list[int], sets: int, seed: int) -> np.ndarray:
    """The same test written with scikit-learn: per set, ``cross_val_predict`` of LinearDiscriminantAnalysis
    (lsqr, shrinkage 1/11: (1 - a) S + a T with a / (1 - a) = 0.1, our weight; sklearn's target T is the variances
    of each class, ours tr(S)/p I of the pooled covariance, so the AUCs agree closely, not exactly)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    others = np.setdiff1d(np.arange(z.shape[1]), dominant)
    rng = np.random.default_rng(seed)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=1 / 11)
    out = []
    for cols in [np.asarray(dominant)] + [np.sort(rng.choice(others, len(dominant), replace=False))
                                          for _ in range(sets)]:
        score = cross_val_predict(lda, z[:, cols], y, cv=folds, method="decision_function")
        out.append(roc_auc_score(y, score))
    return np.asarray(out)


def stage_attributes(ctx) -> list[Row]:
    """The dominant-components test against scikit-learn's way of writing it, and the whole latent side of the
    stage (normal fitted to every latent; per attribute readout, correlations, test and directions)."""
    from engine.analysis.config import StatsConfig
    from engine.analysis.gaussian import GaussianFit
    from engine.analysis.stats import detect_dominant
    from engine.attributes.readout import directions, dominant_test, folds_of, linear_readout, point_biserial

    n, count = ctx["sizes"].attributes_rows, ctx["sizes"].attributes_count
    x = latent_cloud(n)
    labels = planted_labels(x, count)
    rows_ = np.sort(np.random.default_rng(0).choice(n, min(n, ROWS_PER_ATTRIBUTE), replace=False))
    size = f"{n:,} x 256, {count} attributes"

    out = {}

    def latent_side(xs, count):
        fit = GaussianFit().fit(xs, progress=False)
        out["dominant"] = [int(j) for j in np.flatnonzero(detect_dominant(fit.mean_, fit.std_, StatsConfig())[0])]
        for a in range(count):
            z, y = xs[rows_], labels[rows_, a]
            folds = folds_of(y, None, FOLDS, 0)
            linear_readout(z, y, folds), point_biserial(z, y), directions(z, y, fit, out["dominant"])
            dominant_test(z, y, out["dominant"], folds, SETS)

    latent_side(x, 1)  # warm-up: imports, BLAS threads (one attribute)
    t_stage, peak = measure(lambda: latent_side(x, count), 1)
    dominant = out["dominant"]

    ours, theirs = [], []

    def our_sets():
        for a in range(count):
            z, y = x[rows_], labels[rows_, a]
            ours.append(dominant_test(z, y, dominant, folds_of(y, None, FOLDS, 0), SETS))

    t_ours, peak_sets = measure(our_sets, 1)
    t0 = time.perf_counter()
    for a in range(count):
        z, y = x[rows_], labels[rows_, a]
        theirs.append(sklearn_sets(z, y, folds_of(y, None, FOLDS, 0), dominant, SETS, 0))
    t_theirs = time.perf_counter() - t0
    gap = max(float(np.max(np.abs(np.r_[o["auc_dominant"], o["auc_random"]] - t))) for o, t in zip(ours, theirs))
    carried = sum(bool(o["carries"]) for o in ours)
    return [
        Row("attributes_sets", f"{count} attributes x {SETS} sets x {FOLDS} folds, {len(rows_):,} rows", t_ours,
            t_theirs, "dominant_test: fold moments once, each set a slice and a solve",
            "sklearn LinearDiscriminantAnalysis(lsqr, shrinkage) in cross_val_predict per set",
            f"{count * (SETS + 1) / t_ours:,.0f} sets/s", peak_mb=peak_sets,
            notes=f"AUCs agree to {gap:.1e} (sklearn shrinks each class's covariance toward its variances, ours "
                  f"the pooled one toward tr(S)/p I); {len(dominant)} dominant components carry {carried} of {count} planted "
                  f"attributes (every third planted on them)"),
        Row("attributes_latents", size, t_stage, float("nan"),
            "the stage's latent side: GaussianFit of every row; per attribute logistic readout, point-biserial, "
            "dominant test, directions on 2,000 rows", "-", f"{t_stage / count:.2f} s per attribute", peak_mb=peak,
            notes="no baseline: the sum of the rows above and of sklearn's LogisticRegression; the classifier and "
                  "the decoded traversals scale with images, not latents"),
    ]
