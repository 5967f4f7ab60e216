r"""The attribute classifier: an independent judge of CelebA's 40 binary attributes, trained on real images only.

zspace decodes images along attribute directions in z and from samplers fitted to the cloud; whether those
images show an attribute (and how far their features are from real ones: ``engine.generation.quality``) is
judged by this network, which never sees a decoded image: ``train_classifier`` trains on the rows of the
image cache it is given and keeps the epoch with the best validation AUC.

Network (``AttributeClassifier``), for uint8 images (N, S, S, 3), S in 32..96 a multiple of 16, made input
by ``engine.model.autoencoder.to_input`` (float (N, 3, S, S) in [0, 1]):
  4 stages, each ``convs_per_stage`` x (Conv2d 3x3 -> BatchNorm -> ReLU), the first conv of a stage of
  stride 2 (S -> S/16), global average pooling -> (N, widths[-1]), Linear -> ReLU -> ``features`` (N, F),
  dropout, Linear -> logits (N, A), one per attribute.

Loss: binary cross-entropy with logits over the known labels only. For labels y in {1, 0, -1} (-1 unknown)
and logits l, with m = [y >= 0]:

    loss = sum_{i,a} m_ia * BCE(l_ia, y_ia) / max(sum_{i,a} m_ia, 1)

so an unknown label gives no gradient at all (its logit's gradient is exactly 0), rather than counting as a
negative. AdamW with cosine decay, random horizontal flips, mixed precision as ``engine.model.precision``
resolves it (fp32 on CPU), batches from ``engine.data.feed.BatchFeed``.

A judge counts for an attribute only where its held-out AUC is at least ``JUDGE_MIN_AUC`` (``judges``).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from engine.data.feed import BatchFeed
from engine.model.autoencoder import to_input
from engine.model.checkpoint import CheckpointError, nonfinite_weights, read_checkpoint, save_checkpoint
from engine.model.config import CLASSIFIER_SIZES, ClassifierConfig
from engine.model.precision import resolve_device, resolve_precision

logger = logging.getLogger(__name__)

JUDGE_MIN_AUC = 0.85  # a classifier judges an attribute only where its held-out AUC is at least this
CHECKPOINT_KIND = "attribute_classifier"  # tells this file from an autoencoder checkpoint
Z95 = 1.959963984540054  # standard normal 97.5% quantile


class AttributeClassifier(nn.Module):
    """x: float (N, 3, S, S) in [0, 1] -> logits (N, A); ``features(x)``: float (N, F), the penultimate layer."""

    def __init__(self, n_attributes: int, config: ClassifierConfig | None = None):
        super().__init__()
        if int(n_attributes) < 1:
            raise ValueError(f"n_attributes must be >= 1, got {n_attributes}")
        self.config = c = config or ClassifierConfig()
        self.n_attributes = int(n_attributes)
        layers, cin = [], 3
        for w in c.widths:
            for j in range(c.convs_per_stage):
                layers += [nn.Conv2d(cin, w, 3, stride=2 if j == 0 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                cin = w
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(cin, c.features_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.features_dim, self.n_attributes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, F): ReLU(dense(global average of the last conv stage))."""
        return self.dense(self.conv(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the known entries: logits (B, A) float, labels (B, A) int in {1, 0, -1};
    -1 entries are left out of the sum and the count (module docstring). float32 scalar."""
    known = labels >= 0
    per = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none")
    return torch.where(known, per, torch.zeros_like(per)).sum() / known.sum().clamp(min=1)


class _Held:
    """An in-memory array as ``BatchFeed`` reads a Zarr array: ``shape``, ``dtype``, ``chunks`` and slicing."""

    def __init__(self, data: np.ndarray, chunk_rows: int):
        self.data = data
        self.shape, self.dtype = data.shape, data.dtype
        self.chunks = (int(chunk_rows), *data.shape[1:])

    def __getitem__(self, key):
        return self.data[key]


def _as_feedable(images):
    """A Zarr array as it is; an ndarray wrapped for ``BatchFeed``."""
    if isinstance(images, np.ndarray):
        return _Held(images, min(len(images), 256) or 1)
    return images


class LabelledFeed:
    """(uint8 images (B, S, S, 3), int8 labels (B, A)) batches of the cache rows ``rows``.

    Two ``BatchFeed``s with the same rows, seed, batch size, memory mode and row chunks: the order of an
    epoch is a function of those alone, so the label batch is always that of the image batch (tested).
    """

    def __init__(self, images, labels: np.ndarray, rows: np.ndarray, batch_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True, in_memory: bool | None = None):
        images = _as_feedable(images)
        self.images = BatchFeed(images, rows, batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last,
                                in_memory=in_memory)
        self.labels = BatchFeed(_Held(labels, images.chunks[0]), rows, batch_size, seed=seed, shuffle=shuffle,
                                drop_last=drop_last, in_memory=self.images.in_memory)
        self.rows = self.images.rows

    def __len__(self) -> int:
        return len(self.images)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield from zip(self.images.epoch(epoch), self.labels.epoch(epoch))


def _check_images(images, name: str = "images") -> int:
    """The side S of uint8 (N, S, S, 3) images (ndarray or Zarr array); ValueError otherwise."""
    shape, dtype = tuple(getattr(images, "shape", ())), getattr(images, "dtype", None)
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise ValueError(f"{name} must have shape (N, S, S, 3), got {shape}")
    if dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255, as the image cache stores them), got {dtype}")
    return int(shape[1])


def _check_labels(labels, n: int, names) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != (n, len(names)):
        raise ValueError(f"labels must have shape (N, A) = ({n}, {len(names)}) (one row per image, one column per "
                         f"name), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers 1, 0 or -1 (unknown), got dtype {labels.dtype}")
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise ValueError(f"labels must be 1, 0 or -1 (unknown), got {int(bad.sum())} other values such as "
                         f"{int(labels[bad][0])}")
    return np.ascontiguousarray(labels, np.int8)


def _check_rows(rows, n: int, name: str) -> np.ndarray:
    rows = np.asarray(rows if rows is not None else [], dtype=np.int64).ravel()
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"{name} must be row indices in [0, {n}), got values from {rows.min()} to {rows.max()}")
    if len(np.unique(rows)) != len(rows):
        raise ValueError(f"{name} must not repeat rows, got {len(rows) - len(np.unique(rows))} repeats")
    return np.sort(rows)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of (B, 3, S, S) mirrored left-right with probability 1/2."""
    mask = torch.rand(len(x), generator=gen, device=gen.device) < 0.5
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def aucs(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """ROC AUC per attribute over its known labels (sklearn ``roc_auc_score``); attributes without both a
    positive and a negative known label have no AUC and are left out."""
    out = {}
    for a, name in enumerate(names):
        known = labels[:, a] >= 0
        y = labels[known, a]
        if 0 < y.sum() < len(y):
            out[name] = float(roc_auc_score(y, probs[known, a]))
    return out


def delong_interval(y: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    """(AUC, lo, hi): ROC AUC of ``score`` (n,) for binary ``y`` (n,) and its 95% DeLong interval.

    DeLong, DeLong & Clarke-Pearson (1988) in the midrank form of Sun & Xu (2014): with m positives, k
    negatives, midranks T_z of all scores, T_x among positives and T_y among negatives,
    AUC = (sum T_z[pos] / m - (m + 1) / 2) / k, V10_i = (T_z[pos_i] - T_x[i]) / k,
    V01_j = 1 - (T_z[neg_j] - T_y[j]) / m, Var = var(V10) / m + var(V01) / k (ddof 1);
    interval AUC +- 1.96 sqrt(Var), clipped to [0, 1]. With fewer than 2 of a class the interval is [0, 1].
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    pos, neg = s[y], s[~y]
    m, k = len(pos), len(neg)
    if m == 0 or k == 0:
        raise ValueError(f"an AUC needs positives and negatives, got {m} positives and {k} negatives")
    tz = rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() / m - (m + 1) / 2) / k
    if m < 2 or k < 2:
        return float(auc), 0.0, 1.0
    v10 = (tz[:m] - rankdata(pos)) / k
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
    se = math.sqrt(max(v10.var(ddof=1) / m + v01.var(ddof=1) / k, 0.0))
    return float(auc), float(max(auc - Z95 * se, 0.0)), float(min(auc + Z95 * se, 1.0))


def judges(auc: dict) -> list[str]:
    """Names of the attributes a classifier may judge: held-out AUC >= ``JUDGE_MIN_AUC``. ``auc`` maps a name
    to an AUC or to ``FittedClassifier.auc``'s record ``{"auc": ...}``; entries without an AUC are left out."""
    out = []
    for name, v in auc.items():
        value = v.get("auc") if isinstance(v, dict) else v
        if value is not None and math.isfinite(value) and value >= JUDGE_MIN_AUC:
            out.append(name)
    return out


@dataclass
class FittedClassifier:
    """A trained ``AttributeClassifier`` (eval mode) with what it was trained for and how it scored.

    ``names``: the A attribute names, in logit order; ``config``: the ``ClassifierConfig``; ``val_auc``: name
    -> ROC AUC on the validation rows at the kept epoch (attributes without both classes there left out);
    ``size``: the image side S it takes; ``epoch``: the kept epoch; ``history``: one dict per epoch run;
    ``cache_fingerprint``: the fingerprint of the image cache it was trained on (None when trained on arrays), so
    a reader can tell a classifier of an earlier cache (``prepare --overwrite``) from the current one.
    """

    model: AttributeClassifier
    names: list[str]
    config: ClassifierConfig
    val_auc: dict[str, float]
    size: int = 0
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    cache_fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _apply(self, images, batch: int, what: str) -> np.ndarray:
        s = _check_images(images)
        if s != self.size:
            raise ValueError(f"images must be {self.size}x{self.size} (the classifier's training size), got {s}x{s}")
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        dev = self.device
        prec = resolve_precision(self.config.precision, dev)
        self.model.eval()
        width = self.config.features_dim if what == "features" else len(self.names)
        n = int(images.shape[0])
        out = np.empty((n, width), np.float32)
        for i in range(0, n, batch):
            # writable: torch.from_numpy warns on (and must not alias) a read-only caller's array
            x = to_input(np.require(images[i : i + batch], requirements=('C', 'W')), dev, self.config.channels_last)
            with prec.autocast():
                y = self.model.features(x) if what == "features" else self.model(x)
            y = y.float()
            out[i : i + len(x)] = (torch.sigmoid(y) if what == "probs" else y).cpu().numpy()
        return out

    def predict(self, images, batch: int = 256) -> np.ndarray:
        """Probabilities sigmoid(logits), float32 (N, A), of uint8 images (N, S, S, 3) (ndarray or Zarr)."""
        return self._apply(images, batch, "probs")

    def features(self, images, batch: int = 256) -> np.ndarray:
        """The penultimate layer, float32 (N, F), of uint8 images (N, S, S, 3): the space of
        ``engine.generation.quality.frechet_distance``."""
        return self._apply(images, batch, "features")

    def auc(self, images, labels) -> dict:
        """name -> ``{"auc", "ci95": [lo, hi], "n_pos", "n_neg"}`` on ``images`` (N, S, S, 3) uint8 and
        ``labels`` (N, A) in {1, 0, -1}, over the known labels of each attribute. AUC: sklearn
        ``roc_auc_score``; interval: DeLong's 95% normal interval (``delong_interval``), not a bootstrap; at
        perfect separation (AUC 0 or 1) its variance is 0 and the interval is the point, so read ``n_pos`` and
        ``n_neg`` with it. Attributes without both a positive and a negative known label are left out (no AUC
        exists)."""
        labels = _check_labels(labels, int(images.shape[0]), self.names)
        probs = self.predict(images)
        out = {}
        for a, name in enumerate(self.names):
            known = labels[:, a] >= 0
            y = labels[known, a]
            n_pos = int(y.sum())
            if n_pos == 0 or n_pos == len(y):
                continue
            _, lo, hi = delong_interval(y, probs[known, a])
            out[name] = {"auc": float(roc_auc_score(y, probs[known, a])), "ci95": [lo, hi], "n_pos": n_pos,
                         "n_neg": int(len(y) - n_pos)}
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Atomically, as tensors and plain values only (``save_checkpoint``): reads with weights_only=True."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint({"kind": CHECKPOINT_KIND, "model": state, "config": self.config.to_dict(),
                         "epoch": int(self.epoch), "names": [str(n) for n in self.names], "size": int(self.size),
                         "val_auc": {str(k): float(v) for k, v in self.val_auc.items()},
                         "history": [dict(h) for h in self.history],
                         **({"cache_fingerprint": str(self.cache_fingerprint)} if self.cache_fingerprint else {})}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "FittedClassifier":
        """The classifier saved at ``path`` (``read_checkpoint``: weights_only), in eval mode on ``device``."""
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        ckpt = read_checkpoint(path, "cpu")
        if ckpt.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not an attribute classifier (kind {ckpt.get('kind')!r}); it is written "
                                  f"by FittedClassifier.save")
        bad = nonfinite_weights(ckpt["model"])
        if bad:
            raise CheckpointError(f"{path} holds non-finite weights ({bad[0]} and {len(bad) - 1} more)")
        cfg = ClassifierConfig.from_dict(ckpt["config"])
        model = AttributeClassifier(len(ckpt["names"]), cfg)
        model.load_state_dict(ckpt["model"])
        model = model.to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(model.eval(), list(ckpt["names"]), cfg, dict(ckpt["val_auc"]), int(ckpt["size"]),
                   int(ckpt["epoch"]), list(ckpt.get("history", [])), ckpt.get("cache_fingerprint"))


def _held_out(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): a seeded ``fraction`` of ``train`` (at least one row) held out to validate."""
    rng = np.random.default_rng([seed, 1])
    n_val = max(1, int(round(fraction * len(train))))
    pick = np.zeros(len(train), bool)
    pick[rng.permutation(len(train))[:n_val]] = True
    return train[~pick], train[pick]


@torch.no_grad()
def _validate(model, feed: LabelledFeed, device, precision, channels_last, names) -> tuple[dict, float]:
    """(name -> AUC, masked BCE) over every row of ``feed`` in eval mode."""
    model.eval()
    probs, labs, loss_sum, known = [], [], 0.0, 0
    for images, labels in feed.epoch(0):
        x = to_input(images, device, channels_last)
        with precision.autocast():
            logits = model(x)
        lab = torch.from_numpy(labels).to(device)
        k = int((labels >= 0).sum())
        loss_sum += float(masked_bce(logits, lab)) * k
        known += k
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        labs.append(labels)
    probs, labs = np.concatenate(probs), np.concatenate(labs)
    return aucs(probs, labs, names), loss_sum / max(known, 1)


def train_classifier(images, labels, train_rows, val_rows, names, config: ClassifierConfig | None = None,
                     progress: bool = True) -> FittedClassifier:
    """Train an ``AttributeClassifier`` on ``images[train_rows]`` against ``labels[train_rows]``.

    images: uint8 (N, S, S, 3), a Zarr array (the run's ``images.zarr['images']``, streamed by ``BatchFeed``)
    or an ndarray; S in 32..96, a multiple of 16. labels: integer (N, A), 1 / 0 / -1 (unknown, no loss).
    train_rows, val_rows: row indices into images; rows with no known label are dropped from training (they
    add no loss). The epoch with the highest mean validation AUC (over attributes with both classes among
    ``val_rows``; the masked validation BCE when there are none) is kept (with few validation rows, the
    wandering AUCs of attributes the images do not show can decide it); training stops after
    ``config.patience`` epochs without improvement. Empty ``val_rows``: a seeded ``config.val_fraction`` of
    the train rows validates instead. Seeded: the same inputs and config give the same weights on CPU; the
    global torch RNG state is left as it was.
    """
    cfg = config or ClassifierConfig()
    size = _check_images(images)
    if size not in CLASSIFIER_SIZES:
        raise ValueError(f"images must be S x S with S one of {CLASSIFIER_SIZES} (four stride-2 stages), got {size}")
    names = list(names)
    if not names or any(not isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct strings, one per label column, got {names[:5]}...")
    n = int(images.shape[0])
    labels = _check_labels(labels, n, names)
    train = _check_rows(train_rows, n, "train_rows")
    val = _check_rows(val_rows, n, "val_rows")
    unlabelled = ~(labels[train] >= 0).any(axis=1)
    if unlabelled.any():
        logger.info("classifier: %d train rows without any known label left out", int(unlabelled.sum()))
        train = train[~unlabelled]
    if len(val) == 0:
        train, val = _held_out(train, cfg.val_fraction, cfg.seed)
        logger.info("classifier: no validation rows given: %d of the train rows validate", len(val))
    overlap = np.intersect1d(train, val)
    if len(overlap):
        logger.warning("classifier: %d rows are both train and validation rows: the kept epoch and val_auc are "
                       "optimistic (pass no val_rows to hold out config.val_fraction of the train rows)", len(overlap))
    if len(train) < 2:
        raise ValueError(f"train_rows must hold at least 2 rows with a known label (batch norm), got {len(train)}")

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    batch = min(cfg.batch_size, len(train))
    feed = LabelledFeed(images, labels, train, batch, seed=cfg.seed, in_memory=cfg.in_memory)
    val_batch = cfg.batch_size * (4 if device.type == "cuda" else 1)  # no gradients: larger batches fit
    val_feed = LabelledFeed(images, labels, val, val_batch, shuffle=False, drop_last=False, in_memory=cfg.in_memory)
    logger.info("classifier: %d attributes, %d train and %d validation images of %d px, device %s, precision %s, "
                "data %s", len(names), len(train), len(val), size, device, precision.name,
                "in memory" if feed.images.in_memory else "streamed from the cache")

    # forked so that seeding here leaves the caller's random stream alone
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        return _fit(feed, val_feed, names, cfg, size, device, precision, progress)


def _fit(feed: LabelledFeed, val_feed: LabelledFeed, names: list[str], cfg: ClassifierConfig, size: int, device,
         precision, progress: bool) -> FittedClassifier:
    model = AttributeClassifier(len(names), cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(cfg.epochs * len(feed), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    scaler = precision.scaler()
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    best, best_score, best_epoch, stale, history = None, -math.inf, 0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum, seen = torch.zeros((), device=device), 0
        bar = tqdm(feed.epoch(epoch), total=len(feed), desc=f"classifier epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=None if progress else True, leave=False)
        for step, (images, labels) in enumerate(bar):
            x = to_input(images, device, cfg.channels_last)
            if cfg.flip:
                x = _flip(x, gen)
            lab = torch.from_numpy(labels).to(device, non_blocking=True)
            with precision.autocast():
                logits = model(x)
            loss = masked_bce(logits, lab)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.detach() * len(images)
            seen += len(images)
            if progress and step % cfg.log_every == 0:  # .item() syncs the device: only at log intervals
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                                refresh=False)
        bar.close()
        train_loss = float(loss_sum.item()) / max(seen, 1)
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise ValueError(f"classifier training diverged: loss {train_loss} in epoch {epoch}; lower lr "
                             f"(now {cfg.lr})")
        val_auc, val_loss = _validate(model, val_feed, device, precision, cfg.channels_last, names)
        score = float(np.mean(list(val_auc.values()))) if val_auc else -val_loss
        score = score if math.isfinite(score) else -math.inf  # a NaN validation never wins, nor blocks a later epoch
        improved = best is None or score > best_score
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_mean_auc": float(np.mean(list(val_auc.values()))) if val_auc else None,
                        "images_per_second": seen / seconds, "seconds": seconds, "best": improved})
        logger.info("classifier epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUC %s, %.0f img/s%s", epoch,
                    cfg.epochs, train_loss, val_loss, f"{score:.4f}" if val_auc else "-", seen / seconds,
                    " (best)" if improved else "")
        if improved:
            best, best_score, best_epoch, best_auc, stale = copy.deepcopy(model.state_dict()), score, epoch, val_auc, 0
        else:
            stale += 1
            if cfg.patience is not None and stale >= cfg.patience:
                logger.info("classifier: no better validation AUC for %d epochs: stopping", stale)
                break
    model.load_state_dict(best)
    return FittedClassifier(model.eval(), names, cfg, best_auc, size, best_epoch, history)
