"""Bringing your own latents: formats, and the errors bad files give."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import cli
from engine.latents.importer import import_latents
from engine.latents.store import LatentsError, open_latents


@pytest.fixture
def z():
    return np.random.default_rng(0).normal(size=(500, 7)).astype(np.float64)


@pytest.mark.parametrize("fmt", ["npy", "npz", "zarr-array", "zarr-group"])
def test_formats_round_trip(tmp_path, z, fmt):
    if fmt == "npy":
        f = tmp_path / "z.npy"
        np.save(f, z)
    elif fmt == "npz":
        f = tmp_path / "z.npz"
        np.savez(f, other=np.zeros(3), z=z)
    elif fmt == "zarr-array":
        f = tmp_path / "z.zarr"
        zarr.create_array(f, shape=z.shape, dtype="float64", chunks=(64, 7))[:] = z
    else:
        f = tmp_path / "g.zarr"
        g = zarr.open_group(f, mode="w")
        g.create_array("z", shape=z.shape, dtype="float64", chunks=(100, 7))[:] = z
    attrs = import_latents(f, tmp_path / "run", progress=False)
    g = open_latents(tmp_path / "run")
    assert g["z"].dtype == np.float32 and attrs["n"] == 500 and attrs["z_dim"] == 7
    np.testing.assert_array_equal(g["z"][:], z.astype(np.float32))
    assert g["ids"][:3].tolist() == ["0", "1", "2"]


def test_wrong_rank_and_dtype_name_file_and_shape(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2)))
    with pytest.raises(LatentsError, match=r"cube.npy.*shape \(4, 3, 2\).*rank 3"):
        import_latents(tmp_path / "cube.npy", tmp_path / "run")
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(LatentsError, match=r"text.npy.*numeric.*<U1"):
        import_latents(tmp_path / "text.npy", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        import_latents(tmp_path / "missing.npy", tmp_path / "run")
    (tmp_path / "z.csv").write_text("1,2\n")
    with pytest.raises(LatentsError, match=r"\.npy, \.npz or \.zarr"):
        import_latents(tmp_path / "z.csv", tmp_path / "run")


def test_nonfinite_rows_error_or_dropped(tmp_path, z):
    z[37, 2] = np.nan
    z[200, 0] = np.inf
    np.save(tmp_path / "bad.npy", z)
    with pytest.raises(LatentsError, match=r"bad.npy: shape \(500, 7\): row 37 holds non-finite"):
        import_latents(tmp_path / "bad.npy", tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "latents.zarr").exists(), "a failed import leaves nothing behind"
    attrs = import_latents(tmp_path / "bad.npy", tmp_path / "run", drop_nonfinite=True, progress=False)
    assert attrs["dropped_nonfinite"] == 2 and attrs["dropped_rows"] == [37, 200] and attrs["n"] == 498
    g = open_latents(tmp_path / "run")
    keep = np.ones(500, bool)
    keep[[37, 200]] = False
    np.testing.assert_array_equal(g["z"][:], z[keep].astype(np.float32))
    assert "37" not in g["ids"][:].tolist()
    with pytest.raises(ValueError, match="--overwrite"):
        import_latents(tmp_path / "bad.npy", tmp_path / "run", drop_nonfinite=True)


def test_cli_import_error_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros(5))
    assert cli.main(["import-latents", str(tmp_path / "v.npy"), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "shape (5,)" in err and "Traceback" not in err
