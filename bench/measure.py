"""Measuring: wall time, peak resident memory, CPU time, thread pinning and the machine they ran on.

Peak memory is the largest growth of resident memory, this process plus its
worker processes, above its level when ours started, while ours ran
(``PeakRSS``: a 5 ms psutil sampler plus the kernel's reset high-water mark,
the heap trimmed first so that a warm-up's freed memory does not hide it).
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def best_of(func: Callable[[], object], repeat: int = 3) -> float:
    """Minimum wall time of ``repeat`` calls (the least disturbed measurement)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def _hwm_bytes() -> int | None:
    """This process's peak RSS (VmHWM) in bytes, where /proc has it."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that memory a warm-up freed
    but malloc kept does not hide the next run's growth. A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Largest growth of resident memory during a ``with`` block, in MB (``.mb``).

    A background thread samples the RSS of this process and of its child
    processes (worker pools) every ``interval`` seconds with psutil; the
    process's own kernel high-water mark, reset at entry where Linux allows it,
    catches peaks between samples (or while a GIL-holding kernel starves the
    sampler). The result is the peak total minus the total at entry (after the
    heap is trimmed), never below 0.
    """

    def __init__(self, interval: float = 0.005, children_every: int = 10):
        self.interval, self.children_every = interval, children_every
        self.mb = float("nan")

    def _total(self, refresh: bool) -> int:
        if refresh:
            try:
                self._children = self._proc.children(recursive=True)
            except Exception:  # noqa: BLE001 - a child may vanish while listed
                self._children = []
        total = self._proc.memory_info().rss
        for c in self._children:
            try:
                total += c.memory_info().rss
            except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends
                pass
        return total

    def _sample(self):
        k = 0
        while not self._stop.wait(self.interval):
            k += 1
            self._peak = max(self._peak, self._total(k % self.children_every == 0))

    def __enter__(self) -> "PeakRSS":
        import psutil

        _trim_heap()
        self._proc = psutil.Process()
        self._children = []
        self._base = self._total(True)
        self._own_base = self._proc.memory_info().rss
        self._hwm = _reset_hwm()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        peak = max(self._peak, self._total(True)) - self._base
        hwm = _hwm_bytes() if self._hwm else None
        if hwm is not None:
            peak = max(peak, hwm - self._own_base)
        self.mb = max(0.0, peak / 1e6)
        return False


def measure(func: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """(best wall time of ``repeat`` calls, peak RSS growth in MB while they ran)."""
    with PeakRSS() as mem:
        t = best_of(func, repeat)
    return t, mem.mb


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": available_cores(), "python": platform.python_version(),
            "platform": platform.platform()}
    import importlib.metadata as md

    info["versions"] = {}
    for pkg in ("numpy", "torch", "zarr", "numba", "pillow", "faiss-cpu", "faiss-gpu", "openTSNE", "scikit-learn",
                "opencv-python-headless", "psutil"):
        try:
            info["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import torch

    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    info["torch_threads"] = torch.get_num_threads()
    return info


def pin_threads(cores: int) -> tuple[dict, Callable[[], None]]:
    """Pin every thread pool the stages use to ``cores``; returns what each is set to and a function
    that puts the previous settings back (run_bench also runs inside a test session)."""
    import importlib

    import numba
    import torch

    undo: list[Callable[[], object]] = []
    env_before = os.environ.get("OMP_NUM_THREADS")
    undo.append(lambda: os.environ.pop("OMP_NUM_THREADS", None) if env_before is None
                else os.environ.__setitem__("OMP_NUM_THREADS", env_before))
    os.environ["OMP_NUM_THREADS"] = str(cores)  # for the processes started from here
    torch_before = torch.get_num_threads()
    undo.append(lambda: torch.set_num_threads(torch_before))
    torch.set_num_threads(cores)
    pins: dict = {"torch": torch.get_num_threads()}
    numba_before = numba.get_num_threads()
    undo.append(lambda: numba.set_num_threads(numba_before))
    numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
    pins["numba"] = numba.get_num_threads()
    try:
        import faiss

        faiss_before = faiss.omp_get_max_threads()
        undo.append(lambda: faiss.omp_set_num_threads(faiss_before))
        faiss.omp_set_num_threads(cores)
        pins["faiss"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        pass
    else:
        importlib.import_module("sklearn.neighbors")  # load sklearn's and scipy's OpenMP/BLAS before limiting them
        limits = threadpool_limits(cores)  # every BLAS and OpenMP library loaded so far
        undo.append(limits.restore_original_limits)
        pins["blas_openmp"] = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})

    def restore() -> None:
        for u in reversed(undo):
            u()

    return pins, restore


def sgemm_gflops(rows: int, cols: int, d: int = 256, seconds: float = 2.0) -> float:
    """The machine's float32 matrix-product rate (GFLOP/s) on one (rows x d) @ (d x cols) tile, numpy's BLAS,
    best of repeated calls for ``seconds``: the ceiling for a distance search built on such tiles."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, d), dtype=np.float32)
    b = rng.standard_normal((cols, d), dtype=np.float32)
    out = np.empty((rows, cols), np.float32)
    np.matmul(a, b.T, out=out)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        np.matmul(a, b.T, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * rows * cols * d / best / 1e9
