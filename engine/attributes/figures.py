"""Figures of ``zspace attributes``: correlations, readouts against random sets, traversals, judged rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.figures import image_grid, save_figure, subplots


def heatmap_figure(path: Path, res: dict, corr: np.ndarray, order: np.ndarray) -> str:
    """Point-biserial r of every component (columns, most dominant first) with every attribute (rows)."""
    names = list(res["attributes"])
    shown = order[: min(len(order), 64)]
    fig, ax = subplots(figsize=(min(16, 3 + 0.18 * len(shown)), 1.2 + 0.28 * len(names)), dpi=110)
    lim = max(0.05, float(np.abs(corr).max()) if corr.size else 0.05)
    im = ax.imshow(corr[:, shown], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks(range(len(shown)), [str(j) for j in shown], fontsize=6, rotation=90)
    dominant = set(res["dominant"])
    for t, j in zip(ax.get_xticklabels(), shown):
        if int(j) in dominant:
            t.set_color("C3")
            t.set_fontweight("bold")
    ax.set_xlabel(f"component (ordered by dominance; dominant in red; first {len(shown)} of {len(order)})")
    ax.set_title("Point-biserial correlation of each component with each attribute", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="r")
    return save_figure(fig, path, tight=True)


def auc_figure(path: Path, res: dict) -> str:
    """Per attribute: the linear readout's AUC from all of z, from the dominant components alone, and the
    distribution of 200 random sets of as many other components."""
    names = list(res["attributes"])
    fig, ax = subplots(figsize=(max(6, 0.45 * len(names) + 2), 4.2), dpi=110)
    x = np.arange(len(names))
    rand = [(res["attributes"][a]["dominant"] or {}).get("auc_random") or [np.nan] for a in names]
    ax.violinplot(rand, positions=x, widths=0.7, showextrema=False)
    full = [res["attributes"][a]["readout"]["auc"] for a in names]
    lo = [res["attributes"][a]["readout"]["ci95"][0] for a in names]
    hi = [res["attributes"][a]["readout"]["ci95"][1] for a in names]
    ax.errorbar(x, full, yerr=[np.subtract(full, lo), np.subtract(hi, full)], fmt="o", color="k", ms=4,
                label="all of z (logistic, 95%)")
    dom = [(res["attributes"][a]["dominant"] or {}).get("auc_dominant", np.nan) for a in names]
    if res["dominant"]:
        ax.plot(x, dom, "D", color="C3", ms=5, label=f"the {len(res['dominant'])} dominant components alone")
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("out-of-fold ROC AUC")
    ax.set_ylim(0.35, 1.02)
    ax.set_title("Linear readout of each attribute" + ("; violins: 200 random sets of as many other components"
                                                       if res["dominant"] else " (no dominant components)"), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, tight=True)


def traversal_figure(path: Path, name: str, images: np.ndarray, rows: int, steps) -> str:
    """Decoded faces moved along an attribute direction: rows are starts (the centre first), columns steps."""
    grid = np.asarray(image_grid(images, len(steps), scale=1))
    side = images.shape[1]
    fig, ax = subplots(figsize=(1.1 * len(steps) + 1.2, 1.1 * rows + 0.8), dpi=110)
    ax.imshow(grid, interpolation="nearest")
    pad = grid.shape[1] / len(steps)
    ax.set_xticks([pad * (i + 0.5) for i in range(len(steps))], [f"{s:+g}" for s in steps], fontsize=8)
    ax.set_yticks([grid.shape[0] / rows * (i + 0.5) for i in range(rows)],
                  ["centre"] + [f"test {i}" for i in range(1, rows)], fontsize=8)
    ax.set_xlabel(f"step along the {name} direction (class-mean separations)")
    ax.set_title(f"{name}: decoded along its direction ({side} px)", fontsize=10)
    for s in ax.spines.values():
        s.set_visible(False)
    return save_figure(fig, path, tight=True)


def judged_figure(path: Path, res: dict) -> str | None:
    """The classifier's rate of each judged attribute against the traversal step, with Wilson bands and the
    reconstructions' rates (with / without the attribute) as reference lines."""
    judged = [(a, r["judged"]) for a, r in res["attributes"].items() if r.get("judged")]
    if not judged:
        return None
    cols = min(4, len(judged))
    rows = int(np.ceil(len(judged) / cols))
    # at least 4.4 in wide: the title must fit above a single panel
    fig, axes = subplots(rows, cols, figsize=(max(4.4, 3.2 * cols), 2.6 * rows + 0.3), dpi=110, squeeze=False)
    for ax, (a, j) in zip(axes.flat, judged):
        steps, rate, ci = np.array(j["steps"]), np.array(j["rate"]), np.array(j["ci95"])
        ax.fill_between(steps, ci[:, 0], ci[:, 1], color="C0", alpha=0.25, lw=0)
        ax.plot(steps, rate, "o-", color="C0", ms=3)
        ref = j.get("reference") or {}
        for key, ls in (("with", "-"), ("without", ":")):
            if key in ref:
                ax.axhline(ref[key]["rate"], color="C3", ls=ls, lw=0.9, label=f"reconstructions {key}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{a}: {j['slope_per_step']:+.3f} per step{' *' if j['changes'] else ''}", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(judged):]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel("judged rate", fontsize=7)
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle("Classifier's rate of the attribute along its direction\n(* the rate changes, by the rule)",
                 fontsize=9)
    return save_figure(fig, path, tight=True)


def attribute_figures(out: Path, res: dict, corr: np.ndarray, order: np.ndarray) -> list[str]:
    figs = [heatmap_figure(out / "heatmap.png", res, corr, order), auc_figure(out / "auc.png", res)]
    judged = judged_figure(out / "judged.png", res)
    return figs + ([judged] if judged else [])
