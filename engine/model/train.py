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

Under torchrun (``zspace train --nproc N``, or an external ``torchrun`` over
several machines) every rank runs this same code: the model is wrapped in
``DistributedDataParallel`` with batch norm synchronised over ranks, each rank
trains on its part (batch / N rows) of the same global batch, and rank 0 alone
writes. A checkpoint holds the plain model's state, so it resumes with any
number of ranks.
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
from torch.nn.parallel import DistributedDataParallel
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
from engine.model.config import FAMILY_TERMS, RANK_TIMEOUT_S, ModelConfig, TrainConfig
from engine.model.precision import resolve_precision
from engine.model.ranks import (
    Ranks,
    all_sum,
    barrier,
    on_main,
    process_group,
    sync_batchnorm,
    unwrap,
)

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


def latent_weight(cfg: TrainConfig, family: str) -> float:
    """The weight of the model's latent term (KL for vae, |z|^2/2 for rae) in the per-pixel loss; 0 for ae."""
    return {"ae": 0.0, "vae": cfg.beta, "rae": cfg.z_reg}[family]


def objective(loss: str, logits: torch.Tensor, x: torch.Tensor, term: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Mean pixel loss plus ``weight`` x the batch mean of the per-image latent ``term`` over the 3 S^2 pixel
    values of an image (the per-image objective divided by its pixel count, as the pixel loss is)."""
    value = loss_fn(loss, logits, x)
    if term is not None and weight:
        value = value + weight * term.mean() / x[0].numel()
    return value


def vae_noise(seed: int, epoch: int, step: int, batch: int, z_dim: int, ranks: Ranks, device) -> torch.Tensor:
    """This rank's rows of the global batch's eps ~ N(0, I) (batch, z_dim): a pure function of (seed, epoch, step),
    so a vae trains alike on any number of ranks and resumes exactly, whatever the global RNG did."""
    g = torch.Generator().manual_seed(int.from_bytes(np.random.SeedSequence([seed, epoch, step]).generate_state(2)
                                                     .tobytes(), "little") & (2**63 - 1))
    eps = torch.randn((batch, z_dim), generator=g)
    part = batch // ranks.world
    return eps[ranks.rank * part : (ranks.rank + 1) * part].to(device, non_blocking=True)


def train_step(model, opt, scaler, precision, loss: str, x: torch.Tensor, weight: float = 0.0,
               eps: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step on the batch ``x``; returns the (device) loss without syncing. ``weight``: that of
    the model's latent term (``latent_weight``); ``eps``: a vae's noise (``vae_noise``)."""
    with precision.autocast():
        logits, _, term = model(x) if eps is None else model(x, eps)
    value = objective(loss, logits, x, term, weight)
    opt.zero_grad(set_to_none=True)
    scaler.scale(value).backward()
    scaler.step(opt)
    scaler.update()
    return value.detach()


@torch.no_grad()
def evaluate(model, feed: BatchFeed, cfg: TrainConfig, device, precision, channels_last,
             ranks: Ranks = Ranks()) -> float:
    """Mean per-pixel loss over every row of ``feed`` (each rank's feed holds its part) in eval mode."""
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for batch in feed.epoch(0):
        x = to_input(batch, device, channels_last)
        with precision.autocast():
            logits = model(x)[0]
        total[0] += per_image_loss(cfg.loss, logits, x).double().sum()
        total[1] += len(batch)
    total = all_sum(ranks, total)
    return float(total[0].item() / max(total[1].item(), 1))


@torch.no_grad()
def reconstruct(model, images: np.ndarray, device, precision, channels_last) -> np.ndarray:
    """uint8 (n, S, S, 3) -> reconstructions, uint8 (n, S, S, 3)."""
    model.eval()
    x = to_input(images, device, channels_last)
    with precision.autocast():
        logits = model(x)[0]
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


RESIDENT_SHARE = 0.5  # by default the train split lives on the GPU when it takes at most this share of its free memory


class DeviceFeed:
    """A ``BatchFeed``'s in-memory rows held on ``device`` as one uint8 tensor: each batch is gathered there, so
    no batch is copied from the host (one transfer of the epoch's positions instead). Same batches, same order."""

    def __init__(self, feed: BatchFeed, device: torch.device):
        self.feed, self.rows, self.in_memory, self.resident = feed, feed.rows, True, True
        self.data = torch.from_numpy(feed.data).to(device)

    def __len__(self) -> int:
        return len(self.feed)

    def epoch(self, epoch: int):
        pos = list(self.feed.positions(epoch))
        if not pos:
            return
        at = torch.from_numpy(np.concatenate(pos)).to(self.data.device, non_blocking=True)
        start = 0
        for p in pos:
            yield self.data.index_select(0, at[start : start + len(p)])
            start += len(p)


def _feeds(cache, cfg: TrainConfig, device: torch.device, ranks: Ranks = Ranks()):
    """(train feed, validation feed, fixed grid images, validation rows) from the cache's split; with several ranks each feed
    yields this rank's part: of every training batch, and a contiguous part of the validation rows."""
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
    feed = BatchFeed(images, train_rows, cfg.batch_size, seed=cfg.seed, in_memory=True if cfg.resident else cfg.in_memory,
                     share=(ranks.rank, ranks.world))
    resident = cfg.resident
    if resident is None:
        resident = device.type == "cuda" and feed.in_memory and \
            feed.data.nbytes <= RESIDENT_SHARE * torch.cuda.mem_get_info(device)[0]
    if resident:
        feed = DeviceFeed(feed, device)
    val_batch = cfg.batch_size // ranks.world * (4 if device.type == "cuda" else 1)  # no gradients: larger fit
    mine = np.array_split(val_rows, ranks.world)[ranks.rank]
    val_feed = BatchFeed(images, mine, val_batch, shuffle=False, drop_last=False, in_memory=cfg.in_memory)
    return feed, val_feed, read_rows(images, grid_rows), len(val_rows)


# per-pixel loss of a model that outputs 0.5 everywhere: BCE ln 2; MSE at most 0.25 for pixels in [0, 1]
GREY_LOSS = {"bce": math.log(2.0), "mse": 0.25}
DIVERGED_FACTOR = 10.0  # a validation loss ten times worse than grey is divergence, not learning


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: training stops before anything non-finite is written."""


def _last_good(path: Path) -> str:
    return f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written"


def _train_epoch(model, opt, scaler, precision, feed: BatchFeed, epoch: int, cfg: TrainConfig, device,
                 progress: bool, last_path: Path, ranks: Ranks = Ranks()) -> tuple[float, int, float]:
    """One pass over the train feed: (mean loss, images seen by all ranks, seconds); ``TrainingDiverged`` on a
    non-finite loss (on any rank: every rank sees the sum, so all stop together)."""
    model.train()
    net = unwrap(model)
    weight = latent_weight(cfg, net.config.family)
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(feed.epoch(epoch), total=len(feed), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
               disable=None if progress else True, leave=False)
    for step, batch in enumerate(bar):
        eps = (vae_noise(cfg.seed, epoch, step, cfg.batch_size, net.config.z_dim, ranks, device)
               if net.config.family == "vae" else None)
        loss = train_step(model, opt, scaler, precision, cfg.loss, to_input(batch, device, cfg.channels_last), weight,
                          eps)
        # every step on CPU (no sync to pay); at log intervals on CUDA, where .item() stalls the pipeline
        if (device.type != "cuda" or step % cfg.log_every == 0) and not torch.isfinite(all_sum(ranks, loss)).item():
            raise TrainingDiverged(f"training diverged: loss {loss.item()} at epoch {epoch}, step {step + 1}; "
                                   f"nothing of this epoch was saved ({_last_good(last_path)}); lower --lr and "
                                   f"rerun with --overwrite")
        loss_sum += loss * len(batch)
        seen += len(batch)
        if progress and step % cfg.log_every == 0:  # .item() syncs the device: only at log intervals
            rate = seen * ranks.world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = all_sum(ranks, torch.stack([loss_sum.double(), torch.tensor(float(seen), device=device).double()]))
    mean_loss, seen = float(total[0].item() / max(total[1].item(), 1)), int(total[1].item())
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
    rank_timeout: float = RANK_TIMEOUT_S,
) -> dict:
    """Train (or resume training) the autoencoder of ``run_dir``; returns the last log entry.

    A finished training (last.pt at ``config.epochs``) with ``resume`` is a no-op.
    Existing checkpoints without ``resume`` or ``overwrite`` are an error, so a
    typo never discards a long training. Under torchrun every rank calls this;
    ``config.batch_size`` is the global batch, split evenly over the ranks, and a
    collective that waits more than ``rank_timeout`` seconds for a lost rank fails.
    """
    run = Path(run_dir)
    cfg = config or TrainConfig()
    with process_group(cfg.device, rank_timeout) as (ranks, device):
        cache = open_cache(run)
        size = int(cache.attrs["size"])
        mcfg = model_config or ModelConfig(size=size)
        if mcfg.size != size:
            raise ValueError(f"model size {mcfg.size} does not match the image cache's size {size}")
        if cfg.batch_size % ranks.world:
            raise ValueError(f"--batch-size {cfg.batch_size} does not split over {ranks.world} ranks: pass a multiple "
                             f"of {ranks.world} (it is the global batch; each rank takes batch-size / ranks)")
        ckpt, mcfg = _settle_dirs(run, cache, mcfg, model_config is not None, resume, overwrite, ranks)
        if ckpt is not None:
            _check_family_terms(ckpt, cfg, mcfg, run)
        try:
            entry = _train_prepared(run, cache, cfg, mcfg, ckpt, progress and ranks.main, ranks, device)
        except BaseException:
            if ranks.main:
                settle_replaced(run, finished=False)
            raise
        if ranks.main:
            settle_replaced(run, finished=True)
        barrier(ranks)
    return entry


def _check_family_terms(ckpt: dict, cfg: TrainConfig, mcfg: ModelConfig, run: Path) -> None:
    """A resumed training keeps its family's loss weights: a change would silently train another objective."""
    saved = ckpt["config"].get("train", {})
    for name in FAMILY_TERMS[mcfg.family]:
        was, now = saved.get(name, getattr(TrainConfig, name)), getattr(cfg, name)
        if was != now:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{run} was trained with {flag} {was:g}, this --resume asks for {now:g}: resume with "
                             f"{flag} {was:g}, or start over with --overwrite")


