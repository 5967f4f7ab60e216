"""The image cache: round trip, skipped files, resume, idempotence, mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from PIL import Image

from engine.data.imagecache import TASK_ITEMS, open_cache, prepare
from engine.data.sources import SourceError, SyntheticSource, open_source


def test_round_trip_matches_direct_decoding(celeba_root, tmp_path):
    attrs = prepare(celeba_root, tmp_path / "run", size=32, workers=2, progress=False)
    g = open_cache(tmp_path / "run")
    src = open_source(celeba_root)
    expect, ok, _ = src.load_block(0, len(src), 32)
    assert ok.all()
    np.testing.assert_array_equal(g["images"][:], expect)
    assert g["ids"][:].tolist() == src.ids
    np.testing.assert_array_equal(g["split"][:], src.split)
    np.testing.assert_array_equal(g["identity"][:], src.identity)
    assert attrs["counts"] == {"images": 20, "skipped": 0, "train": 12, "validation": 4, "test": 4}
    assert attrs["source"]["kind"] == "celeba" and attrs["size"] == 32


def test_corrupt_files_are_skipped_counted_and_listed(celeba_root, tmp_path):
    folder = celeba_root / "img_align_celeba"
    (folder / "000004.jpg").write_bytes(b"garbage")
    data = (folder / "000007.jpg").read_bytes()
    (folder / "000007.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    attrs = prepare(celeba_root, tmp_path / "run", size=32, workers=1, progress=False)
    g = open_cache(tmp_path / "run")
    assert attrs["counts"]["images"] == 18 and attrs["counts"]["skipped"] == 2
    assert [s["id"] for s in attrs["skipped"]] == ["000004.jpg", "000007.jpg"]
    ids = g["ids"][:].tolist()
    assert "000004.jpg" not in ids and "000007.jpg" not in ids and len(ids) == 18
    assert g["images"].shape == (18, 32, 32, 3)
    # rows stay aligned with ids after the holes
    k = ids.index("000010.jpg")
    direct = open_source(celeba_root)
    np.testing.assert_array_equal(g["images"][k], direct.load(direct.ids.index("000010.jpg"), 32))


class FlakySource(SyntheticSource):
    """Renders like synthetic:N but raises KeyboardInterrupt on the block that starts at ``fail_at``."""

    fail_at: int = -1
    calls: list

    def load_block(self, start, stop, size):
        self.calls.append(start)
        if start == self.fail_at:
            raise KeyboardInterrupt
        return super().load_block(start, stop, size)


def flaky(n, fail_at=-1):
    base = open_source(f"synthetic:{n}")
    src = FlakySource(spec=base.spec, ids=base.ids, split=base.split, identity=base.identity,
                      seed=base.seed, index=base.index)
    src.fail_at, src.calls = fail_at, []
    return src


def test_interrupted_prepare_resumes_and_finished_one_does_nothing(tmp_path):
    n = 3 * TASK_ITEMS + 10
    src = flaky(n, fail_at=2 * TASK_ITEMS)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / "run", size=16, workers=1, progress=False)
    partial = zarr.open_group(tmp_path / "run" / "images.zarr", mode="r")
    assert partial.attrs["items_done"] == 2 * TASK_ITEMS and not partial.attrs["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        open_cache(tmp_path / "run")

    src.fail_at, src.calls = -1, []
    prepare(src, tmp_path / "run", size=16, workers=1, progress=False)
    assert src.calls == [2 * TASK_ITEMS, 3 * TASK_ITEMS], "resume starts at the first unfinished block"
    resumed = open_cache(tmp_path / "run")["images"][:]

    prepare(f"synthetic:{n}", tmp_path / "ref", size=16, workers=2, progress=False)
    np.testing.assert_array_equal(resumed, open_cache(tmp_path / "ref")["images"][:])

    src.calls = []
    prepare(src, tmp_path / "run", size=16, workers=1, progress=False)
    assert src.calls == [], "a finished cache is not rebuilt"


def test_changed_source_needs_overwrite(tmp_path):
    prepare("synthetic:20", tmp_path / "run", size=16, workers=1, progress=False)
    with pytest.raises(ValueError, match="different image set.*overwrite"):
        prepare("synthetic:30", tmp_path / "run", size=16, workers=1, progress=False)
    attrs = prepare("synthetic:30", tmp_path / "run", size=32, workers=1, overwrite=True, progress=False)
    assert attrs["counts"]["images"] == 30 and open_cache(tmp_path / "run")["images"].shape == (30, 32, 32, 3)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        prepare("synthetic:5", tmp_path / "run", size=50)
    with pytest.raises(SourceError, match="nowhere"):
        prepare(tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="zspace prepare"):
        open_cache(tmp_path / "run")


def test_all_files_corrupt_is_an_error(tmp_path):
    for k in range(3):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"{k}.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of the 3 images"):
        prepare(tmp_path / "imgs", tmp_path / "run", size=16, workers=1, progress=False)


def test_chunks_and_dtype(tmp_path):
    prepare("synthetic:10", tmp_path / "run", size=16, workers=1, progress=False)
    g = zarr.open_group(tmp_path / "run" / "images.zarr", mode="r")
    assert g["images"].dtype == np.uint8 and g["split"].dtype == np.int8
    img = Image.fromarray(g["images"][0])
    assert img.size == (16, 16) and img.mode == "RGB"


@pytest.mark.parametrize("holes", [[0], [5, 6, 7], [3, 40, 41, 99, 150, 151, 152, 199], list(range(100, 200))])
def test_compaction_equals_boolean_indexing(tmp_path, holes):
    from engine.data.imagecache import _compact

    rng = np.random.default_rng(len(holes))
    data = rng.integers(0, 255, (200, 2, 2, 3), dtype=np.uint8)
    arr = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(4, 2, 2, 3), dtype="uint8")
    arr[:] = data
    keep = np.ones(200, bool)
    keep[holes] = False
    _compact(arr, keep)
    np.testing.assert_array_equal(arr[:], data[keep])
