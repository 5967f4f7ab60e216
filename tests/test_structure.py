"""zspace structure: a multivariate normal is no different from its null; a cloud of filaments is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from engine.analysis.structure import StructureConfig, compute_structure
from engine.latents.importer import import_latents


def store(tmp_path, z):
    np.save(tmp_path / "z.npy", z.astype(np.float32))
    import_latents(tmp_path / "z.npy", tmp_path, progress=False)


def test_normal_cloud_gives_no_difference(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    store(tmp_path, rng.normal(size=(6000, 16)) @ a + 3.0)
    res = compute_structure(tmp_path, StructureConfig(k=10, bootstrap=50), progress=False)
    flagged = [s["verdict"] for s in res["statistics"].values() if s["differs"]]
    assert not flagged, flagged
    for s in res["statistics"].values():
        assert "no difference from the null" in s["verdict"]
    saved = json.loads((tmp_path / "structure" / "structure.json").read_text())
    assert set(saved["statistics"]) == set(res["statistics"])
    g = zarr.open_group(tmp_path / "latents.zarr", mode="r")
    assert g["local_dim"].shape == (6000,) and g["knn_indices"].shape == (6000, 90)
    assert np.isfinite(g["local_dim"][:]).all()
    # plane views: only PC1 x PC2 exists in 16-D (PC18, PC35 do not), plus the two widest components
    assert [p["plane"].split(" (")[0] for p in res["planes"]][0] == "PC1 x PC2" and len(res["planes"]) == 2
    for p in res["planes"]:
        w5 = p["windows"][0]
        assert w5["side"] == 5 and abs(w5["empty_share_data"] - w5["empty_share_null"]) < 0.05, p
    assert all((tmp_path / "structure" / f).exists() for f in res["figures"])


def test_occupied_region_is_the_95_percent_ellipse():
    from engine.analysis.planes import occupied_mask

    share = occupied_mask(np.eye(2), side=10.0, bins=400).mean()
    assert share == pytest.approx(np.pi * 5.991 / 100, abs=0.003)
    wide = occupied_mask(np.diag([4.0, 1.0]), side=20.0, bins=400).mean()
    assert wide == pytest.approx(np.pi * 2 * 5.991 / 400, abs=0.003), "area scales with sqrt(det)"


def test_filaments_differ_from_the_null(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, size=(6000, 1))
    dirs = rng.normal(size=(30, 16))  # 30 thin straight filaments through a common region
    which = rng.integers(0, 30, 6000)
    z = (t - 0.5) * 8 * dirs[which] + 0.02 * rng.normal(size=(6000, 16))
    store(tmp_path, z)
    res = compute_structure(tmp_path, StructureConfig(k=10, bootstrap=50), progress=False)
    st = res["statistics"]
    assert st["local_linearity"]["differs"] and st["local_linearity"]["data"] > st["local_linearity"]["null"]
    assert st["twonn_dimension"]["differs"] and st["twonn_dimension"]["data"] < st["twonn_dimension"]["null"] / 3
    assert st["void_ratio"]["differs"] and st["void_ratio"]["data"] > st["void_ratio"]["null"]


def test_sample_and_approximate_index(tmp_path):
    rng = np.random.default_rng(2)
    store(tmp_path, rng.normal(size=(3000, 8)))
    res = compute_structure(tmp_path, StructureConfig(k=8, index="hnsw", sample=1500, bootstrap=20), progress=False)
    assert res["sampled"] and res["n"] == 1500
    assert 0.5 < res["recall_at_k"]["data"] <= 1.0
    g = zarr.open_group(tmp_path / "latents.zarr", mode="r")
    ld = g["local_dim"][:]
    assert np.isfinite(ld).sum() == 1500 and g["knn_indices"][:].max() < 3000


def test_bad_config():
    with pytest.raises(ValueError, match="k must be >= 3"):
        StructureConfig(k=2)


def test_planted_curve_and_blob(tmp_path):
    """A helix (1-D) and a 10-D Gaussian blob, both rotated into 64-D, far apart."""
    rng = np.random.default_rng(4)
    t = rng.uniform(0, 4 * np.pi, 2000)
    curve = np.zeros((2000, 64))
    curve[:, 0], curve[:, 1], curve[:, 2] = np.cos(t), np.sin(t), 0.3 * t
    blob = np.zeros((5000, 64))
    blob[:, :10] = rng.normal(size=(5000, 10))
    rot, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    z = np.concatenate([curve * 3, blob + 40.0]) @ rot
    store(tmp_path, z)
    compute_structure(tmp_path, StructureConfig(k=16, bootstrap=20), progress=False)
    g = zarr.open_group(tmp_path / "latents.zarr", mode="r")
    ld = g["local_dim"][:]
    on_curve, on_blob = float(np.median(ld[:2000])), float(np.median(ld[2000:]))
    assert on_curve < 1.5, on_curve
    assert 8.0 < on_blob < 12.0, on_blob
    from kernels.intrinsic import twonn_dimension

    d = g["knn_distances"][2000:].astype(np.float64)
    assert abs(twonn_dimension(d[:, 0], d[:, 1]) - 10) < 1.5
