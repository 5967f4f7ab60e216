"""Training the autoencoder from the image cache.

Writes, under RUN:
  checkpoints/last.pt   every epoch: model, optimizer, scaler, epoch, RNG state, config
  checkpoints/best.pt   the epoch with the lowest validation loss
  train/config.json     the resolved configuration
  train/log.jsonl       one line per epoch: losses, images/s, seconds
  train/loss.png        loss curves
  train/recon_eNNN.png  originals (top row) over reconstructions of fixed test images

Resuming loads last.pt and continues; since batch order is a function of
(seed, epoch) and the RNG state is restored, the result equals an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from engine.data.feed import BatchFeed, read_rows
from engine.data.imagecache import open_cache
from engine.data.sources import TEST, TRAIN, VALIDATION
from engine.figures import save_image_grid, save_loss_curve
from engine.files import write_json_atomic, write_text_atomic
from engine.layout import checkpoints_dir, stage_dir
from engine.model.autoencoder import Autoencoder, to_input
from engine.model.checkpoint import (
    copy_checkpoint,
    nonfinite_weights,
    read_checkpoint,
    remove_leftovers,
    replaced,
    rng_state,
    save_checkpoint,
    set_rng_state,
    settle_replaced,
)
from engine.model.config import ModelConfig, TrainConfig
from engine.model.precision import resolve_device, resolve_precision

logger = logging.getLogger(__name__)


def loss_fn(name: str, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), x)
    return F.mse_loss(torch.sigmoid(logits.float()), x)


def per_image_loss(name: str, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) loss of each image, float32."""
    if name == "bce":
        e = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none")
    else:
        e = (torch.sigmoid(logits.float()) - x) ** 2
    return e.flatten(1).mean(1)


def train_step(model, opt, scaler, precision, loss: str, x: torch.Tensor) -> torch.Tensor:
    """One optimisation step on the batch ``x``; returns the (device) loss without syncing."""
    with precision.autocast():
        logits, _ = model(x)
    value = loss_fn(loss, logits, x)
    opt.zero_grad(set_to_none=True)
    scaler.scale(value).backward()
    scaler.step(opt)
    scaler.update()
    return value.detach()


@torch.no_grad()
def evaluate(model, feed: BatchFeed, cfg: TrainConfig, device, precision, channels_last) -> float:
    """Mean per-pixel loss over every row of ``feed`` in eval mode."""
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    for batch in feed.epoch(0):
        x = to_input(batch, device, channels_last)
        with precision.autocast():
            logits, _ = model(x)
        total += per_image_loss(cfg.loss, logits, x).double().sum()
        n += len(batch)
    return float(total.item() / max(n, 1))


