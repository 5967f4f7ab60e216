"""Stores that can be verified: a missing chunk is never read as zeros; `zspace verify` says what is damaged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from cli import main
from engine.analysis.stats import compute_stats
from engine.data.imagecache import open_cache, prepare
from engine.latents.store import open_latents
from engine.model.encode import encode
from engine.stores import StoreDamaged


@pytest.fixture
def own_run(trained_run, tmp_path):
    """A copy of the session's trained run (300 synthetic faces at 64 px, 256-row chunks) to damage."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_a_missing_image_chunk_is_named_by_every_reader_and_prepare_overwrite_rebuilds_it(own_run, capsys):
    (own_run / "images.zarr" / "images" / "c" / "1" / "0" / "0" / "0").unlink()  # rows 256..299
    with pytest.raises(StoreDamaged, match=r"images.zarr: array 'images' lacks 1 chunk\(s\), rows 256..299"):
        open_cache(own_run)
    assert main(["train", "--run", str(own_run), "--resume", "--device", "cpu"]) == 2
    assert "rows 256..299" in capsys.readouterr().err
    with pytest.raises(StoreDamaged, match="--overwrite"):
        prepare("synthetic:300", own_run, size=64, workers=1, progress=False)
    prepare("synthetic:300", own_run, size=64, workers=1, overwrite=True, progress=False)
    images = open_cache(own_run)["images"]
    from engine.data.synthetic import render_block

    np.testing.assert_array_equal(images[256:300], render_block(256, 300, size=64))


def test_a_missing_latent_chunk_reads_as_nan_and_stats_refuses_it(own_run):
    z = zarr.open_group(own_run / "latents.zarr")["z"]
    before = z[:]
    (own_run / "latents.zarr" / "z" / "c" / "0" / "0").unlink()
    assert np.isnan(zarr.open_group(own_run / "latents.zarr")["z"][:5]).all()  # never zeros
    with pytest.raises(StoreDamaged, match=r"latents.zarr: array 'z' lacks 1 chunk\(s\), rows 0..299"):
        compute_stats(own_run, progress=False)
    encode(own_run, device="cpu", progress=False)  # the same checkpoint rebuilds what is missing
    np.testing.assert_array_equal(open_latents(own_run)["z"][:], before)


def test_verify_lists_what_is_damaged_and_the_command_that_rebuilds_it(own_run, capsys):
    assert main(["verify", "--run", str(own_run)]) == 0
    out = capsys.readouterr().out
    assert "ok       images.zarr" in out and "ok       latents.zarr" in out and "DAMAGED" not in out
    (own_run / "latents.zarr" / "z" / "c" / "0" / "0").unlink()
    (own_run / "checkpoints" / "best.pt").write_bytes(b"")
    assert main(["verify", "--run", str(own_run)]) == 1
    lines = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["latents.zarr"].startswith("DAMAGED") and "zspace encode --run" in lines["latents.zarr"]
    assert lines["checkpoints/best.pt"].startswith("DAMAGED") and "last.pt" in lines["checkpoints/best.pt"]
    assert lines["images.zarr"].startswith("ok") and lines["checkpoints/last.pt"].startswith("ok")


def test_garbage_metadata_is_one_line_naming_the_store(own_run, capsys):
    (own_run / "images.zarr" / "zarr.json").write_text("not json at all")
    assert main(["train", "--run", str(own_run), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "images.zarr cannot be read" in err and "prepare" in err, err


def test_a_prepare_that_read_nothing_says_so_later(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        (folder / f"broken{k}.jpg").write_bytes(b"not a jpeg")
    assert main(["prepare", str(folder), "--run", str(tmp_path / "run"), "--size", "32", "--workers", "1"]) == 2
    capsys.readouterr()
    assert main(["train", "--run", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds no image" in err and "interrupted" not in err, err
