"""The stages on latents: the in-memory ``kernels``, end-to-end ``stats`` streaming from Zarr, ``knn``,
``local_pca`` and ``tsne`` (``structure`` and the study-scale maps are in bench.scaling), on a generated latent-like cloud (``latent_cloud``) so that they
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
    """Histograms, radii and moments of a CelebA-sized cloud in memory, each against every fast-path baseline
    of kernels.reference.BASELINES, and against one read of the array from memory (the floor for any kernel)."""
    from kernels.reference import BASELINES, COMPARISONS

    n = ctx["sizes"].kernels_rows
    x = latent_cloud(n)
    w = 0.25
    lo = float(np.floor(x.min() / w) * w)
    nbins = int(np.ceil((x.max() - lo) / w))
    size = f"{n:,} x 256 f32"
    # one read of the array from memory: the faster of two SIMD reductions that do almost nothing else
    read_s, read_peak = min(measure(lambda: x.max(), 5), measure(lambda: x.sum(), 5))
    rows = [Row("read_array", size, read_s, float("nan"), "one read of the array (faster of x.max(), x.sum())", "-",
                f"{x.nbytes / read_s / 1e9:.1f} GB/s", peak_mb=read_peak,
                notes="the memory-read floor of the kernels below; no baseline")]
    for name, args in (("component_histograms", (x, lo, w, nbins)), ("row_norms", (x,)), ("block_moments", (x,))):
        ours = COMPARISONS[name][0]
        ours(*args)  # warm-up: numba compiles here
        t_o, peak = measure(lambda: ours(*args), 3)
        for label, base in BASELINES[name]:
            base(*args)
            t_b = best_of(lambda: base(*args), 2)
            rows.append(Row(name, size, t_o, t_b, f"numba {name}", label, f"{x.nbytes / t_o / 1e9:.2f} GB/s",
                            peak_mb=peak, notes=f"ours {t_o / read_s:.1f}x the read floor"
                            + (f"; {nbins} bins" if name == "component_histograms" else "")
                            + ("; float64 co-moments: bound by D^2 multiply-adds per row, not by the read"
                               if name == "block_moments" else "")))
    return rows


def write_latents(run: Path, n: int) -> np.ndarray:
    """A complete ``RUN/latents.zarr`` holding ``latent_cloud`` rows in the store's chunking; returns z."""
    import zarr

    from engine.layout import chunk_rows

    g = zarr.open_group(run / "latents.zarr", mode="w")
    z = g.create_array("z", shape=(n, 256), chunks=(chunk_rows(256), 256), dtype="float32")
    for s in range(0, n, 131072):
        z[s : min(s + 131072, n)] = latent_cloud(min(131072, n - s), seed=s)
    g.attrs["complete"] = True
    g.attrs["key"] = f"bench-{n}"
    return z[...]


def stats_subprocess(run: Path, warm: Path) -> tuple[float, float]:
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
    write_latents(warm, 20_000)
    for n, what in ctx["sizes"].stats:
        run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
        write_latents(run, n)
        t, peak = stats_subprocess(run, warm)
        rows.append(Row(f"stats_{what}", f"{n:,} x 256 from Zarr", t, float("nan"),
                        "zspace stats in a fresh process (3 streamed passes, PCA written, figures)", "-",
                        f"{n / t:,.0f} rows/s", peak_mb=peak,
                        notes=f"peak RSS of the process {peak:,.0f} MB with the array alone {n * 256 * 4 / 1e6:,.0f} MB; "
                              "timed after a warm-up on 20,000 rows"))
        shutil.rmtree(run)
    shutil.rmtree(warm)
    return rows


def stage_knn(ctx) -> list[Row]:
    """Exact kNN graph of a cloud: the self-join kernel against ``faiss.knn`` in one call and sklearn brute force,
    each with its achieved GFLOP/s against the machine's sgemm rate on the tile shape it uses."""
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from bench.measure import sgemm_gflops
    from engine.analysis.knn import knn_graph
    from kernels.selfjoin import COL_TILE, ROW_TILE

    n, k, d = ctx["sizes"].knn_rows, 16, 256
    x = latent_cloud(n)
    knn_graph(x[:3000], k)  # warm-up: numba compiles
    faiss.knn(x[:500], x[:500], k + 1)
    t_o, peak = measure(lambda: knn_graph(x, k), 1)
    ours_rate = n * (n - 1) / 2 * 2 * d / t_o / 1e9  # each pair once
    ceiling = sgemm_gflops(ROW_TILE, COL_TILE, d)
    faiss_ceiling = sgemm_gflops(faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs, d)
    size = f"{n:,} x {d}, k={k}"
    rows = []
    t_f = best_of(lambda: faiss.knn(x, x, k + 1), 1)
    f_rate = n * n * 2 * d / t_f / 1e9
    rows.append(Row("knn_exact", size, t_o, t_f, "self-join kernel (each pair once)", "faiss.knn(x, x, k + 1), one call",
                    f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                    notes=f"ours {ours_rate:.0f} GFLOP/s of useful work vs sgemm {ceiling:.0f} GFLOP/s on its "
                          f"{ROW_TILE}x{d} @ {d}x{COL_TILE} tiles; faiss {f_rate:.0f} GFLOP/s vs sgemm "
                          f"{faiss_ceiling:.0f} GFLOP/s on its tiles"))
    t_s = best_of(lambda: NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x), 1)
    rows.append(Row("knn_exact", size, t_o, t_s, "self-join kernel (each pair once)",
                    'sklearn NearestNeighbors(algorithm="brute").kneighbors', f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                    notes=f"sklearn {n * n * 2 * d / t_s / 1e9:.0f} GFLOP/s"))
    return rows


