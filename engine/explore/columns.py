"""What the explore page shows of each point, gathered from a finished run as plain arrays.

Every array is in *page order*: position i on the map is latent row ``rows[i]``.
The points are the t-SNE map's rows (all of them when the map has every latent),
else a seeded sample of the latents; ``ExploreConfig.n`` caps either.

Layouts (x, y of every point): the t-SNE map and its null map (``tsne/embedding.npz``),
the coordinates on the first ``pcs`` principal axes of the fitted normal, and the
plane of the two most dominant components. The null on the PCA and dominant planes
is the fitted normal itself, so the page draws it (seeded) from the variances and
the 2 x 2 covariance carried here rather than shipping a second cloud.

Colours: radius |z| (the study's L2 radius), Mahalanobis radius under the fitted
normal, local dimension (``zspace structure``), reconstruction error (``zspace
encode``), split, and each attribute where labels exist; face-map probes carry
their void depth.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.analysis.gaussian import GaussianFit
from engine.analysis.planes import dominant_components, stale
from engine.data.labels import LabelsError, run_labels
from engine.data.sources import SPLIT_NAMES
from engine.explore.config import ExploreConfig
from engine.latents.store import iter_blocks, open_latents

logger = logging.getLogger(__name__)


@dataclass
class Colour:
    """One colouring of the points: float32 values (NaN where a point has none), continuous or categorical."""

    name: str
    label: str
    values: np.ndarray
    categories: list[str] | None = None  # categorical: value k means categories[k]
    note: str = ""

    def meta(self) -> dict:
        finite = self.values[np.isfinite(self.values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if self.categories is None and finite.size:  # 1st-99th percentile: a few extreme points keep the scale
            lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
        return {"name": self.name, "label": self.label, "categories": self.categories, "low": lo,
                "high": hi if hi > lo else lo + 1.0, "note": self.note}


@dataclass
class Points:
    """The page's points and every per-point array, in page order."""

    rows: np.ndarray  # int64 (n,): latent row of each page position
    ids: list[str]
    z: np.ndarray  # float32 (n, D): the points' latents
    layouts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 (n, 2) or (n, pcs)
    colours: list[Colour] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # int8 (n, A): 1, 0, -1 unlabelled
    neighbours: np.ndarray | None = None  # int32 (n, k): page positions of the nearest latents, -1 off the map
    probes: dict[str, np.ndarray] = field(default_factory=dict)  # pca, dominant, depth, family of face-map probes
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rows)


def _tsne(run: Path) -> dict | None:
    """The t-SNE map's rows, embedding and null embedding, or None (no map, or a map of other latents)."""
    path, info = run / "tsne" / "embedding.npz", run / "tsne" / "tsne.json"
    if not path.exists():
        return None
    try:
        tj = json.loads(info.read_text()) if info.exists() else {}
    except json.JSONDecodeError:
        tj = {}
    if stale(tj, run):
        logger.warning("%s was made from other latents than latents.zarr holds now: the page has no t-SNE map "
                       "(run 'zspace tsne --run %s' to refresh it)", path, run)
        return None
    with np.load(path, allow_pickle=False) as d:
        out = {k: d[k] for k in ("rows", "embedding", "null_embedding") if k in d.files}
    if "rows" not in out or "embedding" not in out or len(out["rows"]) != len(out["embedding"]):
        logger.warning("%s lacks rows or embedding: the page has no t-SNE map", path)
        return None
    n_lat = open_latents(run)["z"].shape[0]
    rows = out["rows"]
    if len(rows) and (rows.min() < 0 or rows.max() >= n_lat or np.any(np.diff(rows) <= 0)):
        logger.warning("%s holds rows that latents.zarr (%d rows) does not: the page has no t-SNE map (run "
                       "'zspace tsne --run %s' to refresh it)", path, n_lat, run)
        return None
    return out


