"""Figures of ``zspace stats``: each answers one question about the shape of the latent cloud."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats as sstats

from engine.analysis.distributions import gaussian, sigma_probability
from engine.figures import subplots

SIGMA_COLOURS = ("#1b9e77", "#d95f02", "#7570b3")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def ellipse_xy(cov2: np.ndarray, r: float, centre=(0.0, 0.0), n: int = 200) -> np.ndarray:
    """Points (n, 2) on the ellipse {x : x^T cov2^-1 x = r^2} around ``centre``."""
    w, v = np.linalg.eigh(cov2)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (v @ (np.sqrt(np.clip(w, 0, None))[:, None] * r * circle)).T + np.asarray(centre)


def density_figure(path: Path, res: dict, centres: np.ndarray, density: np.ndarray, w: float) -> str:
    """Every component's number density, as the study plots them."""
    n, d, dominant = res["n"], res["d"], res["dominant"]
    fig, ax = subplots(figsize=(8, 4.5))
    for j in range(d):
        if j not in dominant:
            ax.plot(centres, density[j], color="0.45", lw=0.6, alpha=0.5)
    for k, j in enumerate(dominant[:10]):
        ax.plot(centres, density[j], lw=1.6, label=f"z[{j}] (dominant)")
    ax.set_xlabel(f"component value (bin width {w:g})")
    ax.set_ylabel("number density (fraction per unit)")
    ax.set_title(f"Number density of all {d} latent components (N = {n:,}); {len(dominant)} dominant")
    if dominant:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def dominant_figure(path: Path, res: dict, centres: np.ndarray, density: np.ndarray) -> str:
    """The dominant components with their Gaussian fits (or the widest ones when none stand out)."""
    dominant = res["dominant"]
    comps = res["components"]
    show = dominant[:12] or list(np.argsort([-c["std"] for c in comps])[:4])
    cols = min(4, len(show))
    rows = math.ceil(len(show) / cols)
    fig, axes = subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, j in zip(axes.flat, show):
        c = comps[j]
        ax.step(centres, density[j], where="mid", color="0.2", lw=1, label="data")
        xx = np.linspace(centres[0], centres[-1], 400)
        ax.plot(xx, gaussian(xx, c["fit_amplitude"], c["fit_center"], c["fit_sigma"]), color="C3", lw=1.2, label="Gaussian fit")
        ax.set_title(f"z[{j}]: centre {c['fit_center']:.2f}, FWHM {c['fwhm']:.2f}", fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("density")
        lim = c["fit_center"] + np.array([-5, 5]) * max(c["fit_sigma"], 1e-3)
        ax.set_xlim(max(lim[0], centres[0]), min(lim[1], centres[-1]))
    for ax in list(axes.flat)[len(show):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Dominant components with Gaussian fits" if dominant else "No dominant component: the four widest")
    return _save(fig, path)


def radius_figure(path: Path, res: dict, radius_hists) -> str:
    """Radius at both resolutions."""
    r = res["radius"]
    fig, axes = subplots(1, len(radius_hists), figsize=(5.5 * len(radius_hists), 3.8), squeeze=False)
    for ax, (rw, e, c) in zip(axes.flat, radius_hists):
        ax.step(e[:-1] + rw / 2, c, where="mid", color="0.2", lw=1)
        ax.axvline(r["peak_by_bin_width"][str(rw)], color="C0", ls="-", label=f"peak {r['peak_by_bin_width'][str(rw)]:.2f}")
        ax.axvline(r["expected"], color="C3", ls="--", label=f"sqrt(sum(mu^2+var)) = {r['expected']:.2f}")
        ax.axvline(r["sqrt_d"], color="C2", ls=":", label=f"sqrt(D) = {r['sqrt_d']:.2f}")
        ax.set_xlabel("L2 radius |z|")
        ax.set_ylabel(f"points per bin of {rw:g}")
        ax.set_title(f"Radius distribution, bin width {rw:g}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def correlation_figure(path: Path, res: dict, corr: np.ndarray) -> str:
    """Correlation matrix."""
    fig, ax = subplots(figsize=(6.4, 5.4))
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_xlabel("component j")
    ax.set_ylabel("component i")
    ax.set_title(f"Correlations between components (mean |r| {res['correlation']['mean_abs_r']:.3f})")
    return _save(fig, path)


def scree_figure(path: Path, res: dict) -> str:
    """Scree."""
    p = res["pca"]
    ratio = np.asarray(p["explained_variance_ratio"])
    fig, ax = subplots(figsize=(7, 4))
    k = np.arange(1, len(ratio) + 1)
    ax.semilogy(k, np.clip(ratio, 1e-12, None), ".-", color="C0", ms=3, label="per component")
    ax2 = ax.twinx()
    ax2.plot(k, np.cumsum(ratio), color="C1", lw=1.5, label="cumulative")
    for q, key in ((0.5, "n_components_50"), (0.9, "n_components_90"), (0.99, "n_components_99")):
        ax2.axhline(q, color="0.7", lw=0.6)
        ax2.annotate(f"{int(q * 100)}%: {p[key]}", (p[key], q), fontsize=8, xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax2.set_ylabel("cumulative")
    ax.set_title("PCA scree plot")
    return _save(fig, path)


def pairs_figure(path: Path, res: dict, corr: np.ndarray, rasters: np.ndarray, pair_windows, cov: np.ndarray) -> str:
    """Joint histograms of the most correlated pairs with 1/2/3-sigma ellipses."""
    comps = res["components"]
    m = len(pair_windows)
    fig, axes = subplots(1, m, figsize=(3.3 * m, 3.4), squeeze=False)
    means = [c["mean"] for c in comps]
    for ax, raster, (i, j, lo, hi) in zip(axes.flat, rasters, pair_windows):
        extent = (means[i] + lo[0], means[i] + hi[0], means[j] + lo[1], means[j] + hi[1])
        ax.imshow(np.log1p(raster), origin="lower", extent=extent, aspect="auto", cmap="Greys")
        c2 = cov[np.ix_([i, j], [i, j])]
        for s, col in zip((1, 2, 3), SIGMA_COLOURS):
            xy = ellipse_xy(c2, math.sqrt(sstats.chi2.ppf(sigma_probability(s), 2)), (means[i], means[j]))
            ax.plot(xy[:, 0], xy[:, 1], color=col, lw=1, label=f"{s} sigma")
        r_ij = corr[i, j]
        ax.set_title(f"z[{i}] vs z[{j}], r = {r_ij:.2f}", fontsize=9)
        ax.set_xlabel(f"z[{i}]")
        ax.set_ylabel(f"z[{j}]")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Most correlated pairs: joint histograms (log counts), ellipses of the fitted normal", fontsize=10)
    return _save(fig, path)


def qq_figure(path: Path, res: dict) -> str:
    """Chi-square QQ plot of squared Mahalanobis distances."""
    fig, ax = subplots(figsize=(5.2, 5))
    for key, col in (("full", "C0"), ("core", "C1")):
        s = res["normality"][key]
        ax.plot(s["qq"]["reference"], s["qq"]["data"], ".", color=col, ms=3,
                label=f"{key}: KS {s['ks_distance']:.3f}, dof {s['dof']}")
    lims = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
    ax.plot(lims, lims, color="0.4", lw=0.8, ls="--", label="multivariate normal")
    ax.set_xlabel("quantile of a normal cloud (chi-square, in-sample exact)")
    ax.set_ylabel("squared Mahalanobis distance quantile")
    ax.set_title("Is the cloud multivariate normal?")
    ax.legend(fontsize=8)
    return _save(fig, path)


def stats_figures(out_dir: Path, res: dict, edges, counts, radius_hists, corr, rasters, pair_windows, cov) -> list[str]:
    """Every figure of ``zspace stats`` into ``out_dir``; returns their file names."""
    w = edges[1] - edges[0]
    centres = edges[:-1] + w / 2
    density = counts / (res["n"] * w)
    figs = [density_figure(out_dir / "density_all.png", res, centres, density, w),
            dominant_figure(out_dir / "dominant.png", res, centres, density),
            radius_figure(out_dir / "radius.png", res, radius_hists),
            correlation_figure(out_dir / "correlation.png", res, corr),
            scree_figure(out_dir / "scree.png", res)]
    if len(pair_windows):
        figs.append(pairs_figure(out_dir / "pairs.png", res, corr, rasters, pair_windows, cov))
    figs.append(qq_figure(out_dir / "qq.png", res))
    return figs
