"""One benchmark harness: every stage against the baseline a user would otherwise write.

Each stage is a function in ``STAGES`` that times ours and the baseline in this
process, after a warm-up, and returns rows: stage, size, ours_s, baseline_s,
ratio (baseline / ours, > 1 means we are faster), throughput and peak memory.
Thread counts (torch, numba, BLAS/OpenMP, FAISS) are pinned once at start and
recorded with the machine.

Peak memory (``peak_mb``) is the largest growth of resident memory, this process
plus its worker processes, above its level when ours started, while ours ran
(``PeakRSS``: a 5 ms psutil sampler plus the kernel's reset high-water mark,
the heap trimmed first so that a warm-up's freed memory does not hide it);
for the end-to-end ``stats`` rows it is the peak RSS of the fresh process.

    python -m bench [--small] [--only prepare,train_feed] [--data PATH] [--threads N] [--out DIR]

The full run writes ``bench/results.json`` and ``bench/RESULTS.md``; ``--small``
(CI, about a minute on 2 cores) writes to ``bench/small/`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SMALL_OUT = HERE / "small"  # --small results: never overwrite the committed full run
CELEBA_SUBSET = HERE.parent.parent / "shared" / "data" / "celeba-subset"


@dataclass
class Row:
    stage: str
    size: str
    ours_s: float
    baseline_s: float
    ours: str
    baseline: str
    throughput: str
    peak_mb: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    group: str = ""  # the STAGES entry that produced the row

    @property
    def ratio(self) -> float:
        return self.baseline_s / self.ours_s if self.ours_s > 0 else float("nan")


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


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}
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


def image_folder(small: bool, data: Path | None, workdir: Path) -> tuple[Path, int]:
    """Real CelebA when available (the subset's 6,000 JPEGs), else generated 178x218 JPEGs."""
    n = 512 if small else 6000
    root = data or (CELEBA_SUBSET if (CELEBA_SUBSET / "img_align_celeba").is_dir() else None)
    if root is not None:
        return root, n
    from PIL import Image

    from engine.synthetic import render_face

    folder = workdir / "jpegs" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.fromarray(render_face(i, size=178)).resize((178, 218))
        img.save(folder / f"{i + 1:06d}.jpg", quality=90)
    return folder.parent, n


def _crop_resize_pil(path: str, size: int):
    """The plain PIL pipeline a user writes: open, centred square crop, bilinear resize."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    m = min(w, h)
    left, top = (w - m) // 2, (h - m) // 2
    return img.crop((left, top, left + m, top + m)).resize((size, size), Image.Resampling.BILINEAR)


def stage_prepare(ctx) -> list[Row]:
    """JPEG decode + centred crop + resize into the cache vs a plain single-process PIL loop."""
    from engine.imagecache import prepare
    from engine.sources import open_source

    root, n = ctx["images"]
    src = open_source(root, limit=n)
    files = [os.path.join(src.root, p) for p in src.paths]
    size = 96

    def baseline():
        out = np.empty((len(files), size, size, 3), np.uint8)
        for k, f in enumerate(files):
            out[k] = np.asarray(_crop_resize_pil(f, size))
        return out

    def ours(workers):
        def go():
            d = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
            prepare(src, d, size=size, workers=workers, progress=False)
            shutil.rmtree(d)
        return go

    baseline()  # warm-up, and the page cache: both sides then read from memory
    ours(None)()
    rep = 1 if ctx["small"] else 2
    t_base = best_of(baseline, rep)
    t_ours, peak = measure(ours(None), rep)
    extra = {"images_per_second": n / t_ours, "baseline_images_per_second": n / t_base, "source": str(root)}
    notes = f"baseline {n / t_base:,.0f} img/s; peak includes the worker processes"
    if ctx["small"]:
        notes += "; at this size starting the worker processes dominates"
    else:
        t_one = best_of(ours(1), rep)
        extra["one_worker_images_per_second"] = n / t_one
        notes = f"1 worker: {n / t_one:,.0f} img/s; " + notes
    rows = [
        Row("prepare", f"{n} JPEGs -> {size}px", t_ours, t_base, "zspace prepare (all cores, into Zarr)",
            "PIL open+crop+resize loop (1 process, in memory)", f"{n / t_ours:,.0f} img/s", peak_mb=peak,
            notes=notes, extra=extra),
    ]
    # draft-mode decoding matters below half the source size: 64 px from 178 px
    small = 64

    def base64():
        for f in files:
            np.asarray(_crop_resize_pil(f, small))

    def ours64():
        src.load_block(0, len(src), small)

    ours64()
    t_b64 = best_of(base64, 2)
    t_o64, peak64 = measure(ours64, 2)
    rows.append(Row("decode_draft", f"{n} JPEGs -> {small}px", t_o64, t_b64, "crop_resize with JPEG draft mode (1 process)",
                    "full decode + crop + resize (1 process)", f"{n / t_o64:,.0f} img/s", peak_mb=peak64))
    return rows


class _PILDataset:
    """The torchvision-style pipeline: every item opens, crops and resizes its JPEG."""

    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch

        img = _crop_resize_pil(self.files[i], self.size)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255)


def image_cache(ctx, size: int = 96) -> tuple[Path, list[str]]:
    """One image cache (``RUN/images.zarr``) of the bench images, shared by the stages that train and encode."""
    from engine.imagecache import prepare
    from engine.sources import open_source

    if "cache" not in ctx:
        root, n = ctx["images"]
        src = open_source(root, limit=256 if ctx["small"] else n)
        run = ctx["workdir"] / "run"
        prepare(src, run, size=size, progress=False)
        ctx["cache"] = run, [os.path.join(src.root, p) for p in src.paths]
    return ctx["cache"]


def _cycle_batches(feed, device, channels_last: bool):
    """Endless model inputs from a BatchFeed, one epoch after another, the way train() makes them."""
    from engine.train import to_input

    epoch = 0
    while True:
        for b in feed.epoch(epoch):
            yield to_input(b, device, channels_last)
        epoch += 1


def _step_seconds(batches, device, precision, size: int, steps: int, warmup: int, channels_last: bool) -> float:
    """Seconds for ``steps`` train steps of a fresh seeded model on ``batches``, after ``warmup`` steps."""
    import torch

    from engine.model import Autoencoder, ModelConfig
    from engine.train import train_step

    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(size=size)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, scaler = torch.optim.Adam(model.parameters(), lr=5e-4), precision.scaler()
    for _ in range(warmup):
        train_step(model, opt, scaler, precision, "bce", next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, scaler, precision, "bce", next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def train_step_cuda_row(images, rows_idx, size: int, steps: int, batch: int, device: str = "cuda") -> Row:
    """Mixed precision as ``zspace train`` runs it on a GPU (``resolve_precision('auto')``: bf16 autocast,
    fp16 + GradScaler where bf16 is missing; channels_last) vs plain fp32 NCHW, same data, model and step."""
    import torch

    from engine.feed import BatchFeed
    from engine.precision import Precision, resolve_device, resolve_precision

    dev = resolve_device(device)
    mixed = resolve_precision("auto" if dev.type == "cuda" else "bf16", dev)
    fp32 = Precision("fp32", dev.type)
    feed = BatchFeed(images, rows_idx, batch, in_memory=True)
    warmup = 5  # cuDNN picks its algorithms in the first steps

    def run(precision, channels_last):
        return _step_seconds(_cycle_batches(feed, dev, channels_last), dev, precision, size, steps, warmup, channels_last)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with PeakRSS() as mem:
        t_ours = run(mixed, True)
    gpu_mb = torch.cuda.max_memory_allocated(dev) / 1e6 if dev.type == "cuda" else float("nan")
    t_base = run(fp32, False)
    imgs = steps * batch
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    return Row(f"train_step_{dev.type}_amp", f"{imgs} img, batch {batch}, {size}px, z 256", t_ours, t_base,
               f"{mixed.name} autocast + channels_last ({name})", "same step in fp32, NCHW",
               f"{imgs / t_ours:,.0f} img/s", peak_mb=mem.mb,
               notes=f"baseline {imgs / t_base:,.0f} img/s; GPU peak allocated {gpu_mb:,.0f} MB; batches from the cache in memory",
               extra={"images_per_second": imgs / t_ours, "baseline_images_per_second": imgs / t_base,
                      "precision": mixed.name, "gpu_peak_allocated_mb": gpu_mb})


def stage_train_feed(ctx) -> list[Row]:
    """Training throughput: batches from the cache vs a per-image PIL Dataset in a DataLoader, same model;
    on a GPU also mixed precision vs fp32."""
    import torch
    from torch.utils.data import DataLoader

    from engine.feed import BatchFeed
    from engine.imagecache import open_cache
    from engine.precision import resolve_device, resolve_precision
    from engine.train import to_input

    size, batch = 96, 64
    steps = 3 if ctx["small"] else 40
    run, files = image_cache(ctx, size)
    images = open_cache(run)["images"]
    rows_idx = np.arange(images.shape[0])
    files = files[: images.shape[0]]
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)  # fp32 on CPU

    def run_ours():
        # the same model, layout and step for both sides: only the data path differs
        feed = BatchFeed(images, rows_idx, batch, in_memory=True)
        return _step_seconds(_cycle_batches(feed, device, True), device, precision, size, steps, 1, True)

    def run_base():
        loader = DataLoader(_PILDataset(files, size), batch_size=batch, shuffle=True, num_workers=ctx["cores"],
                            drop_last=True, persistent_workers=False)
        batches = (x.contiguous(memory_format=torch.channels_last) for e in range(10**6) for x in loader)
        return _step_seconds(batches, device, precision, size, steps, 1, True)

    with PeakRSS() as mem:
        t_ours = run_ours()
    t_base = run_base()
    imgs = steps * batch

    # the data side alone: how many batches per second each feed delivers
    def feed_only():
        feed = BatchFeed(images, rows_idx, batch, in_memory=True)
        for _, b in zip(range(steps), feed.epoch(1)):
            to_input(b, device, True)

    def loader_only():
        loader = DataLoader(_PILDataset(files, size), batch_size=batch, shuffle=True, num_workers=ctx["cores"], drop_last=True)
        for _, b in zip(range(steps), loader):
            pass

    feed_only()
    t_feed, peak_feed = measure(feed_only, 2)
    t_loader = best_of(loader_only, 2)
    rows = [
        Row("train_step_cpu", f"{imgs} img, batch {batch}, {size}px, z 256", t_ours, t_base,
            "train from cache (in memory)", f"same step, PIL Dataset + DataLoader ({ctx['cores']} workers)",
            f"{imgs / t_ours:,.0f} img/s", peak_mb=mem.mb, notes=f"baseline {imgs / t_base:,.0f} img/s; fp32 on CPU",
            extra={"images_per_second": imgs / t_ours, "baseline_images_per_second": imgs / t_base}),
        Row("data_feed", f"{imgs} img, batch {batch}, {size}px", t_feed, t_loader,
            "BatchFeed from cache", "PIL Dataset + DataLoader", f"{imgs / t_feed:,.0f} img/s", peak_mb=peak_feed,
            notes=f"baseline {imgs / t_loader:,.0f} img/s"),
    ]
    if torch.cuda.is_available():
        rows.append(train_step_cuda_row(images, rows_idx, size, steps=10 if ctx["small"] else 100, batch=256))
    return rows


def stage_encode(ctx) -> list[Row]:
    """`zspace encode` (cache -> RUN/latents.zarr: z and reconstruction error) vs a DataLoader over PIL images
    feeding the same model in fp32, z and the error collected in lists and concatenated. Same images, same weights."""
    from dataclasses import asdict as dc_asdict

    import torch
    from torch.utils.data import DataLoader

    from engine.encode import encode
    from engine.imagecache import open_cache
    from engine.model import Autoencoder, ModelConfig
    from engine.store import latents_path
    from engine.train import TrainConfig, load_checkpoint

    size, batch = 96, 64
    run, files = image_cache(ctx, size)
    n = open_cache(run)["images"].shape[0]
    files = files[:n]
    # a checkpoint in train()'s format; encode speed does not depend on the weights' values
    mcfg = ModelConfig(size=size)
    torch.manual_seed(0)
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Autoencoder(mcfg).state_dict(), "epoch": 1, "best_val": float("nan"),
                "config": {"model": mcfg.to_dict(), "train": dc_asdict(TrainConfig())}}, ckpt)

    def ours():
        shutil.rmtree(latents_path(run), ignore_errors=True)
        encode(run, ckpt, batch_size=batch, device="cpu", progress=False)

    model, _ = load_checkpoint(ckpt, "cpu")  # eval mode, fp32, default NCHW layout

    out = {}

    @torch.no_grad()
    def base():
        loader = DataLoader(_PILDataset(files, size), batch_size=batch, shuffle=False, num_workers=ctx["cores"])
        zs, errs = [], []
        for x in loader:
            logits, z = model(x)
            zs.append(z.numpy())
            errs.append(((torch.sigmoid(logits) - x) ** 2).flatten(1).mean(1).numpy())
        out["z"], out["err"] = np.concatenate(zs), np.concatenate(errs)

    ours()  # warm-up
    base()
    repeat = 1 if ctx["small"] else 2
    t_ours, peak = measure(ours, repeat)
    t_base = best_of(base, repeat)
    import zarr

    # the same images through the same weights: the two sides must agree
    diff = float(np.abs(zarr.open_group(latents_path(run), mode="r")["z"][:] - out["z"]).max())
    return [Row("encode", f"{n} img, batch {batch}, {size}px, z 256", t_ours, t_base,
                "zspace encode (cache -> latents.zarr, fp32 channels_last)",
                f"PIL Dataset + DataLoader ({ctx['cores']} workers), same model fp32, lists + np.concatenate",
                f"{n / t_ours:,.0f} img/s", peak_mb=peak,
                notes=f"baseline {n / t_base:,.0f} img/s; both compute z and the reconstruction error; max |dz| {diff:.1e}",
                extra={"images_per_second": n / t_ours, "baseline_images_per_second": n / t_base, "max_abs_dz": diff})]


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
    """Histograms, radii and covariance of the full CelebA-sized cloud (202,599 x 256) in memory."""
    from kernels.reference import COMPARISONS

    n = 20_000 if ctx["small"] else 202_599
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

    from engine.store import chunk_rows

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
        "import re, time; from engine.stats import compute_stats;"
        f"compute_stats({str(warm)!r}, progress=False);"
        f"t = time.perf_counter(); compute_stats({str(run)!r}, progress=False); t = time.perf_counter() - t;"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1));"
        "print(t, hwm * 1024 / 1e6)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=str(HERE.parent)).stdout.split()
    return float(out[0]), float(out[1])


def stage_stats(ctx) -> list[Row]:
    """End-to-end `zspace stats` streaming from Zarr: time on 202,599 rows, peak memory on 1,000,000 rows."""
    rows = []
    sizes = [(20_000, "time")] if ctx["small"] else [(202_599, "time"), (1_000_000, "memory")]
    warm = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    _write_latents(warm, 2_000)  # the warm-up run (numba compiles, matplotlib loads) in the same fresh process
    for n, what in sizes:
        run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
        _write_latents(run, n)
        t, peak = _stats_subprocess(run, warm)
        rows.append(Row(f"stats_{what}", f"{n:,} x 256 from Zarr", t, float("nan"),
                        "zspace stats in a fresh process (3 streamed passes, PCA written, figures)", "-",
                        f"{n / t:,.0f} rows/s", peak_mb=peak,
                        notes=f"peak RSS of the process {peak:,.0f} MB with the array alone {n * 256 * 4 / 1e6:,.0f} MB; "
                              "timed after a warm-up on 2,000 rows"))
        shutil.rmtree(run)
    shutil.rmtree(warm)
    return rows


def stage_knn(ctx) -> list[Row]:
    """Exact kNN graph: FAISS flat search in query blocks vs sklearn NearestNeighbors(algorithm="brute")."""
    from sklearn.neighbors import NearestNeighbors

    from engine.knn import build_index, knn

    n, k = (5_000 if ctx["small"] else 50_000), 16
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
    n, k = (20_000 if ctx["small"] else 202_599), 16
    x = latent_cloud(n)
    nb = np.random.default_rng(0).integers(0, n, size=(n, k)).astype(np.int64)
    ours(x, nb[:100])  # compile
    ref(x, nb[:8])
    t_o, peak = measure(lambda: ours(x, nb), 1)
    m = 64 if ctx["small"] else 1024  # the baseline on a subset, extrapolated linearly (it is per-neighbourhood work)
    t_sub = best_of(lambda: ref(x, nb[:m]), 1)
    return [Row("local_pca", f"{n:,} neighbourhoods, k={k}, D=256", t_o, t_sub * n / m, "numba local_pca (k x k Gram)",
                "numpy eigvalsh of (D, D) covariances", f"{n / t_o:,.0f} pts/s", peak_mb=peak,
                notes=f"baseline timed on {m} neighbourhoods and scaled to {n:,}")]


def stage_tsne(ctx) -> list[Row]:
    """t-SNE of 10,000 x 256 points: openTSNE vs sklearn.manifold.TSNE, same perplexity and iterations."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    n = 1_000 if ctx["small"] else 10_000
    iters = 250 if ctx["small"] else 750
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
    from engine.structure import compute_structure

    n = 5_000 if ctx["small"] else 202_599
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


STAGES: dict[str, Callable] = {
    "prepare": stage_prepare,
    "train_feed": stage_train_feed,
    "encode": stage_encode,
    "kernels": stage_kernels,
    "stats": stage_stats,
    "knn": stage_knn,
    "local_pca": stage_local_pca,
    "tsne": stage_tsne,
    "structure": stage_structure,
}
NEED_IMAGES = {"prepare", "train_feed", "encode"}

PEAK_NOTE = ("peak MB: the largest growth of resident memory (this process plus its worker processes, sampled every "
             "5 ms, with the kernel's high-water mark) above its level when ours started, while ours ran; "
             "for the end-to-end stats rows, the peak RSS (VmHWM) of the fresh process that ran them.")


def format_table(rows: list[Row]) -> str:
    head = "| stage | size | ours (s) | baseline (s) | ratio | throughput | peak MB | ours vs baseline |\n"
    head += "|---|---|---:|---:|---:|---|---:|---|\n"
    lines = []
    for r in rows:
        peak = f"{r.peak_mb:,.0f}" if r.peak_mb is not None and math.isfinite(r.peak_mb) else ""
        ratio = f"{r.ratio:.1f}x" if np.isfinite(r.ratio) else "-"
        base = f"{r.baseline_s:.3f}" if np.isfinite(r.baseline_s) else "-"
        lines.append(f"| {r.stage} | {r.size} | {r.ours_s:.3f} | {base} | {ratio} | {r.throughput} | {peak} | {r.ours} vs {r.baseline}{'; ' + r.notes if r.notes else ''} |")
    return head + "\n".join(lines) + "\n"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def default_out_dir(small: bool) -> Path:
    return SMALL_OUT if small else HERE


def _json_safe(v):
    """NaN/inf as null: results.json stays strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _row_from_json(r: dict) -> Row:
    r = {k: v for k, v in r.items() if k != "ratio"}
    for k in ("ours_s", "baseline_s"):
        if r.get(k) is None:
            r[k] = float("nan")
    return Row(**r)


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
    cores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    pins, restore = pin_threads(cores)
    workdir = Path(tempfile.mkdtemp(prefix="zspace-bench-"))
    t_all = time.perf_counter()
    try:
        ctx = {"small": small, "workdir": workdir, "cores": cores}
        if NEED_IMAGES & set(names):
            ctx["images"] = image_folder(small, Path(data) if data else None, workdir)
        rows: list[Row] = []
        for name in names:
            t0, c0 = time.perf_counter(), _cpu_seconds()
            new = STAGES[name](ctx)
            for r in new:
                r.group = name
            rows += new
            print(f"[bench] {name}: {time.perf_counter() - t0:.1f} s (CPU {_cpu_seconds() - c0:.1f} s)", flush=True)
            print(format_table(new), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        restore()
    seconds = time.perf_counter() - t_all
    info = machine()
    info["torch_threads"] = pins["torch"]
    old = out_dir / "results.json"
    if only and old.exists():
        # a partial run refreshes its own stages and keeps the others' rows
        prev = json.loads(old.read_text())
        if prev.get("small") == small:
            kept = [_row_from_json(r) for r in prev["rows"] if r.get("group") not in names]
            order = list(STAGES)
            rows = sorted(kept + rows, key=lambda r: order.index(r.group) if r.group in order else len(order))
    result = {"machine": info, "small": small, "threads": cores, "thread_pins": pins, "seconds": seconds,
              "stages": names, "rows": [_json_safe({**asdict(r), "ratio": r.ratio}) for r in rows]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if info["gpu"] else ", no GPU"
    pinned = "; ".join(f"{k} {v if not isinstance(v, list) else ', '.join(v)}" for k, v in pins.items())
    md = (f"# Benchmark results{' (--small)' if small else ''}\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores{gpu}; threads pinned to {cores} ({pinned}). "
          f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".\n\n"
          "Ratio = baseline time / our time (above 1: zspace is faster); both sides timed in the same process after "
          "a warm-up. Absolute times hold for this machine only.\n\n"
          f"{PEAK_NOTE[0].upper() + PEAK_NOTE[1:]}\n\n" + format_table(rows))
    (out_dir / "RESULTS.md").write_text(md)
    print(format_table(rows))
    print(f"[bench] {len(rows)} rows in {seconds:.1f} s -> {out_dir / 'results.json'}, {out_dir / 'RESULTS.md'}")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m bench`` / ``zspace bench``: [--small] [--only STAGE,...] [--data PATH] [--threads N] [--out DIR]."""
    p = argparse.ArgumentParser(prog="zspace bench", description="time every stage against its baseline")
    p.add_argument("--small", action="store_true", help="small sizes, for CI (about a minute on 2 cores)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--data", default=None,
                   help="CelebA root or image folder (default: ../shared/data/celeba-subset when present, else generated JPEGs)")
    p.add_argument("--threads", type=int, default=None, help="threads to pin (default: all cores)")
    p.add_argument("--out", default=None, help="output folder (default: bench/, or bench/small/ with --small)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        run_bench(small=a.small, only=a.only.split(",") if a.only else None, data=a.data, threads=a.threads,
                  out_dir=Path(a.out) if a.out else None)
    except ValueError as e:
        p.error(str(e))
    return 0
