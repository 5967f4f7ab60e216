r"""The Fréchet distance between two sets of feature vectors: FID's formula in a feature space zspace trains itself.

For feature sets ``a`` (n_a, F) and ``b`` (n_b, F) with means mu_a, mu_b and covariances S_a, S_b
(unbiased, ddof 1), the Fréchet (2-Wasserstein) distance between the normals N(mu_a, S_a) and N(mu_b, S_b):

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})

(Dowson & Landau 1982; Heusel et al. 2017 call it FID with Inception-v3 pool features). The trace of the
matrix square root is computed as tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}) = sum_i sqrt(lambda_i) over the
eigenvalues of the symmetric matrix S_a^{1/2} S_b S_a^{1/2} (similar to S_a S_b), each negative rounding
error clipped to 0. Everything is float64. ``scipy.linalg.sqrtm(S_a @ S_b)`` gives the same trace when it
converges but returns complex matrices with imaginary rounding noise on near-singular covariances, which
FID code then has to discard by hand.

What the number means here. The features are those of ``engine.model.classifier``'s attribute classifier
(``FittedClassifier.features``), which zspace trains on the run's own real images; Inception weights are
not downloadable here. So a distance is **not comparable with published FIDs** (another network, another
feature dimension, other images), but it is comparable across the samplers, paths and probes of one run,
judged with one classifier: lower means the decoded images' features are distributed more like those of
the reference set.

Small-sample bias: the plug-in estimate is biased upward, by about tr(S_a)/n_a + tr(S_b)/n_b for
isotropic-ish features (the sample means scatter around the true ones), and the covariance square-root
term adds more when n is not much larger than F. Two sets drawn from one distribution give d^2 > 0. Only
distances at equal n (and the same F) compare fairly, so every result carries ``n_a`` and ``n_b``, and
``frechet_interval`` reports the bootstrap's estimate of this bias beside the distance.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from engine.data.imagecache import open_cache
from engine.data.sources import TEST
from engine.files import file_sha256, write_bytes_atomic
from engine.model.classifier import FittedClassifier


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of feature vectors (n, F), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 feature vectors (a covariance needs 2), got {x.shape[0]}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(x)).sum())} non-finite values: every feature must be finite")
    return x


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F), ddof 1), float64."""
    mu = x.mean(axis=0)
    d = x - mu
    return mu, (d.T @ d) / (len(x) - 1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """S^{1/2} of a symmetric positive semi-definite (F, F) matrix, negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_moments(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) for means (F,) and covariances (F, F), float64.

    Never negative: rounding that would take it below 0 (identical moments) is clipped to 0.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise ValueError(f"moments must be means (F,) and covariances (F, F) of one F, got {mu_a.shape}, "
                         f"{cov_a.shape}, {mu_b.shape}, {cov_b.shape}")
    root_a = _psd_sqrt(cov_a)
    inner = root_a @ cov_b @ root_a
    lam = np.linalg.eigvalsh((inner + inner.T) / 2)
    cross = np.sqrt(np.clip(lam, 0, None)).sum()
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross, 0.0))


def frechet_distance(a, b) -> float:
    """The Fréchet distance (FID's formula, squared units as FID reports it) between feature sets a (n_a, F)
    and b (n_b, F), any real dtype, computed in float64. Biased upward at small n (module docstring):
    compare only distances computed at the same n."""
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same feature dimension, got a {a.shape[1]} and b {b.shape[1]}")
    return frechet_from_moments(*_moments(a), *_moments(b))


def frechet_interval(a, b, n_boot: int = 200, seed: int = 0) -> dict:
    """The distance with a 95% bootstrap interval: both sets resampled with replacement, independently.

    Returns ``{"distance": d (the plug-in estimate on all rows), "ci95": [lo, hi], "n_a", "n_b",
    "n_boot", "bootstrap_bias": mean(d*) - d, "method"}``. The interval is the basic (reverse-percentile)
    bootstrap, [2d - q_97.5(d*), 2d - q_2.5(d*)] clipped at 0: resampling with replacement repeats rows,
    which adds the same upward small-sample bias again, so the percentile interval [q_2.5, q_97.5] sits
    above the estimate by about that bias and misses the population distance; reflecting it about d
    removes that first-order bias. ``bootstrap_bias`` estimates the bias of d itself (module docstring).
    """
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same feature dimension, got a {a.shape[1]} and b {b.shape[1]}")
    if int(n_boot) < 20:
        raise ValueError(f"n_boot must be >= 20 (a 95% interval from fewer resamples is noise), got {n_boot}")
    d = frechet_from_moments(*_moments(a), *_moments(b))
    rng = np.random.default_rng(seed)
    boot = np.empty(int(n_boot))
    for i in range(len(boot)):
        ra = a[rng.integers(0, len(a), len(a))]
        rb = b[rng.integers(0, len(b), len(b))]
        boot[i] = frechet_from_moments(*_moments(ra), *_moments(rb))
    lo_q, hi_q = np.quantile(boot, [0.025, 0.975])
    return {"distance": d, "ci95": [float(max(2 * d - hi_q, 0.0)), float(max(2 * d - lo_q, 0.0))],
            "n_a": int(len(a)), "n_b": int(len(b)), "n_boot": int(n_boot),
            "bootstrap_bias": float(boot.mean() - d), "method": "basic bootstrap, both sets resampled"}


REFERENCE_ROWS = 2000  # real test images whose classifier features are the reference set
REFERENCE_FILE = "reference_features.npz"  # beside classifier.pt: rows, features, the classifier's sha256

logger = logging.getLogger(__name__)


def reference_rows(split: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sorted rows of the reference set: a seeded sample of ``REFERENCE_ROWS`` test-split rows (every row when the
    cache has fewer than two test rows)."""
    rows = np.flatnonzero(split == TEST)
    rows = rows if len(rows) >= 2 else np.arange(len(split))
    return np.sort(np.random.default_rng(seed).permutation(rows)[:REFERENCE_ROWS])


def save_reference(path: Path, rows: np.ndarray, features: np.ndarray, classifier_sha256: str) -> None:
    """The reference features, written once by ``zspace attributes`` so compare and facemap read them."""
    buf = io.BytesIO()
    np.savez(buf, rows=np.asarray(rows, np.int64), features=np.asarray(features, np.float32),
             classifier_sha256=np.array(classifier_sha256))
    write_bytes_atomic(path, buf.getvalue())


def _stored_reference(path: Path, rows: np.ndarray, classifier_sha256: str) -> np.ndarray | None:
    """The stored features when they are of these rows and of this classifier, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["classifier_sha256"]) == classifier_sha256 and np.array_equal(f["rows"], rows):
                return f["features"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("%s is unreadable (%s): the reference features are computed again", path, exc)
    return None


class QualityJudge:
    """The run's attribute classifier as a quality judge: Fréchet distance of decoded images' penultimate-layer
    features to those of real held-out images. ``for_run`` gives None where no classifier was trained
    (``zspace attributes`` trains it) or where it was trained on another image cache, so compare and facemap
    report the face rate alone."""

    def __init__(self, classifier, reference: np.ndarray, n_boot: int = 200, seed: int = 0):
        self.classifier = classifier
        self.reference = reference  # float32 (n_ref, F): features of real test images
        self.n_boot, self.seed = n_boot, seed

    @classmethod
    def for_run(cls, run_dir, device: str = "auto", seed: int = 0) -> "QualityJudge | None":
        path = Path(run_dir) / "attributes" / "classifier.pt"
        if not path.exists():
            return None
        classifier = FittedClassifier.load(path, device)
        cache = open_cache(run_dir)
        now = cache.attrs.get("fingerprint")
        if classifier.cache_fingerprint is not None and classifier.cache_fingerprint != now:
            logger.warning("%s was trained on another image cache (prepared again since): no quality judge; "
                           "'zspace attributes --run %s' trains it on this one", path, run_dir)
            return None
        rows = reference_rows(cache["split"][:], seed)
        reference = _stored_reference(path.parent / REFERENCE_FILE, rows, file_sha256(path))
        if reference is None:
            images = cache["images"].get_orthogonal_selection((rows, slice(None), slice(None), slice(None)))
            reference = classifier.features(images)
        return cls(classifier, reference, seed=seed)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.features(images)

    def distance(self, features: np.ndarray) -> dict:
        """``frechet_interval`` of ``features`` against the real reference."""
        return frechet_interval(features, self.reference, n_boot=self.n_boot, seed=self.seed)
