"""Latent statistics: everything the study measured on the z-point cloud, on all points, streamed.

Three passes over ``latents.zarr`` in row blocks, so memory does not grow with
the number of columns times N (only a few (N,) float vectors are held):

1. block moments (count, mean, co-moments, merged pairwise), per-component
   min/max, the L2 radius of every row;
2. per-component histograms, PCA coordinates (written to ``latents.zarr`` as
   ``pca``), Mahalanobis distances, moments of the inner core, 2D rasters of
   the most correlated pairs;
3. Mahalanobis distances of the core points against the core's own fit.

"k-sigma ellipsoid" means the Mahalanobis ellipsoid of the fitted normal that
holds the probability of +-k sigma in one dimension (68.27%, 95.45%, 99.73%),
i.e. squared radius ``chi2.ppf(p_k, dof)`` for large N (the exact in-sample
Beta law, ``MahalanobisReference``, is used for any N); in 256 dimensions a
radius of k itself would hold almost nothing.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zarr
from scipy import optimize, special, stats as sstats

from engine.config import config_from_dict
from engine.store import latents_path, open_latents
from engine.latents import create_rows_array, iter_blocks
from kernels.histogram import component_histograms, histogram_1d, row_norms, uniform_edges
from kernels.moments import block_moments, covariance, merge_moments
from kernels.raster import density_raster

logger = logging.getLogger(__name__)

SIGMA_LEVELS = (1, 2, 3)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class StatsConfig:
    bin_width: float = 0.25  # number-density bin width, as in the study
    radius_bin_widths: tuple[float, ...] = (0.5, 0.05)  # the study's two radius resolutions
    top_pairs: int = 20  # strongest |r| pairs listed
    pair_plots: int = 5  # joint 2D histograms of the most correlated pairs
    pair_bins: int = 120  # raster side of each joint histogram
    dominant_centre_mads: float = 5.0  # centre outlier: |mean - median| > this many robust sigmas ...
    dominant_centre_min: float = 1.0  # ... and > this many median component widths
    dominant_width_mads: float = 5.0  # width outlier: std - median > this many robust sigmas ...
    dominant_width_min: float = 0.5  # ... and > this fraction of the median width
    write_pca: bool = True  # stream PCA coordinates of every point into latents.zarr
    figures: bool = True  # draw the PNG figures (most of the run time on small clouds)
    block_rows: int | None = None  # rows per streamed block (default ~16 MB of float32)

    def __post_init__(self):
        self.radius_bin_widths = tuple(float(w) for w in self.radius_bin_widths)
        if not self.bin_width > 0:
            raise ValueError(f"bin_width must be > 0, got {self.bin_width}")
        if not all(w > 0 for w in self.radius_bin_widths):
            raise ValueError(f"radius_bin_widths must be > 0, got {self.radius_bin_widths}")

    @classmethod
    def from_dict(cls, d: dict) -> "StatsConfig":
        return config_from_dict(cls, d, "stats")


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


def detect_dominant(mean: np.ndarray, std: np.ndarray, cfg: StatsConfig) -> tuple[np.ndarray, dict]:
    """Components whose centre or width stands out from the bulk of the others.

    dominant = |mean_j - median(mean)| > max(a * MADsigma(mean), b * median(std))
            or std_j - median(std) > max(c * MADsigma(std), e * median(std))
    """
    med_m, med_s = float(np.median(mean)), float(np.median(std))
    centre_thr = max(cfg.dominant_centre_mads * robust_sigma(mean), cfg.dominant_centre_min * med_s)
    width_thr = max(cfg.dominant_width_mads * robust_sigma(std), cfg.dominant_width_min * med_s)
    flags = (np.abs(mean - med_m) > centre_thr) | (std - med_s > width_thr)
    rule = {
        "rule": (
            "dominant if |mean - median(mean)| > max(a * 1.4826 * MAD(mean), b * median(std)) "
            "or std - median(std) > max(c * 1.4826 * MAD(std), e * median(std))"
        ),
        "a": cfg.dominant_centre_mads, "b": cfg.dominant_centre_min,
        "c": cfg.dominant_width_mads, "e": cfg.dominant_width_min,
        "median_mean": med_m, "median_std": med_s,
        "centre_threshold": centre_thr, "width_threshold": width_thr,
    }
    return flags, rule


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


def _pca(cov: np.ndarray):
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix."""
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    # a deterministic sign: the largest-magnitude entry of each axis is positive
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    signs[signs == 0] = 1
    return np.clip(w, 0, None), v * signs


