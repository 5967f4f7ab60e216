"""The face-map experiment against planted decoders whose answer is known, measured with plain numpy / sklearn."""

import json

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from engine.data.synthetic import render_block
from engine.generation.config import FacemapConfig
from engine.generation.facemap import DEPTH_FAMILIES, FAMILIES, SWEEPS, face_map
from engine.generation.judge import detect

SIZE = 64


@pytest.fixture(scope="module")
def cloud():
    """3,000 training latents of a 24-D normal with unequal widths, and the images a planted decoder draws."""
    rng = np.random.default_rng(0)
    zt = (rng.standard_normal((3000, 24)) * np.linspace(2.0, 0.5, 24) + 0.3).astype(np.float32)
    faces = render_block(0, 40, SIZE)
    face = faces[np.flatnonzero(detect(faces))[0]]  # a synthetic face the judge finds
    blank = np.full((SIZE, SIZE, 3), 128, np.uint8)  # a flat grey field: no face
    assert detect(face[None])[0] and not detect(blank[None])[0]
    # independent references: the Mahalanobis radius under np.cov, nearest distances by sklearn
    mean, prec = zt.astype(np.float64).mean(0), np.linalg.inv(np.cov(zt.astype(np.float64).T))
    radius = lambda z: np.sqrt(np.einsum("ij,jk,ik->i", z - mean, prec, z - mean))  # noqa: E731
    nn = NearestNeighbors(n_neighbors=1).fit(zt)
    d_self, _ = NearestNeighbors(n_neighbors=2).fit(zt).kneighbors(zt)
    return {"zt": zt, "face": face, "blank": blank, "radius": radius, "median_radius": np.median(radius(zt)),
            "nearest": lambda z: nn.kneighbors(np.asarray(z, np.float32))[0][:, 0], "nn_typical": np.median(d_self[:, 1])}


def _draw(cloud, is_face: np.ndarray) -> np.ndarray:
    return np.where(is_face[:, None, None, None], cloud["face"][None], cloud["blank"][None])


CFG = FacemapConfig(n=400, axes=4, bootstrap=40, strip=3, seed=1)


@pytest.fixture(scope="module")
def near_data(cloud):
    """A decoder that draws a face exactly when z lies within 0.5 typical neighbour distances of a training latent."""
    decode = lambda z: _draw(cloud, cloud["nearest"](z) < 0.5 * cloud["nn_typical"])  # noqa: E731
    return face_map(cloud["zt"], decode, CFG, progress=False)


@pytest.fixture(scope="module")
def in_region(cloud):
    """A decoder that draws a face whenever the Mahalanobis radius is below 1.45 x the data's median."""
    decode = lambda z: _draw(cloud, cloud["radius"](z.astype(np.float64)) < 1.45 * cloud["median_radius"])  # noqa: E731
    return face_map(cloud["zt"], decode, CFG, progress=False)


def test_voids_decoder_makes_the_verdict_voids(near_data):
    result, arrays = near_data
    v = result["verdict"]
    assert v["voids_matter"] and not v["region_matters"], v["sentence"]
    assert v["explains"] == "the voids"
    assert v["shallowest"]["rate"] > 0.2 and v["deepest"]["rate"] == 0
    assert result["logistic"]["coef"][1] < 0  # deeper: fewer faces
    assert result["logistic"]["coef_ci95"][1][1] < 0
    json.dumps(result)  # the result is plain JSON


def test_region_decoder_makes_the_verdict_region(in_region):
    result, _ = in_region
    v = result["verdict"]
    assert result["depth"]["families"]["normal"]["all"]["rate"] == 1  # every depth probe sits at radius 1 < 1.45
    assert v["region_matters"] and not v["voids_matter"], v["sentence"]
    assert v["explains"] == "the radius/correlation structure"
    assert v["region_ends"] == pytest.approx(1.5)  # the first radius swept beyond the planted edge at 1.45
    assert not v["hole_at_centre"]
    assert result["logistic"]["coef"][0] < 0  # farther out: fewer faces
    rates = {s["r"]: s["rate"] for s in result["sweep"]["sweep_random"]}
    assert all(rates[r] == 1 for r in rates if 0 < r < 1.45) and all(rates[r] == 0 for r in rates if r > 1.55)


def test_probes_have_their_stated_radii_and_depths(cloud, near_data):
    result, a = near_data
    z = a["z"].astype(np.float64)
    measured = cloud["radius"](z) / cloud["median_radius"]
    # sweeps at their stated radius; every depth probe at the median radius (float32 rounding aside)
    np.testing.assert_allclose(measured, a["stated_radius"], rtol=1e-6, atol=1e-6)  # measured: 5.5e-8 at most
    assert set(np.unique(a["family"])) == set(range(len(FAMILIES)))
    depth = cloud["nearest"](a["z"]) / cloud["nn_typical"]
    # FAISS's |x|^2 + |y|^2 - 2 x.y loses digits for near-zero distances: an absolute tolerance beside the relative
    tol = 5e-3
    assert np.allclose(depth, a["depth"], rtol=1e-4, atol=tol)
    edges = np.array(result["depth"]["edges"])
    in_depth = a["family"] >= len(SWEEPS)
    b = a["depth_bin"][in_depth]
    d = depth[in_depth]
    assert np.all(d >= edges[b] - tol) and np.all(d <= edges[b + 1] + tol)
    assert sum(p["n"] for p in result["depth"]["pooled"]) == len(DEPTH_FAMILIES) * CFG.n
    # the probe families span the depths: the toward family starts at the data itself and reaches the normal's
    # depths; midpoints of near pairs lie shallower than those of random pairs
    q = {k: f["depth_quantiles"] for k, f in result["depth"]["families"].items()}
    assert q["toward"][0] < 0.25 and q["toward"][4] > q["normal"][2]
    assert q["midpoint_near"][2] < q["midpoint_far"][2]


def test_facemap_stage_on_a_trained_run(trained_run):
    from engine.generation.facemap import facemap

    res = facemap(trained_run, n=60, device="cpu", progress=False, config=FacemapConfig(n=60, bootstrap=10, strip=2))
    out = trained_run / "facemap"
    saved = json.loads((out / "facemap.json").read_text())
    assert list(saved)[0] == "rule"  # the rule stands before the numbers
    assert saved["verdict"]["explains"] in ("the radius/correlation structure", "the voids", "both", "neither")
    for f in res["figures"].values():
        assert (out / f).stat().st_size > 5000
    probes = np.load(out / "probes.npz")
    assert probes["z"].shape == (res["n_probes"], 32) and probes["face"].dtype == bool


def test_faces_more_often_in_the_voids_do_not_make_the_voids_explain_failures(cloud):
    # the opposite planted decoder: a face exactly when z is far from every training latent; depth then raises the
    # face rate, which the verdict reports but does not count as the voids explaining non-faces
    decode = lambda z: _draw(cloud, cloud["nearest"](z) > 0.5 * cloud["nn_typical"])  # noqa: E731
    result, _ = face_map(cloud["zt"], decode, CFG, progress=False)
    v = result["verdict"]
    assert v["depth_effect"] == "raises" and not v["voids_matter"], v["sentence"]
    assert "raises it beyond the judge's uncertainty" in v["sentence"]