def _settle_dirs(run: Path, cache, mcfg: ModelConfig, explicit_model: bool, resume: bool, overwrite: bool,
                 ranks: Ranks) -> tuple[dict | None, ModelConfig]:
    """``_prepare_dirs`` on rank 0 (it alone touches the directories); the other ranks then read the same
    checkpoint, or raise the same error."""
    box = {}

    def prepare():
        box["ckpt"], mcfg_ = _prepare_dirs(run, mcfg, explicit_model, resume, overwrite, cache.attrs.get("fingerprint"))
        return box["ckpt"] is not None, mcfg_

    has_ckpt, mcfg = on_main(ranks, prepare)
    if ranks.main:
        return box["ckpt"], mcfg
    return (read_checkpoint(checkpoints_dir(run) / "last.pt") if has_ckpt else None), mcfg


def _build(mcfg: ModelConfig, cfg: TrainConfig, ranks: Ranks, device: torch.device):
    """(the model, Adam on its parameters): the same initial weights on every rank (seeded), batch norm
    synchronised over ranks when there are several; for an rae the decoder's weights L2-penalised."""
    torch.manual_seed(cfg.seed)
    net = Autoencoder(mcfg).to(device)
    if ranks.distributed:
        net = sync_batchnorm(net, device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    fused = device.type == "cuda" if cfg.fused is None else cfg.fused
    if mcfg.family != "rae" or not cfg.decoder_l2:
        return net, torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=fused)
    # rae: Adam's (coupled) weight decay on the decoder's group adds decoder_l2 * theta to its gradient, the exact
    # gradient of the penalty decoder_l2 / 2 * |theta|^2 (Ghosh et al.'s RAE-L2)
    decoder = [p for name, p in net.named_parameters() if name.startswith(("from_z.", "decoder_conv."))]
    rest = [p for name, p in net.named_parameters() if not name.startswith(("from_z.", "decoder_conv."))]
    return net, torch.optim.Adam([{"params": rest}, {"params": decoder, "weight_decay": cfg.decoder_l2}], lr=cfg.lr,
                                 fused=fused)


