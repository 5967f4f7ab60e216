"""zspace run: every stage in order, and a second run skips the finished ones."""

from __future__ import annotations

import json

import numpy as np

from engine.pipeline import run
from engine.store import open_latents
from engine.train import load_checkpoint


def test_run_end_to_end_then_skip(tmp_path, caplog):
    out = run(tmp_path, source="synthetic:120", epochs=1, device="cpu", progress=False)
    assert set(out["seconds"]) == {"prepare", "train", "encode", "stats"}
    z = open_latents(tmp_path)["z"][:]
    assert z.shape == (120, 256) and np.isfinite(z).all()
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["n"] == 120 and stats["pca"]["rank"] <= 119, "fewer points than dimensions: a rank-deficient cloud"
    assert len(stats["figures"]) == 7
    _, first = load_checkpoint(tmp_path / "checkpoints" / "last.pt")

    caplog.set_level("INFO")
    run(tmp_path, source="synthetic:120", epochs=1, device="cpu", progress=False)
    said = caplog.text
    assert "images.zarr is complete" in said and "training already finished" in said and "nothing to do" in said
    _, again = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert again["epoch"] == first["epoch"] == 1
