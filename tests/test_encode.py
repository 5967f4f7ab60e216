"""Encoding: equals a one-shot forward pass, chunking contract, resume, end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

import cli
from engine.data.imagecache import open_cache, prepare
from engine.latents.store import open_latents
from engine.model import encode as encode_mod
from engine.model.autoencoder import ModelConfig
from engine.model.checkpoint import load_checkpoint
from engine.model.encode import chunk_rows, encode, file_sha256
from engine.model.train import TrainConfig, train


@pytest.fixture(scope="module")
def small_model_run(tmp_path_factory):
    """A 32 px cache with a 1-epoch model and no latents yet (conftest's ``trained_run`` has latents)."""
    run = tmp_path_factory.mktemp("enc") / "run"
    prepare("synthetic:300", run, size=32, workers=1, progress=False)
    train(run, TrainConfig(epochs=1, batch_size=32, device="cpu", grid_images=2),
          ModelConfig(size=32, z_dim=16, widths=(4, 8, 8, 8)), progress=False)
    return run


def one_shot(run):
    model, _ = load_checkpoint(run / "checkpoints" / "best.pt")
    x = torch.from_numpy(open_cache(run)["images"][:]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = model.encode(x)
        mse = ((model.decode(z) - x) ** 2).flatten(1).mean(1)
    return z.numpy(), mse.numpy()


def test_encode_equals_one_shot_forward(small_model_run, monkeypatch):
    monkeypatch.setattr(encode_mod, "chunk_rows", lambda d: 256)  # several blocks for 300 rows
    attrs = encode(small_model_run, batch_size=100, device="cpu", progress=False)
    g = open_latents(small_model_run)
    z_ref, mse_ref = one_shot(small_model_run)
    np.testing.assert_allclose(g["z"][:], z_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g["recon_mse"][:], mse_ref, rtol=1e-4, atol=1e-6)
    cache = open_cache(small_model_run)
    assert g["ids"][:].tolist() == cache["ids"][:].tolist()
    np.testing.assert_array_equal(g["split"][:], cache["split"][:])
    assert attrs["z_dim"] == 16 and attrs["checkpoint_sha256"] == file_sha256(small_model_run / "checkpoints" / "best.pt")
    assert attrs["source"]["spec"] == "synthetic:300" and attrs["size"] == 32 and "crop" in attrs


def test_chunks_are_at_least_one_megabyte():
    for d in (2, 16, 256, 512, 4096):
        assert chunk_rows(d) * d * 4 >= 1 << 20, d
    assert chunk_rows(256) * 256 * 4 == 4 << 20


def test_interrupted_encode_resumes(small_model_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_model_run / "images.zarr", run / "images.zarr")
    shutil.copytree(small_model_run / "checkpoints", run / "checkpoints")
    monkeypatch.setattr(encode_mod, "chunk_rows", lambda d: 128)
    calls = []
    real = encode_mod.to_input

    def failing(batch, *a):
        calls.append(len(batch))
        if len(calls) == 2:  # second block
            raise KeyboardInterrupt
        return real(batch, *a)

    monkeypatch.setattr(encode_mod, "to_input", failing)
    with pytest.raises(KeyboardInterrupt):
        encode(run, batch_size=128, device="cpu", progress=False)
    g = zarr.open_group(run / "latents.zarr", mode="r")
    assert g.attrs["chunks_done"] == [0] and not g.attrs["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        open_latents(run)
    calls.clear()
    monkeypatch.setattr(encode_mod, "to_input", lambda b, *a: (calls.append(len(b)), real(b, *a))[1])
    encode(run, batch_size=128, device="cpu", progress=False)
    assert calls == [128, 44], "resume encodes only the rows not yet written"
    z_ref, _ = one_shot(run)
    np.testing.assert_allclose(open_latents(run)["z"][:], z_ref, rtol=1e-5, atol=1e-5)
    calls.clear()
    encode(run, batch_size=128, device="cpu", progress=False)
    assert calls == [], "a complete store is not encoded again"


def test_end_to_end_through_the_cli(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["-q", "prepare", "synthetic:96", "--run", run, "--size", "32", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["images"] == 96
    assert cli.main(["-q", "train", "--run", run, "--epochs", "1", "--batch-size", "16",
                     "--z-dim", "8", "--widths", "4,8,8,8", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli.main(["-q", "encode", "--run", run]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 96 and out["z_dim"] == 8
    z = open_latents(run)["z"][:]
    assert z.shape == (96, 8) and np.isfinite(z).all() and z.std(0).min() > 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["prepare", str(tmp_path / "missing"), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error: source" in err and "missing" in err and "Traceback" not in err
    assert cli.main(["encode", "--run", str(tmp_path / "r")]) == 2
    assert "zspace prepare" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["prepare", "synthetic:5", "--run", str(tmp_path / "r"), "--size", "-3"])
