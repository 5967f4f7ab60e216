"""t-SNE of the latent cloud, always beside the same embedding of the fitted-normal null model.

The study embedded 20,000 z-points with perplexity 10, early exaggeration 16
and 1000 iterations and read "islands" and "filaments" into the picture.
t-SNE makes clumps out of structureless data too, so zspace embeds, with the
same settings, the same number of points drawn from the multivariate normal
with the chosen points' mean and covariance (``engine.analysis.gaussian.GaussianFit``),
and draws both side by side: only what the data show and the null does not is
structure of the cloud.

Neighbours are exact: the affinities (perplexity-calibrated Gaussians on the
3 x perplexity nearest neighbours, as openTSNE computes them) come from the
exact kNN graph, by the self-join kernel (``kernels.selfjoin``), where openTSNE
would search approximately with Annoy. When every row is embedded in z itself
and ``zspace structure`` has already written an exact graph of these latents with
enough neighbours (``knn_indices``, 90 by default), that graph is reused and no
search runs at all (``tsne.json`` says which). Optimisation is openTSNE's
(FFT-accelerated above ~10,000 points, Barnes-Hut below):
``early_exaggeration_iter = 250`` iterations with ``early_exaggeration``, then
``n_iter - 250`` plain ones, learning rate ``"auto"`` (N / exaggeration,
Belkina et al. 2019), PCA initialisation. Each map's quality is recorded: its
KL divergence and the share of each point's 15 nearest neighbours in z that
stay among its 15 nearest in the map.

Placing new points (``place_points``) does not pickle the fitted embedding: it
rebuilds an ``openTSNE.TSNEEmbedding`` from the saved 2-D coordinates and the
affinities of the same rows of z (same perplexity, seed and projection), then
calls ``TSNEEmbedding.transform``. Why: a pickle holds the Annoy kNN index
with its copy of the data and the sparse P matrix: 88 MB for 20,000 256-D
points against 0.5 MB for ``embedding.npz`` (~0.7 GB at 165,000), and it ties
the run folder to one openTSNE version. The rebuild costs one kNN pass over the
n embedded points (8 s at 20,000 x 256 on 2 busy cores; placing 500 points took
20 s in all) and needs only ``embedding.npz`` and ``latents.zarr``, kept anyway.
The rebuilt kNN index may differ from the fit's in approximate neighbours; it
is only used to find the neighbours of the new points.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter
from tqdm.auto import tqdm

from engine.analysis.config import EARLY_EXAGGERATION_ITER, TSNEConfig
from engine.analysis.gaussian import GaussianFit
from engine.analysis.knn import knn_graph
from engine.figures import subplots
from engine.files import write_json_atomic
from engine.latents.store import open_latents
from engine.layout import latents_path

logger = logging.getLogger(__name__)

CALLBACK_EVERY = 50  # iterations between progress updates (each also evaluates the KL divergence)
# settings that define an embedding: place_points refuses a config that differs in these
EMBEDDING_KEYS = ("n", "pca", "perplexity", "early_exaggeration", "n_iter", "seed", "affinity", "uniform_k")


def tsne_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "tsne"


def _threads(n_jobs: int) -> int:
    cores = os.cpu_count() or 1
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def _check_perplexity(cfg: TSNEConfig, n: int) -> None:
    if cfg.affinity == "uniform":
        if cfg.uniform_k > n - 1:
            raise ValueError(f"uniform_k {cfg.uniform_k} is too large for {n} points: need uniform_k <= n - 1")
        return
    # openTSNE silently lowers a perplexity above (n - 1) / 3; refuse instead, so the saved settings are the used ones
    if 3 * cfg.perplexity > n - 1:
        raise ValueError(f"perplexity {cfg.perplexity:g} is too large for {n} points: need 3 * perplexity <= n - 1, "
                         f"i.e. perplexity <= {(n - 1) / 3:.4g}")


def _projection(group, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean (D,) and the first k principal axes (k, D), float64, for projecting rows of z.

    From ``pca_mean``/``pca_components`` in latents.zarr (written by ``zspace stats``,
    fitted on all N points) when present, else from the covariance of ``x`` (n, D).
    """
    d = x.shape[1]
    if k > d:
        raise ValueError(f"pca must be <= the latent dimension {d}, got {k}")
    if "pca_components" in group and "pca_mean" in group:
        comps = np.asarray(group["pca_components"][...], np.float64)
        mean = np.asarray(group["pca_mean"][...], np.float64)
        if comps.shape[1:] == (d,) and mean.shape == (d,) and comps.shape[0] >= k:
            return mean, comps[:k], "stats (pca_components of latents.zarr, all points)"
        logger.warning("pca_components %s in latents.zarr do not fit z of dimension %d; computing PCA of the "
                       "chosen points", comps.shape, d)
    fit = GaussianFit().fit(x)
    return fit.mean_, fit.eigenvectors_[:, :k].T.copy(), "computed (covariance of the embedded points)"


