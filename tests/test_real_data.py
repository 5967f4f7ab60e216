"""prepare -> train -> encode on real CelebA images (skipped where ../shared/data is absent)."""

from __future__ import annotations

import numpy as np

from engine.data.imagecache import open_cache, prepare
from engine.latents.store import open_latents
from engine.model.autoencoder import ModelConfig
from engine.model.encode import encode
from engine.model.train import TrainConfig, train
from tests.conftest import CELEBA_SUBSET, requires_celeba


@requires_celeba()
def test_real_images_end_to_end(tmp_path):
    attrs = prepare(CELEBA_SUBSET, tmp_path, size=32, limit=400, workers=2, progress=False)
    assert attrs["counts"]["images"] == 400 and attrs["counts"]["skipped"] == 0
    assert attrs["counts"]["train"] > attrs["counts"]["validation"] > 0 and attrs["counts"]["test"] > 0
    images = open_cache(tmp_path)["images"][:]
    # real photos: every image has contrast, and they differ from each other
    assert images.reshape(400, -1).std(1).min() > 5
    log = [train(tmp_path, TrainConfig(epochs=e, batch_size=16, lr=2e-3, device="cpu", grid_images=4),
                 ModelConfig(size=32, z_dim=32, widths=(8, 16, 16, 16)), resume=e > 1, progress=False)
           for e in (1, 4)]
    assert log[1]["val_loss"] < log[0]["val_loss"] - 0.005, f"validation loss did not fall: {log}"
    encode(tmp_path, device="cpu", progress=False)
    g = open_latents(tmp_path)
    assert g["z"].shape == (400, 32) and np.isfinite(g["z"][:]).all()
    assert g["ids"][:].tolist() == open_cache(tmp_path)["ids"][:].tolist()