def page_rows(n_latents: int, tsne: dict | None, cfg: ExploreConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """(latent rows in page order, positions into the t-SNE arrays or None): the map's rows, capped by ``cfg.n``."""
    rng = np.random.default_rng(cfg.seed)
    if tsne is not None:
        take = np.arange(len(tsne["rows"]))
        if cfg.n is not None and cfg.n < len(take):
            take = np.sort(rng.choice(len(take), cfg.n, replace=False))
        return tsne["rows"][take].astype(np.int64), take
    n = n_latents if cfg.n is None else min(cfg.n, n_latents)
    rows = np.arange(n_latents) if n == n_latents else np.sort(rng.choice(n_latents, n, replace=False))
    return rows.astype(np.int64), None


def _stored(group, name: str, rows: np.ndarray) -> np.ndarray | None:
    """latents.zarr/name at ``rows`` when the store has it with one value per row, else None."""
    if name not in group or group[name].shape[0] != group["z"].shape[0]:
        return None
    return np.asarray(group[name].oindex[rows] if len(rows) < group[name].shape[0] else group[name][:])


def _labels(run: Path, rows: np.ndarray) -> tuple[list[str], np.ndarray | None, str]:
    """(names, int8 (n, A) labels of ``rows``, where from): the attributes stage's label file, else prepare's."""
    source = None
    aj = run / "attributes" / "attributes.json"
    if aj.exists():
        try:
            labels_info = json.loads(aj.read_text()).get("labels") or {}
            src = labels_info.get("source")
            if src and Path(src).is_file() and labels_info.get("format") != "stored":
                source = src
        except json.JSONDecodeError:
            pass
    try:
        names, values, info = run_labels(run, source)
    except (LabelsError, FileNotFoundError) as exc:
        return [], None, str(exc).split(":")[0]
    if info.get("latents_rows_match") is False:
        return [], None, "the labels follow images.zarr, whose rows are not latents.zarr's (imported latents?)"
    if values.shape[0] <= rows.max(initial=-1):
        return [], None, f"labels of {values.shape[0]} rows for latents of more"
    return list(names), values[rows].astype(np.int8), str(info.get("source") or "prepare")


def _null_map(tsne: dict, n: int, seed: int) -> np.ndarray | None:
    """The null t-SNE map with as many points as the page (a seeded sample where it has more), so that the two maps'
    densities compare; None without one."""
    null = tsne.get("null_embedding")
    if null is None or len(null) == 0:
        return None
    if len(null) > n:
        null = null[np.sort(np.random.default_rng(seed + 1).choice(len(null), n, replace=False))]
    return null.astype(np.float32)


def gather(run_dir: str | os.PathLike, cfg: ExploreConfig) -> Points:
    """Every per-point array of the page for ``run_dir`` (see the module's doc)."""
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    n_lat, d = z.shape
    tsne = _tsne(run)
    rows, take = page_rows(n_lat, tsne, cfg)
    ids = ([str(i) for i in np.asarray(group["ids"].oindex[rows]).tolist()] if "ids" in group
           else [str(r) for r in rows])
    zr = latent_rows(z, rows)
    if not np.isfinite(zr).all():
        bad = int(rows[np.flatnonzero(~np.isfinite(zr).all(axis=1))[0]])
        raise ValueError(f"latent row {bad} holds NaN or inf: rerun 'zspace encode --run {run}'")
    fit = GaussianFit().fit(z)
    pts = Points(rows=rows, ids=ids, z=zr)
    pcs = min(cfg.pcs, d)
    if tsne is not None:
        pts.layouts["tsne"] = tsne["embedding"][take].astype(np.float32)
        if (null := _null_map(tsne, len(take), cfg.seed)) is not None:
            pts.layouts["tsne_null"] = null
    pts.layouts["pca"] = fit.project(zr, pcs).astype(np.float32)
    dom = dominant_components(run, fit.std_)
    pts.layouts["dominant"] = zr[:, dom].astype(np.float32)

    pts.colours.append(Colour("radius", "radius |z| (L2)", np.linalg.norm(zr.astype(np.float64), axis=1)
                              .astype(np.float32)))
    pts.colours.append(Colour("mahalanobis", "Mahalanobis radius (fitted normal)",
                              fit.mahalanobis(zr).astype(np.float32)))
    for name, label, how in (("local_dim", "local dimension (MLE)", "zspace structure"),
                             ("recon_mse", "reconstruction error (MSE)", "zspace encode")):
        v = _stored(group, name, rows)
        if v is not None:
            pts.colours.append(Colour(name, label, v.astype(np.float32)))
        else:
            pts.meta.setdefault("missing", []).append(f"{label}: run '{how} --run {run}'")
    split = _stored(group, "split", rows)
    if split is not None:
        cats = [SPLIT_NAMES[k] for k in sorted(SPLIT_NAMES)]
        v = np.where(np.isin(split, list(SPLIT_NAMES)), split, np.nan).astype(np.float32)
        pts.colours.append(Colour("split", "split", v, cats))
    names, labels, source = _labels(run, rows)
    if labels is not None:
        pts.attributes, pts.labels = names, labels
        for j, name in enumerate(names):
            v = np.where(labels[:, j] >= 0, labels[:, j], np.nan).astype(np.float32)
            pts.colours.append(Colour(f"attr:{name}", name, v, ["no", "yes"], note=f"labels from {source}"))
    else:
        pts.meta.setdefault("missing", []).append(f"attributes: {source}")

    knn = _stored(group, "knn_indices", rows)
    if knn is not None:
        where = np.full(n_lat, -1, np.int64)
        where[rows] = np.arange(len(rows))
        knn = knn[:, : cfg.neighbours]
        # -1: a point the graph left out (structure --sample) or one not on this map
        pts.neighbours = np.where(knn >= 0, where[np.maximum(knn, 0)], -1).astype(np.int32)
    else:
        pts.meta.setdefault("missing", []).append(f"nearest neighbours: run 'zspace structure --run {run}'")

    probes = run / "facemap" / "probes.npz"
    if probes.exists():
        with np.load(probes, allow_pickle=False) as p:
            if p["z"].ndim == 2 and p["z"].shape[1] == d and "depth" in p.files:
                ok = np.isfinite(p["depth"]) & np.isfinite(p["z"]).all(axis=1)
                pz = p["z"][ok]
                pts.probes = {"pca": fit.project(pz, pcs).astype(np.float32),
                              "dominant": pz[:, dom].astype(np.float32),
                              "depth": p["depth"][ok].astype(np.float32)}
    pts.meta.update({
        "n": pts.n, "n_latents": int(n_lat), "d": int(d), "all_points": bool(pts.n == n_lat),
        "tsne": tsne is not None, "pcs": pcs,
        "pca_variance": [float(v) for v in fit.eigenvalues_[:pcs]],
        "dominant": [int(j) for j in dom],
        "dominant_mean": [float(fit.mean_[j]) for j in dom],
        "dominant_cov": [[float(fit.covariance_[a, b]) for b in dom] for a in dom],
        "null_n": int(len(pts.layouts.get("tsne_null", ()))) or pts.n,
        "seed": cfg.seed,
    })
    return pts


def latent_rows(z, rows: np.ndarray) -> np.ndarray:
    """float32 (len(rows), D) of a Zarr or NumPy ``z`` at sorted ``rows``, streamed block by block."""
    out = np.empty((len(rows), z.shape[1]), np.float32)
    if len(rows) == z.shape[0]:
        for s, block in iter_blocks(z):
            out[s : s + len(block)] = block
        return out
    return np.ascontiguousarray(z.oindex[rows], np.float32)
