"""Paths through the latent cloud, decoded into image strips and drawn over the cloud.

  origin_to_centre   the straight line from z = 0 to the centre of the cloud (the study used 6 points)
  plane_segment      a straight segment through the centre inside the plane of two unit vectors
                     (two coordinate axes, or two principal axes), rotated by an angle within that
                     plane, its length in units of the cloud's spread along its direction
  interpolation      the line between two z-points, optionally extended beyond them

Each path gives float64 (n, D) points; ``draw_path`` writes the study's figure: 5,000 data
points projected on the path's plane (blue), the origin (yellow), the centre (orange), the
path (red), and the decoded strip under it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from engine.analysis.gaussian import GaussianFit
from engine.analysis.planes import dominant_components
from engine.figures import new_figure
from engine.files import write_json_atomic
from engine.generation.config import PathsConfig
from engine.generation.generate import decode_with, load_model
from engine.latents.store import open_latents

logger = logging.getLogger(__name__)


def origin_to_centre(mean: np.ndarray, n: int = 6) -> np.ndarray:
    """n points from 0 to ``mean`` inclusive."""
    return np.linspace(0.0, 1.0, n)[:, None] * np.asarray(mean, np.float64)


def plane_segment(mean: np.ndarray, cov: np.ndarray, u: np.ndarray, v: np.ndarray, angle_deg: float = 0.0,
                  length: float = 4.0, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Segment through ``mean`` along cos(a) u + sin(a) v, ``length`` spreads long.

    u, v: unit vectors spanning the plane (orthonormalised here). The spread along a
    direction d is sqrt(d^T cov d). With odd ``n`` the middle point is the centre
    itself. Returns (points (n, D), direction (D,)).
    """
    u = np.asarray(u, np.float64) / np.linalg.norm(u)
    v = np.asarray(v, np.float64) - (np.asarray(v, np.float64) @ u) * u
    v /= np.linalg.norm(v)
    a = np.deg2rad(angle_deg)
    d = np.cos(a) * u + np.sin(a) * v
    spread = float(np.sqrt(d @ cov @ d))
    t = np.linspace(-0.5, 0.5, n) * length * spread
    return np.asarray(mean, np.float64) + t[:, None] * d, d


def interpolation(z_a: np.ndarray, z_b: np.ndarray, n: int = 8, extend: float = 0.0) -> np.ndarray:
    """n points on the line through z_a (t = 0) and z_b (t = 1), t in [-extend, 1 + extend]."""
    t = np.linspace(-extend, 1.0 + extend, n)
    return np.asarray(z_a, np.float64) + t[:, None] * (np.asarray(z_b, np.float64) - np.asarray(z_a, np.float64))