def _train_prepared(run: Path, cache, cfg: TrainConfig, mcfg: ModelConfig, ckpt: dict | None, progress: bool,
                    ranks: Ranks, device: torch.device) -> dict:
    """The training itself, once the directories are settled."""
    out_dir = stage_dir(run, "train")
    last_path, best_path = checkpoints_dir(run) / "last.pt", checkpoints_dir(run) / "best.pt"
    precision = resolve_precision(cfg.precision, device)
    net, opt = _build(mcfg, cfg, ranks, device)
    scaler = precision.scaler()
    feed, val_feed, grid_images, n_val = _feeds(cache, cfg, device, ranks)

    log_path = out_dir / "log.jsonl"
    start_epoch, best_val, history = _resume(ckpt, net, opt, scaler, log_path, cfg)
    if start_epoch > cfg.epochs:
        logger.info("training already finished (%d epochs); nothing to do", start_epoch - 1)
        return history[-1] if history else {"epoch": start_epoch - 1}
    full_config = {"model": mcfg.to_dict(), "train": asdict(cfg), "data": {"cache_fingerprint": cache.attrs.get("fingerprint")}}
    if ranks.main:
        write_text_atomic(log_path, "".join(json.dumps(h) + "\n" for h in history))
        write_json_atomic(out_dir / "config.json", {**full_config, "device": str(device), "precision": precision.name,
                                                    "channels_last": cfg.channels_last, "ranks": ranks.world}, indent=2)
    logger.info("training %d epochs on %d images (%d validation), %s, precision %s, data %s", cfg.epochs,
                len(feed.rows), n_val, f"{ranks.world} ranks of batch {cfg.batch_size // ranks.world} on {device.type}" if ranks.distributed
                else f"device {device}", precision.name,
                "resident on the device" if getattr(feed, "resident", False) else "in memory" if feed.in_memory
                else "streamed from the cache")
    model = net
    if ranks.distributed:  # after loading: DDP starts every rank from rank 0's weights and buffers
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loop = _Loop(model, opt, scaler, precision, feed, val_feed, grid_images, cfg, device, full_config, out_dir,
                 last_path, best_path, progress, ranks)
    return _run_epochs(loop, start_epoch, best_val, history)