def _whitener(eigval: np.ndarray, rel_tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """1/sqrt(eigenvalue) for the retained axes (0 for numerically null ones) and the rank."""
    keep = eigval > rel_tol * max(eigval.max(), np.finfo(float).tiny)
    inv = np.zeros_like(eigval)
    inv[keep] = 1.0 / np.sqrt(eigval[keep])
    return inv, int(keep.sum())


def compute_stats(run_dir: str | os.PathLike, config: StatsConfig | None = None, progress: bool = True) -> dict:
    """Measure the latent cloud of ``run_dir`` and write ``RUN/stats/``; returns the stats.json content."""
    cfg = config or StatsConfig()
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n, d = z.shape
    if n < 2:
        raise ValueError(f"{latents_path(run)} has {n} rows; statistics need at least 2")
    rows = cfg.block_rows
    out_dir = run / "stats"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # pass 1: moments, ranges, radii
    n_acc, mean_acc, m_acc = 0, np.zeros(d), np.zeros((d, d))
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    radius = np.empty(n, np.float64)
    for start, x in iter_blocks(z, rows, progress, "stats 1/3"):
        if not np.isfinite(x).all():
            bad = start + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise ValueError(f"{latents_path(run)}: row {bad} of z holds NaN or inf; re-import with --drop-nonfinite")
        nb, mb, mm = block_moments(x)
        n_acc, mean_acc, m_acc = merge_moments(n_acc, mean_acc, m_acc, nb, mb, mm)
        np.minimum(lo, x.min(axis=0), out=lo)
        np.maximum(hi, x.max(axis=0), out=hi)
        row_norms(x, radius[start : start + len(x)])
    mean = mean_acc
    cov = covariance(n_acc, m_acc, ddof=1)
    std = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(std, std)
    corr[~np.isfinite(corr)] = 0.0
    np.fill_diagonal(corr, 1.0)
    eigval, eigvec = _pca(cov)
    inv_sqrt, rank = _whitener(eigval)

    w = cfg.bin_width
    e_lo = math.floor(lo.min() / w) * w
    nbins = max(1, int(math.ceil((hi.max() - e_lo) / w - 1e-9)))
    edges = uniform_edges(e_lo, w, nbins)
    counts = np.zeros((d, nbins), np.int64)

    iu = np.triu_indices(d, 1)
    order = np.argsort(-np.abs(corr[iu]), kind="stable")
    top = [(int(iu[0][k]), int(iu[1][k]), float(corr[iu][k])) for k in order[: cfg.top_pairs]]
    pair_windows = []
    for i, j, _ in top[: cfg.pair_plots]:
        half = 4.0 * np.array([std[i], std[j]])
        pair_windows.append((i, j, -half, half))
    rasters = np.zeros((len(pair_windows), cfg.pair_bins, cfg.pair_bins), np.int64)
    bases = []
    for i, j, _, _ in pair_windows:
        b = np.zeros((2, d))
        b[0, i] = b[1, j] = 1.0
        bases.append(b)

    # pass 2: histograms, PCA coordinates, Mahalanobis distances, core moments, pair rasters
    r3 = float(MahalanobisReference(n, rank).ppf(sigma_probability(3)))
    d2 = np.empty(n, np.float64)
    core_n, core_mean, core_m = 0, np.zeros(d), np.zeros((d, d))
    latents = zarr.open_group(latents_path(run), mode="r+")
    pca_arr = create_rows_array(latents, "pca", n, d) if cfg.write_pca else None
    for start, x in iter_blocks(z, rows, progress, "stats 2/3"):
        component_histograms(x, e_lo, w, nbins, counts)
        y = (x - mean) @ eigvec  # float64 (rows, D)
        if pca_arr is not None:
            pca_arr[start : start + len(x)] = y.astype(np.float32)
        y *= inv_sqrt  # whitened in place: one (rows, D) temporary per block, not three
        db = np.einsum("ij,ij->i", y, y)
        del y
        d2[start : start + len(x)] = db
        core = x[db <= r3]
        nb, mb, mm = block_moments(core)
        core_n, core_mean, core_m = merge_moments(core_n, core_mean, core_m, nb, mb, mm)
        for k, (i, j, wlo, whi) in enumerate(pair_windows):
            density_raster(x, mean, bases[k], wlo, whi, cfg.pair_bins, cfg.pair_bins, rasters[k])

    # pass 3: the core against its own normal fit
    core_cov = covariance(core_n, core_m, ddof=1)
    core_val, core_vec = _pca(core_cov)
    core_inv, core_rank = _whitener(core_val)
    core_d2 = np.empty(core_n, np.float64)
    pos = 0
    for start, x in iter_blocks(z, rows, progress, "stats 3/3"):
        x = x[d2[start : start + len(x)] <= r3]
        y = (x - core_mean) @ core_vec
        y *= core_inv
        core_d2[pos : pos + len(x)] = np.einsum("ij,ij->i", y, y)
        pos += len(x)

    # per-component number densities and Gaussian fits
    centres = edges[:-1] + w / 2
    density = counts / (n * w)
    dominant, rule = detect_dominant(mean, std, cfg)
    components = []
    for j in range(d):
        fit = fit_gaussian(centres, density[j], mean[j], std[j])
        components.append({"index": j, "mean": float(mean[j]), "std": float(std[j]), "min": float(lo[j]),
                           "max": float(hi[j]), **fit, "dominant": bool(dominant[j])})

    # radius
    expected = float(np.sqrt(np.sum(mean**2 + std**2)))
    radius_hists = []
    for rw in cfg.radius_bin_widths:
        rn = max(1, int(math.ceil(radius.max() / rw + 1e-9)))
        redges = uniform_edges(0.0, rw, rn)
        rc = np.zeros(rn, np.int64)
        histogram_1d(radius, 0.0, rw, rn, rc)
        radius_hists.append((rw, redges, rc))
    rw0, redges0, rc0 = radius_hists[0]
    radius_info = {
        "peak": float(redges0[rc0.argmax()] + rw0 / 2),
        "peak_by_bin_width": {str(rw): float(e[c.argmax()] + rw / 2) for rw, e, c in radius_hists},
        "mean": float(radius.mean()), "min": float(radius.min()), "max": float(radius.max()),
        "std": float(radius.std()),
        "expected": expected, "sqrt_d": math.sqrt(d),
        "formula": "expected = sqrt(sum_j (mean_j^2 + var_j))",
    }

    ratios = eigval / eigval.sum() if eigval.sum() > 0 else np.zeros(d)
    cum = np.cumsum(ratios)
    need = {f"n_components_{int(p * 100)}": int(min(d, np.searchsorted(cum, p - 1e-12) + 1)) for p in (0.5, 0.9, 0.99)}

    full = normality_summary(d2, rank)
    core_summary = normality_summary(core_d2, core_rank)
    core_summary["share_of_points"] = core_n / n
    core_summary["cut"] = "points with Mahalanobis distance inside the 3-sigma ellipsoid of the full fit, refitted"

    seconds = time.perf_counter() - t0
    result = {
        "n": int(n), "d": int(d), "source": dict(group.attrs).get("source"),
        "config": {**asdict(cfg), "radius_bin_widths": list(cfg.radius_bin_widths)},
        "components": components,
        "dominant": [int(j) for j in np.flatnonzero(dominant)],
        "dominant_rule": rule,
        "radius": radius_info,
        "correlation": {
            "top_pairs": [{"i": i, "j": j, "r": r} for i, j, r in top],
            "mean_abs_r": float(np.abs(corr[iu]).mean()) if d > 1 else 0.0,
            "max_abs_r": float(np.abs(corr[iu]).max()) if d > 1 else 0.0,
        },
        "pca": {"explained_variance_ratio": ratios.tolist(), "explained_variance": eigval.tolist(), **need,
                "rank": rank, "coordinates": "latents.zarr/pca" if cfg.write_pca else None},
        "normality": {"definition": ("k-sigma ellipsoid: Mahalanobis radius^2 = reference.ppf(erf(k/sqrt(2))), the "
                                    "reference being chi2(dof) for large n, exactly a scaled Beta in-sample"),
                      "full": full, "core": core_summary},
        "seconds": seconds,
    }

    # arrays and tables beside the JSON
    np.save(out_dir / "covariance.npy", cov)
    np.save(out_dir / "correlation.npy", corr)
    np.savez(out_dir / "density.npz", edges=edges, counts=counts,
             **{f"radius_edges_{rw}": e for rw, e, _ in radius_hists}, **{f"radius_counts_{rw}": c for rw, _, c in radius_hists})
    np.savez(out_dir / "pairs.npz", rasters=rasters, pairs=np.array([(i, j) for i, j, _, _ in pair_windows]).reshape(-1, 2),
             lo=np.array([p[2] for p in pair_windows]).reshape(-1, 2), hi=np.array([p[3] for p in pair_windows]).reshape(-1, 2),
             cov=np.array([cov[np.ix_([i, j], [i, j])] for i, j, _, _ in pair_windows]).reshape(-1, 2, 2))
    for name, arr in (("pca_mean", mean), ("pca_components", eigvec.T), ("pca_variance", eigval)):
        a = latents.create_array(name, shape=arr.shape, dtype="float64", overwrite=True)
        a[...] = arr
    _write_csv(out_dir / "components.csv", components)
    _write_csv(out_dir / "top_pairs.csv", result["correlation"]["top_pairs"])
    _write_csv(out_dir / "pca.csv", [{"component": k + 1, "explained_variance_ratio": float(r), "cumulative": float(c)}
                                     for k, (r, c) in enumerate(zip(ratios, cum))])
    if cfg.figures:
        from engine.statplots import stats_figures

        result["figures"] = stats_figures(out_dir, result, edges, counts, radius_hists, corr, rasters, pair_windows, cov)
    else:
        result["figures"] = []
    result["seconds"] = time.perf_counter() - t0
    (out_dir / "stats.json").write_text(json.dumps(result, indent=1))
    logger.info("stats of %d x %d latents in %.1f s: %d dominant components %s, radius peak %.2f (expected %.2f)",
                n, d, result["seconds"], len(result["dominant"]), result["dominant"], radius_info["peak"], expected)
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
