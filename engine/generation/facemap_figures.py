"""The face map's figures: face rate against radius, against void depth, over both, and what a void looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.figures import save_figure, subplots

__all__ = ["facemap_figures"]

MIN_CELL = 5  # probes a (radius, depth) cell needs to be coloured


def _band(ax, x, rates, color, label, marker="o"):
    r = np.array([b["rate"] for b in rates])
    lo, hi = np.array([b["ci95"][0] for b in rates]), np.array([b["ci95"][1] for b in rates])
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax.plot(x, r, marker=marker, color=color, label=label, ms=4)


def _radius(path: Path, result: dict) -> None:
    fig, ax = subplots(figsize=(7.5, 4.4), dpi=110)
    for name, color, label in (("sweep_random", "C0", "random whitened directions"),
                               ("sweep_axes", "C1", "principal axes (both signs)")):
        rates = [s for s in result["sweep"][name] if s["n"] > 0]
        _band(ax, [s["r"] for s in rates], rates, color, label)
    q = result["radius_band"]
    ax.axvspan(q[1], q[2], color="0.85", zorder=0, label="central half of the training latents' radii")
    ax.axvline(1.0, color="0.5", ls=":", lw=1)
    ax.set_xlabel("Mahalanobis radius / median radius of the training latents")
    ax.set_ylabel("face rate (Haar cascade), 95% Wilson band")
    ax.set_ylim(-0.03, 1.03)
    bx = ax.twinx()
    bx.plot(result["config"]["radii"], result["sweep_depth"]["sweep_random"], "k--", lw=0.8, label="void depth (median)")
    bx.set_ylabel("void depth along random directions (dashed)")
    ax.set_title("Where does the face region end?", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, path, tight=True)


def _depth(path: Path, result: dict, arrays: dict, families: tuple, sweeps: tuple) -> None:
    fig, (ax, bx) = subplots(1, 2, figsize=(12, 4.4), dpi=110)
    dep = result["depth"]
    edges = np.array(dep["edges"])
    mid = (edges[:-1] + edges[1:]) / 2
    _band(ax, mid, dep["pooled"], "k", "all depth probes")
    for i, (name, fam) in enumerate(dep["families"].items()):
        ok = [(m, b) for m, b in zip(mid, fam["bins"]) if b["n"] >= 10]
        if ok:
            ax.plot([m for m, _ in ok], [b["rate"] for _, b in ok], "o", ms=3.5, color=f"C{i}", alpha=0.8, label=name)
    ax.axvline(1.0, color="0.5", ls=":", lw=1)
    ax.set_xlabel("void depth: distance to the nearest training latent / typical neighbour distance")
    ax.set_ylabel("face rate, 95% Wilson band")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("At the data's median radius: does depth in a void matter?", fontsize=10)
    ax.legend(fontsize=8)
    depth, family = arrays["depth"], arrays["family"]
    hi = 1.15 * float(edges[-1])  # the depth probes' range; the sweeps reach farther out (clipped here)
    grid = np.linspace(0, hi, 60)
    for i, name in enumerate(families):
        d = depth[family == i]
        color = "0.4" if name in sweeps else f"C{i - len(sweeps)}"
        bx.hist(d, bins=grid, histtype="step", color=color, ls="--" if name in sweeps else "-", density=True,
                weights=np.full(len(d), 1.0), label=name + (f" ({(d > hi).mean():.0%} beyond)" if name in sweeps else ""))
    for e in edges:
        bx.axvline(e, color="0.8", lw=0.6, zorder=0)
    bx.set_xlabel("void depth (grey lines: the bins)")
    bx.set_ylabel("density")
    bx.set_title("Depths each probe family covers", fontsize=10)
    bx.legend(fontsize=7)
    save_figure(fig, path, tight=True)


def _map(path: Path, result: dict, arrays: dict) -> None:
    radii = np.array(result["config"]["radii"])
    step = np.min(np.diff(radii)) if len(radii) > 1 else 0.1
    r_edges = np.concatenate([radii - step / 2, [radii[-1] + step / 2]])
    r, d, f = arrays["radius_ratio"], arrays["depth"], arrays["face"]
    cap = float(np.quantile(d, 0.95))  # deeper probes (the axis sweep far out) go into the top row
    d_edges = np.linspace(0, cap, 17)
    n, _, _ = np.histogram2d(r, np.minimum(d, cap * (1 - 1e-9)), [r_edges, d_edges])
    k, _, _ = np.histogram2d(r, np.minimum(d, cap * (1 - 1e-9)), [r_edges, d_edges], weights=f.astype(float))
    rate = np.ma.masked_where(n < MIN_CELL, np.divide(k, n, out=np.zeros_like(k), where=n > 0))
    fig, ax = subplots(figsize=(7.5, 4.8), dpi=110)
    im = ax.pcolormesh(r_edges, d_edges, rate.T, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label=f"face rate (cells with >= {MIN_CELL} probes; white: fewer)")
    ax.set_xlabel("Mahalanobis radius / median radius (sweeps; the depth probes sit at 1)")
    ax.set_ylabel(f"void depth (top row: {cap:.2f} and deeper)")
    ax.set_title("Face rate over radius and void depth (every probe)", fontsize=10)
    save_figure(fig, path, tight=True)


def _strip(path: Path, result: dict, arrays: dict) -> None:
    images, bins = arrays["strip_images"], arrays["depth_bin"][arrays["strip"]]
    pooled = result["depth"]["pooled"]
    ncols = max(1, max(int((bins == b).sum()) for b in range(len(pooled))))
    fig, axes = subplots(len(pooled), ncols, figsize=(1.1 * ncols + 1.6, 1.1 * len(pooled)), dpi=100, squeeze=False)
    for b, row in enumerate(axes):
        mine = images[bins == b]
        for j, ax in enumerate(row):
            ax.set_axis_off()
            if j < len(mine):
                ax.imshow(mine[j])
        row[0].text(-0.15, 0.5, f"depth {pooled[b]['lo']:.2f}-{pooled[b]['hi']:.2f}\nface rate {pooled[b]['rate']:.2f}",
                    transform=row[0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle("Decoded probes at the median radius, shallow (top) to deep in the voids (bottom)", fontsize=9)
    fig.subplots_adjust(left=0.16, right=0.99, top=0.93, bottom=0.01, wspace=0.04, hspace=0.08)
    save_figure(fig, path)


def facemap_figures(out: Path, result: dict, arrays: dict, families: tuple, sweeps: tuple) -> dict[str, str]:
    """radius.png, depth.png, map.png, strip.png in ``out``; returns their file names by role."""
    _radius(out / "radius.png", result)
    _depth(out / "depth.png", result, arrays, families, sweeps)
    _map(out / "map.png", result, arrays)
    files = {"radius": "radius.png", "depth": "depth.png", "map": "map.png"}
    if arrays["strip_images"] is not None and len(arrays["strip"]):
        _strip(out / "strip.png", result, arrays)
        files["strip"] = "strip.png"
    return files