def _project(x: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """(m, D) -> (m, K) float32 coordinates on the principal axes."""
    return np.ascontiguousarray((x - mean) @ comps.T, dtype=np.float32)


class _Progress:
    """openTSNE callback: a tqdm bar over all iterations; records the KL divergence at each call."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, unit="it", desc=desc, disable=None if enabled else True, leave=False)
        self.kl: list[float] = []

    def __call__(self, iteration, error, embedding) -> bool:
        self.bar.update(CALLBACK_EVERY)
        self.kl.append(float(error))
        return False  # never stop early

    def close(self):
        self.bar.close()


def neighbours_needed(cfg: TSNEConfig, n: int) -> int:
    """Neighbours per point the affinities use: openTSNE's ``min(n - 1, int(3 * perplexity))``, or ``uniform_k``."""
    return min(n - 1, int(3 * cfg.perplexity) if cfg.affinity == "perplexity" else cfg.uniform_k)


def affinities_of(cfg: TSNEConfig, x: np.ndarray | None = None, graph=None):
    """openTSNE affinities of ``cfg`` from the precomputed kNN ``graph`` = (dist, idx), or searched in ``x``."""
    from openTSNE.affinity import PerplexityBasedNN, Uniform
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    given = {} if graph is None else {"knn_index": PrecomputedNeighbors(graph[1], graph[0])}
    if cfg.affinity == "uniform":
        return Uniform(x, k_neighbors=cfg.uniform_k, n_jobs=cfg.n_jobs, random_state=cfg.seed, **given)
    return PerplexityBasedNN(x, perplexity=cfg.perplexity, n_jobs=cfg.n_jobs, random_state=cfg.seed, **given)


def saved_graph(group, n_all: int, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact kNN graph ``structure`` wrote into latents.zarr, first k columns, when it covers all n_all rows
    of the latents as they are now with at least k neighbours; else None."""
    if "knn_indices" not in group or "knn_distances" not in group:
        return None
    idx_a, dist_a = group["knn_indices"], group["knn_distances"]
    attrs = dict(idx_a.attrs)
    fits = (idx_a.shape == dist_a.shape and idx_a.shape[0] == n_all and idx_a.shape[1] >= k
            and attrs.get("index") == "exact" and attrs.get("complete") is True
            and attrs.get("latents_key") == group.attrs.get("key"))
    if not fits:
        return None
    dist = np.ascontiguousarray(dist_a[:, :k], np.float32)
    idx = np.ascontiguousarray(idx_a[:, :k], np.int64)
    if idx.min() < 0 or not np.isfinite(dist).all():
        return None
    return dist, idx


def _graph(x: np.ndarray, cfg: TSNEConfig, progress: bool, label: str, saved=None):
    """The exact kNN graph (dist, idx) of x for the affinities, and the seconds it took (0 when ``saved``)."""
    if saved is not None:
        return saved, 0.0
    t0 = time.perf_counter()
    graph = knn_graph(x, neighbours_needed(cfg, len(x)), progress=progress, desc=f"kNN {label}")
    return graph, time.perf_counter() - t0


def _embed(x: np.ndarray, cfg: TSNEConfig, progress: bool, label: str, graph):
    """openTSNE embedding of x (n, K) float32 -> (TSNEEmbedding (n, 2) float64, seconds dict).

    Affinities come from the exact kNN graph ``graph`` = (dist, idx), each (n, neighbours_needed); the rest is
    openTSNE's ``TSNE.fit`` with the same settings, PCA initialisation from x included.
    """
    import openTSNE

    seconds = {}
    t0 = time.perf_counter()
    affinities = affinities_of(cfg, graph=graph)
    seconds["affinities"] = time.perf_counter() - t0
    bar = _Progress(cfg.n_iter, f"t-SNE {label}", progress)
    t2 = time.perf_counter()
    try:
        emb = openTSNE.TSNE(
            perplexity=cfg.perplexity, early_exaggeration=cfg.early_exaggeration,
            early_exaggeration_iter=EARLY_EXAGGERATION_ITER, n_iter=cfg.n_iter - EARLY_EXAGGERATION_ITER,
            random_state=cfg.seed, n_jobs=cfg.n_jobs, verbose=False,
            callbacks=bar, callbacks_every_iters=CALLBACK_EVERY,
        ).fit(x, affinities=affinities)
    finally:
        bar.close()
    seconds["optimise"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    logger.info("t-SNE %s: %d points in %.1f s, KL divergence %.4f", label, len(x), seconds["total"], emb.kl_divergence)
    return emb, seconds


def neighbours_kept(graph_idx: np.ndarray, embedding: np.ndarray, k: int = 15) -> float:
    """Mean share of each point's k nearest neighbours in z (the exact graph's first k) that are also among
    its k nearest in the map (exact, scipy cKDTree): the local quality of a t-SNE map."""
    from scipy.spatial import cKDTree

    k = min(k, graph_idx.shape[1])
    _, near = cKDTree(np.asarray(embedding, np.float64)).query(embedding, k + 1, workers=-1)
    near = near[:, 1:]  # drop the point itself (an exact duplicate may swap with it; rare in a map)
    # each row holds two sets of k distinct indices: a shared index sits twice, side by side, once sorted
    both = np.sort(np.concatenate([graph_idx[:, :k], near], axis=1), axis=1)
    hits = (both[:, 1:] == both[:, :-1]).sum(axis=1)
    return float(hits.mean() / k)


MAP_BINS = 560  # bins per side of a map panel: about one per pixel of its axes at the figure's size and dpi


def _map_range(maps: list[np.ndarray]) -> np.ndarray:
    """One square window holding every map, [[x0, x1], [y0, y1]]: both panels share axes, so sizes compare."""
    lo = np.min([y.min(axis=0) for y in maps], axis=0)
    hi = np.max([y.max(axis=0) for y in maps], axis=0)
    centre, half = (lo + hi) / 2, 0.51 * float(np.max(hi - lo)) + 1e-9
    return np.array([[centre[0] - half, centre[0] + half], [centre[1] - half, centre[1] + half]])


def _density_panel(ax, y: np.ndarray, window: np.ndarray, bins: int, norm, title: str):
    """Log-shaded 2D histogram of (n, 2) points at about one bin per pixel: single points stay visible, so gaps
    and clumps show from thousands to millions of points; empty bins stay white."""
    h, xe, ye = np.histogram2d(y[:, 0], y[:, 1], bins=bins, range=window)
    im = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), norm=norm,
                   cmap="viridis", interpolation="nearest", aspect="equal")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=10)
    return im, h


def tsne_figure(path: Path, embedding: np.ndarray, null_embedding: np.ndarray | None, info: dict) -> str:
    """``tsne.png``: data map beside the null map, same window, same bins and the same log colour scale."""
    n = len(embedding)
    panels = [(embedding, f"data: {n:,} z-points ({info['space']})")]
    if null_embedding is not None and len(null_embedding):
        panels.append((null_embedding, f"null: {len(null_embedding):,} points from the fitted normal\n"
                                       f"(same mean and covariance, same settings)"))
    window = _map_range([y for y, _ in panels])
    counts = [np.histogram2d(y[:, 0], y[:, 1], bins=MAP_BINS, range=window)[0].max() for y, _ in panels]
    norm = LogNorm(vmin=1, vmax=max(2.0, max(counts)))  # one colour scale for both panels
    fig, axes = subplots(1, len(panels), figsize=(6.5 * len(panels) + 1, 6.8), dpi=110, squeeze=False,
                         layout="constrained")
    for ax, (y, title) in zip(axes[0], panels):
        im, _ = _density_panel(ax, y, window, MAP_BINS, norm, title)
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.85,
                      label=f"points per bin ({MAP_BINS} x {MAP_BINS} bins, log scale; white: none)")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    cb.ax.yaxis.set_major_formatter(plain)
    cb.ax.yaxis.set_minor_formatter(plain)
    s = info["config"]
    sep = "\n" if len(panels) == 1 else " "  # one panel is too narrow for the whole line
    kernel = (f"perplexity {s['perplexity']:g}" if s.get("affinity", "perplexity") == "perplexity"
              else f"uniform affinities on {s['uniform_k']} neighbours")
    fig.suptitle(f"t-SNE (openTSNE, exact neighbours): {kernel},{sep}early exaggeration "
                 f"{s['early_exaggeration']:g} for {EARLY_EXAGGERATION_ITER} of {s['n_iter']} iterations, "
                 f"seed {s['seed']}", fontsize=11)
    fig.savefig(path)
    return str(path)


def compute_tsne(run_dir: str | os.PathLike, config: TSNEConfig | None = None, progress: bool = True,
                 cluster=None) -> dict:
    """t-SNE of n random rows of z beside the fitted-normal null; writes ``RUN/tsne/``, returns tsne.json's content.

    Outputs:
    - ``embedding.npz``: ``rows`` int64 (n,) sorted row indices into z; ``embedding`` float32 (n, 2);
      ``null_embedding`` float32 (n, 2) ((0, 2) when ``null`` is off); with ``pca``: ``pca_mean`` float64 (D,)
      and ``pca_components`` float64 (K, D), the projection used (``place_points`` reuses it);
    - ``tsne.json``: resolved config, n, N, D, embedded dimension, threads, seconds, KL divergences;
    - ``tsne.png``: log density of both embeddings side by side.

    ``cluster`` and more than ``fit_n`` points: the map is fitted on ``fit_n`` of them (and as many null points)
    here, the others placed into it by openTSNE's ``transform`` as Dask tasks reading their rows from Zarr."""
    cfg = config or TSNEConfig()
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n_all, d = z.shape
    rng = np.random.default_rng(cfg.seed)
    rows, x, placed_rows = _chosen_rows(z, cfg, rng, cluster is not None, latents_path(run))
    n = len(x)
    _check_perplexity(cfg, n)
    out_dir = tsne_dir(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # the null is drawn in z-space from the chosen points' fit, then projected like the data
    null = GaussianFit().fit(x).sample(n, rng) if cfg.null else None
    extra = {}
    space = f"{d}-D z"
    pca_source = None
    if cfg.pca is not None:
        mean, comps, pca_source = _projection(group, x, cfg.pca)
        x = _project(x, mean, comps)
        if null is not None:
            null = _project(null, mean, comps)
        extra = {"pca_mean": mean, "pca_components": comps}
        space = f"first {cfg.pca} PCs of {d}-D z"

    # structure's exact graph of z serves when every row is embedded in z itself
    saved = saved_graph(group, n_all, neighbours_needed(cfg, n)) if cfg.pca is None and n == n_all else None
    graphs, seconds, kl, kept = {}, {}, {}, {}
    clouds = {"data": x} if null is None else {"data": x, "null": null}
    maps = {}
    for label, cloud in clouds.items():
        graphs[label], sec_knn = _graph(cloud, cfg, progress, label, saved if label == "data" else None)
        emb, seconds[label] = _embed(cloud, cfg, progress, label, graphs[label])
        seconds[label] = {"knn": sec_knn, **seconds[label], "total": sec_knn + seconds[label]["total"]}
        kl[label] = float(emb.kl_divergence) if emb.kl_divergence is not None else None
        maps[label] = np.asarray(emb, np.float32)
        kept[label] = neighbours_kept(graphs[label][1], maps[label])
    null_emb = maps.get("null", np.zeros((0, 2), np.float32))
    embedding = maps["data"]
    if placed_rows is not None:
        t_place, (rows, embedding) = time.perf_counter(), _place_on(cluster, run, rows, embedding, placed_rows, x, cfg, extra)
        seconds["placed"] = {"n": int(len(placed_rows)), "total": time.perf_counter() - t_place}
    np.savez(out_dir / "embedding.npz", rows=rows, embedding=embedding, null_embedding=null_emb, **extra)

    result = {
        "n": int(len(rows)), "n_fitted": int(n), "n_total": int(n_all), "d": int(d), "embedded_dim": int(x.shape[1]), "space": space,
        "inputs": {"latents_key": group.attrs.get("key")},
        "pca_source": pca_source, "sampled": bool(n < n_all), "threads": _threads(cfg.n_jobs),
        "config": asdict(cfg),
        "openTSNE": {"early_exaggeration_iter": EARLY_EXAGGERATION_ITER,
                     "n_iter": cfg.n_iter - EARLY_EXAGGERATION_ITER, "learning_rate": "auto",
                     "initialization": "pca", "negative_gradient_method": "auto"},
        "neighbours": {"k": int(graphs["data"][1].shape[1]),
                       "data": "reused: the exact graph of zspace structure (latents.zarr knn_indices)" if saved
                       else "exact, computed (self-join kernel)"},
        "kl_divergence": kl,  # against each map's own affinities (P differs between affinity kinds)
        "neighbours_kept_15": kept,
        "seconds": seconds,
    }
    t_fig = time.perf_counter()
    result["figures"] = [tsne_figure(out_dir / "tsne.png", embedding, null_emb if cfg.null else None, result)]
    seconds["figure"] = time.perf_counter() - t_fig
    seconds["total"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "tsne.json", result)
    return result


def _chosen_rows(z, cfg: TSNEConfig, rng, on_cluster: bool, where) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rows of z fitted, their points, rows placed afterwards or None): n random rows (all when n >= N); on a
    cluster, a map of more than fit_n points is fitted on fit_n of them (read here; the placed ones are read by
    the workers)."""
    n_all = z.shape[0]
    rows = (np.sort(rng.choice(n_all, size=cfg.n, replace=False)).astype(np.int64) if cfg.n < n_all
            else np.arange(n_all, dtype=np.int64))
    placed = None
    if on_cluster and len(rows) > cfg.fit_n:
        fit_pos = np.sort(rng.choice(len(rows), size=cfg.fit_n, replace=False))
        placed, rows = np.setdiff1d(rows, rows[fit_pos]), rows[fit_pos]
    x = np.ascontiguousarray(z[...] if len(rows) == n_all else z.get_orthogonal_selection((rows, slice(None))),
                             dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: z holds NaN or inf; re-import with --drop-nonfinite")
    return rows, x, placed


def _place_block(z_path: str, rows: np.ndarray, ref, shift: np.ndarray, proj) -> np.ndarray:
    """On a worker: the map coordinates of z rows ``rows`` placed into the centred reference ``ref``."""
    import zarr

    q = np.ascontiguousarray(zarr.open_array(z_path, mode="r").get_orthogonal_selection((rows, slice(None))),
                             dtype=np.float32)
    bad = ~np.isfinite(q).all(axis=1)
    if bad.any():
        raise ValueError(f"{z_path}: row {int(rows[np.flatnonzero(bad)[0]])} holds NaN or inf; re-import with "
                         f"--drop-nonfinite")
    if proj is not None:
        q = _project(q, *proj)
    ref = pickle.loads(ref)  # sent pickled: Dask would send the ndarray subclass as a plain array
    return (np.asarray(ref.transform(q), np.float64) + shift).astype(np.float32)


def _place_on(cluster, run: Path, rows: np.ndarray, embedding: np.ndarray, placed_rows: np.ndarray, x: np.ndarray,
              cfg: TSNEConfig, extra: dict, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(all rows sorted, their coordinates): the fitted map's rows and ``placed_rows`` placed into it as tasks."""
    import openTSNE

    shift = (embedding.max(axis=0) + embedding.min(axis=0)) / 2
    # centred here, so that transform's own re-centring of the reference is a no-op on every worker
    ref = openTSNE.TSNEEmbedding((embedding - shift).astype(np.float64),
                                 affinities_of(replace(cfg, affinity="perplexity"), x), random_state=cfg.seed,
                                 n_jobs=1)
    ref_f = cluster.client.scatter(pickle.dumps(ref), broadcast=True, hash=False)
    proj = (extra["pca_mean"], extra["pca_components"]) if "pca_components" in extra else None
    z_path = str((latents_path(run) / "z").resolve())
    parts = cluster.map_calls(_place_block, [(z_path, placed_rows[s : s + block], ref_f, shift, proj)
                                             for s in range(0, len(placed_rows), block)],
                              f"placing {len(placed_rows):,} points into the map of {len(rows):,}")
    all_rows = np.concatenate([rows, placed_rows])
    order = np.argsort(all_rows, kind="stable")
    return all_rows[order], np.concatenate([embedding, *parts])[order]


def place_points(run_dir: str | os.PathLike, z_new: np.ndarray, config: TSNEConfig | None = None) -> np.ndarray:
    """Place new z-points (m, D) into the saved data embedding of ``run_dir``: float32 (m, 2), same coordinates.

    Each new point is optimised against the fixed embedded points only (openTSNE
    ``TSNEEmbedding.transform`` with its defaults: perplexity 5, median
    initialisation from 25 neighbours, 250 iterations), so new points never move
    the existing ones or each other. The embedding is rebuilt from
    ``embedding.npz`` and the same rows of z (see the module docstring).
    ``config`` defaults to the saved one; a config whose embedding-defining
    settings (n, pca, perplexity, early_exaggeration, n_iter, seed) differ from
    the saved run is refused; its ``n_jobs`` is used.
    """
    import openTSNE

    run = Path(run_dir)
    out_dir = tsne_dir(run)
    if not (out_dir / "embedding.npz").exists() or not (out_dir / "tsne.json").exists():
        raise FileNotFoundError(f"{out_dir} holds no embedding: run 'zspace tsne --run {run_dir}' first")
    info = json.loads((out_dir / "tsne.json").read_text())
    saved = TSNEConfig.from_dict(info["config"])
    cfg = config or saved
    diff = {k: (getattr(saved, k), getattr(cfg, k)) for k in EMBEDDING_KEYS if getattr(saved, k) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"config differs from the saved embedding in {diff} (saved, given): rerun compute_tsne with "
                         f"these settings or pass config=None")
    group = open_latents(run)
    z = group["z"]
    made_from = (info.get("inputs") or {}).get("latents_key")
    if made_from is not None and made_from != group.attrs.get("key"):
        raise ValueError(f"{out_dir / 'tsne.json'} was made from other latents than {latents_path(run)} holds now: "
                         f"rerun 'zspace tsne --run {run_dir}'")
    if z.shape[0] != info["n_total"] or z.shape[1] != info["d"]:
        raise ValueError(f"{latents_path(run)} changed since the embedding (z {z.shape}, embedded from "
                         f"({info['n_total']}, {info['d']})): rerun compute_tsne")
    z_new = np.asarray(z_new)
    if z_new.ndim == 1:
        z_new = z_new[None, :]
    if z_new.ndim != 2 or z_new.shape[1] != info["d"]:
        raise ValueError(f"z_new must have shape (m, {info['d']}), got {z_new.shape}")
    if not np.isfinite(z_new).all():
        raise ValueError("z_new holds NaN or inf")
    if len(z_new) == 0:
        return np.zeros((0, 2), np.float32)
    with np.load(out_dir / "embedding.npz", allow_pickle=False) as f:
        rows, embedding = f["rows"], f["embedding"]
        proj = (f["pca_mean"], f["pca_components"]) if "pca_components" in f else None
    x = np.ascontiguousarray(z.get_orthogonal_selection((rows, slice(None))), dtype=np.float32)
    q = np.ascontiguousarray(z_new, dtype=np.float32)
    if proj is not None:
        x, q = _project(x, *proj), _project(q, *proj)

    t0 = time.perf_counter()
    # transform only uses the reference's kNN index (new points get perplexity-5 affinities to it), so a
    # perplexity-based reference serves maps of either affinity; openTSNE refuses a Uniform one here
    affinities = affinities_of(replace(cfg, affinity="perplexity"), x)
    ref = openTSNE.TSNEEmbedding(embedding.astype(np.float64), affinities, random_state=cfg.seed, n_jobs=cfg.n_jobs)
    # transform re-centres the reference on its bounding box in place; shift the result back
    shift = (ref.max(axis=0) + ref.min(axis=0)) / 2
    placed = np.asarray(ref.transform(q), np.float64) + shift
    logger.info("placed %d points into the %d-point embedding in %.1f s", len(q), len(x), time.perf_counter() - t0)
    return placed.astype(np.float32)


__all__ = ["TSNEConfig", "compute_tsne", "place_points", "tsne_figure"]
