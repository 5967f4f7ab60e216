"""Tests for the built-in procedural face set (engine/synthetic.py)."""

import numpy as np
import pytest

from engine.data.synthetic import render_block, render_face


@pytest.fixture(scope="module")
def block200() -> np.ndarray:
    return render_block(0, 200, size=96, seed=0)


@pytest.mark.parametrize("size", [32, 96])
def test_shape_and_dtype(size):
    img = render_face(3, size=size)
    assert img.shape == (size, size, 3), img.shape
    assert img.dtype == np.uint8, img.dtype
    blk = render_block(2, 5, size=size)
    assert blk.shape == (3, size, size, 3), blk.shape
    assert blk.dtype == np.uint8, blk.dtype
    # not a blank frame: real content spans a wide range of intensities
    assert int(img.max()) - int(img.min()) > 100, (img.min(), img.max())


def test_deterministic_in_seed_and_index():
    a = render_face(7, size=64, seed=11)
    b = render_face(7, size=64, seed=11)
    assert a.tobytes() == b.tobytes()
    other_index = render_face(8, size=64, seed=11)
    other_seed = render_face(7, size=64, seed=12)
    d_index = np.abs(a.astype(int) - other_index).mean()
    d_seed = np.abs(a.astype(int) - other_seed).mean()
    assert d_index > 10, f"index 7 vs 8 differ by only {d_index:.2f} grey levels"
    assert d_seed > 10, f"seed 11 vs 12 differ by only {d_seed:.2f} grey levels"


def test_same_face_at_every_size():
    # Parameters do not depend on size: a 2x2-averaged 192 px image matches the
    # 96 px one up to pixel noise, and is far from a different face.
    for i in range(3):
        small = render_face(i, size=96).astype(np.float64)
        big = render_face(i, size=192).astype(np.float64).reshape(96, 2, 96, 2, 3).mean((1, 3))
        other = render_face(i + 10, size=96).astype(np.float64)
        same = np.abs(big - small).mean()
        diff = np.abs(other - small).mean()
        assert same < 15 and same < diff / 3, f"index {i}: same-face diff {same:.2f}, other-face diff {diff:.2f}"


def test_block_equals_stacked_faces_and_ignores_boundaries():
    blk = render_block(0, 10, size=48, seed=3)
    stacked = np.stack([render_face(i, size=48, seed=3) for i in range(10)])
    np.testing.assert_array_equal(blk, stacked)
    np.testing.assert_array_equal(blk[5:], render_block(5, 10, size=48, seed=3))
    assert render_block(4, 4, size=48).shape == (0, 48, 48, 3)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="index"):
        render_face(-1)
    with pytest.raises(ValueError, match="size"):
        render_face(0, size=4)
    with pytest.raises(ValueError, match="seed"):
        render_face(0, seed=-2)
    with pytest.raises(ValueError, match="stop"):
        render_block(5, 3)


def test_variety_across_images(block200):
    imgs = block200.astype(np.float64)
    mean_colour = imgs.mean(axis=(1, 2))  # (200, 3)
    spread = mean_colour.std(axis=0)
    assert (spread > 10).all(), f"per-image mean colour std across images only {spread}"
    flat = imgs.reshape(len(imgs), -1)
    assert len({row.tobytes() for row in block200}) == len(block200), "duplicate images"
    # consecutive images are different faces, not small perturbations of one face
    d = np.abs(flat[1:] - flat[:-1]).mean(axis=1)
    assert np.median(d) > 30, f"median difference of neighbours {np.median(d):.1f} grey levels"
    # the centre of the frame (the face) varies too, not only the background
    centre = imgs[:, 30:66, 30:66].mean(axis=(1, 2, 3))
    assert centre.std() > 15, f"face-region brightness std {centre.std():.1f}"


def test_face_like_structure(block200):
    # Aligned-photo layout: eyes and brows at ~40% height are darker than the
    # cheeks below them; this is what Haar frontal-face features respond to.
    grey = block200.astype(np.float64).mean(axis=-1)
    eye_band = grey[:, 36:46, 29:67].mean(axis=(1, 2))
    cheek_band = grey[:, 52:62, 29:67].mean(axis=(1, 2))
    gap = cheek_band.mean() - eye_band.mean()
    assert gap > 8, f"eye band {eye_band.mean():.1f} vs cheek band {cheek_band.mean():.1f}"
    share = (eye_band < cheek_band).mean()
    assert share > 0.8, f"only {share:.0%} of images have eye band darker than cheeks"
    # the face sits in the middle: centre differs from the corners (background)
    corners = np.concatenate([grey[:, :12, :12], grey[:, :12, -12:]], axis=1).mean(axis=(1, 2))
    centre = grey[:, 40:60, 36:60].mean(axis=(1, 2))
    assert np.abs(centre - corners).mean() > 15, np.abs(centre - corners).mean()


def test_rendered_faces_are_bit_identical_to_the_pinned_hashes():
    """render_face's draw order fixes every synthetic image: any change to it changes these hashes."""
    import hashlib

    got = {(i, s): hashlib.sha256(render_face(i, size=s, seed=0).tobytes()).hexdigest()[:16]
           for i, s in ((0, 96), (7, 96), (123, 64), (4999, 32))}
    assert got == PINNED, got


PINNED = {(0, 96): "c7f4001938a1631a", (7, 96): "ae557055faefdd63", (123, 64): "b109ed7915b951b7",
          (4999, 32): "8c8f7ac69b99eb80"}
