"""Structure of the cloud, always beside a null model.

The null model is the same number of points drawn from the multivariate
normal with the cloud's mean and covariance. Every statistic is computed on
both, and a one-line verdict says whether the data differ from the null beyond
sampling noise.

How a verdict is judged: for a summary s (a median, or a global estimate) the
standard error of s is bootstrapped over points, separately for data and null;
the data "differ" when |s_data - s_null| > 5 combined standard errors AND the
relative difference exceeds 5% (with 200,000 points, significance alone would
flag differences too small to matter). Distributions are also compared by the
two-sample KS distance, reported beside the KS distance between two random
halves of the null (what sampling noise alone gives).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zarr
from scipy import stats as sstats

from engine.knn import build_index, knn, recall_at_k
from engine.latents import iter_blocks
from engine.store import latents_path, open_latents
from kernels.intrinsic import levina_bickel_dimension, twonn_dimension
from kernels.localdim import local_dim_summary, local_pca
from kernels.moments import block_moments, covariance

logger = logging.getLogger(__name__)

Z_LIMIT = 5.0  # combined standard errors
REL_LIMIT = 0.05  # relative difference


@dataclass
class StructureConfig:
    k: int = 16  # neighbours per point
    index: str = "exact"  # exact | hnsw | ivf
    sample: int | None = None  # analyse this many randomly chosen points (default: all)
    seed: int = 0
    recall_queries: int = 2000  # queries for the recall of an approximate index
    void_probes: int = 10000  # probe points of the void statistic
    bootstrap: int = 200  # resamples for standard errors
    query_block: int = 8192  # kNN queries per FAISS call (bounds memory)

    def __post_init__(self):
        if self.k < 3:
            raise ValueError(f"k must be >= 3 (local PCA and the ID estimators need neighbours), got {self.k}")
        if self.sample is not None and self.sample < self.k + 2:
            raise ValueError(f"sample must be larger than k + 1, got {self.sample}")


def fitted_normal(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` float32 points from the normal with the sample mean and covariance of ``x``."""
    nb, mean, m = block_moments(x)
    cov = covariance(nb, m)
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0, None))
    out = np.empty((n, x.shape[1]), np.float32)
    for s in range(0, n, 65536):
        e = min(s + 65536, n)
        out[s:e] = mean + rng.standard_normal((e - s, x.shape[1])) @ root.T
    return out


def _bootstrap_se(values: np.ndarray, stat, rng: np.random.Generator, b: int) -> float:
    n = len(values)
    m = min(n, 20000)  # resample a subset: the SE scales as 1/sqrt(n), corrected below
    reps = [stat(values[rng.integers(0, n, m)]) for _ in range(b)]
    return float(np.std(reps) * np.sqrt(m / n))


def verdict(name: str, data: float, null: float, se_data: float, se_null: float) -> dict:
    diff = data - null
    se = float(np.hypot(se_data, se_null))
    z = diff / se if se > 0 else (0.0 if diff == 0 else float("inf"))
    rel = abs(diff) / max(abs(null), 1e-300)
    differs = abs(z) > Z_LIMIT and rel > REL_LIMIT
    word = ("larger" if diff > 0 else "smaller") if differs else "no difference"
    text = (f"{name}: data {data:.4g} vs null {null:.4g} ({rel:.1%} {'higher' if diff > 0 else 'lower'}, "
            f"{abs(z):.1f} standard errors): " + (f"the data differ from the null ({word})" if differs
                                                   else "no difference from the null beyond sampling noise"))
    return {"data": data, "null": null, "se_data": se_data, "se_null": se_null, "z": z,
            "relative_difference": rel, "differs": bool(differs), "verdict": text}


def corrected_dimension(pr: np.ndarray, m: int, d: int) -> np.ndarray:
    """Local dimension from the participation ratio of an m-point neighbourhood, float32.

    m points of an isotropic d-dimensional normal give, in expectation,
    PR = d / (1 + d / (m - 1)): 16 neighbours of a 10-D blob show PR ~ 6. Inverting
    it, d = PR / (1 - PR / (m - 1)), undoes that bias; it saturates as PR nears
    m - 1 (a neighbourhood cannot show more than m - 1 dimensions), so it is
    clipped to [PR, D].
    """
    pr = pr.astype(np.float64)
    with np.errstate(divide="ignore"):
        dim = pr / np.clip(1.0 - pr / (m - 1), 1e-9, None)
    return np.clip(dim, pr, d).astype(np.float32)


