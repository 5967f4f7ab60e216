"""Sources: CelebA layout (folder, zip, with and without partition file), image folders, synthetic."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.data.sources import SourceError, crop_resize, hashed_split, open_source
from tests.conftest import CELEBA_SUBSET, fake_photo, requires_celeba


def reference_crop(path, size):
    """The study's preprocessing written out plainly: full decode, centred square, resize."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    m = min(w, h)
    box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
    return np.asarray(img.crop(box).resize((size, size), Image.Resampling.BILINEAR))


def test_celeba_partition_and_identity(celeba_root):
    src = open_source(celeba_root)
    assert src.kind == "celeba"
    assert src.ids == [f"{k:06d}.jpg" for k in range(1, 21)]  # rows 21..25 have no image: ignored
    assert src.split.tolist() == [0] * 12 + [1] * 4 + [2] * 4
    assert src.identity.tolist() == [100 + k % 4 for k in range(1, 21)]


def test_celeba_without_partition_file_is_deterministic(celeba_root):
    (celeba_root / "list_eval_partition.txt").unlink()
    (celeba_root / "identity_CelebA.txt").unlink()
    a, b = open_source(celeba_root), open_source(celeba_root)
    assert a.split.tolist() == b.split.tolist() == [hashed_split(i) for i in a.ids]
    assert (a.identity == -1).all()


def test_hashed_split_proportions():
    split = np.array([hashed_split(f"{k:06d}.jpg") for k in range(20000)])
    shares = np.bincount(split, minlength=3) / len(split)
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.01), shares


def test_celeba_zip_equals_folder(celeba_root, tmp_path):
    zroot = tmp_path / "zipped"
    zroot.mkdir()
    shutil.copy(celeba_root / "list_eval_partition.txt", zroot)
    with zipfile.ZipFile(zroot / "img_align_celeba.zip", "w") as zf:
        for p in sorted((celeba_root / "img_align_celeba").iterdir()):
            zf.write(p, f"img_align_celeba/{p.name}")
    folder, zipped = open_source(celeba_root), open_source(zroot)
    assert zipped.archive is not None
    assert zipped.ids == folder.ids and zipped.split.tolist() == folder.split.tolist()
    a, ok_a, _ = folder.load_block(0, 20, 32)
    b, ok_b, _ = zipped.load_block(0, 20, 32)
    assert ok_a.all() and ok_b.all()
    np.testing.assert_array_equal(a, b)


def test_crop_is_centred_square(celeba_root):
    path = celeba_root / "img_align_celeba" / "000003.jpg"
    # at 96 px no DCT scaling applies (178/2 < 96): bit-identical to the plain pipeline
    np.testing.assert_array_equal(crop_resize(Image.open(path), 96), reference_crop(path, 96))
    # at 48 px draft mode decodes at 1/2 scale: close to, not equal to, the full decode
    diff = np.abs(crop_resize(Image.open(path), 48).astype(int) - reference_crop(path, 48).astype(int))
    assert diff.mean() < 2.0, f"draft-mode result differs by {diff.mean():.2f} grey levels on average"


def test_folder_recursive_with_corrupt_grayscale_and_rgba(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(fake_photo(rng, 64, 80)).save(tmp_path / "a" / "rgb.jpg")
    Image.fromarray(fake_photo(rng, 64, 64)[..., 0]).save(tmp_path / "a" / "b" / "gray.png")
    rgba = np.dstack([fake_photo(rng, 64, 64), np.zeros((64, 64), np.uint8)])  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(tmp_path)
    assert src.kind == "folder"
    assert src.ids == ["a/b/gray.png", "a/broken.jpg", "a/rgb.jpg", "rgba.png"]
    images, ok, errors = src.load_block(0, 4, 32)
    assert ok.tolist() == [True, False, True, True]
    assert len(errors) == 1 and "broken" not in errors[0] or "cannot identify" in errors[0]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    gray = images[0].astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (images[3] == 255).all(), "transparent pixels are composited over white"


def test_missing_and_empty_sources_name_the_path(tmp_path):
    with pytest.raises(SourceError, match="does-not-exist"):
        open_source(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .jpg/.jpeg/.png images found under .*empty"):
        open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="synthetic:N"):
        open_source("synthetic:zero")


def test_synthetic_source_is_seeded():
    a, b = open_source("synthetic:40"), open_source("synthetic:40")
    other = open_source("synthetic:40:7")
    ia, ok, _ = a.load_block(0, 40, 32)
    ib, _, _ = b.load_block(0, 40, 32)
    io, _, _ = other.load_block(0, 40, 32)
    assert ok.all()
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, io)
    assert set(a.split.tolist()) == {0, 1, 2}


def test_limit_spreads_over_the_listing():
    src = open_source("synthetic:1000", limit=10)
    assert len(src) == 10
    assert src.ids[0] == "synthetic-0000000" and src.ids[-1] == "synthetic-0000999"
    full = open_source("synthetic:1000")
    k = full.ids.index(src.ids[3])
    np.testing.assert_array_equal(src.load_block(3, 4, 32)[0], full.load_block(k, k + 1, 32)[0])


@requires_celeba()
def test_real_celeba_subset_layout():
    src = open_source(CELEBA_SUBSET)
    assert len(src) == 6000
    counts = np.bincount(src.split, minlength=3).tolist()
    assert counts == [4560, 780, 660], counts  # the subset's README states these
    assert (src.identity >= 0).all()
    images, ok, _ = src.load_block(0, 8, 96)
    assert ok.all()
    ref = reference_crop(CELEBA_SUBSET / src.paths[5], 96)
    np.testing.assert_array_equal(images[5], ref)
