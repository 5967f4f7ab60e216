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

import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm
from scipy import stats as sstats

from engine.analysis.blockwise import GRAPH_BLOCK, fit_on, knn_graph_on, local_dims_on, rasters_on, void_on, write_null
from engine.analysis.config import StructureConfig
from engine.analysis.gaussian import GaussianFit
from engine.analysis.knn import build_index, knn, knn_graph, nearest_distances, recall_at_k
from engine.analysis.torch_kernels import knn_device, knn_graph_device, local_pca_device
from engine.analysis.planes import dominant_components, plane_views, plane_windows
from engine.analysis.structure_figures import structure_figures
from engine.files import write_json_atomic
from engine.latents.store import iter_blocks, latents_key, open_latents
from engine.layout import latents_path, stage_dir
from engine.stores import WRITE_ALL
from engine.model.precision import resolve_device
from kernels.intrinsic import levina_bickel_dimension, twonn_dimension, twonn_mle
from kernels.localdim import local_dim_summary, local_pca

logger = logging.getLogger(__name__)

Z_LIMIT = 5.0  # combined standard errors
REL_LIMIT = 0.05  # relative difference


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


def graph_device(cfg: StructureConfig):
    """The torch device the exact graph, void probes and local PCA run on, or None for the numba kernels (a CPU)."""
    dev = resolve_device(cfg.device)
    return dev if dev.type == "cuda" else None


def _graph(x: np.ndarray, keep: int, cfg: StructureConfig, dev, progress: bool, label: str):
    """(distances, indices) of the ``keep`` nearest other points: on ``dev`` by torch when given (exact only)."""
    if dev is None or cfg.index != "exact":
        return knn_graph(x, keep, cfg.index, seed=cfg.seed, block=cfg.query_block, progress=progress,
                         desc=f"kNN {label}")
    with tqdm(total=len(x), unit="pt", desc=f"kNN {label} ({dev})", disable=None if progress else True,
              leave=False) as bar:
        return knn_graph_device(x, keep, dev, progress=bar.update)


def _cloud_statistics(x: np.ndarray, cfg: StructureConfig, rng, progress: bool, label: str, keep: int,
                      dev=None) -> dict:
    """kNN graph (``keep`` >= k neighbours per point), local PCA and global ID of one cloud (on the first k);
    the graph and local PCA on the torch device ``dev`` when given."""
    t0 = time.perf_counter()
    graph_dist, graph_idx = _graph(x, keep, cfg, dev, progress, label)
    idx = graph_idx[:, : cfg.k]
    recall = None
    if cfg.index != "exact":
        q = rng.choice(len(x), size=min(cfg.recall_queries, len(x)), replace=False)
        _, exact = knn(build_index(x, "exact"), x[q], cfg.k, query_ids=q)
        recall = recall_at_k(idx[q], exact)
    t_knn = time.perf_counter() - t0
    m = min(cfg.k + 1, x.shape[1])
    hood = np.concatenate([np.arange(len(x))[:, None], idx], axis=1)  # the point and its k neighbours
    if dev is None:
        eig = np.empty((len(x), m), np.float64)
        local_pca(x, np.ascontiguousarray(hood), eig)
    else:
        eig = local_pca_device(x, hood, dev)
    n90 = np.empty(len(x), np.int32)
    pr = np.empty(len(x), np.float32)
    lin = np.empty(len(x), np.float32)
    local_dim_summary(eig, n90, pr, lin)
    return {**_summary(graph_dist, graph_idx, n90, pr, lin, cfg, x.shape[1]), "recall": recall, "points": x,
            "seconds_knn": t_knn, "seconds": time.perf_counter() - t0}


def _summary(graph_dist, graph_idx, n90, pr, lin, cfg: StructureConfig, d: int) -> dict:
    """The per-point and global statistics of a cloud from its graph and local PCA."""
    dist, idx = graph_dist[:, : cfg.k], graph_idx[:, : cfg.k]
    r1, r2 = dist[:, 0].astype(np.float64), dist[:, 1].astype(np.float64)
    lb, lb_points = levina_bickel_dimension(dist.astype(np.float64), cfg.k)
    return {"dist": dist, "idx": idx, "graph_dist": graph_dist, "graph_idx": graph_idx, "n90": n90, "pr": pr,
            "lin": lin, "ldim": corrected_dimension(pr, cfg.k + 1, d), "twonn": twonn_dimension(r1, r2),
            "twonn_mle": twonn_mle(r1, r2), "levina_bickel": lb, "lb_points": lb_points}


