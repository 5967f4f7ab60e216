"""The stages on images: ``prepare`` (JPEG decode into the cache), ``train_feed`` (training from the cache)
and ``encode`` (cache -> latents), each timed against the PIL + DataLoader pipeline a user would otherwise write.

A stage takes the run's context (``ctx``: ``sizes``, the ``Sizes`` of the profile; ``workdir``; ``cores``;
``images``, the image folder and how many of its images to use) and returns its rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import PeakRSS, best_of, measure
from bench.results import Row

CELEBA_SUBSET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "celeba-subset"


def image_folder(n: int, data: Path | None, workdir: Path) -> tuple[Path, int]:
    """``n`` images of real CelebA when available (the shared subset), else ``n`` generated 178x218 JPEGs."""
    root = data or (CELEBA_SUBSET if (CELEBA_SUBSET / "img_align_celeba").is_dir() else None)
    if root is not None:
        return root, n
    from PIL import Image

    from engine.data.synthetic import render_face

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
    from engine.data.imagecache import prepare
    from engine.data.sources import open_source

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
    sizes = ctx["sizes"]
    rep = sizes.prepare_repeat
    t_base = best_of(baseline, rep)
    t_ours, peak = measure(ours(None), rep)
    extra = {"images_per_second": n / t_ours, "baseline_images_per_second": n / t_base, "source": str(root)}
    notes = f"baseline {n / t_base:,.0f} img/s; peak includes the worker processes"
    if not sizes.prepare_one_worker:
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
    draft = 64

    def base64():
        for f in files:
            np.asarray(_crop_resize_pil(f, draft))

    def ours64():
        src.load_block(0, len(src), draft)

    ours64()
    t_b64 = best_of(base64, 2)
    t_o64, peak64 = measure(ours64, 2)
    rows.append(Row("decode_draft", f"{n} JPEGs -> {draft}px", t_o64, t_b64, "crop_resize with JPEG draft mode (1 process)",
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
    from engine.data.imagecache import prepare
    from engine.data.sources import open_source

    if "cache" not in ctx:
        root, n = ctx["images"]
        src = open_source(root, limit=ctx["sizes"].cache_images or n)
        run = ctx["workdir"] / "run"
        prepare(src, run, size=size, progress=False)
        ctx["cache"] = run, [os.path.join(src.root, p) for p in src.paths]
    return ctx["cache"]


def _cycle_batches(feed, device, channels_last: bool):
    """Endless model inputs from a BatchFeed, one epoch after another, the way train() makes them."""
    from engine.model.autoencoder import to_input

    epoch = 0
    while True:
        for b in feed.epoch(epoch):
            yield to_input(b, device, channels_last)
        epoch += 1


def _step_seconds(batches, device, precision, size: int, steps: int, warmup: int, channels_last: bool) -> float:
    """Seconds for ``steps`` train steps of a fresh seeded model on ``batches``, after ``warmup`` steps."""
    import torch

    from engine.model.autoencoder import Autoencoder, ModelConfig
    from engine.model.train import train_step

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

    from engine.data.feed import BatchFeed
    from engine.model.precision import Precision, resolve_device, resolve_precision

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

    from engine.data.feed import BatchFeed
    from engine.data.imagecache import open_cache
    from engine.model.autoencoder import to_input
    from engine.model.precision import resolve_device, resolve_precision

    size, batch = 96, 64
    steps = ctx["sizes"].train_steps
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
        rows.append(train_step_cuda_row(images, rows_idx, size, steps=ctx["sizes"].cuda_train_steps, batch=256))
    return rows


def _train_log(run: Path) -> dict:
    import json

    return json.loads((run / "train" / "log.jsonl").read_text().splitlines()[-1])


def stage_train_ranks(ctx) -> list[Row]:
    """One epoch of ``zspace train`` on 2 ranks x 1 thread (torchrun, gloo, DDP + synchronised batch norm) vs
    1 process x 2 threads: same cache, model, global batch and seed; the epoch's training seconds from the log
    (launch, validation and checkpoint left out on both sides)."""
    from engine.model.autoencoder import Autoencoder
    from engine.model.config import ModelConfig, TrainConfig
    from engine.model.launch import launch, train_call
    from engine.model.train import train

    size, batch = 96, 64
    cache_run, _ = image_cache(ctx, size)
    runs = {}
    for name in ("one", "two"):
        runs[name] = ctx["workdir"] / f"ranks_{name}"
        shutil.copytree(cache_run / "images.zarr", runs[name] / "images.zarr")
    cfg, mcfg = TrainConfig(epochs=1, batch_size=batch, device="cpu", seed=0), ModelConfig(size=size)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the ranks' threads (the harness pins this process's to all cores)
    try:
        with PeakRSS() as mem:
            launch("train", train_call(cfg, mcfg, run_dir=str(runs["two"]), progress=False), 2, quiet=True)
    finally:
        os.environ.pop("OMP_NUM_THREADS") if threads is None else os.environ.__setitem__("OMP_NUM_THREADS", threads)
    train(runs["one"], cfg, mcfg, progress=False)
    two, one = _train_log(runs["two"]), _train_log(runs["one"])
    params = sum(p.numel() for p in Autoencoder(mcfg).parameters())
    grad_mb = params * 4 / 1e6
    steps = two["images_per_second"] * two["train_seconds"] / batch
    return [Row("train_ddp_cpu", f"1 epoch, {steps:.0f} steps of {batch}, {size}px, z 256",
                two["train_seconds"], one["train_seconds"], "2 ranks x 1 thread (torchrun, gloo, DDP, sync BN)",
                f"1 process x {ctx['cores']} threads", f"{two['images_per_second']:,.0f} img/s", peak_mb=mem.mb,
                notes=f"baseline {one['images_per_second']:,.0f} img/s; on 2 cores DDP cannot be faster, the row "
                      f"shows what correctness costs. Each step all-reduces the {grad_mb:.1f} MB fp32 gradient "
                      f"({params / 1e6:.2f} M parameters) plus 28 small batch-norm sums: over NVLink (~100 GB/s and more) that is "
                      f"well under a millisecond, so N GPUs give close to N times the images/s of one at the same "
                      f"per-GPU batch",
                extra={"images_per_second": two["images_per_second"],
                       "baseline_images_per_second": one["images_per_second"], "gradient_mb": grad_mb,
                       "val_loss": two["val_loss"], "baseline_val_loss": one["val_loss"]})]


def stage_encode(ctx) -> list[Row]:
    """`zspace encode` (cache -> RUN/latents.zarr: z and reconstruction error) vs a DataLoader over PIL images
    feeding the same model in fp32, z and the error collected in lists and concatenated. Same images, same weights."""
    from dataclasses import asdict as dc_asdict

    import torch
    from torch.utils.data import DataLoader

    from engine.data.imagecache import open_cache
    from engine.layout import latents_path
    from engine.model.autoencoder import Autoencoder, ModelConfig
    from engine.model.checkpoint import load_checkpoint
    from engine.model.encode import encode
    from engine.model.train import TrainConfig

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
            logits, z, _ = model(x)
            zs.append(z.numpy())
            errs.append(((torch.sigmoid(logits) - x) ** 2).flatten(1).mean(1).numpy())
        out["z"], out["err"] = np.concatenate(zs), np.concatenate(errs)

    ours()  # warm-up
    base()
    repeat = ctx["sizes"].encode_repeat
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


