"""The stages on latents: the in-memory ``kernels``, end-to-end ``stats`` and ``structure`` streaming from
Zarr, ``knn``, ``local_pca`` and ``tsne``, on a generated latent-like cloud (``latent_cloud``) so that they
need no trained model. Each returns its rows; sizes come from ``ctx["sizes"]`` (bench.profile).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.measure import best_of, measure
from bench.results import Row

REPO = Path(__file__).resolve().parent.parent


def latent_cloud(n: int, d: int = 256, seed: int = 0) -> np.ndarray:
    """A latent-like float32 cloud: correlated Gaussian bulk plus a few off-centre wide components."""
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.15 * rng.normal(size=(d, d)) / np.sqrt(d)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        e = min(s + 65536, n)
        x[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) @ mix.astype(np.float32)
    x[:, :4] = x[:, :4] * 4 + 3
    return x


def stage_kernels(ctx) -> list[Row]:
    """Histograms, radii and covariance of a CelebA-sized cloud (all of CelebA in the full profile) in memory."""
    from kernels.reference import COMPARISONS

    n = ctx["sizes"].kernels_rows
    x = latent_cloud(n)
    w = 0.25
    lo = float(np.floor(x.min() / w) * w)
    nbins = int(np.ceil((x.max() - lo) / w))
    rows = []
    # one pass over memory: the floor for any kernel
    read_sum, read_peak = measure(lambda: x.sum(dtype=np.float64), 5)
    rows.append(Row("read_array", f"{n:,} x 256 f32", read_sum, read_sum, "x.sum()", "x.sum()",
                    f"{x.nbytes / read_sum / 1e9:.1f} GB/s", peak_mb=read_peak, notes="memory read floor for the kernels below"))
    for name, args in (("component_histograms", (x, lo, w, nbins)), ("row_norms", (x,)), ("block_moments", (x,))):
        ours, ref = COMPARISONS[name]
        ours(*args)  # warm-up: numba compiles here
        ref(*args)
        t_o, peak = measure(lambda: ours(*args), 3)
        t_r = best_of(lambda: ref(*args), 1 if name == "component_histograms" else 2)
        label = {"component_histograms": f"per-column np.histogram loop ({nbins} bins)",
                 "row_norms": "np.linalg.norm(x, axis=1)", "block_moments": "np.cov(x, rowvar=False)"}[name]
        note = f"{t_o / read_sum:.1f}x the read floor" if name == "component_histograms" else ""
        rows.append(Row(name, f"{n:,} x 256 f32", t_o, t_r, f"numba {name}", label,
                        f"{x.nbytes / t_o / 1e9:.2f} GB/s", peak_mb=peak, notes=note))
    return rows


def _write_latents(run: Path, n: int) -> None:
    """A complete ``RUN/latents.zarr`` holding ``latent_cloud`` rows in the store's chunking."""
    import zarr

    from engine.layout import chunk_rows

    g = zarr.open_group(run / "latents.zarr", mode="w")
    z = g.create_array("z", shape=(n, 256), chunks=(chunk_rows(256), 256), dtype="float32")
    for s in range(0, n, 131072):
        z[s : min(s + 131072, n)] = latent_cloud(min(131072, n - s), seed=s)
    g.attrs["complete"] = True