def _cloud_statistics(x: np.ndarray, cfg: StructureConfig, rng, progress: bool, label: str) -> dict:
    """kNN graph, local PCA and global ID of one cloud."""
    t0 = time.perf_counter()
    index = build_index(x, cfg.index, seed=cfg.seed)
    dist, idx = knn(index, x, cfg.k, query_ids=np.arange(len(x)), block=cfg.query_block, progress=progress,
                    desc=f"kNN {label}")
    recall = None
    if cfg.index != "exact":
        q = rng.choice(len(x), size=min(cfg.recall_queries, len(x)), replace=False)
        _, exact = knn(build_index(x, "exact"), x[q], cfg.k, query_ids=q)
        recall = recall_at_k(idx[q], exact)
    t_knn = time.perf_counter() - t0
    m = min(cfg.k + 1, x.shape[1])
    hood = np.concatenate([np.arange(len(x))[:, None], idx], axis=1)  # the point and its k neighbours
    eig = np.empty((len(x), m), np.float64)
    local_pca(x, np.ascontiguousarray(hood), eig)
    n90 = np.empty(len(x), np.int32)
    pr = np.empty(len(x), np.float32)
    lin = np.empty(len(x), np.float32)
    local_dim_summary(eig, n90, pr, lin)
    ldim = corrected_dimension(pr, cfg.k + 1, x.shape[1])
    twonn = twonn_dimension(dist[:, 0].astype(np.float64), dist[:, 1].astype(np.float64))
    lb, lb_points = levina_bickel_dimension(dist.astype(np.float64), cfg.k)
    return {"dist": dist, "idx": idx, "recall": recall, "n90": n90, "pr": pr, "lin": lin, "ldim": ldim, "twonn": twonn,
            "levina_bickel": lb, "lb_points": lb_points, "index": index, "seconds_knn": t_knn,
            "seconds": time.perf_counter() - t0}


