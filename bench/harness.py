"""One benchmark harness: every stage against the baseline a user would otherwise write.

Each stage is a function in ``STAGES`` that times ours and the baseline in this
process, after a warm-up, and returns a row: stage, size, ours_s, baseline_s,
ratio (baseline / ours, > 1 means we are faster), throughput and peak memory.
Thread counts are pinned once at start and recorded with the machine.

    python -m bench [--small] [--only prepare,train_feed] [--data PATH]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
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


def python_peak_mb(func: Callable[[], object]) -> float:
    """Peak of Python-tracked allocations (numpy buffers included) during ``func``, in MB."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


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
    for pkg in ("numpy", "torch", "zarr", "numba", "pillow", "faiss-cpu", "openTSNE", "scikit-learn", "opencv-python-headless"):
        try:
            info["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import torch

    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["torch_threads"] = torch.get_num_threads()
    return info


def image_folder(small: bool, data: Path | None, workdir: Path) -> tuple[Path, int]:
    """Real CelebA when available (the subset's 6,000 JPEGs), else generated 178x218 JPEGs."""
    n = 600 if small else 6000
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


def stage_prepare(ctx) -> list[Row]:
    """JPEG decode + centred crop + resize into the cache vs a plain single-process PIL loop."""
    from PIL import Image

    from engine.imagecache import prepare
    from engine.sources import open_source

    root, n = ctx["images"]
    src = open_source(root, limit=n)
    files = [os.path.join(src.root, p) for p in src.paths]
    size = 96

    def baseline():
        out = np.empty((len(files), size, size, 3), np.uint8)
        for k, f in enumerate(files):
            img = Image.open(f).convert("RGB")
            w, h = img.size
            m = min(w, h)
            left, top = (w - m) // 2, (h - m) // 2
            out[k] = np.asarray(img.crop((left, top, left + m, top + m)).resize((size, size), Image.Resampling.BILINEAR))
        return out

    def ours(workers):
        def go():
            d = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
            prepare(src, d, size=size, workers=workers, progress=False)
            shutil.rmtree(d)
        return go

    baseline()  # warm the page cache: both sides then read from memory
    t_base = best_of(baseline, 2)
    t_ours = best_of(ours(None), 2)
    t_one = best_of(ours(1), 2)
    rows = [
        Row("prepare", f"{n} JPEGs -> {size}px", t_ours, t_base, "zspace prepare (all cores, into Zarr)",
            "PIL open+crop+resize loop (1 process, in memory)", f"{n / t_ours:,.0f} img/s",
            notes=f"1 worker: {n / t_one:,.0f} img/s; baseline {n / t_base:,.0f} img/s",
            extra={"images_per_second": n / t_ours, "baseline_images_per_second": n / t_base,
                   "one_worker_images_per_second": n / t_one, "source": str(root)}),
    ]
    # draft-mode decoding matters below half the source size: 64 px from 178 px
    small = 64

    def base64():
        for f in files:
            img = Image.open(f).convert("RGB")
            w, h = img.size
            m = min(w, h)
            np.asarray(img.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)).resize((small, small), Image.Resampling.BILINEAR))

    def ours64():
        src.load_block(0, len(src), small)

    t_b64, t_o64 = best_of(base64, 2), best_of(ours64, 2)
    rows.append(Row("decode_draft", f"{n} JPEGs -> {small}px", t_o64, t_b64, "crop_resize with JPEG draft mode (1 process)",
                    "full decode + crop + resize (1 process)", f"{n / t_o64:,.0f} img/s"))
    return rows


class _PILDataset:
    """The torchvision-style pipeline: every item opens, crops and resizes its JPEG."""

    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        img = Image.open(self.files[i]).convert("RGB")
        w, h = img.size
        m = min(w, h)
        left, top = (w - m) // 2, (h - m) // 2
        img = img.crop((left, top, left + m, top + m)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255)


