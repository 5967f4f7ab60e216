"""The quality judge in the stages: compare's and facemap's Fréchet columns, the shared reference features, and a
classifier of an earlier image cache.

References are independent of the stage code: the Fréchet interval of features computed here from the images the
stage saved, with the reference features computed here from the cache's test rows.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from engine.data.imagecache import open_cache
from engine.data.labels import run_labels
from engine.data.sources import TEST, TRAIN, VALIDATION
from engine.files import file_sha256
from engine.generation.config import FacemapConfig
from engine.generation.facemap import QUALITY_RULE, face_map
from engine.generation.quality import (
    REFERENCE_FILE,
    REFERENCE_ROWS,
    QualityJudge,
    frechet_interval,
    reference_rows,
    save_reference,
)
from engine.model.classifier import FittedClassifier, train_classifier
from engine.model.config import ClassifierConfig

def copy_run(src, dst, skip=("generate", "facemap", "report")):
    """A copy of run ``src`` without its top-level stage folders in ``skip`` (images.zarr/attributes stays)."""
    import shutil

    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if d == str(src) and n in skip])
    return dst


SMALL = dict(widths=(8, 16, 32, 32), convs_per_stage=1, features_dim=16, batch_size=32, patience=None, device="cpu")


@pytest.fixture(scope="module")
def judged_run(trained_run, tmp_path_factory):
    """A copy of the trained run with a one-epoch attribute classifier in attributes/ (as ``zspace attributes``
    leaves it, reference features included)."""
    run = copy_run(trained_run, tmp_path_factory.mktemp("judged") / "run",
                   ("generate", "facemap", "report", "attributes"))
    cache = open_cache(run)
    names, values, _ = run_labels(run)
    split = cache["split"][:]
    rows = {s: np.flatnonzero(split == s) for s in (TRAIN, VALIDATION, TEST)}
    fitted = train_classifier(cache["images"], values, rows[TRAIN], rows[VALIDATION], names,
                              ClassifierConfig(epochs=1, **SMALL), progress=False)
    fitted.cache_fingerprint = cache.attrs["fingerprint"]
    path = run / "attributes" / "classifier.pt"
    path.parent.mkdir()
    fitted.save(path)
    ref = reference_rows(split, 0)
    save_reference(path.parent / REFERENCE_FILE, ref, fitted.features(cache["images"][:][ref]), file_sha256(path))
    return run


def own_reference(run, seed: int = 0) -> np.ndarray:
    """Features of the test rows, computed here: the classifier loaded afresh, rows chosen by plain numpy."""
    cache = open_cache(run)
    split = cache["split"][:]
    test = np.flatnonzero(split == TEST)
    rows = np.sort(np.random.default_rng(seed).permutation(test)[:REFERENCE_ROWS])
    return FittedClassifier.load(run / "attributes" / "classifier.pt", "cpu").features(cache["images"][:][rows])


def test_reference_rows_are_a_seeded_sample_of_the_test_split():
    split = np.array([TRAIN, TEST, VALIDATION, TEST, TEST, TRAIN] * 1000, np.int8)
    rows = reference_rows(split, seed=4)
    assert len(rows) == REFERENCE_ROWS and np.all(split[rows] == TEST) and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, reference_rows(split, seed=4))
    assert not np.array_equal(rows, reference_rows(split, seed=5))
    np.testing.assert_array_equal(reference_rows(np.full(7, TRAIN, np.int8)), np.arange(7))  # no test split


def test_compare_gives_every_sampler_the_frechet_distance_of_its_images(judged_run):
    from engine.generation.compare import compare

    res = compare(judged_run, n=40, seed=0, device="cpu", progress=False)
    classifier = FittedClassifier.load(judged_run / "attributes" / "classifier.pt", "cpu")
    reference = own_reference(judged_run)
    distances = {}
    for name, m in res["samplers"].items():
        images = np.load(judged_run / "generate" / name / "images.npy")
        want = frechet_interval(classifier.features(images), reference, n_boot=200, seed=0)
        got = m["frechet"]
        assert got["distance"] == pytest.approx(want["distance"], rel=1e-4), (name, got, want)
        assert got["ci95"] == pytest.approx(want["ci95"], rel=1e-3, abs=1e-6), (name, got["ci95"], want["ci95"])
        assert got["n_a"] == 40 and got["n_b"] == len(reference), got
        distances[name] = got["distance"]
    assert len(set(distances.values())) == len(distances), f"every sampler's images give their own {distances}"
    saved = json.loads((judged_run / "generate" / "compare.json").read_text())
    assert saved["samplers"]["data"]["frechet"]["distance"] == pytest.approx(distances["data"])


def test_the_stored_reference_is_read_when_it_is_of_this_classifier(judged_run, tmp_path):
    run = copy_run(judged_run, tmp_path / "run")
    path = run / "attributes" / "classifier.pt"
    computed = own_reference(run)
    np.testing.assert_allclose(QualityJudge.for_run(run, "cpu").reference, computed, rtol=1e-5, atol=1e-6)
    # a stored file of these rows and this classifier is what the judge uses (zeros cannot come from the model)
    rows = reference_rows(open_cache(run)["split"][:], 0)
    save_reference(path.parent / REFERENCE_FILE, rows, np.zeros((len(rows), 16), np.float32), file_sha256(path))
    assert not QualityJudge.for_run(run, "cpu").reference.any()
    # another classifier's file (its sha differs) or other rows: computed again
    save_reference(path.parent / REFERENCE_FILE, rows, np.zeros((len(rows), 16), np.float32), "0" * 64)
    np.testing.assert_allclose(QualityJudge.for_run(run, "cpu").reference, computed, rtol=1e-5, atol=1e-6)
    save_reference(path.parent / REFERENCE_FILE, rows[1:], np.zeros((len(rows) - 1, 16), np.float32),
                   file_sha256(path))
    np.testing.assert_allclose(QualityJudge.for_run(run, "cpu").reference, computed, rtol=1e-5, atol=1e-6)
    (path.parent / REFERENCE_FILE).write_bytes(b"not an npz")
    np.testing.assert_allclose(QualityJudge.for_run(run, "cpu").reference, computed, rtol=1e-5, atol=1e-6)


def test_a_classifier_of_another_image_cache_is_no_judge(judged_run, tmp_path, caplog):
    run = copy_run(judged_run, tmp_path / "run")
    path = run / "attributes" / "classifier.pt"
    fitted = FittedClassifier.load(path, "cpu")
    assert fitted.cache_fingerprint == open_cache(run).attrs["fingerprint"]  # saved and read back
    fitted.cache_fingerprint = "an earlier cache"
    fitted.save(path)
    with caplog.at_level(logging.WARNING):
        assert QualityJudge.for_run(run, "cpu") is None
    assert "trained on another image cache" in caplog.text and "zspace attributes" in caplog.text
    assert QualityJudge.for_run(tmp_path / "no-classifier", "cpu") is None


class PixelJudge:
    """A planted quality judge: features are each image's channel means and standard deviations (6 per image),
    the reference those of a clean face repeated with slight jitter."""

    def __init__(self, reference_images: np.ndarray):
        self.reference = self.features(reference_images)

    @staticmethod
    def features(images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), -1, 3).astype(np.float64)
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)

    def distance(self, features: np.ndarray) -> dict:
        return frechet_interval(features, self.reference, n_boot=100, seed=0)


@pytest.fixture(scope="module")
def cloud():
    rng = np.random.default_rng(0)
    zt = (rng.standard_normal((2000, 12)) * np.linspace(2.0, 0.5, 12)).astype(np.float32)
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(zt)
    typical = np.median(NearestNeighbors(n_neighbors=2).fit(zt).kneighbors(zt)[0][:, 1])
    return zt, lambda z: nn.kneighbors(np.asarray(z, np.float32))[0][:, 0] / typical


def _faces(z: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """A grey-green 'face' of 16 px whose pixels get ``noise`` (per row) of seeded, z-dependent jitter."""
    seed = np.abs(z[:, :2] * 1000).astype(np.int64).sum(axis=1)
    out = np.empty((len(z), 16, 16, 3), np.uint8)
    for i, (s, a) in enumerate(zip(seed, noise)):
        jitter = np.random.default_rng(int(s)).normal(0, 4 + a, (16, 16, 3))
        out[i] = np.clip(np.array([120, 140, 110]) + jitter, 0, 255).astype(np.uint8)
    return out


CFG = FacemapConfig(n=200, axes=3, bootstrap=20, strip=2, seed=2)


def test_facemap_says_depth_lowers_quality_when_deep_probes_decode_noisier(cloud):
    zt, depth = cloud
    reference = _faces(zt[:300], np.zeros(300))
    judge = PixelJudge(reference)
    everything_a_face = lambda images: np.ones(len(images), bool)  # noqa: E731
    noisy_deep = lambda z: _faces(z, 40 * np.clip(depth(z), 0, 3))  # noqa: E731
    result, arrays = face_map(zt, noisy_deep, CFG, judge=everything_a_face, progress=False, quality=judge)
    q = result["verdict"]["quality"]
    assert q["rule"] == QUALITY_RULE and result["rule"]["quality_changes"] == QUALITY_RULE
    assert q["changes"] is True and q["deep"] > q["shallow"], q
    assert "lowers" in q["sentence"]
    # each bin's distance is that of its probes' images, decoded again here
    in_depth = arrays["family"] >= len(result["sweep"])
    for b in result["depth"]["pooled"]:
        rows = in_depth & (arrays["depth_bin"] == b["bin"])
        want = judge.distance(judge.features(noisy_deep(arrays["z"][rows])))
        assert b["frechet"]["distance"] == pytest.approx(want["distance"], rel=1e-9), (b["bin"], b["frechet"], want)
    # the same decoder without the depth-dependent noise: quality unchanged by depth
    flat = lambda z: _faces(z, np.zeros(len(z)))  # noqa: E731
    result, _ = face_map(zt, flat, CFG, judge=everything_a_face, progress=False, quality=judge)
    q = result["verdict"]["quality"]
    assert q["changes"] is False and "does not measurably change" in q["sentence"], q
    # without a quality judge there is no quality verdict and no Fréchet column
    result, _ = face_map(zt, flat, CFG, judge=everything_a_face, progress=False)
    assert "quality" not in result["verdict"] and all("frechet" not in b for b in result["depth"]["pooled"])
