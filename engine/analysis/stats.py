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
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr

from engine.analysis.cluster import row_block_results
from engine.analysis.config import StatsConfig
from engine.analysis.distributions import (
    MahalanobisReference,
    fit_gaussian,
    normality_summary,
    robust_sigma,
    sigma_probability,
)
from engine.analysis.gaussian import GaussianFit
from engine.analysis.stats_figures import stats_figures
from engine.files import write_json_atomic
from engine.latents.store import block_size, create_rows_array, open_latents
from engine.layout import latents_path, stage_dir
from engine.stores import WRITE_ALL
from kernels.histogram import component_histograms, histogram_1d, uniform_edges
from kernels.moments import block_moments, merge_moments, row_norms
from kernels.raster import density_raster

logger = logging.getLogger(__name__)


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


def _moments_block(x: np.ndarray, start: int):
    """Pass 1 on one block: (rows, mean, co-moments, min, max, radius of each row), or the first bad row."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        return start + int(np.flatnonzero(~finite)[0])
    radius = np.empty(len(x), np.float64)
    row_norms(x, radius)
    return (*block_moments(x), x.min(axis=0), x.max(axis=0), radius)


def _moments_pass(z, z_path: Path, rows: int, progress: bool, blocks=None):
    """Pass 1: the fitted normal (merged block moments), per-component min/max, the radius of every row."""
    n, d = z.shape
    n_acc, mean_acc, m_acc = 0, np.zeros(d), np.zeros((d, d))
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    radius = np.empty(n, np.float64)
    pos = 0
    for res in row_block_results(blocks, z, _moments_block, rows, progress=progress, desc="stats 1/3"):
        if not isinstance(res, tuple):
            raise ValueError(f"{z_path.parent}: row {res} of z holds NaN or inf; re-import with --drop-nonfinite")
        nb, mb, cb, lob, hib, rb = res
        n_acc, mean_acc, m_acc = merge_moments(n_acc, mean_acc, m_acc, nb, mb, cb)
        np.minimum(lo, lob, out=lo)
        np.maximum(hi, hib, out=hi)
        radius[pos : pos + len(rb)] = rb
        pos += len(rb)
    return GaussianFit().fit_moments(n_acc, mean_acc, m_acc), lo, hi, radius


def correlation(cov: np.ndarray) -> np.ndarray:
    """Correlation matrix of a covariance; constant components correlate 0 with the others."""
    std = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(std, std)
    corr[~np.isfinite(corr)] = 0.0
    np.fill_diagonal(corr, 1.0)
    return corr


def strongest_pairs(corr: np.ndarray, std: np.ndarray, cfg: StatsConfig):
    """The ``top_pairs`` strongest |r| pairs (i, j, r), and a +-4 sigma raster window for the first ``pair_plots``."""
    iu = np.triu_indices(len(corr), 1)
    order = np.argsort(-np.abs(corr[iu]), kind="stable")
    top = [(int(iu[0][k]), int(iu[1][k]), float(corr[iu][k])) for k in order[: cfg.top_pairs]]
    windows = []
    for i, j, _ in top[: cfg.pair_plots]:
        half = 4.0 * np.array([std[i], std[j]])
        windows.append((i, j, -half, half))
    return top, windows


def _projection_block(x: np.ndarray, start: int, fit: GaussianFit, grid: tuple[float, float, int], windows, r3: float,
                      pca_path: str | None, pair_bins: int):
    """Pass 2 on one block: histograms, pair rasters, squared Mahalanobis distances, core moments; the block's
    PCA coordinates written into ``pca_path`` (whole chunks: blocks are chunk-aligned)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    d = x.shape[1]
    e_lo, w, nbins = grid
    counts = np.zeros((d, nbins), np.int64)
    component_histograms(x, e_lo, w, nbins, counts)
    rasters = np.zeros((len(windows), pair_bins, pair_bins), np.int64)
    for k, (i, j, wlo, whi) in enumerate(windows):
        basis = np.zeros((2, d))
        basis[0, i] = basis[1, j] = 1.0
        density_raster(x, fit.mean_, basis, wlo, whi, pair_bins, pair_bins, rasters[k])
    y = fit.project(x)
    if pca_path is not None:
        zarr.open_array(pca_path, mode="r+").with_config(WRITE_ALL)[start : start + len(x)] = y.astype(np.float32)
    y *= fit.inv_sqrt_  # whitened in place: one (rows, D) temporary per block, not three
    d2 = np.einsum("ij,ij->i", y, y)
    del y
    return counts, rasters, d2, block_moments(x[d2 <= r3])


