"""Shared fixtures: small on-disk data sets in the layouts users bring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
CELEBA_SUBSET = SHARED_DATA / "celeba-subset"


def requires_celeba():
    return pytest.mark.skipif(
        not (CELEBA_SUBSET / "img_align_celeba").is_dir(),
        reason=f"real CelebA subset not found at {CELEBA_SUBSET} (../shared/data is absent on a user's clone)",
    )


def fake_photo(rng: np.random.Generator, w: int = 178, h: int = 218) -> np.ndarray:
    """A smooth random RGB picture (compresses like a photo, unlike white noise)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(0.5, 3.0, 3)
        img[..., c] = 0.5 + 0.5 * np.sin(a * 6 * xx + b * 4 * yy + f)
    return (img * 255).astype(np.uint8)


@pytest.fixture
def celeba_root(tmp_path) -> Path:
    """A CelebA root with 20 JPEGs; the partition and identity files list 25 rows (5 without an image)."""
    root = tmp_path / "celeba"
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines_p, lines_i = [], []
    for k in range(1, 26):
        name = f"{k:06d}.jpg"
        if k <= 20:
            Image.fromarray(fake_photo(rng)).save(folder / name, quality=90)
        lines_p.append(f"{name} {0 if k <= 12 else 1 if k <= 16 else 2}")
        lines_i.append(f"{name} {100 + k % 4}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines_p) + "\n")
    (root / "identity_CelebA.txt").write_text("\n".join(lines_i) + "\n")
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run with a cache of 300 synthetic faces, a 2-epoch model and its latents (a few seconds on CPU)."""
    from engine.data.imagecache import prepare
    from engine.model.autoencoder import ModelConfig
    from engine.model.encode import encode
    from engine.model.train import TrainConfig, train

    run = tmp_path_factory.mktemp("trained_run")
    prepare("synthetic:300", run, size=64, workers=1, progress=False)
    train(run, TrainConfig(epochs=2, batch_size=32, device="cpu"), ModelConfig(size=64, z_dim=32), progress=False)
    encode(run, device="cpu", progress=False)
    return run


@pytest.fixture
def trained_copy(trained_run, tmp_path) -> Path:
    """A copy of ``trained_run`` (cache, checkpoints, latents) that a test may change or damage."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("generate", "facemap", "report"))
    return run


TINY = dict(source="synthetic:240", size=32, z_dim=16, epochs=1, batch_size=32, k=8, tsne_n=200, compare_n=40, facemap_n=40)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """``zspace run`` through every stage, report included, on 240 synthetic 32 px faces (under a minute on CPU)."""
    from engine.pipeline import run

    path = tmp_path_factory.mktemp("finished_run")
    run(path, quick=True, device="cpu", progress=False, **TINY)
    return path
