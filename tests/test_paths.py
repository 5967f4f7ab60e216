"""Path geometry: through the centre, inside the plane, at the stated angle and length."""

from __future__ import annotations

import numpy as np
import pytest

from engine.paths import interpolation, origin_to_centre, plane_segment


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