def _cluster_statistics(cluster, path: Path, n: int, d: int, cfg: StructureConfig, label: str, keep: int) -> dict:
    """``_cloud_statistics`` on a Dask cluster: the graph in tiles and local PCA in blocks, read from ``path``."""
    t0 = time.perf_counter()
    graph_dist, graph_idx = knn_graph_on(cluster, path, n, keep, desc=f"kNN {label}", tiles=cfg.tiles)
    t_knn = time.perf_counter() - t0
    n90, pr, lin = local_dims_on(cluster, path, graph_idx[:, : cfg.k])
    return {**_summary(graph_dist, graph_idx, n90, pr, lin, cfg, d), "recall": None, "points": None,
            "path": path, "seconds_knn": t_knn, "seconds": time.perf_counter() - t0}


def _load_points(z, rows: np.ndarray | None, progress: bool, where) -> np.ndarray:
    """The analysed rows of z (all, or the sorted sample ``rows``) as float32 (n, D) in memory."""
    n_all, d = z.shape
    x = np.empty((n_all if rows is None else len(rows), d), np.float32)
    if rows is None:
        for s, block in iter_blocks(z, progress=progress, desc="load"):
            x[s : s + len(block)] = block
    else:
        x[:] = z.get_orthogonal_selection((rows, slice(None)))
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: z holds NaN or inf; re-import with --drop-nonfinite")
    return x


def void_statistic(probes: np.ndarray, s: dict, block: int, dev=None) -> dict:
    """Probe-to-cloud nearest distances ``u`` (exact; on the torch device ``dev`` when given) against the cloud's
    own nearest-neighbour distances ``w``."""
    if dev is None:
        u = nearest_distances(probes, s["points"])
    else:
        u = knn_device(probes, s["points"], 1, dev)[0][:, 0]
    w = s["dist"][:, 0]
    return {"u": u, "w": w, "ratio": float(np.median(u) / np.median(w))}


def compare_distributions(name: str, dv: np.ndarray, nv: np.ndarray, halves, rng, b: int, stat=np.median) -> dict:
    """The verdict on a per-point statistic, with the KS distance data vs null beside that of two null halves."""
    res = verdict(name, float(stat(dv)), float(stat(nv)), _bootstrap_se(dv, stat, rng, b), _bootstrap_se(nv, stat, rng, b))
    a_half, b_half = halves
    res["ks_data_vs_null"] = float(sstats.ks_2samp(dv, nv, method="asymp").statistic)
    res["ks_null_halves"] = float(sstats.ks_2samp(nv[a_half], nv[b_half], method="asymp").statistic)
    return res


def _ratio_se(v: dict, rng, b: int) -> float:
    u, w = v["u"], v["w"]
    reps = [np.median(u[rng.integers(0, len(u), len(u))]) / np.median(w[rng.integers(0, len(w), len(w))])
            for _ in range(b)]
    return float(np.std(reps))


def _twonn_ratios(s: dict) -> np.ndarray:
    r1, r2 = s["dist"][:, 0], s["dist"][:, 1]
    return r2[r1 > 0] / r1[r1 > 0]  # duplicates have no ratio