def _projection_pass(z, rows: int, fit: GaussianFit, grid: tuple[float, float, int], windows, r3: float,
                     pca_path: str | None, cfg, progress: bool, blocks=None):
    """Pass 2: histograms, PCA coordinates, Mahalanobis distances, core moments, pair rasters."""
    n, d = z.shape
    counts = np.zeros((d, grid[2]), np.int64)
    rasters = np.zeros((len(windows), cfg.pair_bins, cfg.pair_bins), np.int64)
    d2 = np.empty(n, np.float64)
    core_n, core_mean, core_m = 0, np.zeros(d), np.zeros((d, d))
    pos = 0
    for cb, rb, db, mom in row_block_results(blocks, z, _projection_block, rows,
                                             (fit, grid, windows, r3, pca_path, cfg.pair_bins), progress=progress,
                                             desc="stats 2/3"):
        counts += cb
        rasters += rb
        d2[pos : pos + len(db)] = db
        pos += len(db)
        core_n, core_mean, core_m = merge_moments(core_n, core_mean, core_m, *mom)
    return counts, rasters, d2, GaussianFit().fit_moments(core_n, core_mean, core_m)


def _core_block(x: np.ndarray, start: int, r3: float, core: GaussianFit, d2: np.ndarray) -> np.ndarray:
    """Pass 3 on one block: squared Mahalanobis distances of its core points (``d2 <= r3``) against the core."""
    return core.mahalanobis2(np.ascontiguousarray(x, dtype=np.float32)[d2 <= r3])


def _core_pass(z, rows: int, d2: np.ndarray, r3: float, core: GaussianFit, progress: bool,
               blocks=None) -> np.ndarray:
    """Pass 3: squared Mahalanobis distances of the core points against the core's own fit."""
    per_block = [(d2[s : s + rows],) for s in range(0, len(d2), rows)]
    parts = list(row_block_results(blocks, z, _core_block, rows, (r3, core), per_block, progress, "stats 3/3"))
    return np.concatenate(parts) if parts else np.empty(0)


def _radius_summary(radius: np.ndarray, fit: GaussianFit, cfg: StatsConfig) -> tuple[dict, list]:
    """The radius distribution at each bin width, its peak, and the expectation sqrt(sum(mu^2 + var))."""
    expected = float(np.sqrt(np.sum(fit.mean_**2 + fit.std_**2)))
    hists = []
    for rw in cfg.radius_bin_widths:
        rn = max(1, int(math.ceil(radius.max() / rw + 1e-9)))
        rc = np.zeros(rn, np.int64)
        histogram_1d(radius, 0.0, rw, rn, rc)
        hists.append((rw, uniform_edges(0.0, rw, rn), rc))
    rw0, redges0, rc0 = hists[0]
    info = {
        "peak": float(redges0[rc0.argmax()] + rw0 / 2),
        "peak_by_bin_width": {str(rw): float(e[c.argmax()] + rw / 2) for rw, e, c in hists},
        "mean": float(radius.mean()), "min": float(radius.min()), "max": float(radius.max()),
        "std": float(radius.std()),
        "expected": expected, "sqrt_d": math.sqrt(len(fit.mean_)),
        "formula": "expected = sqrt(sum_j (mean_j^2 + var_j))",
    }
    return info, hists


def _components(counts, edges, n: int, fit: GaussianFit, lo, hi, cfg: StatsConfig) -> tuple[list[dict], np.ndarray, dict]:
    """Per-component number density, Gaussian fit and the dominant flag."""
    w = cfg.bin_width
    centres = edges[:-1] + w / 2
    density = counts / (n * w)
    dominant, rule = detect_dominant(fit.mean_, fit.std_, cfg)
    components = []
    for j in range(len(fit.mean_)):
        gfit = fit_gaussian(centres, density[j], fit.mean_[j], fit.std_[j])
        components.append({"index": j, "mean": float(fit.mean_[j]), "std": float(fit.std_[j]), "min": float(lo[j]),
                           "max": float(hi[j]), **gfit, "dominant": bool(dominant[j])})
    return components, dominant, rule


