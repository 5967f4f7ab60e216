"""``--dask local:2`` against in-process: ``zspace stats`` on a large cloud and the exact kNN graph, same data,
same machine, after a warm-up on both sides, the median of 3 runs a side taking turns; with each worker's peak
resident memory over each workload's runs."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.results import Row
from bench.stages_analysis import write_latents

RUNS = 3  # rounds of in-process and --dask runs of each workload at full size (the ratio of their medians)


def _worker_peaks_mb(cluster) -> list[float]:
    """Each worker process's peak resident memory since the last ``_reset_peaks`` (VmHWM), MB."""
    def hwm() -> float:
        import re

        return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024 / 1e6

    return sorted(cluster.client.run(hwm).values())


def _reset_peaks(cluster) -> None:
    """Each worker's VmHWM back to its resident memory now (Linux: 5 into /proc/self/clear_refs)."""
    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    cluster.client.run(reset)


def _interleaved(runs: int, **sides) -> dict[str, list[float]]:
    """Each side's wall times over ``runs`` rounds, the sides taking turns within a round: a shared machine's
    slow minutes fall on both sides, not on whichever ran then."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def stage_dask(ctx) -> list[Row]:
    from statistics import median

    from engine.analysis.blockwise import knn_graph_on
    from engine.analysis.cluster import open_cluster
    from engine.analysis.knn import knn_graph
    from engine.analysis.stats import compute_stats

    sizes = ctx["sizes"]
    n_stats, n_knn, k = (1_000_000, 200_000, 16) if sizes.knn_rows >= 50_000 else (20_000, 5_000, 16)
    runs = RUNS if sizes.knn_rows >= 50_000 else 1
    work = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    warm, big, graph = work / "warm", work / "big", work / "graph"
    write_latents(warm, 20_000)
    write_latents(big, n_stats)
    x = write_latents(graph, n_knn)
    rows = []
    compute_stats(warm, progress=False)  # in-process warm-up: numba compiles
    knn_graph(x[:3000], k)
    with open_cluster("local:2", progress=False) as cluster:
        compute_stats(warm, progress=False, cluster=cluster)  # the workers compile too
        knn_graph_on(cluster, warm / "latents.zarr" / "z", 20_000, k)
        _reset_peaks(cluster)
        times = _interleaved(runs, inproc=lambda: compute_stats(big, progress=False),
                             dask=lambda: compute_stats(big, progress=False, cluster=cluster))
        peaks_stats = _worker_peaks_mb(cluster)
        _reset_peaks(cluster)
        knn_times = _interleaved(runs, inproc=lambda: knn_graph(x, k),
                                 dask=lambda: knn_graph_on(cluster, graph / "latents.zarr" / "z", n_knn, k))
        peaks_knn = _worker_peaks_mb(cluster)
    shutil.rmtree(work)
    t_in, t_dask = median(times["inproc"]), median(times["dask"])
    t_knn_in, t_knn_dask = median(knn_times["inproc"]), median(knn_times["dask"])
    each, knn_each = (f"in process {', '.join(f'{t:.1f}' for t in ts['inproc'])} s; dask "
                      f"{', '.join(f'{t:.1f}' for t in ts['dask'])} s" for ts in (times, knn_times))
    rows.append(Row("stats_dask", f"{n_stats:,} x 256 from Zarr", t_dask, t_in, "zspace stats --dask local:2",
                    "zspace stats in process", f"{n_stats / t_dask:,.0f} rows/s", peak_mb=max(peaks_stats),
                    notes=f"overhead {t_dask / t_in:.2f}x (target <= 1.3x), medians of {runs} runs each taking "
                          f"turns ({each}); peak RSS per worker {', '.join(f'{p:,.0f}' for p in peaks_stats)} MB "
                          f"(the array {n_stats * 256 * 4 / 1e6:,.0f} MB, held by the workers for the 3 passes)",
                    extra={"overhead": t_dask / t_in, "worker_peak_mb": peaks_stats, "runs_s": times}))
    rows.append(Row("knn_dask", f"{n_knn:,} x 256, k={k}", t_knn_dask, t_knn_in,
                    "exact graph in tiles on --dask local:2", "self-join kernel in process",
                    f"{n_knn / t_knn_dask:,.0f} pts/s", peak_mb=max(peaks_knn),
                    notes=f"overhead {t_knn_dask / t_knn_in:.2f}x (target <= 1.3x), medians of {runs} runs each "
                          f"taking turns ({knn_each}); peak RSS per worker {', '.join(f'{p:,.0f}' for p in peaks_knn)} "
                          f"MB: a tile task holds two blocks of at most 65,536 rows, their lists and one tile at any N; "
                          f"the lists waiting for their merge add the rest",
                    extra={"overhead": t_knn_dask / t_knn_in, "worker_peak_mb": peaks_knn, "runs_s": knn_times}))
    return rows


def _tree_memory(proc, every: float = 1.0) -> tuple[dict[int, tuple[str, float]], list[tuple[float, dict]]]:
    """Until ``proc`` exits: each process of its tree -> (its command line, its peak resident memory in MB), and
    the resident memory (MB) of each process every ``every`` seconds. The peak is the kernel's own high-water mark
    (VmHWM), so no short peak is missed, only the last second of a process's life."""
    import psutil

    peaks: dict[int, tuple[str, float]] = {}
    series: list[tuple[float, dict]] = []
    root, t0 = psutil.Process(proc.pid), time.perf_counter()
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        now = {}
        for p in tree:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
                hwm, rss = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1e3 for key in ("VmHWM", "VmRSS"))
                peaks[p.pid] = (" ".join(p.cmdline()), max(hwm, peaks.get(p.pid, ("", 0.0))[1]))
                now[p.pid] = rss
            except (OSError, AttributeError, psutil.Error):
                pass
        series.append((time.perf_counter() - t0, now))
        time.sleep(every)
    return peaks, series