def compute_structure(run_dir: str | os.PathLike, config: StructureConfig | None = None, progress: bool = True) -> dict:
    """kNN graph, local and global intrinsic dimension, voids: data against the null; writes RUN/structure/."""
    cfg = config or StructureConfig()
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n_all, d = z.shape
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n_all, size=cfg.sample, replace=False)) if cfg.sample and cfg.sample < n_all else None
    x = np.empty((n_all if rows is None else len(rows), d), np.float32)
    if rows is None:
        for s, block in iter_blocks(z, progress=progress, desc="load"):
            x[s : s + len(block)] = block
    else:
        x[:] = z.get_orthogonal_selection((rows, slice(None)))
    if not np.isfinite(x).all():
        raise ValueError(f"{latents_path(run)}: z holds NaN or inf; re-import with --drop-nonfinite")
    n = len(x)
    if n <= cfg.k + 1:
        raise ValueError(f"{n} points are too few for k = {cfg.k} neighbours")
    out_dir = run / "structure"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    null = fitted_normal(x, n, rng)
    data_s = _cloud_statistics(x, cfg, rng, progress, "data")
    null_s = _cloud_statistics(null, cfg, rng, progress, "null")

    # void statistic: probes from the fitted normal; their distance to the nearest point of
    # each cloud, against the nearest-neighbour distances inside that cloud
    probes = fitted_normal(x, cfg.void_probes, rng)
    void = {}
    for name, s in (("data", data_s), ("null", null_s)):
        u, _ = knn(s["index"], probes, 1, block=cfg.query_block)
        w = s["dist"][:, 0]
        void[name] = {"u": u[:, 0], "w": w, "ratio": float(np.median(u) / np.median(w))}

    b = cfg.bootstrap
    med = np.median
    half = rng.permutation(n)
    a_half, b_half = half[: n // 2], half[n // 2 :]

    def compare(name, dv, nv, stat=med):
        res = verdict(name, float(stat(dv)), float(stat(nv)), _bootstrap_se(dv, stat, rng, b), _bootstrap_se(nv, stat, rng, b))
        res["ks_data_vs_null"] = float(sstats.ks_2samp(dv, nv, method="asymp").statistic)
        res["ks_null_halves"] = float(sstats.ks_2samp(nv[a_half], nv[b_half], method="asymp").statistic)
        return res

    def ratio_se(s):
        u, w = s["u"], s["w"]
        reps = [np.median(u[rng.integers(0, len(u), len(u))]) / np.median(w[rng.integers(0, len(w), len(w))])
                for _ in range(b)]
        return float(np.std(reps))

    lb_se = {k: _bootstrap_se(s["lb_points"][np.isfinite(s["lb_points"])], lambda v: 1 / np.mean(1 / v), rng, b)
             for k, s in (("data", data_s), ("null", null_s))}
    mu = {}
    for key, s in (("data", data_s), ("null", null_s)):
        r1, r2 = s["dist"][:, 0], s["dist"][:, 1]
        mu[key] = r2[r1 > 0] / r1[r1 > 0]  # duplicates have no ratio
    twonn_se = {k: _bootstrap_se(v, lambda m_: len(m_) / np.sum(np.log(m_)), rng, b) for k, v in mu.items()}
    result = {
        "n": int(n), "d": int(d), "k": cfg.k, "index": cfg.index, "sampled": rows is not None,
        "config": asdict(cfg),
        "judged": (f"differs when |data - null| > {Z_LIMIT:g} bootstrap standard errors and the relative difference "
                   f"> {REL_LIMIT:.0%}; KS distances beside the KS between two halves of the null"),
        "recall_at_k": {"data": data_s["recall"], "null": null_s["recall"]},
        "statistics": {
            "local_dimension": compare("local dimension, bias-corrected participation ratio (median)",
                                       data_s["ldim"], null_s["ldim"]),
            "local_participation_ratio": compare("local participation ratio (median)", data_s["pr"], null_s["pr"]),
            # a count: its median moves in whole steps and has no bootstrap spread, so compare means
            "local_n90": compare("local components for 90% variance (mean)", data_s["n90"].astype(float),
                                 null_s["n90"].astype(float), np.mean),
            "local_linearity": compare("local linearity (median)", data_s["lin"], null_s["lin"]),
            "knn_distance_1": compare("1st-neighbour distance (median)", data_s["dist"][:, 0], null_s["dist"][:, 0]),
            "knn_distance_k": compare(f"{cfg.k}th-neighbour distance (median)", data_s["dist"][:, -1], null_s["dist"][:, -1]),
            "twonn_dimension": verdict("TwoNN intrinsic dimension", data_s["twonn"], null_s["twonn"],
                                       twonn_se["data"], twonn_se["null"]),
            "levina_bickel_dimension": verdict("Levina-Bickel intrinsic dimension", data_s["levina_bickel"],
                                               null_s["levina_bickel"], lb_se["data"], lb_se["null"]),
            "void_ratio": verdict("void ratio (probe-to-cloud / within-cloud NN distance, medians)",
                                  void["data"]["ratio"], void["null"]["ratio"], ratio_se(void["data"]),
                                  ratio_se(void["null"])),
        },
        "seconds": {"knn_data": data_s["seconds_knn"], "knn_null": null_s["seconds_knn"],
                    "total": time.perf_counter() - t0},
    }

    # per-point arrays aligned with the rows of z (NaN / -1 where a point was not sampled)
    latents = zarr.open_group(latents_path(run), mode="r+")
    sel = slice(None) if rows is None else rows
    for name, values, fill, dtype in (("local_dim", data_s["ldim"], np.nan, "float32"),
                                      ("local_pr", data_s["pr"], np.nan, "float32"),
                                      ("local_n90", data_s["n90"], -1, "int16"),
                                      ("local_linearity", data_s["lin"], np.nan, "float32")):
        full = np.full(n_all, fill, dtype)
        full[sel] = values
        latents.create_array(name, shape=(n_all,), chunks=(min(n_all, 1 << 18),), dtype=dtype, overwrite=True)[:] = full
    for name, values, fill, dtype in (("knn_indices", data_s["idx"], -1, "int64"),
                                      ("knn_distances", data_s["dist"], np.nan, "float32")):
        full = np.full((n_all, cfg.k), fill, dtype)
        # indices refer to analysed rows; map them back to rows of z
        full[sel] = values if rows is None or name == "knn_distances" else rows[values]
        latents.create_array(name, shape=full.shape, chunks=(min(n_all, 1 << 16), cfg.k), dtype=dtype,
                             overwrite=True)[:] = full

    from engine.planes import dominant_components, plane_views
    from engine.structplots import structure_figures

    result["figures"] = structure_figures(out_dir, result, data_s, null_s, void)
    nb, mean, m = block_moments(x)
    w, v = np.linalg.eigh(covariance(nb, m))
    eigvec = v[:, np.argsort(w)[::-1]]
    result["planes"], plane_figs = plane_views(out_dir, x, null, mean, eigvec, dominant_components(run, x))
    result["figures"] += plane_figs
    result["seconds"]["total"] = time.perf_counter() - t0
    (out_dir / "structure.json").write_text(json.dumps(result, indent=1))
    for key, s in result["statistics"].items():
        logger.info(s["verdict"])
    return result
