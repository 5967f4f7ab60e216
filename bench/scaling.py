"""Cost against N: ``zspace bench --scaling``.

Times stats (a fresh process, streaming from Zarr), the exact kNN graph (k=16, the self-join kernel),
structure (data and null, exact, 90 neighbours kept) and t-SNE (the data map of all points, reusing
structure's graph) on latent-like clouds of each size in ``bench.profile.ScalingSizes``; t-SNE also on
random subsets of the largest cloud (its kNN graph computed, nothing reused) and, at the largest size,
openTSNE's own ``TSNE(n_jobs).fit`` with its defaults beside ours, both maps judged by the same yardstick
(KL divergence against the exact affinities, 15-NN kept). Writes ``scaling.json``, ``SCALING.md`` and
``figures/scaling.png`` (log-log, one line per stage, the fitted exponent in the legend) to the output folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import machine, measure
from bench.profile import scaling_sizes
from bench.stages_analysis import map_quality, stats_subprocess, write_latents

STAGE_LABELS = {
    "stats": "zspace stats (fresh process, from Zarr)",
    "knn": "exact kNN graph, k=16 (self-join kernel)",
    "structure": "zspace structure (data + null, exact)",
    "tsne": "zspace tsne, data map of all points (structure's graph reused)",
    "tsne_subset": "zspace tsne of n random points (exact kNN computed)",
    "tsne_uniform": "zspace tsne --affinity uniform --uniform-k 15, all points (graph reused)",
}


def _point(stage: str, n: int, seconds: float, peak: float, **extra) -> dict:
    print(f"[scaling] {stage} n={n:,}: {seconds:.1f} s, peak {peak:,.0f} MB", flush=True)
    return {"stage": stage, "n": int(n), "seconds": float(seconds), "peak_mb": float(peak), **extra}


def _at_size(n: int, workdir: Path, warm: Path, keep: bool) -> tuple[list[dict], Path, np.ndarray]:
    """stats, kNN, structure and the all-points map at one size; returns the points, the run and its z."""
    from engine.analysis.knn import knn_graph
    from engine.analysis.structure import compute_structure
    from engine.analysis.tsne import TSNEConfig, compute_tsne

    run = Path(tempfile.mkdtemp(dir=workdir))
    x = write_latents(run, n)
    t, peak = stats_subprocess(run, warm)
    points = [_point("stats", n, t, peak)]
    t, peak = measure(lambda: knn_graph(x, 16), 1)
    points.append(_point("knn", n, t, peak))
    res = {}
    t, peak = measure(lambda: res.update(compute_structure(run, progress=False)), 1)
    points.append(_point("structure", n, t, peak, knn_data=res["seconds"]["knn_data"],
                         knn_null=res["seconds"]["knn_null"]))
    t, peak = measure(lambda: res.update(tsne=compute_tsne(run, TSNEConfig(n=n, null=False), progress=False)), 1)
    points.append(_point("tsne", n, t, peak, neighbours=res["tsne"]["neighbours"]["data"],
                         kl=res["tsne"]["kl_divergence"]["data"], kept=res["tsne"]["neighbours_kept_15"]["data"]))
    if not keep:
        shutil.rmtree(run)
    return points, run, x


def _study_maps(run: Path, x: np.ndarray, subsets: tuple[int, ...], cores: int, figures: Path) -> list[dict]:
    """t-SNE of random subsets (kNN computed), then openTSNE's defaults on all points beside our map."""
    import zarr
    from openTSNE import TSNE

    from engine.analysis.tsne import TSNEConfig, compute_tsne

    n = len(x)
    g = zarr.open_group(run / "latents.zarr", mode="r")
    graph = (g["knn_distances"][:], g["knn_indices"][:])
    ours = map_quality(run, x, graph=graph)  # our all-points map, judged like the baseline's
    shutil.copy(run / "tsne" / "tsne.png", figures / f"tsne_{n}.png")
    # the faster setting, a different map: uniform weights on 15 neighbours, judged by the same yardstick
    res = {}
    cfg = TSNEConfig(n=n, null=False, affinity="uniform", uniform_k=15)
    t, peak = measure(lambda: res.update(compute_tsne(run, cfg, progress=False)), 1)
    uni = map_quality(run, x, graph=graph)
    shutil.copy(run / "tsne" / "tsne.png", figures / f"tsne_{n}_uniform.png")
    points = [_point("tsne_uniform", n, t, peak, kl=uni["kl"], kept=uni["kept"], perplexity_kl=ours["kl"],
                     perplexity_kept=ours["kept"])]
    for m in subsets:
        res = {}
        t, peak = measure(lambda m=m: res.update(compute_tsne(run, TSNEConfig(n=m, null=False), progress=False)), 1)
        points.append(_point("tsne_subset", m, t, peak, of=n, kl=res["kl_divergence"]["data"],
                             kept=res["neighbours_kept_15"]["data"]))
    emb = {}
    t, peak = measure(lambda: emb.update(y=TSNE(n_jobs=cores, random_state=0).fit(x)), 1)
    base = map_quality(run, x, np.asarray(emb["y"]), graph)
    points.append(_point("openTSNE_defaults", n, t, peak, kl=base["kl"], kept=base["kept"],
                         ours_kl=ours["kl"], ours_kept=ours["kept"]))
    return points


