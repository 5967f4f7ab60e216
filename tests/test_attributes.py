"""Attributes in z-space: readouts, correlations, the dominant-components test and directions on planted latents."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.gaussian import GaussianFit
from engine.attributes.readout import (
    angle_deg,
    auc_interval,
    auc_score,
    directions,
    dominant_test,
    folds_of,
    linear_readout,
    point_biserial,
)


@pytest.fixture(scope="module")
def planted():
    """4,000 latents in 16 dims: components 3 and 7 dominant (off-centre, wide); attribute A a linear function of
    them plus noise, attribute B independent of everything."""
    rng = np.random.default_rng(0)
    n, d = 4000, 16
    z = rng.standard_normal((n, d))
    z[:, 3] = 5 + 2 * z[:, 3]
    z[:, 7] = -3 + 1.5 * z[:, 7]
    w = np.zeros(d)
    w[3], w[7] = 0.6 / 2, -0.8 / 1.5  # on the standardised components: (0.6, -0.8)
    a = ((z - z.mean(axis=0)) @ w + 0.2 * rng.standard_normal(n) > 0).astype(np.int8)
    b = (rng.random(n) < 0.4).astype(np.int8)
    return z.astype(np.float32), a, b, w


def test_auc_equals_sklearn_and_its_interval_shrinks_with_n():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    s = y + rng.standard_normal(500).round(1)  # ties included
    assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    small, large = auc_interval(0.8, 20, 20), auc_interval(0.8, 2000, 2000)
    assert small[0] < large[0] < 0.8 < large[1] < small[1]


def test_readout_finds_the_planted_attribute_and_not_the_noise(planted):
    z, a, b, _ = planted
    ra = linear_readout(z, a, folds_of(a, None, 5, 0))
    rb = linear_readout(z, b, folds_of(b, None, 5, 0))
    assert ra["auc"] > 0.97, ra["auc"]
    assert abs(rb["auc"] - 0.5) < 0.05, rb["auc"]
    assert rb["ci95"][0] < 0.5 < rb["ci95"][1] or abs(rb["auc"] - 0.5) < 0.03


def test_folds_by_identity_never_split_a_person():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 60, 600)
    y = (rng.random(600) < 0.5).astype(np.int8)
    for train, test in folds_of(y, groups, 5, 0):
        assert not set(groups[train]) & set(groups[test])


def test_point_biserial_equals_pearson(planted):
    z, a, _, _ = planted
    r = point_biserial(z, a)
    ref = np.array([np.corrcoef(z[:, j].astype(np.float64), a)[0, 1] for j in range(z.shape[1])])
    np.testing.assert_allclose(r, ref, atol=1e-9)
    assert set(np.argsort(-np.abs(r))[:2]) == {3, 7}


def test_dominant_components_carry_the_planted_attribute_only(planted):
    z, a, b, _ = planted
    ta = dominant_test(z, a, [3, 7], folds_of(a, None, 5, 0), n_sets=200, seed=0)
    tb = dominant_test(z, b, [3, 7], folds_of(b, None, 5, 0), n_sets=200, seed=0)
    assert ta["carries"] and ta["auc_dominant"] > 0.97 and ta["random_p95"] < 0.6, ta["auc_dominant"]
    assert not tb["carries"] and abs(tb["auc_dominant"] - 0.5) < 0.05, tb["auc_dominant"]
    assert len(ta["auc_random"]) == 200 and ta["p"] == pytest.approx(1 / 201)
    assert dominant_test(z, a, [], folds_of(a, None)) is None


def test_directions_point_along_the_planted_one(planted):
    z, a, _, w = planted
    fit = GaussianFit().fit(z)
    res = directions(z, a, fit, [3, 7])
    # the logistic normal recovers the plane's normal w; the class-mean difference recovers covariance @ w
    assert angle_deg(res["logistic"]["unit"], w) < 5, angle_deg(res["logistic"]["unit"], w)
    assert angle_deg(res["mean_difference"]["unit"], fit.covariance_ @ w) < 5
    assert res["logistic"]["angle_to_dominant"] < 5 and res["logistic"]["dominant_share"] > 0.99
    assert res["angle_between"] == pytest.approx(angle_deg(res["logistic"]["unit"], res["mean_difference"]["unit"]))
    assert res["mean_difference"]["separation"] > 0


def test_the_stage_on_synthetic_faces_writes_every_output(finished_run):
    """``zspace run`` on synthetic faces: their planted attributes go through prepare into the stage."""
    import json

    from engine.data.synthetic import ATTRIBUTE_NAMES

    out = finished_run / "attributes"
    res = json.loads((out / "attributes.json").read_text())
    assert res["names"] == list(ATTRIBUTE_NAMES)
    assert res["usable"] and set(res["usable"]) <= set(ATTRIBUTE_NAMES)
    for name in res["usable"]:
        r = res["attributes"][name]
        assert 0 <= r["readout"]["auc"] <= 1 and r["readout"]["n_pos"] >= 20 and r["readout"]["n_neg"] >= 20
        assert (out / r["traversal_figure"]).stat().st_size > 0
    for f in ("heatmap.png", "auc.png", "attributes.md", "readout.csv", "correlation.npy", "classifier.pt"):
        assert (out / f).stat().st_size > 0, f
    corr = np.load(out / "correlation.npy")
    assert corr.shape == (len(res["usable"]), 16)
    page = (finished_run / "report" / "index.html").read_text()
    assert "What do the components carry?" in page and "attributes_heatmap.png" in page


def test_a_run_without_labels_is_skipped_in_one_line(tmp_path, capsys):
    import json

    from cli import main

    z = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    assert main(["-q", "import-latents", str(tmp_path / "z.npy"), "--run", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["attributes", "--run", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("attributes: skipped,") and err.count("\n") == 0, err
    assert "no_labels" in json.loads((tmp_path / "run" / "attributes" / "attributes.json").read_text())