def stage_train_feed(ctx) -> list[Row]:
    """Training throughput: batches from the cache vs a per-image PIL Dataset in a DataLoader, same model."""
    import torch
    from torch.utils.data import DataLoader

    from engine.feed import BatchFeed
    from engine.imagecache import open_cache, prepare
    from engine.model import Autoencoder, ModelConfig
    from engine.precision import resolve_device, resolve_precision
    from engine.sources import open_source
    from engine.train import to_input, train_step

    root, n = ctx["images"]
    size, batch = 96, 64
    steps = 8 if ctx["small"] else 40
    src = open_source(root, limit=n)
    files = [os.path.join(src.root, p) for p in src.paths]
    run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    prepare(src, run, size=size, progress=False)
    images = open_cache(run)["images"]
    rows_idx = np.arange(images.shape[0])
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)

    def make():
        # the same model, layout and step for both sides: only the data path differs
        torch.manual_seed(0)
        model = Autoencoder(ModelConfig(size=size)).to(device).to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=5e-4), precision.scaler()

    def timed(batches):
        model, opt, scaler = make()
        train_step(model, opt, scaler, precision, "bce", next(batches))  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, scaler, precision, "bce", next(batches))
        return time.perf_counter() - t0

    def run_ours():
        feed = BatchFeed(images, rows_idx, batch, in_memory=True)
        return timed(to_input(b, device, True) for b in feed.epoch(0))

    def run_base():
        loader = DataLoader(_PILDataset(files, size), batch_size=batch, shuffle=True, num_workers=ctx["cores"],
                            drop_last=True, persistent_workers=False)
        return timed(x.contiguous(memory_format=torch.channels_last) for x in loader)

    t_ours, t_base = run_ours(), run_base()
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

    t_feed, t_loader = best_of(feed_only, 2), best_of(loader_only, 2)
    shutil.rmtree(run)
    return [
        Row("train_step_cpu", f"{imgs} img, batch {batch}, {size}px, z 256", t_ours, t_base,
            "train from cache (in memory)", f"same step, PIL Dataset + DataLoader ({ctx['cores']} workers)",
            f"{imgs / t_ours:,.0f} img/s", notes=f"baseline {imgs / t_base:,.0f} img/s; fp32 on CPU",
            extra={"images_per_second": imgs / t_ours, "baseline_images_per_second": imgs / t_base}),
        Row("data_feed", f"{imgs} img, batch {batch}, {size}px", t_feed, t_loader,
            "BatchFeed from cache", "PIL Dataset + DataLoader", f"{imgs / t_feed:,.0f} img/s",
            notes=f"baseline {imgs / t_loader:,.0f} img/s"),
    ]


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
    read_sum = best_of(lambda: x.sum(dtype=np.float64), 5)  # one pass over memory: the floor for any kernel
    rows.append(Row("read_array", f"{n:,} x 256 f32", read_sum, read_sum, "x.sum()", "x.sum()",
                    f"{x.nbytes / read_sum / 1e9:.1f} GB/s", notes="memory read floor for the kernels below"))
    for name, args in (("component_histograms", (x, lo, w, nbins)), ("row_norms", (x,)), ("block_moments", (x,))):
        ours, ref = COMPARISONS[name]
        ours(*args)  # warm-up: numba compiles here
        t_o = best_of(lambda: ours(*args), 3)
        t_r = best_of(lambda: ref(*args), 1 if name == "component_histograms" else 2)
        label = {"component_histograms": f"per-column np.histogram loop ({nbins} bins)",
                 "row_norms": "np.linalg.norm(x, axis=1)", "block_moments": "np.cov(x, rowvar=False)"}[name]
        note = f"{t_o / read_sum:.1f}x the read floor" if name == "component_histograms" else ""
        rows.append(Row(name, f"{n:,} x 256 f32", t_o, t_r, f"numba {name}", label,
                        f"{x.nbytes / t_o / 1e9:.2f} GB/s", notes=note))
    return rows