def stage_local_pca(ctx) -> list[Row]:
    """Local PCA of every k=17 neighbourhood (a point and its 16 neighbours, as structure has it): numba kernel
    against batched eigvalsh of the 17 x 17 Gram matrices, both on all neighbourhoods."""
    from kernels.reference import BASELINES, COMPARISONS

    ours = COMPARISONS["local_pca"][0]
    n, k = ctx["sizes"].local_pca_rows, 17
    x = latent_cloud(n)
    nb = np.random.default_rng(0).integers(0, n, size=(n, k)).astype(np.int64)
    ours(x, nb[:1000])  # compile the threaded variant the full size runs (1000 x 17 x 256 > 2^20 elements)
    t_o, peak = measure(lambda: ours(x, nb), 1)
    rows = []
    for label, base in BASELINES["local_pca"]:
        base(x, nb[:100])
        t_b = best_of(lambda: base(x, nb), 1)
        rows.append(Row("local_pca", f"{n:,} neighbourhoods, k={k}, D=256", t_o, t_b, "numba local_pca (k x k Gram)",
                        label, f"{n / t_o:,.0f} pts/s", peak_mb=peak))
    return rows


def stage_tsne(ctx) -> list[Row]:
    """A t-SNE map at the study's size: `zspace tsne` (exact neighbours by the self-join kernel, openTSNE's
    optimisation) against openTSNE's ``TSNE(n_jobs).fit`` with its defaults and sklearn ``TSNE``, same points."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    from engine.analysis.knn import knn_graph
    from engine.analysis.tsne import TSNEConfig, compute_tsne

    n = ctx["sizes"].tsne_rows
    run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    x = write_latents(run, n)
    warm = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    write_latents(warm, 400)
    compute_tsne(warm, TSNEConfig(n=400, n_iter=260, null=False), progress=False)  # warm-up: numba, FFTW plans
    res = {}
    t_all, peak = measure(lambda: res.update(compute_tsne(run, TSNEConfig(n=n, null=True), progress=False)), 1)
    t_o = res["seconds"]["data"]["total"]  # the data map alone: kNN, affinities, optimisation
    fig = ctx.get("figures")
    if fig is not None:
        shutil.copy(run / "tsne" / "tsne.png", fig / f"tsne_{n}.png")
    graph = knn_graph(x, min(90, n - 1))
    q = map_quality(run, x, graph=graph)
    rows = []
    base_res = {}
    t_b, peak_b = measure(lambda: base_res.update(emb=OpenTSNE(n_jobs=ctx["cores"], random_state=0).fit(x)), 1)
    qb = map_quality(run, x, np.asarray(base_res["emb"]), graph)
    rows.append(Row("tsne", f"{n:,} x 256, 750 iterations", t_o, t_b, "zspace tsne, data map (exact kNN)",
                    "openTSNE TSNE(n_jobs).fit, defaults", f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                    notes=f"KL ours {q['kl']:.4f} vs {qb['kl']:.4f}, 15-NN kept ours {q['kept']:.3f} vs "
                          f"{qb['kept']:.3f} (both against the exact affinities); the command with its null map "
                          f"took {t_all:.0f} s; baseline peak {peak_b:,.0f} MB",
                    extra={"ours": q, "openTSNE": qb}))
    sk = {}
    t_s = best_of(lambda: sk.update(emb=SkTSNE(n_jobs=ctx["cores"], random_state=0).fit_transform(x)), 1)
    qs = map_quality(run, x, sk["emb"], graph)
    rows.append(Row("tsne", f"{n:,} x 256", t_o, t_s, "zspace tsne, data map (exact kNN)",
                    "sklearn TSNE(n_jobs).fit_transform, defaults", f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                    notes=f"sklearn KL {qs['kl']:.4f}, 15-NN kept {qs['kept']:.3f}", extra={"sklearn": qs}))
    return rows


def map_quality(run: Path, x: np.ndarray, embedding: np.ndarray | None = None, graph=None) -> dict:
    """KL divergence of a map (default: the run's data map) against the affinities of the exact kNN graph
    (``graph`` = (dist, idx) with >= 90 neighbours, else computed) at perplexity 30, and the share of each
    point's 15 nearest neighbours in z kept in the map: the same yardstick for every method's map."""
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors
    from openTSNE.tsne import kl_divergence_fft

    from engine.analysis.knn import knn_graph
    from engine.analysis.tsne import neighbours_kept

    if embedding is None:
        with np.load(run / "tsne" / "embedding.npz") as f:
            embedding = f["embedding"]
    dist, idx = graph if graph is not None else knn_graph(x, min(90, len(x) - 1))
    dist, idx = np.ascontiguousarray(dist[:, :90]), np.ascontiguousarray(idx[:, :90])
    p = PerplexityBasedNN(knn_index=PrecomputedNeighbors(idx, dist), perplexity=30, n_jobs=2).P
    y = np.ascontiguousarray(embedding, np.float64)
    kl, _ = kl_divergence_fft(y, p, dof=1, fft_params={"n_interpolation_points": 3, "min_num_intervals": 50,
                                                        "ints_in_interval": 1}, should_eval_error=True, n_jobs=2)
    return {"kl": float(kl), "kept": neighbours_kept(idx, y)}
