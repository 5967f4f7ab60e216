"""Training: outputs, resume equals an uninterrupted run, guard rails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data.feed import BatchFeed
from engine.data.imagecache import open_cache, prepare
from engine.model.autoencoder import ModelConfig
from engine.model.checkpoint import load_checkpoint
from engine.model.train import TrainConfig, train

TINY = ModelConfig(size=32, z_dim=8, widths=(4, 8, 8, 8))


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    prepare("synthetic:160", run, size=32, workers=1, progress=False)
    return run


def cfg(**kw):
    base = dict(epochs=2, batch_size=16, device="cpu", seed=3, grid_images=4)
    base.update(kw)
    return TrainConfig(**base)


def copy_cache(src, dst):
    import shutil

    shutil.copytree(src / "images.zarr", dst / "images.zarr")


def test_outputs(cache_run, tmp_path):
    copy_cache(cache_run, tmp_path)
    last = train(tmp_path, cfg(), TINY, progress=False)
    assert last["epoch"] == 2 and np.isfinite(last["val_loss"]) and last["images_per_second"] > 0
    log = [json.loads(l) for l in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    assert {"train_loss", "val_loss", "images_per_second", "seconds"} <= set(log[0])
    for name in ("recon_e001.png", "recon_e002.png", "loss.png"):
        assert Image.open(tmp_path / "train" / name).size[0] > 0
    grid = Image.open(tmp_path / "train" / "recon_e002.png")
    assert grid.size == (2 * (4 * 34 + 2), 2 * (2 * 34 + 2)), "4 originals over 4 reconstructions, 2x scale"
    model, ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scaler", "rng", "config"}
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert json.loads((tmp_path / "train" / "config.json").read_text())["train"]["batch_size"] == 16


def test_resume_equals_uninterrupted(cache_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        copy_cache(cache_run, d)
    full = train(a, cfg(epochs=3), TINY, progress=False)
    train(b, cfg(epochs=1), TINY, progress=False)
    resumed = train(b, cfg(epochs=3), resume=True, progress=False)
    ma, _ = load_checkpoint(a / "checkpoints" / "last.pt")
    mb, _ = load_checkpoint(b / "checkpoints" / "last.pt")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), f"{k} differs after resume: max |diff| {(va.float() - vb.float()).abs().max():.3g}"
    assert resumed["val_loss"] == full["val_loss"]
    log = (b / "train" / "log.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in log] == [1, 2, 3]
    # a finished run with --resume does no more work
    assert train(b, cfg(epochs=3), resume=True, progress=False)["epoch"] == 3


def test_existing_checkpoints_are_protected(cache_run, tmp_path):
    copy_cache(cache_run, tmp_path)
    train(tmp_path, cfg(epochs=1), TINY, progress=False)
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        train(tmp_path, cfg(epochs=1), TINY, progress=False)
    train(tmp_path, cfg(epochs=1, loss="mse"), TINY, overwrite=True, progress=False)


def test_bad_config():
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="l1")
    with pytest.raises(ValueError, match="unknown train config keys"):
        TrainConfig.from_dict({"epoch": 3})


def test_feed_streamed_equals_in_memory_as_a_set(cache_run):
    images = open_cache(cache_run)["images"]
    rows = np.flatnonzero(open_cache(cache_run)["split"][:] == 0)
    mem = BatchFeed(images, rows, 16, seed=1, in_memory=True)
    stream = BatchFeed(images, rows, 16, seed=1, in_memory=False, block_chunks=1)
    for feed in (mem, stream):
        batches = list(feed.epoch(0))
        assert len(batches) == len(feed) == len(rows) // 16
        assert all(b.shape == (16, 32, 32, 3) and b.dtype == np.uint8 for b in batches)
    # every epoch covers distinct rows; orders differ across epochs, repeat for the same epoch
    expect = {images[int(r)].tobytes() for r in rows}
    for feed in (mem, stream):
        got = [img.tobytes() for b in feed.epoch(5) for img in b]
        assert len(set(got)) == len(got) and set(got) <= expect
    first = lambda f, e: next(iter(f.epoch(e))).tobytes()
    assert first(mem, 1) == first(mem, 1) != first(mem, 2)
    assert first(stream, 1) == first(stream, 1)


def test_bf16_autocast_on_cpu_when_asked(cache_run, tmp_path):
    copy_cache(cache_run, tmp_path)
    last = train(tmp_path, cfg(epochs=1, precision="bf16"), TINY, progress=False)
    saved = json.loads((tmp_path / "train" / "config.json").read_text())
    assert saved["precision"] == "bf16" and saved["device"] == "cpu"
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["val_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_cuda_mixed_precision(cache_run, tmp_path, precision):
    copy_cache(cache_run, tmp_path)
    last = train(tmp_path, cfg(epochs=2, device="cuda", precision=precision), TINY, progress=False)
    saved = json.loads((tmp_path / "train" / "config.json").read_text())
    expect = "fp16" if precision == "fp16" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert saved["precision"] == expect and saved["channels_last"]
    assert np.isfinite(last["val_loss"])
    _, ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ("scale" in ckpt["scaler"]) == (expect == "fp16"), "a GradScaler runs exactly for fp16"