def _warm_up(workdir: Path) -> None:
    """Compile the numba kernels and load FAISS and openTSNE before anything is timed."""
    from engine.analysis.knn import knn_graph
    from engine.analysis.structure import compute_structure
    from engine.analysis.tsne import TSNEConfig, compute_tsne

    run = Path(tempfile.mkdtemp(dir=workdir))
    x = write_latents(run, 1_000)
    knn_graph(x, 16)
    compute_structure(run, progress=False)
    compute_tsne(run, TSNEConfig(n=1_000, n_iter=260, null=False), progress=False)
    shutil.rmtree(run)


def fitted_exponent(ns, ts) -> float:
    """Slope of log(time) against log(N), least squares: time ~ N^slope."""
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def scaling_figure(points: list[dict], path: Path) -> None:
    from engine.figures import save_figure, subplots

    fig, ax = subplots(figsize=(11, 5.5), dpi=110, layout="constrained")
    for stage, label in STAGE_LABELS.items():
        pts = sorted((p["n"], p["seconds"]) for p in points if p["stage"] == stage)
        if not pts:
            continue
        ns, ts = zip(*pts)
        slope = f": ~N^{fitted_exponent(ns, ts):.2f}" if len(ns) > 1 else ""
        ax.plot(ns, ts, "o-", label=label + slope)
    base = [p for p in points if p["stage"] == "openTSNE_defaults"]
    for p in base:
        ax.plot([p["n"]], [p["seconds"]], "k*", ms=12, label=f"openTSNE TSNE(n_jobs).fit defaults, n={p['n']:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("points N")
    ax.set_ylabel("seconds (wall)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Cost against N (latent-like clouds, 256-D)", fontsize=11)
    save_figure(fig, path)


def scaling_markdown(points: list[dict], info: dict) -> str:
    lines = [f"# Cost against N\n\nMachine: {info['cpu']}, {info['cores']} cores; wall seconds, one run each, peak MB "
             "as in RESULTS.md. Fitted exponent: slope of log(time) on log(N).\n",
             "| stage | N | seconds | peak MB | notes |", "|---|---:|---:|---:|---|"]
    for p in points:
        notes = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items()
                          if k not in ("stage", "n", "seconds", "peak_mb"))
        lines.append(f"| {p['stage']} | {p['n']:,} | {p['seconds']:.1f} | {p['peak_mb']:,.0f} | {notes} |")
    lines.append("\n| stage | fitted exponent |\n|---|---:|")
    for stage in STAGE_LABELS:
        pts = sorted((p["n"], p["seconds"]) for p in points if p["stage"] == stage)
        if len(pts) > 1:
            lines.append(f"| {stage} | {fitted_exponent(*zip(*pts)):.2f} |")
    return "\n".join(lines) + "\n"


def run_scaling(small: bool, out_dir: Path, cores: int, workdir: Path) -> dict:
    sizes = scaling_sizes(small)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    warm = Path(tempfile.mkdtemp(dir=workdir))
    write_latents(warm, 20_000)  # the stats warm-up: one full block compiles the threaded kernels
    _warm_up(workdir)
    t0 = time.perf_counter()
    points: list[dict] = []
    for n in sizes.ns:
        largest = n == max(sizes.ns)
        new, run, x = _at_size(n, workdir, warm, keep=largest)
        points += new
        if largest:
            points += _study_maps(run, x, sizes.tsne_subsets, cores, figures)
            shutil.rmtree(run)
    for n in sizes.stats_only:
        run = Path(tempfile.mkdtemp(dir=workdir))
        write_latents(run, n)
        t, peak = stats_subprocess(run, warm)
        points.append(_point("stats", n, t, peak))
        shutil.rmtree(run)
    info = machine()
    result = {"machine": info, "small": small, "threads": cores, "seconds": time.perf_counter() - t0,
              "points": points, "skipped": sizes.skipped}
    (out_dir / "scaling.json").write_text(json.dumps(result, indent=2))
    md = scaling_markdown(points, info) + "".join(f"\nNot measured: {s}\n" for s in sizes.skipped)
    (out_dir / "SCALING.md").write_text(md)
    scaling_figure(points, figures / "scaling.png")
    print(md)
    return result


__all__ = ["fitted_exponent", "run_scaling", "scaling_figure", "scaling_markdown"]
