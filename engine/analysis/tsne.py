"""t-SNE of the latent cloud, always beside the same embedding of the fitted-normal null model.

The study embedded 20,000 z-points with perplexity 10, early exaggeration 16
and 1000 iterations and read "islands" and "filaments" into the picture.
t-SNE makes clumps out of structureless data too, so zspace embeds, with the
same settings, the same number of points drawn from the multivariate normal
with the chosen points' mean and covariance (``engine.analysis.gaussian.GaussianFit``),
and draws both side by side: only what the data show and the null does not is
structure of the cloud.

Optimisation is openTSNE's (FFT-accelerated above ~10,000 points, Barnes-Hut
below): ``early_exaggeration_iter = 250`` iterations with ``early_exaggeration``,
then ``n_iter - 250`` plain ones, learning rate ``"auto"`` (N / exaggeration,
Belkina et al. 2019), PCA initialisation.

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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter
from tqdm.auto import tqdm

from engine.analysis.config import EARLY_EXAGGERATION_ITER, TSNEConfig
from engine.analysis.gaussian import GaussianFit
from engine.figures import subplots
from engine.files import write_json_atomic
from engine.latents.store import open_latents
from engine.layout import latents_path

logger = logging.getLogger(__name__)

CALLBACK_EVERY = 50  # iterations between progress updates (each also evaluates the KL divergence)
# settings that define an embedding: place_points refuses a config that differs in these
EMBEDDING_KEYS = ("n", "pca", "perplexity", "early_exaggeration", "n_iter", "seed")


def tsne_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "tsne"


def _threads(n_jobs: int) -> int:
    cores = os.cpu_count() or 1
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def _check_perplexity(cfg: TSNEConfig, n: int) -> None:
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


def _embed(x: np.ndarray, cfg: TSNEConfig, progress: bool, label: str):
    """openTSNE embedding of x (n, K) float32 -> (TSNEEmbedding (n, 2) float64, seconds)."""
    import openTSNE

    bar = _Progress(cfg.n_iter, f"t-SNE {label}", progress)
    t0 = time.perf_counter()
    try:
        emb = openTSNE.TSNE(
            perplexity=cfg.perplexity, early_exaggeration=cfg.early_exaggeration,
            early_exaggeration_iter=EARLY_EXAGGERATION_ITER, n_iter=cfg.n_iter - EARLY_EXAGGERATION_ITER,
            random_state=cfg.seed, n_jobs=cfg.n_jobs, verbose=False,
            callbacks=bar, callbacks_every_iters=CALLBACK_EVERY,
        ).fit(x)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    logger.info("t-SNE %s: %d points in %.1f s, KL divergence %.4f", label, len(x), seconds, emb.kl_divergence)
    return emb, seconds


def _density_panel(ax, y: np.ndarray, bins: int, norm, title: str):
    """Log-scaled 2D histogram of (n, 2) points: readable from hundreds to millions of points."""
    lo, hi = y.min(axis=0), y.max(axis=0)
    pad = 0.02 * (hi - lo) + 1e-9
    h, xe, ye = np.histogram2d(y[:, 0], y[:, 1], bins=bins, range=[[lo[0] - pad[0], hi[0] + pad[0]],
                                                                    [lo[1] - pad[1], hi[1] + pad[1]]])
    img = np.ma.masked_equal(h.T, 0)  # empty bins stay white: voids are visible
    im = ax.imshow(img, origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), norm=norm, cmap="viridis",
                   interpolation="nearest", aspect="equal")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=10)
    return im, h


def tsne_figure(path: Path, embedding: np.ndarray, null_embedding: np.ndarray | None, info: dict) -> str:
    """``tsne.png``: density of the data embedding (and of the null embedding) side by side."""
    n = len(embedding)
    # ~3 points per bin of the bounding box on average (~5 per occupied one): smooth at 20,000 (82 bins),
    # fine at 165,000 (234 bins)
    bins = int(np.clip(np.sqrt(n / 3), 30, 400))
    panels = [(embedding, f"data: {n:,} z-points ({info['space']})")]
    if null_embedding is not None and len(null_embedding):
        panels.append((null_embedding, f"null: {len(null_embedding):,} points from the fitted normal\n"
                                       f"(same mean and covariance, same settings)"))
    counts = [np.histogram2d(y[:, 0], y[:, 1], bins=bins)[0].max() for y, _ in panels]
    norm = LogNorm(vmin=1, vmax=max(2.0, max(counts)))  # one colour scale for both panels
    fig, axes = subplots(1, len(panels), figsize=(6.5 * len(panels) + 1, 6.6), dpi=110, squeeze=False,
                         layout="constrained")
    for ax, (y, title) in zip(axes[0], panels):
        im, _ = _density_panel(ax, y, bins, norm, title)
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.85, label=f"points per bin ({bins} x {bins} bins, log scale)")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    cb.ax.yaxis.set_major_formatter(plain)
    cb.ax.yaxis.set_minor_formatter(plain)
    s = info["config"]
    fig.suptitle(f"t-SNE (openTSNE): perplexity {s['perplexity']:g}, early exaggeration {s['early_exaggeration']:g} "
                 f"for {EARLY_EXAGGERATION_ITER} of {s['n_iter']} iterations, seed {s['seed']}", fontsize=11)
    fig.savefig(path)
    return str(path)


def compute_tsne(run_dir: str | os.PathLike, config: TSNEConfig | None = None, progress: bool = True) -> dict:
    """t-SNE of n random rows of z beside the fitted-normal null; writes ``RUN/tsne/``, returns tsne.json's content.

    Outputs:
    - ``embedding.npz``: ``rows`` int64 (n,) sorted row indices into z; ``embedding`` float32 (n, 2);
      ``null_embedding`` float32 (n, 2) ((0, 2) when ``null`` is off); with ``pca``: ``pca_mean`` float64 (D,)
      and ``pca_components`` float64 (K, D), the projection used (``place_points`` reuses it);
    - ``tsne.json``: resolved config, n, N, D, embedded dimension, threads, seconds, KL divergences;
    - ``tsne.png``: log density of both embeddings side by side.
    """
    cfg = config or TSNEConfig()
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n_all, d = z.shape
    rng = np.random.default_rng(cfg.seed)
    if cfg.n < n_all:
        rows = np.sort(rng.choice(n_all, size=cfg.n, replace=False)).astype(np.int64)
        x = np.ascontiguousarray(z.get_orthogonal_selection((rows, slice(None))), dtype=np.float32)
    else:
        rows = np.arange(n_all, dtype=np.int64)
        x = np.ascontiguousarray(z[...], dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{latents_path(run)}: z holds NaN or inf; re-import with --drop-nonfinite")
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

    emb, sec_data = _embed(x, cfg, progress, "data")
    seconds = {"data": sec_data}
    kl = {"data": float(emb.kl_divergence) if emb.kl_divergence is not None else None}
    null_emb = np.zeros((0, 2), np.float32)
    if null is not None:
        nemb, seconds["null"] = _embed(null, cfg, progress, "null")
        kl["null"] = float(nemb.kl_divergence) if nemb.kl_divergence is not None else None
        null_emb = np.asarray(nemb, np.float32)
    embedding = np.asarray(emb, np.float32)
    np.savez(out_dir / "embedding.npz", rows=rows, embedding=embedding, null_embedding=null_emb, **extra)

    result = {
        "n": int(n), "n_total": int(n_all), "d": int(d), "embedded_dim": int(x.shape[1]), "space": space,
        "inputs": {"latents_key": group.attrs.get("key")},
        "pca_source": pca_source, "sampled": bool(n < n_all), "threads": _threads(cfg.n_jobs),
        "config": asdict(cfg),
        "openTSNE": {"early_exaggeration_iter": EARLY_EXAGGERATION_ITER,
                     "n_iter": cfg.n_iter - EARLY_EXAGGERATION_ITER, "learning_rate": "auto",
                     "initialization": "pca", "negative_gradient_method": "auto"},
        "kl_divergence": kl,
        "seconds": seconds,
    }
    t_fig = time.perf_counter()
    result["figures"] = [tsne_figure(out_dir / "tsne.png", embedding, null_emb if cfg.null else None, result)]
    seconds["figure"] = time.perf_counter() - t_fig
    seconds["total"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "tsne.json", result)
    return result


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
    from openTSNE.affinity import PerplexityBasedNN

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
    with np.load(out_dir / "embedding.npz") as f:
        rows, embedding = f["rows"], f["embedding"]
        proj = (f["pca_mean"], f["pca_components"]) if "pca_components" in f else None
    x = np.ascontiguousarray(z.get_orthogonal_selection((rows, slice(None))), dtype=np.float32)
    q = np.ascontiguousarray(z_new, dtype=np.float32)
    if proj is not None:
        x, q = _project(x, *proj), _project(q, *proj)

    t0 = time.perf_counter()
    affinities = PerplexityBasedNN(x, perplexity=cfg.perplexity, random_state=cfg.seed, n_jobs=cfg.n_jobs)
    ref = openTSNE.TSNEEmbedding(embedding.astype(np.float64), affinities, random_state=cfg.seed, n_jobs=cfg.n_jobs)
    # transform re-centres the reference on its bounding box in place; shift the result back
    shift = (ref.max(axis=0) + ref.min(axis=0)) / 2
    placed = np.asarray(ref.transform(q), np.float64) + shift
    logger.info("placed %d points into the %d-point embedding in %.1f s", len(q), len(x), time.perf_counter() - t0)
    return placed.astype(np.float32)


__all__ = ["TSNEConfig", "compute_tsne", "place_points", "tsne_figure"]
