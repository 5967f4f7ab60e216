"""Plane views as the study drew them: projections onto PCA planes and the plane of the two
most dominant components, zoomed to windows of side 5, 1 and 0.5 around the centre, data
beside the null model.

The empty-cell share of a window counts raster cells with no point among the cells that
lie inside the occupied region, taken as the 95% ellipse of the projected data's 2-D
normal fit (so a window larger than the cloud is not "empty" outside it). Filaments
around voids would show as more empty cells in the data than in the null.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy import stats as sstats

from engine.analysis.gaussian import GaussianFit
from engine.figures import subplots
from engine.latents.store import latents_key
from kernels.raster import density_raster

logger = logging.getLogger(__name__)

PCA_PLANES = ((1, 2), (1, 18), (8, 35))  # 1-based, as the study numbers them
WINDOWS = (5.0, 1.0, 0.5)  # window sides; 0.5 is the study's +-0.25 square
BINS = 100


def plane_bases(d: int, eigvec: np.ndarray, dominant: list[int]) -> list[tuple[str, np.ndarray]]:
    """(name, float64 (2, D) basis) for each plane that exists in ``d`` dimensions."""
    planes = []
    for i, j in PCA_PLANES:
        if j <= d:
            planes.append((f"PC{i} x PC{j}", np.ascontiguousarray(eigvec[:, [i - 1, j - 1]].T)))
    if len(dominant) >= 2:
        a, b = dominant[:2]
        basis = np.zeros((2, d))
        basis[0, a] = basis[1, b] = 1.0
        planes.append((f"z[{a}] x z[{b}] (dominant)", basis))
    return planes


def occupied_mask(cov2: np.ndarray, side: float, bins: int = BINS, p: float = 0.95) -> np.ndarray:
    """bool (bins, bins): cells whose centre lies inside the p-ellipse of a centred 2-D normal."""
    c = (np.arange(bins) + 0.5) / bins * side - side / 2
    u, v = np.meshgrid(c, c)  # rows = v, columns = u, as the raster kernel lays them out
    pts = np.stack([u.ravel(), v.ravel()], 1)
    d2 = np.einsum("ij,jk,ik->i", pts, np.linalg.pinv(cov2), pts)
    return (d2 <= sstats.chi2.ppf(p, 2)).reshape(bins, bins)


def plane_figure_name(plane: str) -> str:
    """``plane_PC1_x_PC2.png`` for the plane named ``PC1 x PC2``."""
    return "plane_" + "".join(ch if ch.isalnum() else "_" for ch in plane.split(" (")[0]).strip("_") + ".png"


def plane_windows(d: int, fit: GaussianFit, dominant: list[int]) -> list[tuple[str, np.ndarray, float]]:
    """(plane name, basis, window side) of every raster the plane views draw, in drawing order."""
    return [(name, basis, side) for name, basis in plane_bases(d, fit.eigenvectors_, dominant) for side in WINDOWS]


def cloud_rasters(blocks, mean: np.ndarray, windows: list[tuple[str, np.ndarray, float]]) -> np.ndarray:
    """int64 (len(windows), BINS, BINS): every window's raster of a cloud given as an iterable of row blocks,
    in one pass (blocks of one cloud, on a worker or here, add up to the cloud's rasters)."""
    out = np.zeros((len(windows), BINS, BINS), np.int64)
    for x in blocks:
        x = np.ascontiguousarray(x, dtype=np.float32)
        for w, (_, basis, side) in enumerate(windows):
            half = np.array([side / 2] * 2)
            density_raster(x, mean, basis, -half, half, BINS, BINS, out[w])
    return out


def plane_views(out_dir: Path, x, null, fit: GaussianFit, dominant: list[int]) -> tuple[list[dict], list[str]]:
    """Rasters, empty-cell shares and one figure per plane; returns (summaries, figure names).

    ``x`` and ``null``: the clouds (float32 (N, D)), or their rasters already counted (``cloud_rasters`` over
    ``plane_windows``, as structure does on a Dask cluster). Each summary names its figure (``figure``), so
    readers never rebuild file names.
    """
    windows = plane_windows(len(fit.mean_), fit, dominant)
    clouds = {label: c if c.ndim == 3 else cloud_rasters([c], fit.mean_, windows)
              for label, c in (("data", x), ("null", null))}
    summaries, figs = [], []
    for p, (name, basis) in enumerate(plane_bases(len(fit.mean_), fit.eigenvectors_, dominant)):
        proj_cov = basis @ fit.covariance_ @ basis.T
        fig, axes = subplots(2, len(WINDOWS), figsize=(4 * len(WINDOWS), 7.6))
        row = {"plane": name, "figure": plane_figure_name(name), "windows": []}
        for col, side in enumerate(WINDOWS):
            mask = occupied_mask(proj_cov, side)
            shares = {}
            for r, label in enumerate(("data", "null")):
                raster = clouds[label][p * len(WINDOWS) + col]
                inside = raster[mask]
                shares[label] = float((inside == 0).mean()) if inside.size else float("nan")
                shares[f"{label}_points"] = int(raster.sum())
                ax = axes[r, col]
                ax.imshow(np.log1p(raster), origin="lower", extent=(-side / 2, side / 2, -side / 2, side / 2),
                          cmap="Blues" if label == "data" else "Oranges", interpolation="nearest")
                ax.set_title(f"{label}: side {side:g}, {shares[f'{label}_points']:,} pts, "
                             f"{shares[label]:.0%} empty", fontsize=9)
                ax.set_xlabel("first axis (centred)")
                ax.set_ylabel("second axis (centred)")
            row["windows"].append({"side": side, "empty_share_data": shares["data"], "empty_share_null": shares["null"],
                                   "points_data": shares["data_points"], "points_null": shares["null_points"],
                                   "occupied_cells": int(mask.sum())})
        fig.suptitle(f"{name}: data (top) and fitted-normal null (bottom); empty cells inside the 95% ellipse",
                     fontsize=10)
        fig.tight_layout()
        fname = row["figure"]
        fig.savefig(out_dir / fname, dpi=100)
        figs.append(fname)
        summaries.append(row)
    return summaries, figs


def stale(stage_json: dict, run: Path) -> bool:
    """True when a stage's JSON names the latents it was made from and latents.zarr now holds others."""
    made_from = (stage_json.get("inputs") or {}).get("latents_key")
    return made_from is not None and made_from != latents_key(run)


def dominant_components(run: Path, std: np.ndarray) -> list[int]:
    """The two most dominant components from stats.json when `zspace stats` ran, else the two widest (``std``)."""
    path = run / "stats" / "stats.json"
    stats = None
    if path.exists():
        try:
            stats = json.loads(path.read_text())
        except json.JSONDecodeError:
            logger.warning("%s is unreadable: ignoring it (run 'zspace stats --run %s' to rebuild it)", path, run)
    if stats is not None:
        if stale(stats, run):
            logger.warning("%s was made from other latents than latents.zarr holds now: ignoring its dominant "
                           "components (run 'zspace stats --run %s' to refresh it)", path, run)
            return [int(j) for j in np.argsort(-np.asarray(std))[:2]]
        dom = stats.get("dominant", [])
        if len(dom) >= 2:
            return sorted(dom, key=lambda j: -stats["components"][j]["std"])[:2]
    return [int(j) for j in np.argsort(-np.asarray(std))[:2]]