def _pca_summary(fit: GaussianFit, write_pca: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    eigval = fit.eigenvalues_
    ratios = eigval / eigval.sum() if eigval.sum() > 0 else np.zeros(len(eigval))
    cum = np.cumsum(ratios)
    need = {f"n_components_{int(p * 100)}": int(min(len(eigval), np.searchsorted(cum, p - 1e-12) + 1))
            for p in (0.5, 0.9, 0.99)}
    return ({"explained_variance_ratio": ratios.tolist(), "explained_variance": eigval.tolist(), **need,
             "rank": fit.rank_, "coordinates": "latents.zarr/pca" if write_pca else None}, ratios, cum)


def stats_rows(z, block_rows: int | None) -> int:
    """Rows per block: whole chunks of ``z`` (so workers writing PCA coordinates never share a chunk)."""
    chunk = z.chunks[0]
    rows = block_rows or block_size(z)
    return -(-rows // chunk) * chunk


def compute_stats(run_dir: str | os.PathLike, config: StatsConfig | None = None, progress: bool = True,
                  cluster=None) -> dict:
    """Measure the latent cloud of ``run_dir`` and write ``RUN/stats/``; returns the stats.json content.

    ``cluster`` (``engine.analysis.cluster.Cluster``): the blocks run as its tasks; the results are the same."""
    cfg = config or StatsConfig()
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n, d = z.shape
    if n < 2:
        raise ValueError(f"{latents_path(run)} has {n} rows; statistics need at least 2")
    out_dir = stage_dir(run, "stats")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    z_path, rows = latents_path(run) / "z", stats_rows(z, cfg.block_rows)
    blocks = None  # on a cluster: the row blocks the three passes map over, held in its memory where they fit
    if cluster is not None:
        cluster.check_readable(latents_path(run))
        blocks = cluster.row_blocks(z_path, rows, cfg.hold_blocks)
    fit, lo, hi, radius = _moments_pass(z, z_path, rows, progress, blocks)
    corr = correlation(fit.covariance_)
    w = cfg.bin_width
    e_lo = math.floor(lo.min() / w) * w
    nbins = max(1, int(math.ceil((hi.max() - e_lo) / w - 1e-9)))
    top, windows = strongest_pairs(corr, fit.std_, cfg)
    r3 = float(MahalanobisReference(n, fit.rank_).ppf(sigma_probability(3)))
    latents = zarr.open_group(latents_path(run), mode="r+")
    pca_path = None
    if cfg.write_pca:
        create_rows_array(latents, "pca", n, d, chunk=z.chunks[0])
        pca_path = str((latents_path(run) / "pca").resolve())
    counts, rasters, d2, core = _projection_pass(z, rows, fit, (e_lo, w, nbins), windows, r3, pca_path, cfg,
                                                 progress, blocks)
    core_d2 = _core_pass(z, rows, d2, r3, core, progress, blocks)
    blocks = None  # held blocks leave the workers' memory

    edges = uniform_edges(e_lo, w, nbins)
    components, dominant, rule = _components(counts, edges, n, fit, lo, hi, cfg)
    radius_info, radius_hists = _radius_summary(radius, fit, cfg)
    pca, ratios, cum = _pca_summary(fit, cfg.write_pca)
    core_summary = normality_summary(core_d2, core.rank_)
    core_summary["share_of_points"] = core.n_samples_ / n
    core_summary["cut"] = "points with Mahalanobis distance inside the 3-sigma ellipsoid of the full fit, refitted"
    iu = np.triu_indices(d, 1)
    result = {
        "n": int(n), "d": int(d), "source": dict(group.attrs).get("source"),
        "inputs": {"latents_key": group.attrs.get("key")},
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
        "pca": pca,
        "normality": {"definition": ("k-sigma ellipsoid: Mahalanobis radius^2 = reference.ppf(erf(k/sqrt(2))), the "
                                    "reference being chi2(dof) for large n, exactly a scaled Beta in-sample"),
                      "full": normality_summary(d2, fit.rank_), "core": core_summary},
        "seconds": time.perf_counter() - t0,
    }
    if n <= d:
        result["warnings"] = [f"{n} points in {d} dimensions: the covariance is singular (rank {fit.rank_} < {d}); "
                              f"correlations, PCA and the normality test describe the points, not a population"]
        logger.warning("%s", result["warnings"][0])
    _write_tables(out_dir, latents, result, fit, corr, edges, counts, radius_hists, rasters, windows, ratios, cum)
    result["figures"] = (stats_figures(out_dir, result, edges, counts, radius_hists, corr, rasters, windows,
                                       fit.covariance_) if cfg.figures else [])
    result["seconds"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "stats.json", result)
    logger.info("stats of %d x %d latents in %.1f s: %d dominant components %s, radius peak %.2f (expected %.2f)",
                n, d, result["seconds"], len(result["dominant"]), result["dominant"], radius_info["peak"],
                radius_info["expected"])
    return result


def _write_tables(out_dir: Path, latents, result, fit: GaussianFit, corr, edges, counts, radius_hists, rasters,
                  windows, ratios, cum) -> None:
    """Arrays and CSV tables beside stats.json; the principal axes into latents.zarr."""
    cov = fit.covariance_
    np.save(out_dir / "covariance.npy", cov)
    np.save(out_dir / "correlation.npy", corr)
    np.savez(out_dir / "density.npz", edges=edges, counts=counts,
             **{f"radius_edges_{rw}": e for rw, e, _ in radius_hists},
             **{f"radius_counts_{rw}": c for rw, _, c in radius_hists})
    np.savez(out_dir / "pairs.npz", rasters=rasters, pairs=np.array([(i, j) for i, j, _, _ in windows]).reshape(-1, 2),
             lo=np.array([p[2] for p in windows]).reshape(-1, 2), hi=np.array([p[3] for p in windows]).reshape(-1, 2),
             cov=np.array([cov[np.ix_([i, j], [i, j])] for i, j, _, _ in windows]).reshape(-1, 2, 2))
    for name, arr in (("pca_mean", fit.mean_), ("pca_components", fit.eigenvectors_.T),
                      ("pca_variance", fit.eigenvalues_)):
        a = latents.create_array(name, shape=arr.shape, dtype="float64", overwrite=True)
        a[...] = arr
    _write_csv(out_dir / "components.csv", result["components"])
    _write_csv(out_dir / "top_pairs.csv", result["correlation"]["top_pairs"])
    _write_csv(out_dir / "pca.csv", [{"component": k + 1, "explained_variance_ratio": float(r), "cumulative": float(c)}
                                     for k, (r, c) in enumerate(zip(ratios, cum))])


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
