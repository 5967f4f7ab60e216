"""``--dask local:2`` against in-process: ``zspace stats`` on a large cloud and the exact kNN graph, same data,
same machine, one run each after a warm-up on both sides; with each worker's peak resident memory."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.results import Row
from bench.stages_analysis import write_latents


def _worker_peaks_mb(cluster) -> list[float]:
    """Each worker process's peak resident memory so far (VmHWM), MB."""
    def hwm() -> float:
        import re

        return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024 / 1e6

    return sorted(cluster.client.run(hwm).values())


def stage_dask(ctx) -> list[Row]:
    from engine.analysis.blockwise import knn_graph_on
    from engine.analysis.cluster import open_cluster
    from engine.analysis.knn import knn_graph
    from engine.analysis.stats import compute_stats

    sizes = ctx["sizes"]
    n_stats, n_knn, k = (1_000_000, 200_000, 16) if sizes.knn_rows >= 50_000 else (20_000, 5_000, 16)
    work = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    warm, big, graph = work / "warm", work / "big", work / "graph"
    write_latents(warm, 20_000)
    write_latents(big, n_stats)
    x = write_latents(graph, n_knn)
    rows = []
    compute_stats(warm, progress=False)  # in-process warm-up: numba compiles
    t0 = time.perf_counter()
    compute_stats(big, progress=False)
    t_in = time.perf_counter() - t0
    knn_graph(x[:3000], k)
    t0 = time.perf_counter()
    knn_graph(x, k)
    t_knn_in = time.perf_counter() - t0
    with open_cluster("local:2", progress=False) as cluster:
        compute_stats(warm, progress=False, cluster=cluster)  # the workers compile too
        knn_graph_on(cluster, warm / "latents.zarr" / "z", 20_000, k)
        t0 = time.perf_counter()
        compute_stats(big, progress=False, cluster=cluster)
        t_dask = time.perf_counter() - t0
        peaks_stats = _worker_peaks_mb(cluster)
        t0 = time.perf_counter()
        knn_graph_on(cluster, graph / "latents.zarr" / "z", n_knn, k)
        t_knn_dask = time.perf_counter() - t0
        peaks_knn = _worker_peaks_mb(cluster)
    shutil.rmtree(work)
    rows.append(Row("stats_dask", f"{n_stats:,} x 256 from Zarr", t_dask, t_in, "zspace stats --dask local:2",
                    "zspace stats in process", f"{n_stats / t_dask:,.0f} rows/s", peak_mb=max(peaks_stats),
                    notes=f"overhead {t_dask / t_in:.2f}x (target <= 1.3x); peak RSS per worker "
                          f"{', '.join(f'{p:,.0f}' for p in peaks_stats)} MB (the array alone "
                          f"{n_stats * 256 * 4 / 1e6:,.0f} MB); the same 3 passes as block tasks",
                    extra={"overhead": t_dask / t_in, "worker_peak_mb": peaks_stats}))
    rows.append(Row("knn_dask", f"{n_knn:,} x 256, k={k}", t_knn_dask, t_knn_in,
                    "exact graph in tiles on --dask local:2", "self-join kernel in process",
                    f"{n_knn / t_knn_dask:,.0f} pts/s", peak_mb=max(peaks_knn),
                    notes=f"overhead {t_knn_dask / t_knn_in:.2f}x (target <= 1.3x); peak RSS per worker "
                          f"{', '.join(f'{p:,.0f}' for p in peaks_knn)} MB: a tile task holds two 65,536-row blocks, their "
                          f"lists and one 64 MB tile at any N; the lists waiting for their merge add the rest",
                    extra={"overhead": t_knn_dask / t_knn_in, "worker_peak_mb": peaks_knn}))
    return rows
