"""Figures of ``zspace structure``: data (blue) beside the null model (orange), on shared bins."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.figures import subplots

DATA, NULL = "C0", "C1"


def _pair_hist(ax, dv, nv, bins, xlabel, title):
    lo, hi = np.nanpercentile(np.concatenate([dv, nv]), [0.1, 99.9])
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else bins
    ax.hist(dv, bins=edges, histtype="step", color=DATA, lw=1.4, density=True, label="data")
    ax.hist(nv, bins=edges, histtype="step", color=NULL, lw=1.4, density=True, label="null (fitted normal)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def structure_figures(out_dir: Path, res: dict, data_s: dict, null_s: dict, void: dict) -> list[str]:
    st = res["statistics"]
    k = res["k"]
    figs = []

    fig, axes = subplots(1, 3, figsize=(14, 3.8))
    _pair_hist(axes[0], data_s["pr"], null_s["pr"], 60, "participation ratio of the local covariance",
               f"Participation ratio, k = {k} (medians {st['local_participation_ratio']['data']:.2f} vs "
               f"{st['local_participation_ratio']['null']:.2f})\ncorrected local dimension: "
               f"{st['local_dimension']['data']:.1f} vs {st['local_dimension']['null']:.1f}")
    n90_d, n90_n = data_s["n90"], null_s["n90"]
    top = int(max(n90_d.max(), n90_n.max()))
    edges = np.arange(0.5, top + 1.5)
    axes[1].hist(n90_d, bins=edges, histtype="step", color=DATA, lw=1.4, density=True, label="data")
    axes[1].hist(n90_n, bins=edges, histtype="step", color=NULL, lw=1.4, density=True, label="null")
    axes[1].set_xlabel("local components for 90% of variance")
    axes[1].set_ylabel("share of points")
    axes[1].set_title("Local n90", fontsize=10)
    axes[1].legend(fontsize=8)
    _pair_hist(axes[2], data_s["lin"], null_s["lin"], 60, "linearity (l1 - l2) / l1",
               "Filament-like neighbourhoods have linearity near 1")
    figs.append(_save(fig, out_dir / "local_dim.png"))

    fig, axes = subplots(1, 3, figsize=(14, 3.8))
    _pair_hist(axes[0], data_s["dist"][:, 0], null_s["dist"][:, 0], 80, "distance to the 1st neighbour",
               "Nearest-neighbour distances")
    _pair_hist(axes[1], data_s["dist"][:, -1], null_s["dist"][:, -1], 80, f"distance to the {k}th neighbour",
               f"{k}th-neighbour distances")
    v = st["void_ratio"]
    _pair_hist(axes[2], void["data"]["u"], void["null"]["u"], 80, "probe to nearest point of the cloud",
               f"Voids: ratio {v['data']:.3f} (data) vs {v['null']:.3f} (null)")
    figs.append(_save(fig, out_dir / "knn_distances.png"))
    return figs


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name