def _verdicts(data_s: dict, null_s: dict, void: dict, cfg: StructureConfig, rng) -> dict:
    """One verdict per statistic, data against null; the order of rng draws is part of the result."""
    b, n = cfg.bootstrap, len(data_s["dist"])
    half = rng.permutation(n)
    halves = (half[: n // 2], half[n // 2 :])
    per_point = lambda name, key, f=lambda a: a, stat=np.median: compare_distributions(  # noqa: E731
        name, f(data_s[key]), f(null_s[key]), halves, rng, b, stat)
    lb_se = {k: _bootstrap_se(s["lb_points"][np.isfinite(s["lb_points"])], lambda v: 1 / np.mean(1 / v), rng, b)
             for k, s in (("data", data_s), ("null", null_s))}
    mu = {"data": _twonn_ratios(data_s), "null": _twonn_ratios(null_s)}
    twonn_se = {k: _bootstrap_se(v, lambda m_: twonn_dimension(np.ones(len(m_)), m_), rng, b) for k, v in mu.items()}
    mle_se = {k: _bootstrap_se(v, lambda m_: len(m_) / np.sum(np.log(m_)), rng, b) for k, v in mu.items()}
    return {
        "local_dimension": per_point("local dimension, bias-corrected participation ratio (median)", "ldim"),
        "local_participation_ratio": per_point("local participation ratio (median)", "pr"),
        # a count: its median moves in whole steps and has no bootstrap spread, so compare means
        "local_n90": per_point("local components for 90% variance (mean)", "n90", lambda a: a.astype(float), np.mean),
        "local_linearity": per_point("local linearity (median)", "lin"),
        "knn_distance_1": per_point("1st-neighbour distance (median)", "dist", lambda a: a[:, 0]),
        "knn_distance_k": per_point(f"{cfg.k}th-neighbour distance (median)", "dist", lambda a: a[:, -1]),
        "twonn_dimension": verdict("TwoNN intrinsic dimension (Facco et al.'s fit, largest 10% of ratios left out)",
                                   data_s["twonn"], null_s["twonn"], twonn_se["data"], twonn_se["null"]),
        "twonn_mle_dimension": verdict("TwoNN, maximum-likelihood form (n / sum log mu)", data_s["twonn_mle"],
                                       null_s["twonn_mle"], mle_se["data"], mle_se["null"]),
        "levina_bickel_dimension": verdict("Levina-Bickel intrinsic dimension", data_s["levina_bickel"],
                                           null_s["levina_bickel"], lb_se["data"], lb_se["null"]),
        "void_ratio": verdict("void ratio (probe-to-cloud / within-cloud NN distance, medians)",
                              void["data"]["ratio"], void["null"]["ratio"], _ratio_se(void["data"], rng, b),
                              _ratio_se(void["null"], rng, b)),
    }


def _write_point_arrays(run: Path, data_s: dict, rows: np.ndarray | None, n_all: int, index: str) -> None:
    """Per-point arrays aligned with the rows of z (NaN / -1 where a point was not sampled); the kNN graph
    with all its ``graph_k`` columns, nearest first."""
    latents = zarr.open_group(latents_path(run), mode="r+")
    sel = slice(None) if rows is None else rows
    for name, values, fill, dtype in (("local_dim", data_s["ldim"], np.nan, "float32"),
                                      ("local_pr", data_s["pr"], np.nan, "float32"),
                                      ("local_n90", data_s["n90"], -1, "int16"),
                                      ("local_linearity", data_s["lin"], np.nan, "float32")):
        full = np.full(n_all, fill, dtype)
        full[sel] = values
        latents.create_array(name, shape=(n_all,), chunks=(min(n_all, 1 << 18),), dtype=dtype, overwrite=True,
                             fill_value=fill, config=WRITE_ALL)[:] = full
    k = data_s["graph_idx"].shape[1]
    for name, values, fill, dtype in (("knn_indices", data_s["graph_idx"], -1, "int64"),
                                      ("knn_distances", data_s["graph_dist"], np.nan, "float32")):
        full = np.full((n_all, k), fill, dtype)
        # indices refer to analysed rows; map them back to rows of z
        full[sel] = values if rows is None or name == "knn_distances" else rows[values]
        arr = latents.create_array(name, shape=full.shape, chunks=(min(n_all, 1 << 16), k), dtype=dtype,
                                   fill_value=fill, config=WRITE_ALL, overwrite=True)
        arr[:] = full
        # what tsne checks before it reuses the graph: of which latents, how searched, all rows or a sample
        arr.attrs.update({"latents_key": latents.attrs.get("key"), "index": index, "complete": rows is None})


def compute_structure(run_dir: str | os.PathLike, config: StructureConfig | None = None, progress: bool = True,
                      cluster=None) -> dict:
    """kNN graph, local and global intrinsic dimension, voids: data against the null; writes RUN/structure/.

    ``cluster`` (``engine.analysis.cluster.Cluster``): the graph, local PCA, null model, void probes and plane
    rasters run as its tasks, each reading its rows from Zarr (module ``blockwise``); no worker holds a cloud."""
    cfg = config or StructureConfig()
    run = Path(run_dir)
    z = open_latents(run)["z"]
    n_all, d = z.shape
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n_all, size=cfg.sample, replace=False)) if cfg.sample and cfg.sample < n_all else None
    n = n_all if rows is None else len(rows)
    if n <= cfg.k + 1:
        raise ValueError(f"{n} points are too few for k = {cfg.k} neighbours")
    out_dir = stage_dir(run, "structure")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keep = max(cfg.k, min(cfg.graph_k, n - 1))
    if cluster is None:
        x = _load_points(z, rows, progress, latents_path(run))
        fit = GaussianFit().fit(x)
        # void statistic: probes from the fitted normal (drawn first, as on a cluster); their distance to the
        # nearest point of each cloud, against the nearest-neighbour distances inside that cloud
        probes = fit.sample(cfg.void_probes, rng)
        null = fit.sample(n, rng)
        dev = graph_device(cfg)
        data_s = _cloud_statistics(x, cfg, rng, progress, "data", keep, dev)
        null_s = _cloud_statistics(null, cfg, rng, progress, "null", cfg.k, dev)
        void = {name: void_statistic(probes, s, cfg.query_block, dev) for name, s in (("data", data_s), ("null", null_s))}
        clouds = (x, null)
    else:
        fit, data_s, null_s, void, clouds = _on_cluster(cluster, run, z, rows, cfg, rng, keep)
    result = {
        "n": int(n), "d": int(d), "k": cfg.k, "index": cfg.index, "sampled": rows is not None,
        "inputs": {"latents_key": latents_key(run)},
        "config": asdict(cfg),
        "judged": (f"differs when |data - null| > {Z_LIMIT:g} bootstrap standard errors and the relative difference "
                   f"> {REL_LIMIT:.0%}; KS distances beside the KS between two halves of the null"),
        "recall_at_k": {"data": data_s["recall"], "null": null_s["recall"]},
        "statistics": _verdicts(data_s, null_s, void, cfg, rng),
        "seconds": {"knn_data": data_s["seconds_knn"], "knn_null": null_s["seconds_knn"],
                    "total": time.perf_counter() - t0},
    }
    _write_point_arrays(run, data_s, rows, n_all, cfg.index)
    result["figures"] = structure_figures(out_dir, result, data_s, null_s, void)
    result["planes"], plane_figs = plane_views(out_dir, *clouds, fit, dominant_components(run, fit.std_))
    result["figures"] += plane_figs
    result["seconds"]["total"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "structure.json", result)
    for s in result["statistics"].values():
        logger.info(s["verdict"])
    return result


