"""Path geometry: through the centre, inside the plane, at the stated angle and length."""

from __future__ import annotations

import numpy as np
import pytest

from engine.generation.paths import interpolation, origin_to_centre, plane_segment


def test_origin_to_centre():
    mean = np.array([3.0, -1.0, 2.0])
    p = origin_to_centre(mean, 6)
    assert p.shape == (6, 3) and (p[0] == 0).all() and np.allclose(p[-1], mean)
    assert np.linalg.matrix_rank(p) == 1, "a straight line through the origin"


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_plane_segment_geometry(angle):
    rng = np.random.default_rng(0)
    d = 12
    a = rng.normal(size=(d, d))
    cov = a @ a.T + np.eye(d)
    mean = rng.normal(size=d) * 4
    i, j = 3, 7
    u, v = np.eye(d)[i], np.eye(d)[j]
    pts, direction = plane_segment(mean, cov, u, v, angle, length=4.0, n=9)
    np.testing.assert_allclose(pts[4], mean, atol=1e-12)  # the middle point is the centre itself
    rel = pts - mean
    others = np.delete(rel, [i, j], axis=1)
    assert np.abs(others).max() < 1e-12, "the segment stays in the plane of axes i and j"
    measured = np.degrees(np.arctan2(rel[-1, j], rel[-1, i]))
    assert measured == pytest.approx(angle, abs=1e-9)
    spread = np.sqrt(direction @ cov @ direction)
    assert np.linalg.norm(pts[-1] - pts[0]) == pytest.approx(4.0 * spread, rel=1e-12)


def test_plane_segment_in_a_pca_plane():
    rng = np.random.default_rng(1)
    cov = np.cov(rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)), rowvar=False)
    w, vec = np.linalg.eigh(cov)
    u, v = vec[:, -1], vec[:, -2]
    pts, _ = plane_segment(np.zeros(5), cov, u, v, 45.0, 2.0, 5)
    # the segment's points are combinations of u and v only
    resid = pts - np.outer(pts @ u, u) - np.outer(pts @ v, v)
    assert np.abs(resid).max() < 1e-12


def test_interpolation_extends_beyond_both_ends():
    a, b = np.array([0.0, 0.0]), np.array([2.0, 2.0])
    p = interpolation(a, b, n=5, extend=0.5)
    np.testing.assert_allclose(p[0], [-1, -1])
    np.testing.assert_allclose(p[-1], [3, 3])
    np.testing.assert_allclose(p[2], [1, 1])


def test_paths_in_chosen_planes_pass_through_the_centre(trained_run, tmp_path):
    import shutil

    import zarr

    from engine.generation.paths import run_paths

    run = shutil.copytree(trained_run, tmp_path / "run")
    res = run_paths(run, angle=30.0, steps=7, axes=[(3, 7)], pcs=[(2, 5)], device="cpu")
    assert [p["path"] for p in res["paths"]] == ["origin_to_centre", "pca_plane_2_5", "axes_3_7"]
    z = zarr.open_group(str(run / "latents.zarr"), mode="r")["z"][:].astype(np.float64)
    mean = z.mean(0)
    w, vec = np.linalg.eigh(np.cov(z, rowvar=False))
    vec = vec[:, np.argsort(w)[::-1]]
    vec *= np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(vec.shape[1])])  # the documented sign convention
    for name, (a, b) in (("axes_3_7", (np.eye(z.shape[1])[3], np.eye(z.shape[1])[7])),
                         ("pca_plane_2_5", (vec[:, 1], vec[:, 4]))):
        pts = np.load(run / "generate" / "paths" / f"{name}_z.npy").astype(np.float64)
        assert pts.shape == (7, z.shape[1])
        np.testing.assert_allclose(pts[3], mean, atol=1e-4)  # the middle point is the centre (float32 on disk)
        rel = pts - mean
        inplane = np.outer(rel @ a, a) + np.outer(rel @ b, b)
        np.testing.assert_allclose(rel, inplane, atol=1e-4)  # nothing outside the plane
        d = rel[-1] - rel[0]
        assert np.degrees(np.arctan2(d @ b, d @ a)) == pytest.approx(30.0, abs=1e-3)
        assert np.load(run / "generate" / "paths" / f"{name}_images.npy").shape[0] == 7
        assert (run / "generate" / "paths" / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize("kw", [dict(axes=[(3, 3)]), dict(axes=[(0, 32)]), dict(pcs=[(0, 1)])])
def test_paths_reject_planes_that_do_not_exist(trained_run, kw):
    from engine.generation.paths import run_paths

    with pytest.raises(ValueError, match="two different indices"):
        run_paths(trained_run, device="cpu", **kw)
