"""The face judge: Wilson interval, detector controls on real and synthetic images, sharpness, loading."""

from __future__ import annotations

import json
import math
import pickle
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.data.sources import crop_resize
from engine.data.synthetic import render_block
from engine.generation import judge
from tests.conftest import CELEBA_SUBSET, requires_celeba

Z = 1.959963984540054


def wilson_quadratic(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson bounds as the roots of the quadratic (a different algebraic form from the module's)."""
    root = z * math.sqrt(k * (n - k) / n + z * z / 4)
    return (k + z * z / 2 - root) / (n + z * z), (k + z * z / 2 + root) / (n + z * z)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (37, 100), (1, 600), (573, 600), (5, 7)])
def test_wilson_matches_hand_formula(k, n):
    lo, hi = judge.wilson_interval(k, n)
    ref = wilson_quadratic(k, n)
    assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12), (k, n, (lo, hi), ref)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_edges_exact():
    # 0/n: lower 0 exactly, upper z^2/(n+z^2); n/n mirrors it
    assert judge.wilson_interval(0, 10) == (0.0, pytest.approx(Z * Z / (10 + Z * Z)))
    lo, hi = judge.wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + Z * Z))
    # 37/100 to four places (the same numbers scipy.stats.binomtest(...).proportion_ci("wilson") gives)
    assert judge.wilson_interval(37, 100) == (pytest.approx(0.2818, abs=1e-4), pytest.approx(0.4678, abs=1e-4))