def _on_cluster(cluster, run: Path, z, rows: np.ndarray | None, cfg: StructureConfig, rng, keep: int):
    """(fit, data statistics, null statistics, void statistic, plane rasters of both clouds) on a Dask cluster.
    The null cloud is drawn block by block on the workers (seeds (seed, block)) into RUN/structure/null.zarr,
    removed at the end; a --sample is written to sample.zarr beside it first."""
    if cfg.index != "exact":
        raise ValueError(f"--dask computes the exact graph in tiles; drop --index {cfg.index}")
    run = Path(run).resolve()  # the workers open these paths from their own working directories
    cluster.check_readable(latents_path(run))
    out_dir = stage_dir(run, "structure")
    n, d = (z.shape[0] if rows is None else len(rows)), z.shape[1]
    data_path = latents_path(run) / "z"
    temporary = [out_dir / "null.zarr"]
    try:
        if rows is not None:
            data_path = out_dir / "sample.zarr"
            temporary.append(data_path)
            zarr.create_array(str(data_path), shape=(n, d), chunks=(GRAPH_BLOCK, d), dtype="float32",
                              overwrite=True, config=WRITE_ALL)[:] = _load_points(z, rows, False, latents_path(run))
        fit = fit_on(cluster, data_path, n, d)
        write_null(cluster, temporary[0], n, d, fit, cfg.seed)
        data_s = _cluster_statistics(cluster, data_path, n, d, cfg, "data", keep)
        null_s = _cluster_statistics(cluster, temporary[0], n, d, cfg, "null", cfg.k)
        probes = fit.sample(cfg.void_probes, rng)
        void = {name: {"u": void_on(cluster, s["path"], n, probes), "w": s["dist"][:, 0]}
                for name, s in (("data", data_s), ("null", null_s))}
        for v in void.values():
            v["ratio"] = float(np.median(v["u"]) / np.median(v["w"]))
        windows = plane_windows(d, fit, dominant_components(run, fit.std_))
        clouds = tuple(rasters_on(cluster, s["path"], n, fit.mean_, windows) for s in (data_s, null_s))
    finally:
        for t in temporary:
            shutil.rmtree(t, ignore_errors=True)
    return fit, data_s, null_s, void, clouds