@dataclass
class _Loop:
    """What every epoch of one training uses."""

    model: torch.nn.Module  # the Autoencoder, or DistributedDataParallel around it
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
    ranks: Ranks


def _run_epochs(loop: _Loop, start_epoch: int, best_val: float, history: list[dict]) -> dict:
    """Epochs ``start_epoch``..``cfg.epochs``: train, validate; rank 0 checkpoints and logs. The last log entry."""
    model, cfg, device, ranks = loop.model, loop.cfg, loop.device, loop.ranks
    net = unwrap(model)
    entry = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss, seen, train_seconds = _train_epoch(model, loop.opt, loop.scaler, loop.precision, loop.feed, epoch,
                                                       cfg, device, loop.progress, loop.last_path, ranks)
        val_loss = evaluate(net, loop.val_feed, cfg, device, loop.precision, cfg.channels_last, ranks)
        if not math.isfinite(val_loss) or val_loss > DIVERGED_FACTOR * GREY_LOSS[cfg.loss]:
            raise TrainingDiverged(f"training diverged: validation loss {val_loss:.4g} per pixel after epoch {epoch} "
                                   f"(predicting grey everywhere scores {GREY_LOSS[cfg.loss]:.3g}); nothing of this "
                                   f"epoch was saved ({_last_good(loop.last_path)}); lower --lr and rerun with "
                                   f"--overwrite")
        improved = val_loss < best_val
        best_val = min(best_val, val_loss)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                 "images_per_second": seen / train_seconds, "seconds": time.perf_counter() - t0,
                 "train_seconds": train_seconds, "best": improved}
        history.append(entry)
        if ranks.main:
            _write_epoch(loop, net, entry, history, best_val)
        logger.info("epoch %d/%d  train %.5f  val %.5f  %.0f img/s  %.1f s%s", epoch, cfg.epochs, train_loss, val_loss,
                    entry["images_per_second"], entry["seconds"], "  (best)" if entry["best"] else "")
    return entry


def _write_epoch(loop: _Loop, net: Autoencoder, entry: dict, history: list[dict], best_val: float) -> None:
    """Rank 0's files of a finished epoch: reconstructions, checkpoint(s), log line, loss curve."""
    cfg, out_dir, epoch = loop.cfg, loop.out_dir, entry["epoch"]
    recon = reconstruct(net, loop.grid_images, loop.device, loop.precision, cfg.channels_last)
    save_image_grid(out_dir / f"recon_e{epoch:03d}.png", np.concatenate([loop.grid_images, recon]),
                    len(loop.grid_images), scale=2)
    save_checkpoint({
        "model": net.state_dict(), "optimizer": loop.opt.state_dict(), "scaler": loop.scaler.state_dict(),
        "epoch": epoch, "best_val": best_val, "val_loss": entry["val_loss"], "rng": rng_state(),
        "config": loop.full_config,
    }, loop.last_path)
    if entry["best"]:
        copy_checkpoint(loop.last_path, loop.best_path)
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    family = net.config.family
    save_loss_curve(out_dir / "loss.png", history, cfg.loss,
                    {"ae": None, "vae": f"{cfg.beta:g} x KL per pixel", "rae": f"{cfg.z_reg:g} x |z|^2/2 per pixel"}[family])