@pytest.mark.parametrize("k,n,name", [(1, 0, "n"), (11, 10, "count"), (-1, 10, "count"), (1.0, 10, "count")])
def test_wilson_bad_arguments(k, n, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        judge.wilson_interval(k, n)


def test_detect_validates_images():
    with pytest.raises(ValueError, match=r"images must have shape \(N, S, S, 3\).*\(4, 96, 80, 3\)"):
        judge.detect(np.zeros((4, 96, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="images must be uint8.*float32"):
        judge.detect(np.zeros((4, 96, 96, 3), np.float32))
    with pytest.raises(ValueError, match="images is empty"):
        judge.face_rate(np.zeros((0, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="min_neighbors"):
        judge.FaceDetector(min_neighbors=-1)


def test_synthetic_faces_and_noise():
    faces = render_block(0, 40, 96)
    noise = np.random.default_rng(0).integers(0, 256, faces.shape, dtype=np.uint8)
    hits = judge.detect(faces)
    assert hits.dtype == bool and hits.shape == (40,)
    r_faces, r_noise = judge.face_rate(faces), judge.face_rate(noise)
    # measured 0.838 on 600 synthetic faces; 0.6 leaves room for 40-image noise
    assert r_faces["rate"] >= 0.6, r_faces
    assert r_noise["count"] == 0, r_noise
    assert r_faces["ci95"][0] <= r_faces["rate"] <= r_faces["ci95"][1]
    # a detector survives pickling (worker pools) and gives the same verdicts
    det = pickle.loads(pickle.dumps(judge.FaceDetector()))
    assert np.array_equal(det.detect(faces), hits)


def test_calibration_keys_and_json():
    faces = render_block(0, 12, 64)
    res = judge.calibration(faces, reconstructions=faces[:, :, ::-1], seed=3)
    sets = ["real", "reconstructions", "noise", "smoothed_noise", "upside_down"]
    assert [k for k in res if k != "settings"] == sets
    for k in sets:
        assert res[k]["n"] == 12 and set(res[k]) == {"count", "n", "rate", "ci95"}, (k, res[k])
    assert res["settings"]["smoothing_sigma_px"] == pytest.approx(64 / 48)
    json.dumps(res)
    # the controls are seeded: the same seed gives the same counts
    again = judge.calibration(faces, seed=3)
    assert all(again[k] == res[k] for k in ("real", "noise", "smoothed_noise", "upside_down"))
    with pytest.raises(ValueError, match="reconstructions must be uint8"):
        judge.calibration(faces, reconstructions=faces.astype(np.float32))


def test_sharpness_drops_with_blur_synthetic():
    faces = render_block(0, 8, 96)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in faces])
    s, sb = judge.sharpness(faces), judge.sharpness(blurred)
    assert s.dtype == np.float64 and s.shape == (8,)
    assert np.all(s > sb), (s, sb)
    # flat images have no edges at all
    assert np.all(judge.sharpness(np.full((2, 32, 32, 3), 77, np.uint8)) == 0.0)


def _real_images(n: int) -> np.ndarray:
    files = sorted((CELEBA_SUBSET / "img_align_celeba").glob("*.jpg"))[:n]
    assert len(files) == n, f"need {n} images in the CelebA subset, found {len(files)}"
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(crop_resize(im, 96))
    return np.stack(out)


@requires_celeba()
def test_controls_on_real_celeba():
    real = _real_images(200)
    res = judge.calibration(real, seed=0)
    rates = {k: v["rate"] for k, v in res.items() if k != "settings"}
    # measured on 600 images: real 0.955, noise 0.000, smoothed 0.002, upside-down 0.353
    assert rates["real"] >= 0.60, rates
    assert rates["noise"] <= 0.05, rates
    assert rates["smoothed_noise"] <= 0.05, rates
    assert rates["upside_down"] < rates["real"], rates
    # the upside-down count must be lower beyond chance, not just by one image
    assert res["upside_down"]["ci95"][1] < res["real"]["ci95"][0], res


@requires_celeba()
def test_sharpness_real_original_beats_blur():
    real = _real_images(50)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in real])
    s, sb = judge.sharpness(real), judge.sharpness(blurred)
    assert np.all(s > sb), f"{np.sum(s <= sb)} blurred copies were not less sharp; min ratio {np.min(s / sb):.3f}"


def _write_pngs(folder, faces):
    # names out of creation order and a subfolder: loading must sort by relative path
    names = ["b/2.png", "a.png", "b/1.PNG", "c.jpg_not_an_image.png.txt", "z.png", "m.png"]
    (folder / "b").mkdir(parents=True)
    order = {}
    k = 0
    for name in names:
        if name.endswith(".txt"):
            (folder / name).write_text("not an image")
            continue
        Image.fromarray(faces[k]).save(folder / name)
        order[name] = k
        k += 1
    return [order[n] for n in sorted(order)]


def test_load_images_folder_round_trip(tmp_path):
    faces = render_block(0, 5, 96)
    expect = _write_pngs(tmp_path / "imgs", faces)
    got = judge.load_images(tmp_path / "imgs")
    assert got.dtype == np.uint8 and got.shape == (5, 96, 96, 3)
    # PNG is lossless and 96 -> 96 is the identity resize, so pixels come back exactly, in sorted order
    assert np.array_equal(got, faces[expect])
    small = judge.load_images(tmp_path / "imgs", size=64)
    assert small.shape == (5, 64, 64, 3)
    one = judge.load_images(tmp_path / "imgs" / "a.png")
    assert np.array_equal(one[0], faces[expect[0]])


def test_load_images_skips_corrupt_file(tmp_path, caplog):
    faces = render_block(0, 3, 96)
    for k, f in enumerate(faces):
        Image.fromarray(f).save(tmp_path / f"{k}.png")
    (tmp_path / "9.png").write_bytes(b"not a png")
    with caplog.at_level("WARNING", logger="engine.generation.judge"):
        got = judge.load_images(tmp_path)
    assert got.shape == (3, 96, 96, 3)
    assert "skipped 1 of 4" in caplog.text, caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        judge.load_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        judge.load_images(tmp_path / "nope")


def test_load_images_arrays_round_trip(tmp_path):
    faces = render_block(0, 4, 64)
    np.save(tmp_path / "u8.npy", faces)
    np.save(tmp_path / "f32.npy", faces.astype(np.float32) / 255.0)
    np.savez(tmp_path / "one.npz", anything=faces)
    np.savez(tmp_path / "named.npz", images=faces, z=np.zeros((4, 8)))
    for name in ("u8.npy", "f32.npy", "one.npz", "named.npz"):
        got = judge.load_images(tmp_path / name, size=64)
        assert got.dtype == np.uint8 and got.shape == (4, 64, 64, 3), name
        assert np.array_equal(got, faces), name
    assert judge.load_images(tmp_path / "u8.npy", size=96).shape == (4, 96, 96, 3)


@pytest.mark.parametrize(
    "name,array,pattern",
    [
        ("gray.npy", np.zeros((4, 32, 32), np.uint8), r"\(4, 32, 32\)"),
        ("rgba.npy", np.zeros((4, 32, 32, 4), np.uint8), r"\(4, 32, 32, 4\)"),
        ("rect.npy", np.zeros((4, 32, 40, 3), np.uint8), r"\(4, 32, 40, 3\)"),
        ("empty.npy", np.zeros((0, 32, 32, 3), np.uint8), r"\(0, 32, 32, 3\)"),
        ("range.npy", np.full((2, 32, 32, 3), 2.0, np.float32), r"\[0, 1\]"),
        ("int16.npy", np.zeros((2, 32, 32, 3), np.int16), "int16"),
        ("two.npz", None, "one array or one named 'images'"),
    ],
)
def test_load_images_bad_arrays_name_the_file(tmp_path, name, array, pattern):
    path = tmp_path / name
    if array is None:
        np.savez(path, a=np.zeros((1, 8, 8, 3), np.uint8), b=np.zeros(3))
    else:
        np.save(path, array)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
        judge.load_images(path, size=32)


def test_judge_path(tmp_path):
    faces = render_block(0, 10, 96)
    np.save(tmp_path / "faces.npy", faces)
    res = judge.judge_path(tmp_path / "faces.npy")
    assert res["n"] == 10 and 0 <= res["count"] <= 10
    assert res["rate"] == res["count"] / 10
    assert res["sharpness_mean"] == pytest.approx(judge.sharpness(faces).mean())
    assert res["detector"]["min_neighbors"] == 4
    json.dumps(res)