def path_plane(points: np.ndarray, mean: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal vectors: the path's direction, and ``fallback`` made orthogonal to it."""
    d = points[-1] - points[0]
    d = d / np.linalg.norm(d)
    w = fallback - (fallback @ d) * d
    if np.linalg.norm(w) < 1e-9:  # fallback parallel to the path: any other axis
        w = np.eye(len(d))[np.argmin(np.abs(d))]
        w = w - (w @ d) * d
    return d, w / np.linalg.norm(w)


def draw_path(path: Path, title: str, cloud: np.ndarray, mean: np.ndarray, points: np.ndarray,
              u: np.ndarray, v: np.ndarray, images: np.ndarray, labels: tuple[str, str]) -> None:
    """The study's path figure: the plane (u, v) with the cloud, origin, centre and path; the strip below."""
    fig = new_figure(figsize=(max(6.0, 1.1 * len(images)), 7.2))
    ax = fig.add_axes([0.1, 0.36, 0.85, 0.56])
    ax.scatter(cloud @ u, cloud @ v, s=2, color="C0", alpha=0.35, label=f"{len(cloud):,} data points")
    ax.scatter([0], [0], s=80, color="gold", edgecolor="k", zorder=3, label="origin")
    ax.scatter([mean @ u], [mean @ v], s=80, color="orange", edgecolor="k", zorder=3, label="centre")
    ax.plot(points @ u, points @ v, "-o", color="red", ms=4, zorder=4, label="path")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    strip = fig.add_axes([0.02, 0.02, 0.96, 0.26])
    pad = np.full((images.shape[1], 2, 3), 255, np.uint8)
    strip.imshow(np.concatenate([np.concatenate([im, pad], 1) for im in images], 1))
    strip.axis("off")
    fig.savefig(path, dpi=100)


def trace_paths(run_dir: str | os.PathLike, n_points: int = PathsConfig.n_points, angle: float = PathsConfig.angle,
                length: float = PathsConfig.length, steps: int = PathsConfig.steps,
                between: tuple[str, str] | None = None, extend: float = PathsConfig.extend,
                device: str = PathsConfig.device, seed: int = 0, axes: list[tuple[int, int]] | None = None,
                pcs: list[tuple[int, int]] | None = None) -> tuple[list[dict], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The path families of the study; writes RUN/generate/paths/ (figures, z and images).

    Returns (summary: one dict per path, decoded: name -> (z float32 (n, D), images uint8 (n, S, S, 3))).

    axes: coordinate planes (i, j), 0-based component indices; default the plane of the two
    most dominant components. pcs: principal planes (p, q), 1-based as in "PC1"; default (1, 2).
    """
    run = Path(run_dir)
    group = open_latents(run)
    z = group["z"]
    fit = GaussianFit().fit(z)  # streamed: the whole cloud, never all rows in memory
    mean, cov, vec = fit.mean_, fit.covariance_, fit.eigenvectors_
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(z.shape[0], size=min(n_points, z.shape[0]), replace=False))
    cloud = np.asarray(z.get_orthogonal_selection((rows, slice(None))), np.float64)
    d = z.shape[1]
    eye = np.eye(d)
    if axes is None:
        axes = [tuple(dominant_components(run, fit.std_)[:2])]
    pcs = [(1, 2)] if pcs is None else pcs
    for name, planes, lo in (("axes", axes, 0), ("pcs", pcs, 1)):
        for a, b in planes:
            if a == b or not (lo <= a < d + lo and lo <= b < d + lo):
                raise ValueError(f"{name} plane ({a}, {b}): two different indices in {lo}..{d - 1 + lo} are needed "
                                 f"(the latents have {d} components)")
    paths = []
    pts = origin_to_centre(mean, 6)
    u, v = path_plane(pts, mean, vec[:, 0])
    paths.append(("origin_to_centre", "Origin to the centre of the cloud", pts, u, v, ("along the path", "PC1 (orthogonal part)")))
    planes = [(f"pca_plane_{p}_{q}", (p - 1, q - 1), vec, (f"PC{p}", f"PC{q}")) for p, q in pcs]
    planes += [(f"axes_{i}_{j}", (i, j), eye, (f"z[{i}]", f"z[{j}]")) for i, j in axes]
    for name, (a, b), basis, lab in planes:
        pts, _ = plane_segment(mean, cov, basis[:, a], basis[:, b], angle, length, steps)
        paths.append((name, f"Segment through the centre in the {lab[0]} x {lab[1]} plane, angle {angle:g} deg, "
                            f"length {length:g} spreads", pts, basis[:, a], basis[:, b], lab))
    if between is not None:
        ids = group["ids"][:].tolist()
        missing = [i for i in between if i not in ids]
        if missing:
            raise ValueError(f"image ids {missing} are not in {run / 'latents.zarr'} (ids look like {ids[0]!r})")
        za, zb = (np.asarray(z[ids.index(i)], np.float64) for i in between)
        pts = interpolation(za, zb, steps, extend)
        u, v = path_plane(pts, mean, vec[:, 0])
        paths.append(("interpolation", f"From {between[0]} to {between[1]}, extended by {extend:g} each side", pts, u, v,
                      ("along the path", "PC1 (orthogonal part)")))

    summary, decoded = [], {}
    model, dev, prec = load_model(run, device=device)  # once for every path, before anything is written
    out = run / "generate" / "paths"
    out.mkdir(parents=True, exist_ok=True)
    for name, title, pts, u, v, lab in paths:
        images = decode_with(model, pts.astype(np.float32), dev, prec)
        decoded[name] = (pts.astype(np.float32), images)
        draw_path(out / f"{name}.png", title, cloud, mean, pts, u, v, images, lab)
        np.save(out / f"{name}_z.npy", pts.astype(np.float32))
        np.save(out / f"{name}_images.npy", images)
        summary.append({"path": name, "title": title, "points": len(pts), "figure": f"{name}.png"})
    write_json_atomic(out / "paths.json", summary)
    return summary, decoded


def run_paths(run_dir: str | os.PathLike, **options) -> dict:
    """``zspace paths``: :func:`trace_paths` with its options; returns the summary and the folder."""
    summary, _ = trace_paths(run_dir, **options)
    return {"paths": summary, "folder": str(Path(run_dir) / "generate" / "paths")}
