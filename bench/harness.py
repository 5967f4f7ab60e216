"""One benchmark harness: every stage against the baseline a user would otherwise write.

Each stage is a function in ``STAGES`` (bench.stages) that times ours and the baseline in this
process, after a warm-up, and returns rows (bench.results.Row): stage, size, ours_s, baseline_s,
ratio (baseline / ours, > 1 means we are faster), throughput and peak memory.
Thread counts (torch, numba, BLAS/OpenMP, FAISS) are pinned once at start and
recorded with the machine (bench.measure).

Peak memory (``peak_mb``) is the largest growth of resident memory, this process
plus its worker processes, above its level when ours started, while ours ran
(``bench.measure.PeakRSS``); for the end-to-end ``stats`` rows it is the peak RSS
of the fresh process.

    python -m bench [--small] [--only prepare,train_feed] [--data PATH] [--threads N] [--out DIR]
    python -m bench --scaling [--small]      # cost against N (bench.scaling)

The sizes of both profiles are in bench.profile.SIZES. The full run writes ``bench/results.json`` and
``bench/RESULTS.md`` (keeping the hand-written notes below its ``bench.results.NOTES_MARKER`` line);
``--small`` writes to ``bench/small/`` unless ``--out`` says otherwise. ``--small`` is the CI profile: about
2 to 3 minutes on 2 cores (measured 2.2-2.7 min wall, about 2 min of CPU, on a 2-core machine shared with
other work).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from bench.measure import available_cores, cpu_seconds, machine, pin_threads
from bench.profile import profile
from bench.results import Row, format_table, machine_label, merge_previous, row_to_json, write_results
from bench.stages import NEED_IMAGES, STAGES
from bench.stages_data import image_folder

__all__ = ["STAGES", "default_out_dir", "main", "run_bench"]

HERE = Path(__file__).resolve().parent
SMALL_OUT = HERE / "small"  # --small results: never overwrite the committed full run


def default_out_dir(small: bool) -> Path:
    return SMALL_OUT if small else HERE


def _run_stages(names: list[str], ctx: dict, here: str) -> list[Row]:
    """The rows of each stage in ``names``, each marked with its stage and ``here`` (the machine)."""
    rows: list[Row] = []
    for name in names:
        t0, c0 = time.perf_counter(), cpu_seconds()
        new = STAGES[name](ctx)
        for r in new:
            r.group, r.machine = name, here
        rows += new
        print(f"[bench] {name}: {time.perf_counter() - t0:.1f} s (CPU {cpu_seconds() - c0:.1f} s)", flush=True)
        print(format_table(new), flush=True)
    return rows


def run_bench(small: bool = False, only: list[str] | None = None, data: str | None = None, out_dir: Path | None = None,
              threads: int | None = None) -> dict:
    """Run the stages ``only`` (default: all), write ``out_dir``/results.json and RESULTS.md; returns the results.

    ``out_dir`` defaults to bench/ for the full run and bench/small/ for ``small``.
    """
    names = list(only) if only else list(STAGES)
    unknown = set(names) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown bench stages {sorted(unknown)}; known: {list(STAGES)}")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(small)
    cores = threads or available_cores()
    sizes = profile(small)
    info = machine()
    pins, restore = pin_threads(cores)
    info["torch_threads"] = pins["torch"]
    workdir = Path(tempfile.mkdtemp(prefix="zspace-bench-"))
    t_all = time.perf_counter()
    try:
        ctx = {"sizes": sizes, "workdir": workdir, "cores": cores, "figures": out_dir / "figures"}
        ctx["figures"].mkdir(parents=True, exist_ok=True)
        if NEED_IMAGES & set(names):
            ctx["images"] = image_folder(sizes.images, Path(data) if data else None, workdir)
        rows = _run_stages(names, ctx, machine_label(info))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        restore()
    seconds = time.perf_counter() - t_all
    if only:
        rows = merge_previous(rows, out_dir, small, names, list(STAGES))
    result = {"machine": info, "small": small, "threads": cores, "thread_pins": pins, "seconds": seconds,
              "stages": names, "rows": [row_to_json(r) for r in rows]}
    write_results(out_dir, result, rows)
    print(format_table(rows))
    print(f"[bench] {len(rows)} rows in {seconds:.1f} s -> {out_dir / 'results.json'}, {out_dir / 'RESULTS.md'}")
    return result


def run_scaling_command(small: bool, out_dir: Path, threads: int | None = None) -> dict:
    """``zspace bench --scaling``: bench.scaling.run_scaling with pinned threads in a scratch folder."""
    from bench.scaling import run_scaling

    cores = threads or available_cores()
    pins, restore = pin_threads(cores)
    workdir = Path(tempfile.mkdtemp(prefix="zspace-scaling-"))
    try:
        return run_scaling(small, out_dir, cores, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        restore()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench`` / ``zspace bench``: [--small] [--only STAGE,...] [--data PATH] [--threads N] [--out DIR]."""
    p = argparse.ArgumentParser(prog="zspace bench", description="time every stage against its baseline")
    p.add_argument("--small", action="store_true", help="small sizes, for CI (see bench.harness for how long)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--data", default=None,
                   help="CelebA root or image folder (default: ../shared/data/celeba-subset when present, else generated JPEGs)")
    p.add_argument("--threads", type=int, default=None, help="threads to pin (default: all cores)")
    p.add_argument("--out", default=None, help="output folder (default: bench/, or bench/small/ with --small)")
    p.add_argument("--scaling", action="store_true",
                   help="time stats, kNN, structure and t-SNE against N instead (bench.scaling): scaling.json, "
                        "SCALING.md, figures/scaling.png")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.scaling:
        run_scaling_command(a.small, Path(a.out) if a.out else default_out_dir(a.small), a.threads)
        return 0
    try:
        run_bench(small=a.small, only=a.only.split(",") if a.only else None, data=a.data, threads=a.threads,
                  out_dir=Path(a.out) if a.out else None)
    except ValueError as e:
        p.error(str(e))
    return 0