@torch.no_grad()
def reconstruct(model, images: np.ndarray, device, precision, channels_last) -> np.ndarray:
    """uint8 (n, S, S, 3) -> reconstructions, uint8 (n, S, S, 3)."""
    model.eval()
    x = to_input(images, device, channels_last)
    with precision.autocast():
        logits, _ = model(x)
    out = torch.sigmoid(logits.float()).mul(255).round().clamp(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def _prepare_dirs(run: Path, mcfg: ModelConfig, explicit_model: bool, resume: bool, overwrite: bool,
                  cache_key: str | None = None):
    """(checkpoint to resume or None, model config): refuses to discard checkpoints without --overwrite,
    and to resume a model trained on another image cache."""
    ckpt_dir, out_dir = checkpoints_dir(run), stage_dir(run, "train")
    last_path = ckpt_dir / "last.pt"
    if not overwrite:
        settle_replaced(run, finished=False)  # an earlier --overwrite killed before its first checkpoint
    ckpt = None
    if last_path.exists():
        if resume:
            ckpt = read_checkpoint(last_path)
            trained_on = ckpt["config"].get("data", {}).get("cache_fingerprint")
            if trained_on is not None and cache_key is not None and trained_on != cache_key:
                raise ValueError(f"{last_path} was trained on another image cache (images.zarr was prepared again "
                                 f"since): pass --overwrite instead of --resume to train on the new images")
            saved = ModelConfig.from_dict(ckpt["config"]["model"])
            if saved != mcfg and explicit_model:
                raise ValueError(f"--resume with a different model: checkpoint has {saved}, asked for {mcfg}")
            mcfg = saved
        elif overwrite:
            # the old model is kept aside until the new training finishes (or restored if it fails first);
            # a replacement already under way holds the old model aside: only the partial new one goes
            for d in (ckpt_dir, out_dir):
                if replaced(ckpt_dir).exists():
                    shutil.rmtree(d, ignore_errors=True)
                elif d.exists():
                    os.replace(d, replaced(d))
            logger.warning("--overwrite: the old model is kept in %s until the new training finishes",
                           replaced(ckpt_dir))
        else:
            raise ValueError(f"{last_path} exists: pass --resume to continue it or --overwrite to start over")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for f in remove_leftovers(ckpt_dir):
        logger.warning("removed %s, left by an interrupted checkpoint write", f)
    out_dir.mkdir(parents=True, exist_ok=True)
    return ckpt, mcfg


def _feeds(cache, cfg: TrainConfig, device: torch.device):
    """(train feed, validation feed, fixed grid images) from the cache's split."""
    images = cache["images"]
    split = cache["split"][:]
    train_rows = np.flatnonzero(split == TRAIN)
    val_rows = np.flatnonzero(split == VALIDATION)
    if len(train_rows) < cfg.batch_size:
        raise ValueError(f"the train split has {len(train_rows)} images, fewer than one batch of {cfg.batch_size}")
    if len(val_rows) == 0:
        logger.warning("no validation images: validating on the training split")
        val_rows = train_rows
    grid_rows = np.flatnonzero(split == TEST)[: cfg.grid_images]
    if len(grid_rows) == 0:
        grid_rows = val_rows[: cfg.grid_images]
    feed = BatchFeed(images, train_rows, cfg.batch_size, seed=cfg.seed, in_memory=cfg.in_memory)
    val_batch = cfg.batch_size * (4 if device.type == "cuda" else 1)  # no gradients: larger batches fit
    val_feed = BatchFeed(images, val_rows, val_batch, shuffle=False, drop_last=False, in_memory=cfg.in_memory)
    return feed, val_feed, read_rows(images, grid_rows)


# per-pixel loss of a model that outputs 0.5 everywhere: BCE ln 2; MSE at most 0.25 for pixels in [0, 1]
GREY_LOSS = {"bce": math.log(2.0), "mse": 0.25}
DIVERGED_FACTOR = 10.0  # a validation loss ten times worse than grey is divergence, not learning


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: training stops before anything non-finite is written."""


def _last_good(path: Path) -> str:
    return f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written"


def _train_epoch(model, opt, scaler, precision, feed: BatchFeed, epoch: int, cfg: TrainConfig, device,
                 progress: bool, last_path: Path) -> tuple[float, int, float]:
    """One pass over the train feed: (mean loss, images seen, seconds); ``TrainingDiverged`` on a non-finite loss."""
    model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(feed.epoch(epoch), total=len(feed), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
               disable=None if progress else True, leave=False)
    for step, batch in enumerate(bar):
        loss = train_step(model, opt, scaler, precision, cfg.loss, to_input(batch, device, cfg.channels_last))
        # every step on CPU (no sync to pay); at log intervals on CUDA, where .item() stalls the pipeline
        if (device.type != "cuda" or step % cfg.log_every == 0) and not torch.isfinite(loss).item():
            raise TrainingDiverged(f"training diverged: loss {loss.item()} at epoch {epoch}, step {step + 1}; "
                                   f"nothing of this epoch was saved ({_last_good(last_path)}); lower --lr and "
                                   f"rerun with --overwrite")
        loss_sum += loss * len(batch)
        seen += len(batch)
        if progress and step % cfg.log_every == 0:  # .item() syncs the device: only at log intervals
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    mean_loss = float(loss_sum.item() / max(seen, 1))
    if not math.isfinite(mean_loss) or nonfinite_weights(model.state_dict()):
        raise TrainingDiverged(f"training diverged in epoch {epoch} (mean loss {mean_loss}); nothing of this epoch "
                               f"was saved ({_last_good(last_path)}); lower --lr and rerun with --overwrite")
    return mean_loss, seen, time.perf_counter() - t0


def _resume(ckpt: dict | None, model, opt, scaler, log_path: Path, cfg: TrainConfig) -> tuple[int, float, list[dict]]:
    """Load the checkpoint's weights, optimizer, scaler and RNG state: (first epoch to run, best val loss, log)."""
    if ckpt is None:
        return 1, float("inf"), []
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    start_epoch = ckpt["epoch"] + 1
    history = []
    if log_path.exists():  # drop lines of an epoch whose checkpoint never landed, and a line cut by a kill
        for line in log_path.read_text().splitlines():
            try:
                h = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: dropped an unreadable line (an interrupted write)", log_path)
                continue
            if h.get("epoch", start_epoch) < start_epoch:
                history.append(h)
    logger.info("resuming from epoch %d of %d", ckpt["epoch"], cfg.epochs)
    return start_epoch, ckpt["best_val"], history


def train(
    run_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or resume training) the autoencoder of ``run_dir``; returns the last log entry.

    A finished training (last.pt at ``config.epochs``) with ``resume`` is a no-op.
    Existing checkpoints without ``resume`` or ``overwrite`` are an error, so a
    typo never discards a long training.
    """
    run = Path(run_dir)
    cfg = config or TrainConfig()
    cache = open_cache(run)
    size = int(cache.attrs["size"])
    mcfg = model_config or ModelConfig(size=size)
    if mcfg.size != size:
        raise ValueError(f"model size {mcfg.size} does not match the image cache's size {size}")
    ckpt, mcfg = _prepare_dirs(run, mcfg, model_config is not None, resume, overwrite, cache.attrs.get("fingerprint"))
    try:
        entry = _train_prepared(run, cache, cfg, mcfg, ckpt, progress)
    except BaseException:
        settle_replaced(run, finished=False)
        raise
    settle_replaced(run, finished=True)
    return entry


def _train_prepared(run: Path, cache, cfg: TrainConfig, mcfg: ModelConfig, ckpt: dict | None, progress: bool) -> dict:
    """The training itself, once the directories are settled."""
    out_dir = stage_dir(run, "train")
    last_path, best_path = checkpoints_dir(run) / "last.pt", checkpoints_dir(run) / "best.pt"

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = Autoencoder(mcfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = precision.scaler()
    feed, val_feed, grid_images = _feeds(cache, cfg, device)

    log_path = out_dir / "log.jsonl"
    start_epoch, best_val, history = _resume(ckpt, model, opt, scaler, log_path, cfg)
    if start_epoch > cfg.epochs:
        logger.info("training already finished (%d epochs); nothing to do", start_epoch - 1)
        return history[-1] if history else {"epoch": start_epoch - 1}
    write_text_atomic(log_path, "".join(json.dumps(h) + "\n" for h in history))
    full_config = {"model": mcfg.to_dict(), "train": asdict(cfg), "data": {"cache_fingerprint": cache.attrs.get("fingerprint")}}
    write_json_atomic(out_dir / "config.json", {**full_config, "device": str(device), "precision": precision.name,
                                                "channels_last": cfg.channels_last}, indent=2)
    logger.info("training %d epochs on %d images (%d validation), device %s, precision %s, data %s", cfg.epochs,
                len(feed.rows), len(val_feed.rows), device, precision.name,
                "in memory" if feed.in_memory else "streamed from the cache")

    loop = _Loop(model, opt, scaler, precision, feed, val_feed, grid_images, cfg, device, full_config, out_dir,
                 last_path, best_path, progress)
    return _run_epochs(loop, start_epoch, best_val, history)


@dataclass
class _Loop:
    """What every epoch of one training uses."""

    model: Autoencoder
    opt: torch.optim.Optimizer
    scaler: object
    precision: object
    feed: BatchFeed
    val_feed: BatchFeed
    grid_images: np.ndarray
    cfg: TrainConfig
    device: torch.device
    full_config: dict
    out_dir: Path
    last_path: Path
    best_path: Path
    progress: bool


def _run_epochs(loop: _Loop, start_epoch: int, best_val: float, history: list[dict]) -> dict:
    """Epochs ``start_epoch``..``cfg.epochs``: train, validate, checkpoint, log; returns the last log entry."""
    model, opt, scaler, precision, cfg, device = loop.model, loop.opt, loop.scaler, loop.precision, loop.cfg, loop.device
    feed, val_feed, grid_images, out_dir = loop.feed, loop.val_feed, loop.grid_images, loop.out_dir
    last_path, best_path, full_config, progress = loop.last_path, loop.best_path, loop.full_config, loop.progress
    log_path = out_dir / "log.jsonl"
    entry = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss, seen, train_seconds = _train_epoch(model, opt, scaler, precision, feed, epoch, cfg, device,
                                                       progress, last_path)
        val_loss = evaluate(model, val_feed, cfg, device, precision, cfg.channels_last)
        if not math.isfinite(val_loss) or val_loss > DIVERGED_FACTOR * GREY_LOSS[cfg.loss]:
            raise TrainingDiverged(f"training diverged: validation loss {val_loss:.4g} per pixel after epoch {epoch} "
                                   f"(predicting grey everywhere scores {GREY_LOSS[cfg.loss]:.3g}); nothing of this "
                                   f"epoch was saved ({_last_good(last_path)}); lower --lr and rerun with --overwrite")
        recon = reconstruct(model, grid_images, device, precision, cfg.channels_last)
        save_image_grid(out_dir / f"recon_e{epoch:03d}.png", np.concatenate([grid_images, recon]), len(grid_images),
                        scale=2)
        improved = val_loss < best_val
        best_val = min(best_val, val_loss)
        save_checkpoint({
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best_val": best_val, "val_loss": val_loss, "rng": rng_state(), "config": full_config,
        }, last_path)
        if improved:
            copy_checkpoint(last_path, best_path)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                 "images_per_second": seen / train_seconds, "seconds": time.perf_counter() - t0,
                 "train_seconds": train_seconds, "best": improved}
        history.append(entry)
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        save_loss_curve(out_dir / "loss.png", history, cfg.loss)
        logger.info("epoch %d/%d  train %.5f  val %.5f  %.0f img/s  %.1f s%s", epoch, cfg.epochs, train_loss, val_loss,
                    entry["images_per_second"], entry["seconds"], "  (best)" if improved else "")
    return entry