def _phases(stream, t0: float, out: list) -> None:
    """Echo the command's stderr; note when each of its dask steps ("dask: kNN data: ...") began."""
    for line in stream:
        sys.stderr.write(line)
        if line.startswith("dask: ") and not line.startswith(("dask: scheduler", "dask:  ")):  # not progress lines
            out.append((time.perf_counter() - t0, line[6:].split(":")[0].strip()))


def memory_figure(series, phases, roles: dict[int, str], path: Path, title: str) -> None:
    """Resident memory of each process against time, the steps marked."""
    from engine.figures import save_figure, subplots

    fig, ax = subplots(figsize=(11, 4.5), dpi=110, layout="constrained")
    for pid, role in sorted(roles.items(), key=lambda r: r[1]):
        pts = [(t / 60, mb / 1e3) for t, now in series if pid in now for mb in [now[pid]]]
        if pts:
            ax.plot(*zip(*pts), label=role, lw=1.2)
    top = ax.get_ylim()[1]
    for t, name in phases:
        ax.axvline(t / 60, color="0.7", lw=0.6)
        ax.text(t / 60, top, f" {name}", rotation=90, va="top", fontsize=7, color="0.35")
    ax.set_xlabel("minutes")
    ax.set_ylabel("resident memory (GB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=11)
    save_figure(fig, path)


def stage_dask_structure(ctx) -> list[Row]:
    """``zspace structure --dask local:2`` (data and null graphs, exact, 90 neighbours kept) on 1,000,000 x 256
    in a fresh process: the wall time, each process's peak memory (the client; each worker) and a figure of
    their memory against time."""
    import subprocess
    import threading

    n = 1_000_000 if ctx["sizes"].knn_rows >= 50_000 else 20_000
    work = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    run = work / "run"
    write_latents(run, n)
    cmd = [sys.executable, "-m", "cli", "structure", "--run", str(run), "--dask", "local:2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    phases: list = []
    echo = threading.Thread(target=_phases, args=(proc.stderr, t0, phases), daemon=True)
    echo.start()
    peaks, series = _tree_memory(proc)
    seconds = time.perf_counter() - t0
    echo.join(timeout=10)
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    shutil.rmtree(work)
    workers = {pid: line for pid, (line, _) in peaks.items() if "spawn_main" in line}  # not the resource tracker
    if not workers:
        raise RuntimeError(f"no worker process seen under {' '.join(cmd)}: {sorted(peaks.values())}")
    roles = {proc.pid: "client (zspace structure)", **{pid: f"worker {i + 1}" for i, pid in enumerate(sorted(workers))}}
    memory_figure(series, phases, roles, ctx["figures"] / "structure_dask_memory.png",
                  f"zspace structure --dask local:2 on {n:,} x 256: resident memory of each process")
    client, worker_peaks = peaks[proc.pid][1], [peaks[pid][1] for pid in sorted(workers)]
    return [Row("structure_dask", f"{n:,} x 256, data + null", seconds, float("nan"), "zspace structure --dask local:2",
                "-", f"{n / seconds:,.0f} pts/s", peak_mb=max(worker_peaks),
                notes=f"peak RSS per worker {', '.join(f'{p:,.0f}' for p in worker_peaks)} MB, client {client:,.0f} MB "
                      f"(the cloud alone {n * 256 * 4 / 1e6:,.0f} MB; the client holds the graph, N x 90 x 12 bytes); "
                      f"figures/structure_dask_memory.png",
                extra={"worker_peak_mb": worker_peaks, "client_peak_mb": client,
                       "steps": [[round(t, 1), name] for t, name in phases]})]