def _stats_subprocess(run: Path) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of `zspace stats` in a fresh process."""
    import subprocess
    import sys

    # VmHWM, not ru_maxrss: the latter keeps the forked parent's peak across exec
    code = (
        "import re, time; from engine.stats import compute_stats;"
        f"t = time.perf_counter(); compute_stats({str(run)!r}, progress=False); t = time.perf_counter() - t;"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1));"
        "print(t, hwm / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=str(HERE.parent)).stdout.split()
    return float(out[0]), float(out[1])


def stage_stats(ctx) -> list[Row]:
    """End-to-end `zspace stats` streaming from Zarr: time on 202,599 rows, peak memory on 1,000,000 rows."""
    import zarr

    from engine.store import chunk_rows

    rows = []
    sizes = [(20_000, "time")] if ctx["small"] else [(202_599, "time"), (1_000_000, "memory")]
    for n, what in sizes:
        run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
        g = zarr.open_group(run / "latents.zarr", mode="w")
        z = g.create_array("z", shape=(n, 256), chunks=(chunk_rows(256), 256), dtype="float32")
        for s in range(0, n, 131072):
            z[s : min(s + 131072, n)] = latent_cloud(min(131072, n - s), seed=s)
        g.attrs["complete"] = True
        t, peak = _stats_subprocess(run)

        rows.append(Row(f"stats_{what}", f"{n:,} x 256 from Zarr", t, float("nan"),
                        "zspace stats in a fresh process (3 streamed passes, PCA written, figures)", "-",
                        f"{n / t:,.0f} rows/s", peak_mb=peak,
                        notes=f"peak RSS {peak:,.0f} MB with the array alone {n * 256 * 4 / 1e6:,.0f} MB"))
        shutil.rmtree(run)
    return rows


def stage_knn(ctx) -> list[Row]:
    """Exact kNN graph: FAISS flat search in query blocks vs sklearn NearestNeighbors(algorithm="brute")."""
    from sklearn.neighbors import NearestNeighbors

    from engine.knn import build_index, knn

    n, k = (5_000 if ctx["small"] else 50_000), 16
    x = latent_cloud(n)
    ids = np.arange(n)

    def ours():
        return knn(build_index(x), x, k, query_ids=ids)

    def base():
        return NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)

    t_o, t_b = best_of(ours, 1), best_of(base, 1)
    return [Row("knn_exact", f"{n:,} x 256, k={k}", t_o, t_b, "FAISS IndexFlatL2, query blocks",
                "sklearn NearestNeighbors(brute)", f"{n / t_o:,.0f} queries/s")]


def stage_local_pca(ctx) -> list[Row]:
    """Local PCA of every k=16 neighbourhood: numba Gram-matrix kernel vs batched numpy eigvalsh of D x D covariances."""
    from kernels.reference import COMPARISONS

    ours, ref = COMPARISONS["local_pca"]
    n, k = (20_000 if ctx["small"] else 202_599), 16
    x = latent_cloud(n)
    nb = np.random.default_rng(0).integers(0, n, size=(n, k)).astype(np.int64)
    ours(x, nb[:100])  # compile
    t_o = best_of(lambda: ours(x, nb), 1)
    m = 1024  # the baseline on a subset, extrapolated linearly (it is per-neighbourhood work)
    t_sub = best_of(lambda: ref(x, nb[:m]), 1)
    return [Row("local_pca", f"{n:,} neighbourhoods, k={k}, D=256", t_o, t_sub * n / m, "numba local_pca (k x k Gram)",
                "numpy eigvalsh of (D, D) covariances", f"{n / t_o:,.0f} pts/s",
                notes=f"baseline timed on {m} neighbourhoods and scaled to {n:,}")]


def stage_tsne(ctx) -> list[Row]:
    """t-SNE of 10,000 x 256 points: openTSNE vs sklearn.manifold.TSNE, same perplexity and iterations."""
    from openTSNE import TSNE as OpenTSNE
    from sklearn.manifold import TSNE as SkTSNE

    n = 2_000 if ctx["small"] else 10_000
    iters = 250 if ctx["small"] else 750
    x = latent_cloud(n)

    def ours():
        return OpenTSNE(perplexity=30, n_iter=iters - 250, early_exaggeration_iter=250, random_state=0,
                        n_jobs=ctx["cores"]).fit(x)

    def base():
        return SkTSNE(perplexity=30, max_iter=iters, random_state=0, n_jobs=ctx["cores"], init="pca").fit_transform(x)

    t_o, t_b = best_of(ours, 1), best_of(base, 1)
    return [Row("tsne", f"{n:,} x 256, {iters} iterations", t_o, t_b, "openTSNE (FFT-accelerated)",
                "sklearn TSNE (Barnes-Hut)", f"{n / t_o:,.0f} pts/s")]


def stage_structure(ctx) -> list[Row]:
    """End-to-end `zspace structure` (exact kNN of data and null, local PCA, IDs, voids, planes)."""
    import zarr

    from engine.store import chunk_rows
    from engine.structure import compute_structure

    n = 20_000 if ctx["small"] else 202_599
    run = Path(tempfile.mkdtemp(dir=ctx["workdir"]))
    g = zarr.open_group(run / "latents.zarr", mode="w")
    z = g.create_array("z", shape=(n, 256), chunks=(chunk_rows(256), 256), dtype="float32")
    z[:] = latent_cloud(n)
    g.attrs["complete"] = True
    t0 = time.perf_counter()
    res = compute_structure(run, progress=False)
    t = time.perf_counter() - t0
    shutil.rmtree(run)
    return [Row("structure", f"{n:,} x 256, k=16, exact", t, float("nan"), "zspace structure (data + null)", "-",
                f"{n / t:,.0f} pts/s", notes=f"kNN data {res['seconds']['knn_data']:.0f} s, null {res['seconds']['knn_null']:.0f} s")]


STAGES: dict[str, Callable] = {
    "prepare": stage_prepare,
    "train_feed": stage_train_feed,
    "kernels": stage_kernels,
    "stats": stage_stats,
    "knn": stage_knn,
    "local_pca": stage_local_pca,
    "tsne": stage_tsne,
    "structure": stage_structure,
}


def format_table(rows: list[Row]) -> str:
    head = "| stage | size | ours (s) | baseline (s) | ratio | throughput | peak MB | ours vs baseline |\n"
    head += "|---|---|---:|---:|---:|---|---:|---|\n"
    lines = []
    for r in rows:
        peak = f"{r.peak_mb:,.0f}" if r.peak_mb is not None else ""
        ratio = f"{r.ratio:.1f}x" if np.isfinite(r.ratio) else "-"
        base = f"{r.baseline_s:.3f}" if np.isfinite(r.baseline_s) else "-"
        lines.append(f"| {r.stage} | {r.size} | {r.ours_s:.3f} | {base} | {ratio} | {r.throughput} | {peak} | {r.ours} vs {r.baseline}{'; ' + r.notes if r.notes else ''} |")
    return head + "\n".join(lines) + "\n"


def run_bench(small: bool = False, only: list[str] | None = None, data: str | None = None, out_dir: Path = HERE,
              threads: int | None = None) -> dict:
    import torch

    cores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(cores)
    os.environ["OMP_NUM_THREADS"] = str(cores)
    names = only or list(STAGES)
    unknown = set(names) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown bench stages {sorted(unknown)}; known: {list(STAGES)}")
    workdir = Path(tempfile.mkdtemp(prefix="zspace-bench-"))
    try:
        ctx = {"small": small, "workdir": workdir, "cores": cores}
        if {"prepare", "train_feed"} & set(names):
            ctx["images"] = image_folder(small, Path(data) if data else None, workdir)
        rows: list[Row] = []
        for name in names:
            t0 = time.perf_counter()
            new = STAGES[name](ctx)
            for r in new:
                r.group = name
            rows += new
            print(f"[bench] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
            print(format_table(new), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = machine()
    old = out_dir / "results.json"
    if only and old.exists():
        # a partial run refreshes its own stages and keeps the others' rows
        prev = json.loads(old.read_text())
        if prev.get("small") == small:
            kept = [Row(**{k: v for k, v in r.items() if k != "ratio"}) for r in prev["rows"] if r.get("group") not in names]
            order = list(STAGES)
            rows = sorted(kept + rows, key=lambda r: order.index(r.group) if r.group in order else len(order))
    result = {"machine": info, "small": small, "threads": cores,
              "rows": [{**asdict(r), "ratio": r.ratio} for r in rows]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ", no GPU"
    md = (f"# Benchmark results\n\nMachine: {info['cpu']}, {info['cores']} cores{gpu}; threads pinned to {cores}. "
          f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".\n\n"
          "Ratio = baseline time / our time (above 1: zspace is faster). Absolute times hold for this machine only.\n\n"
          + format_table(rows))
    (out_dir / "RESULTS.md").write_text(md)
    print(format_table(rows))
    return result