def _stats_subprocess(run: Path, warm: Path) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of `zspace stats` in a fresh process, after a warm-up on ``warm``."""
    import subprocess
    import sys

    # VmHWM, not ru_maxrss: the latter keeps the forked parent's peak across exec
    code = (
        "import re, time; from engine.analysis.stats import compute_stats;"
        f"compute_stats({str(warm)!r}, progress=False);"
        f"t = time.perf_counter(); compute_stats({str(run)!r}, progress=False); t = time.perf_counter() - t;"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1));"
        "print(t, hwm * 1024 / 1e6)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=str(REPO)).stdout.split()
    return float(out[0]), float(out[1])


def stage_stats(ctx) -> list[Row]:
    """End-to-end `zspace stats` streaming from Zarr: time on a CelebA-sized run and, in the full profile,
    peak memory on a run five times larger."""
    rows = []
    warm = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    # the warm-up run in the same fresh process: 20,000 rows hold one full 16 MB block, so it compiles the
    # threaded kernels the timed run uses (smaller inputs take the cached serial ones) and loads matplotlib
    _write_latents(warm, 20_000)
    for n, what in ctx["sizes"].stats:
        run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
        _write_latents(run, n)
        t, peak = _stats_subprocess(run, warm)
        rows.append(Row(f"stats_{what}", f"{n:,} x 256 from Zarr", t, float("nan"),
                        "zspace stats in a fresh process (3 streamed passes, PCA written, figures)", "-",
                        f"{n / t:,.0f} rows/s", peak_mb=peak,
                        notes=f"peak RSS of the process {peak:,.0f} MB with the array alone {n * 256 * 4 / 1e6:,.0f} MB; "
                              "timed after a warm-up on 20,000 rows"))
        shutil.rmtree(run)
    shutil.rmtree(warm)
    return rows


def stage_knn(ctx) -> list[Row]:
    """Exact kNN graph: FAISS flat search in query blocks vs sklearn NearestNeighbors(algorithm="brute")."""
    from sklearn.neighbors import NearestNeighbors

    from engine.analysis.knn import build_index, knn

    n, k = ctx["sizes"].knn_rows, 16
    x = latent_cloud(n)
    ids = np.arange(n)

    def ours(x=x, ids=ids):
        return knn(build_index(x), x, k, query_ids=ids)

    def base(x=x):
        return NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)

    ours(x[:500], ids[:500])  # warm-up
    base(x[:500])
    t_o, peak = measure(ours, 1)
    t_b = best_of(base, 1)
    return [Row("knn_exact", f"{n:,} x 256, k={k}", t_o, t_b, "FAISS IndexFlatL2, query blocks",
                "sklearn NearestNeighbors(brute)", f"{n / t_o:,.0f} queries/s", peak_mb=peak)]


def stage_local_pca(ctx) -> list[Row]:
    """Local PCA of every k=16 neighbourhood: numba Gram-matrix kernel vs batched numpy eigvalsh of D x D covariances."""
    from kernels.reference import COMPARISONS

    ours, ref = COMPARISONS["local_pca"]
    n, k = ctx["sizes"].local_pca_rows, 16
    x = latent_cloud(n)
    nb = np.random.default_rng(0).integers(0, n, size=(n, k)).astype(np.int64)
    ours(x, nb[:100])  # compile
    ref(x, nb[:8])
    t_o, peak = measure(lambda: ours(x, nb), 1)
    m = ctx["sizes"].local_pca_baseline_rows  # the baseline on a subset, extrapolated linearly (it is per-neighbourhood work)
    t_sub = best_of(lambda: ref(x, nb[:m]), 1)
    return [Row("local_pca", f"{n:,} neighbourhoods, k={k}, D=256", t_o, t_sub * n / m, "numba local_pca (k x k Gram)",
                "numpy eigvalsh of (D, D) covariances", f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                notes=f"baseline timed on {m} neighbourhoods and scaled to {n:,}")]


def stage_tsne(ctx) -> list[Row]:
    """t-SNE of a 256-D cloud: openTSNE vs sklearn.manifold.TSNE, same perplexity and iterations."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    n, iters = ctx["sizes"].tsne_rows, ctx["sizes"].tsne_iters
    x = latent_cloud(n)

    def ours(x=x, iters=iters):
        return OpenTSNE(perplexity=30, n_iter=iters - 250, early_exaggeration_iter=250, random_state=0,
                        n_jobs=ctx["cores"]).fit(x)

    def base(x=x, iters=iters):
        return SkTSNE(perplexity=30, max_iter=iters, random_state=0, n_jobs=ctx["cores"], init="pca").fit_transform(x)

    ours(x[:300], 260)  # warm-up
    base(x[:300], 260)
    t_o, peak = measure(ours, 1)
    t_b = best_of(base, 1)
    return [Row("tsne", f"{n:,} x 256, {iters} iterations", t_o, t_b, "openTSNE (FFT-accelerated)",
                "sklearn TSNE (Barnes-Hut)", f"{n / t_o:,.0f} pts/s", peak_mb=peak)]


def stage_structure(ctx) -> list[Row]:
    """End-to-end `zspace structure` (exact kNN of data and null, local PCA, IDs, voids, planes)."""
    from engine.analysis.structure import compute_structure

    n = ctx["sizes"].structure_rows
    warm = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    _write_latents(warm, 1_000)
    compute_structure(warm, progress=False)  # warm-up: numba compiles, FAISS loads
    shutil.rmtree(warm)
    run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    _write_latents(run, n)
    res = {}

    def go():
        res.update(compute_structure(run, progress=False))

    t, peak = measure(go, 1)
    shutil.rmtree(run)
    return [Row("structure", f"{n:,} x 256, k=16, exact", t, float("nan"), "zspace structure (data + null)", "-",
                f"{n / t:,.0f} pts/s", peak_mb=peak,
                notes=f"kNN data {res['seconds']['knn_data']:.1f} s, null {res['seconds']['knn_null']:.1f} s")]


