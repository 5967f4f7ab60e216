"""Attribute labels (engine/data/labels.py): the two file formats, matching by file name, what prepare stores
in images.zarr for a CelebA root and for synthetic:N, and the attributes the synthetic renderer plants."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import zarr

from conftest import CELEBA_SUBSET
from engine.data.imagecache import open_cache, prepare
from engine.data.labels import Labels, LabelsError, match_labels, read_labels, run_labels, usable
from engine.data.sources import FileSource, SyntheticSource, open_source
from engine.data.synthetic import ATTRIBUTE_NAMES, planted_attributes, render_attributes, render_block, render_face
from engine.stores import StoreDamaged

# CelebA's 40 attribute names, in the order of its list_attr_celeba.txt
CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()


def write_official(path, files, raw, names=CELEBA_NAMES, count=None):
    """``raw`` (M, A) of 1/-1 in CelebA's own layout: the count, the names with a trailing space, then
    '000001.jpg -1  1 ...' (each value right-aligned in two characters after one space)."""
    lines = [str(len(files) if count is None else count), " ".join(names) + " "]
    lines += [f + "".join(f" {int(v):2d}" for v in row) for f, row in zip(files, raw)]
    path.write_text("\n".join(lines) + "\n")
    return path


def pm1(rng, m, a):
    return rng.choice(np.array([-1, 1]), size=(m, a))


# ---------------------------------------------------------------- the official format


def test_the_official_format_reads_names_files_and_values(tmp_path):
    rng = np.random.default_rng(1)
    files = [f"{k:06d}.jpg" for k in range(1, 31)]
    raw = pm1(rng, 30, 40)
    lab = read_labels(write_official(tmp_path / "list_attr_celeba.txt", files, raw))
    assert lab.names == CELEBA_NAMES and lab.files == files
    assert lab.values.dtype == np.int8 and lab.values.shape == (30, 40)
    np.testing.assert_array_equal(lab.values, (raw == 1).astype(np.int8))
    assert lab.skipped == {} and lab.format == "celeba" and lab.source.endswith("list_attr_celeba.txt")


def test_the_official_count_must_equal_the_rows(tmp_path):
    files = [f"{k:06d}.jpg" for k in range(1, 11)]
    path = write_official(tmp_path / "a.txt", files, pm1(np.random.default_rng(0), 10, 40), count=202599)
    with pytest.raises(LabelsError, match=r"a\.txt: the first line says 202599 rows but the file holds 10"):
        read_labels(path)


def test_a_names_line_shorter_than_the_values_is_an_error(tmp_path):
    files = [f"{k:06d}.jpg" for k in range(1, 6)]
    path = write_official(tmp_path / "a.txt", files, pm1(np.random.default_rng(0), 5, 40), names=CELEBA_NAMES[:39])
    with pytest.raises(LabelsError, match=r"a\.txt:3: 40 values after the file name, but the names line \(line 2\) "
                                          r"has 39 names"):
        read_labels(path)


def test_a_row_missing_a_value_is_an_error_naming_its_line(tmp_path):
    files = [f"{k:06d}.jpg" for k in range(1, 6)]
    path = write_official(tmp_path / "a.txt", files, pm1(np.random.default_rng(0), 5, 40))
    lines = path.read_text().splitlines()
    lines[5] = lines[5].rsplit(" ", 1)[0]  # 000004.jpg loses its last value
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelsError, match=r"a\.txt:6: 39 values"):
        read_labels(path)


def test_a_non_numeric_value_names_its_line_and_column(tmp_path):
    files = [f"{k:06d}.jpg" for k in range(1, 6)]
    raw = pm1(np.random.default_rng(0), 5, 40)
    path = write_official(tmp_path / "a.txt", files, raw)
    text = path.read_text().splitlines()
    parts = text[4].split()
    parts[1 + CELEBA_NAMES.index("Smiling")] = "yes"
    text[4] = " ".join(parts)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(LabelsError, match=r"a\.txt:5: column 'Smiling' holds 'yes', not a number"):
        read_labels(path)


def test_duplicate_file_names_are_an_error_naming_both_lines(tmp_path):
    files = ["000001.jpg", "000002.jpg", "000003.jpg", "000002.jpg"]
    path = write_official(tmp_path / "a.txt", files, pm1(np.random.default_rng(0), 4, 40))
    with pytest.raises(LabelsError, match=r"'000002\.jpg' has two rows \(lines 4 and 6\)"):
        read_labels(path)


def test_a_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(LabelsError, match=r"nope\.txt: no such label file; expected CelebA's list_attr_celeba\.txt"):
        read_labels(tmp_path / "nope.txt")
    (tmp_path / "empty.csv").write_text("\n  \n")
    with pytest.raises(LabelsError, match=r"empty\.csv: the file is empty"):
        read_labels(tmp_path / "empty.csv")
    (tmp_path / "head.csv").write_text("image_id,Smiling\n")
    with pytest.raises(LabelsError, match=r"head\.csv: a header but no label rows"):
        read_labels(tmp_path / "head.csv")


# ---------------------------------------------------------------- CSV


def test_a_csv_with_an_empty_file_column_header_and_a_partition_column(tmp_path):
    """The layout of attr_male_attractive.csv: the three-valued Partition is skipped with its values."""
    path = tmp_path / "attrs.csv"
    rows = [("000001.jpg", 1, 0, 0), ("000002.jpg", 0, 0, 0), ("000003.jpg", 0, 1, 1), ("000004.jpg", 1, 2, 0)]
    path.write_text(",Attractive,Partition,Male\n" + "".join(f"{f},{a},{p},{m}\n" for f, a, p, m in rows))
    lab = read_labels(path)
    assert lab.names == ["Attractive", "Male"] and lab.files == [r[0] for r in rows]
    np.testing.assert_array_equal(lab.values, np.array([[r[1], r[3]] for r in rows], np.int8))
    assert list(lab.skipped) == ["Partition"] and "values 0, 1, 2" in lab.skipped["Partition"], lab.skipped
    assert lab.format == "csv"


@pytest.mark.parametrize("column", ["image_id", "file", "filename", "File_Name"])
def test_a_csv_with_a_named_file_column_and_minus_one_one_values(tmp_path, column):
    rng = np.random.default_rng(3)
    raw = pm1(rng, 12, 3)
    path = tmp_path / "attrs.csv"
    body = "".join(f"{a},{k:06d}.jpg,{b},{c}\n" for k, (a, b, c) in enumerate(raw, 1))
    path.write_text(f"Smiling,{column},Male,Young\n" + body)  # the file column need not come first
    lab = read_labels(path)
    assert lab.names == ["Smiling", "Male", "Young"]
    assert lab.files == [f"{k:06d}.jpg" for k in range(1, 13)]
    np.testing.assert_array_equal(lab.values, (raw == 1).astype(np.int8))


def test_tab_and_semicolon_separated_files_read_as_csv(tmp_path):
    for sep, name in (("\t", "a.tsv"), (";", "a.csv")):
        path = tmp_path / name
        path.write_text(f"file{sep}Male{sep}Young\nx.jpg{sep}1{sep}0\ny.jpg{sep}0{sep}0\n")
        lab = read_labels(path)
        assert lab.names == ["Male", "Young"] and lab.files == ["x.jpg", "y.jpg"]
        np.testing.assert_array_equal(lab.values, [[1, 0], [0, 0]])


def test_a_whitespace_table_with_or_without_a_file_column_header(tmp_path):
    """The official layout without its count line, and a header naming the file column."""
    raw = pm1(np.random.default_rng(4), 6, 40)
    files = [f"{k:06d}.jpg" for k in range(1, 7)]
    path = write_official(tmp_path / "a.txt", files, raw)
    path.write_text(path.read_text().split("\n", 1)[1])
    lab = read_labels(path)
    assert lab.names == CELEBA_NAMES and lab.files == files
    np.testing.assert_array_equal(lab.values, (raw == 1).astype(np.int8))
    (tmp_path / "b.txt").write_text("image_id   Male Young\nx.jpg  1 -1\ny.jpg -1 -1\n")
    lab = read_labels(tmp_path / "b.txt")
    assert lab.names == ["Male", "Young"] and lab.files == ["x.jpg", "y.jpg"]
    np.testing.assert_array_equal(lab.values, [[1, 0], [0, 0]])


def test_non_binary_columns_are_skipped_and_listed(tmp_path):
    path = tmp_path / "attrs.csv"
    path.write_text("image_id,Male,Three,Half,Identity,Gap,Young\n"
                    "a.jpg,1,-1,0.5,17,nan,-1\n"
                    "b.jpg,0,0,1,2001,1,1\n"
                    "c.jpg,1,1,0,4,0,-1\n")
    lab = read_labels(path)
    assert lab.names == ["Male", "Young"]
    np.testing.assert_array_equal(lab.values, [[1, 0], [0, 1], [1, 0]])
    assert set(lab.skipped) == {"Three", "Half", "Identity", "Gap"}, lab.skipped
    assert "values -1, 0, 1" in lab.skipped["Three"]
    assert "values 0, 0.5, 1" in lab.skipped["Half"]
    assert "values 4, 17, 2001" in lab.skipped["Identity"]
    assert "missing values" in lab.skipped["Gap"]
    for why in lab.skipped.values():
        assert "not two-valued 0/1 or -1/1" in why


def test_float_written_zeros_and_ones_are_values(tmp_path):
    path = tmp_path / "attrs.csv"
    path.write_text("image_id,Male\na.jpg,1.0\nb.jpg,0.0\n")
    np.testing.assert_array_equal(read_labels(path).values, [[1], [0]])


def test_csv_errors_name_the_file_and_what_is_allowed(tmp_path):
    cases = {
        "nofile.csv": ("who,Male\nann,1\nbob,0\n", r"nofile\.csv: no file-name column in the header \['who', 'Male'\]; "
                                                   r"name it one of image_id"),
        "noattr.csv": ("image_id,Partition\na.jpg,0\nb.jpg,2\nc.jpg,1\n",
                       r"noattr\.csv: no attribute column \(Partition: values 0, 1, 2: not two-valued"),
        "onlyfile.csv": ("image_id\na.jpg\nb.jpg\n",
                         r"onlyfile\.csv: no attribute column \(only the file-name column\)"),
        "short.csv": ("image_id,Male,Young\na.jpg,1,0\nb.jpg,1\n",
                      r"short\.csv:3: 2 fields, but the header \(line 1\) has 3"),
        "text.csv": ("image_id,Male\na.jpg,1\nb.jpg,male\n", r"text\.csv:3: column 'Male' holds 'male', not a number"),
        "dups.csv": ("image_id,Male\na.jpg,1\nb.jpg,0\na.jpg,0\n", r"'a\.jpg' has two rows \(lines 2 and 4\)"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LabelsError, match=message):
            read_labels(tmp_path / name)


def test_a_first_column_of_image_names_is_the_file_column(tmp_path):
    path = tmp_path / "attrs.csv"
    path.write_text("picture,Male\na.jpg,1\nb.PNG,0\n")
    lab = read_labels(path)
    assert lab.files == ["a.jpg", "b.PNG"] and lab.names == ["Male"]


def test_the_shared_celeba_csv_reads_as_its_own_rows(tmp_path):
    """A copy of the first and last rows of ../shared/data's attr_male_attractive.csv (header ',Attractive,
    Partition,Male'); the last rows are test rows, so Partition shows all three values."""
    src = CELEBA_SUBSET / "attr_male_attractive.csv"
    if not src.is_file():
        pytest.skip(f"{src} not found (../shared/data is absent on a user's clone)")
    with open(src) as f:
        lines = f.read().splitlines()
    kept = [lines[0], *lines[1:201], *lines[-100:]]
    path = tmp_path / "attr_male_attractive.csv"
    path.write_text("\n".join(kept) + "\n")
    rows = list(csv.reader(kept))
    header = rows[0]
    assert header == ["", "Attractive", "Partition", "Male"], header
    lab = read_labels(path)
    assert lab.names == ["Attractive", "Male"] and list(lab.skipped) == ["Partition"], (lab.names, lab.skipped)
    assert lab.files == [r[0] for r in rows[1:]]
    want = np.array([[int(r[1]), int(r[3])] for r in rows[1:]], np.int8)
    np.testing.assert_array_equal(lab.values, want)
    assert {int(r[2]) for r in rows[1:]} == {0, 2}, "the copied rows should hold train and test partitions"


# ---------------------------------------------------------------- matching


def labels_of(files, values, names=("A", "B")):
    return Labels(names=list(names), files=list(files), values=np.asarray(values, np.int8), source="t.csv")


def test_ids_match_rows_by_name_with_or_without_folder_and_extension():
    files = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "000009.jpg"]
    vals = [[1, 0], [0, 1], [1, 1], [0, 0], [1, 1]]
    ids = ["000001.jpg", "img_align_celeba/000002.jpg", "000003.png", "sub\\000004.jpg", "000005.jpg"]
    values, counts = match_labels(labels_of(files, vals), np.array(ids))
    assert values.dtype == np.int8 and values.shape == (5, 2)
    np.testing.assert_array_equal(values, [[1, 0], [0, 1], [1, 1], [0, 0], [-1, -1]])
    assert counts == {"matched": 4, "unmatched_ids": 1, "unused_rows": 1, "ambiguous": 0}


def test_an_exact_name_wins_and_a_shared_short_name_leaves_ids_unlabelled():
    files = ["a/1.jpg", "1.jpg", "2.jpg", "x/3.jpg", "y/3.jpg"]
    vals = [[1, 1], [0, 0], [1, 0], [0, 1], [1, 1]]
    ids = ["a/1.jpg", "b/1.jpg", "c/2.jpg", "d/2.jpg", "3.jpg"]
    values, counts = match_labels(labels_of(files, vals), ids)
    # a/1.jpg exactly; b/1.jpg by its short name to the one row left with that name, 1.jpg;
    # two ids share 2's short name and two rows share 3's: neither is guessed
    np.testing.assert_array_equal(values, [[1, 1], [0, 0], [-1, -1], [-1, -1], [-1, -1]])
    assert counts == {"matched": 2, "unmatched_ids": 3, "unused_rows": 3, "ambiguous": 3}


def test_ids_in_a_synthetic_run_match_only_rows_of_their_names():
    values, counts = match_labels(labels_of(["synthetic-0000001", "000001.jpg"], [[1, 0], [0, 1]]),
                                  ["synthetic-0000000", "synthetic-0000001"])
    np.testing.assert_array_equal(values, [[-1, -1], [1, 0]])
    assert counts["matched"] == 1 and counts["unused_rows"] == 1


def test_nothing_matching_is_an_error_showing_both_sides():
    with pytest.raises(LabelsError, match=r"t\.csv: none of its 2 rows matches any of the 3 ids \(ids look like "
                                          r"'synthetic-0000000', label rows like '000001\.jpg'\)"):
        match_labels(labels_of(["000001.jpg", "000002.jpg"], [[1, 0], [0, 1]]),
                     ["synthetic-0000000", "synthetic-0000001", "synthetic-0000002"])


# ---------------------------------------------------------------- usable


def test_usable_keeps_attributes_with_enough_of_each_class_against_a_plain_count():
    rng = np.random.default_rng(5)
    n = 200
    values = np.stack([
        (rng.random(n) < 0.5),  # balanced
        (np.arange(n) < 3),  # 3 positives
        (np.arange(n) >= 15),  # 15 negatives
        np.ones(n, bool),  # no negative
        (np.arange(n) < 20),  # exactly 20 positives
    ], axis=1).astype(np.int8)
    values[rng.random((n, 5)) < 0.2] = -1  # unlabelled cells count for neither class
    names = ["a", "b", "c", "d", "e"]
    keep, why = usable(values, names, min_count=20)
    want = []
    for j in range(5):
        pos = sum(1 for v in values[:, j] if v == 1)
        neg = sum(1 for v in values[:, j] if v == 0)
        if pos >= 20 and neg >= 20:
            want.append(j)
        else:
            assert names[j] in why
            assert (f"{pos} positives" in why[names[j]]) == (pos < 20), why[names[j]]
            assert (f"{neg} negatives" in why[names[j]]) == (neg < 20), why[names[j]]
    assert keep == want and set(why) == {names[j] for j in range(5) if j not in want}
    assert 0 in keep and 1 not in keep and 2 not in keep and 3 not in keep


def test_usable_refuses_a_shape_that_does_not_fit_the_names():
    with pytest.raises(ValueError, match=r"values must be \(N, 3\) to match names, got shape \(4, 2\)"):
        usable(np.zeros((4, 2), np.int8), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"min_count must be an int >= 1, got 0"):
        usable(np.zeros((4, 1), np.int8), ["a"], min_count=0)


# ---------------------------------------------------------------- prepare: a CelebA root


@pytest.fixture
def labelled_root(celeba_root):
    """celeba_root (20 JPEGs) with a list_attr_celeba.txt of 23 rows: 000001..000018 have rows, 000019 and
    000020 none, and 000021..000025 are rows without an image."""
    files = [f"{k:06d}.jpg" for k in (*range(1, 19), *range(21, 26))]
    raw = pm1(np.random.default_rng(7), len(files), 40)
    write_official(celeba_root / "list_attr_celeba.txt", files, raw)
    return celeba_root, dict(zip(files, (raw == 1).astype(np.int8)))


def expected_for(ids, table):
    return np.stack([table.get(i, np.full(40, -1, np.int8)) for i in ids])


def test_a_celeba_root_stores_its_labels_in_images_zarr(labelled_root, tmp_path):
    root, table = labelled_root
    (root / "img_align_celeba" / "000005.jpg").write_bytes(b"not a jpeg")  # labelled but unreadable: skipped
    attrs = prepare(root, tmp_path / "run", size=32, workers=1, progress=False)
    group = open_cache(tmp_path / "run")
    ids = [str(i) for i in group["ids"][:].tolist()]
    assert len(ids) == 19 and "000005.jpg" not in ids
    stored = group["attributes"]
    assert stored.dtype == np.int8 and stored.shape == (19, 40)
    np.testing.assert_array_equal(stored[:], expected_for(ids, table))
    assert stored.attrs["names"] == CELEBA_NAMES and attrs["attribute_names"] == CELEBA_NAMES
    # 17 labelled images; 000019 and 000020 without a row; rows 000021..25 and the skipped 000005 unused
    assert attrs["attribute_counts"] == {"matched": 17, "unmatched_ids": 2, "unused_rows": 6, "ambiguous": 0}
    names, values, info = run_labels(tmp_path / "run")
    assert names == CELEBA_NAMES
    np.testing.assert_array_equal(values, expected_for(ids, table))
    assert info["aligned_to"] == "images.zarr" and info["rows"] == 19 and info["matched"] == 17
    assert info["source"].endswith("list_attr_celeba.txt") and info["format"] == "celeba"
    assert info["latents_rows_match"] is None  # no latents yet


def test_a_limited_celeba_root_counts_the_rows_of_images_left_out_as_unused(labelled_root, tmp_path):
    root, table = labelled_root
    attrs = prepare(root, tmp_path / "run", size=32, workers=1, progress=False, limit=7)
    ids = [str(i) for i in open_cache(tmp_path / "run")["ids"][:].tolist()]
    assert len(ids) == 7
    matched = sum(1 for i in ids if i in table)
    assert attrs["attribute_counts"] == {"matched": matched, "unmatched_ids": 7 - matched,
                                         "unused_rows": len(table) - matched, "ambiguous": 0}
    np.testing.assert_array_equal(run_labels(tmp_path / "run")[1], expected_for(ids, table))


def test_labels_are_not_part_of_the_fingerprint_and_arrive_without_decoding_again(celeba_root, tmp_path,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    first = prepare(celeba_root, run, size=32, workers=1, progress=False)
    assert "attributes" not in open_cache(run)
    with pytest.raises(LabelsError, match=r"images\.zarr holds no labels: its source .* has none"):
        run_labels(run)
    files = [f"{k:06d}.jpg" for k in range(1, 21)]
    raw = pm1(np.random.default_rng(2), 20, 40)
    write_official(celeba_root / "list_attr_celeba.txt", files, raw)
    assert open_source(celeba_root).attributes is not None

    def no_decoding(*args, **kwargs):
        raise AssertionError("prepare decoded images again to add labels")

    monkeypatch.setattr(FileSource, "load_block", no_decoding)
    second = prepare(celeba_root, run, size=32, workers=1, progress=False)
    assert second["fingerprint"] == first["fingerprint"]
    ids = [str(i) for i in open_cache(run)["ids"][:].tolist()]
    np.testing.assert_array_equal(run_labels(run)[1], expected_for(ids, dict(zip(files, (raw == 1).astype(np.int8)))))

    # changed labels are kept until overwrite, then replaced (the images still not decoded)
    write_official(celeba_root / "list_attr_celeba.txt", files, -raw)
    prepare(celeba_root, run, size=32, workers=1, progress=False)
    np.testing.assert_array_equal(run_labels(run)[1], (raw[: len(ids)] == 1).astype(np.int8))
    prepare(celeba_root, run, size=32, workers=1, progress=False, overwrite=True)
    np.testing.assert_array_equal(run_labels(run)[1], (raw[: len(ids)] == -1).astype(np.int8))


def test_an_unusable_label_file_costs_the_labels_not_the_images(celeba_root, tmp_path):
    write_official(celeba_root / "list_attr_celeba.txt", ["000001.jpg"], [[1] * 40], count=7)
    attrs = prepare(celeba_root, tmp_path / "run", size=32, workers=1, progress=False)
    assert attrs["counts"]["images"] == 20 and "attributes" not in open_cache(tmp_path / "run")
    assert "the first line says 7 rows" in attrs["attribute_error"]
    with pytest.raises(LabelsError, match=r"holds no labels: its source's label file could not be read \(.*the first "
                                          r"line says 7 rows"):
        run_labels(tmp_path / "run")


def test_damaged_labels_are_named_by_open_cache_and_verify_and_repaired_by_prepare(labelled_root, tmp_path,
                                                                                   monkeypatch):
    from engine.pipeline import verify

    root, table = labelled_root
    run = tmp_path / "run"
    prepare(root, run, size=32, workers=1, progress=False)
    assert verify(run)["ok"]
    chunks = [p for p in (run / "images.zarr" / "attributes" / "c").rglob("*") if p.is_file()]
    assert chunks
    chunks[0].unlink()
    with pytest.raises(StoreDamaged, match=r"array 'attributes' lacks 1 chunk\(s\).*'zspace prepare SOURCE --run"):
        open_cache(run)
    report = verify(run)
    assert not report["ok"] and "attributes" in report["checks"][0]["problem"], report
    monkeypatch.setattr(FileSource, "load_block", lambda *a, **k: pytest.fail("decoded images to repair labels"))
    prepare(root, run, size=32, workers=1, progress=False)
    ids = [str(i) for i in open_cache(run)["ids"][:].tolist()]
    np.testing.assert_array_equal(run_labels(run)[1], expected_for(ids, table))


def test_a_resumed_prepare_stores_the_labels_once(labelled_root, tmp_path, monkeypatch):
    """A prepare interrupted after its first block finishes with the same labels as one run straight through."""
    import engine.data.imagecache as ic

    root, table = labelled_root
    run = tmp_path / "run"
    real = ic._work
    done = []

    def die_after_one(*args):
        if done:
            raise KeyboardInterrupt
        done.append(args)
        return real(*args)

    src = open_source(root)
    monkeypatch.setattr(ic, "TASK_ITEMS", 8)
    monkeypatch.setattr(ic, "_work", die_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, run, size=32, workers=1, progress=False)
    group = zarr.open_group(run / "images.zarr", mode="r")
    assert not group.attrs["complete"] and group.attrs["items_done"] == 8
    monkeypatch.setattr(ic, "_work", real)
    prepare(src, run, size=32, workers=1, progress=False)
    ids = [str(i) for i in open_cache(run)["ids"][:].tolist()]
    assert len(ids) == 20
    np.testing.assert_array_equal(run_labels(run)[1], expected_for(ids, table))


# ---------------------------------------------------------------- run_labels with a file


def test_run_labels_from_a_file_against_a_runs_images(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:40", run, size=32, workers=1, progress=False)
    path = tmp_path / "mine.csv"
    path.write_text("file,Glasses,Split\n" + "".join(f"synthetic-{k:07d},{k % 3 == 0:d},{k % 3}\n"
                                                    for k in range(10, 60)))
    names, values, info = run_labels(run, path)
    assert names == ["Glasses"] and values.shape == (40, 1) and values.dtype == np.int8
    want = np.array([[-1] if k < 10 else [int(k % 3 == 0)] for k in range(40)], np.int8)
    np.testing.assert_array_equal(values, want)
    assert info["matched"] == 30 and info["unmatched_ids"] == 10 and info["unused_rows"] == 20
    assert list(info["skipped"]) == ["Split"] and info["aligned_to"] == "images.zarr"


def test_run_labels_of_a_run_with_latents_only(tmp_path):
    """import-latents leaves no images.zarr: a label file is matched against latents.zarr's ids."""
    run = tmp_path / "run"
    group = zarr.open_group(run / "latents.zarr", mode="w", zarr_format=3)
    group.create_array("z", shape=(4, 2), dtype="float32")[:] = 0
    group.create_array("ids", shape=(4,), dtype=str, config={"write_empty_chunks": True})[:] = np.array(
        ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    (tmp_path / "l.csv").write_text("image_id,Male\nb.jpg,1\nd.jpg,0\nz.jpg,1\n")
    names, values, info = run_labels(run, tmp_path / "l.csv")
    np.testing.assert_array_equal(values, [[-1], [1], [-1], [0]])
    assert info["aligned_to"] == "latents.zarr" and info["unused_rows"] == 1
    with pytest.raises(FileNotFoundError, match=r"images\.zarr does not exist, so the run has no labels from prepare"):
        run_labels(run)


def test_run_labels_without_any_store_says_what_to_run(tmp_path):
    (tmp_path / "l.csv").write_text("image_id,Male\na.jpg,1\n")
    with pytest.raises(FileNotFoundError, match=r"has neither images\.zarr nor latents\.zarr: run 'zspace prepare"):
        run_labels(tmp_path / "run", tmp_path / "l.csv")
    with pytest.raises(FileNotFoundError, match=r"images\.zarr does not exist"):
        run_labels(tmp_path / "run")


def test_run_labels_says_whether_the_latents_are_the_images_rows(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:30", run, size=32, workers=1, progress=False)
    ids = open_cache(run)["ids"][:]
    for lat_ids, agree in ((ids, True), (ids[::-1], False)):
        group = zarr.open_group(run / "latents.zarr", mode="w", zarr_format=3)
        group.create_array("ids", shape=(30,), dtype=str)[:] = lat_ids
        assert run_labels(run)[2]["latents_rows_match"] is agree


# ---------------------------------------------------------------- synthetic:N


def test_synthetic_prepare_stores_the_planted_attributes(tmp_path):
    run = tmp_path / "run"
    attrs = prepare("synthetic:300", run, size=32, workers=1, progress=False)
    group = open_cache(run)
    names, want = render_attributes(0, 300)
    np.testing.assert_array_equal(group["attributes"][:], want)
    assert attrs["attribute_names"] == names == group["attributes"].attrs["names"]
    assert attrs["attribute_counts"] == {"matched": 300, "unmatched_ids": 0, "unused_rows": 0, "ambiguous": 0}
    got_names, values, info = run_labels(run)
    assert got_names == names and info["format"] == "synthetic"
    np.testing.assert_array_equal(values, want)


def test_a_limited_synthetic_set_stores_the_attributes_of_its_own_images(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:500", run, size=32, workers=1, progress=False, limit=37)
    src = open_source("synthetic:500", limit=37)
    assert isinstance(src, SyntheticSource) and src.index[1] != 1
    values = run_labels(run)[1]
    np.testing.assert_array_equal(values, np.stack([render_attributes(int(i), int(i) + 1)[1][0] for i in src.index]))
    images = open_cache(run)["images"][:]
    np.testing.assert_array_equal(images[5], render_face(int(src.index[5]), size=32))


def test_planted_attributes_are_balanced_and_deterministic():
    for seed in (0, 1, 2):
        names, v = render_attributes(0, 300, seed=seed)
        assert names == ATTRIBUTE_NAMES and v.dtype == np.int8 and v.shape == (300, len(names))
        pos = v.sum(axis=0)
        assert (pos >= 20).all() and (300 - pos >= 20).all(), dict(zip(names, pos.tolist()))
        np.testing.assert_array_equal(v, render_attributes(0, 300, seed=seed)[1])
    a = render_attributes(0, 300)[1]
    np.testing.assert_array_equal(a, np.concatenate([render_attributes(0, 120)[1], render_attributes(120, 300)[1]]))
    np.testing.assert_array_equal(planted_attributes([250, 3, 77]), a[[250, 3, 77]])
    assert not np.array_equal(a, render_attributes(0, 300, seed=1)[1])
    assert 6 <= len(ATTRIBUTE_NAMES) <= 10 and len(set(ATTRIBUTE_NAMES)) == len(ATTRIBUTE_NAMES)


def test_planted_rates_in_4000_faces_are_the_renderers_probabilities():
    """Rates from the renderer's own distributions (closed forms), within 4 binomial standard deviations."""
    names, v = render_attributes(0, 4000)
    want = {
        "Black_Hair": 0.28, "Brown_Hair": 0.25 + 0.18, "Blond_Hair": 0.14,
        "Pale_Skin": 0.2 ** (1 / 1.3), "Dark_Skin": 1 - 0.6 ** (1 / 1.3),  # skin position u ** 1.3
        "Wide_Face": 0.5, "Long_Hair": 0.3, "Bangs": 0.35,
        "Mouth_Slightly_Open": (0.09 - 0.045) / 0.15,  # U(-0.06, 0.09) above 0.045
    }
    assert set(want) == set(names)
    for j, name in enumerate(names):
        p = want[name]
        rate = v[:, j].mean()
        assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / 4000), (name, rate, p)


def test_planted_attributes_follow_the_pixels():
    """Class means of half the images, scored on the other half: the labels of the large attributes are in the
    pixels (a label read from the wrong draw scores about 0.5)."""
    n = 600
    x = render_block(0, n, size=32).reshape(n, -1).astype(np.float64)
    names, v = render_attributes(0, n)
    train = np.arange(n) < n // 2
    floor = {"Black_Hair": 0.7, "Blond_Hair": 0.75, "Pale_Skin": 0.8, "Dark_Skin": 0.9, "Long_Hair": 0.75,
             "Bangs": 0.58, "Brown_Hair": 0.53, "Wide_Face": 0.53}
    for name, lowest in floor.items():
        y = v[:, names.index(name)]
        direction = x[train & (y == 1)].mean(0) - x[train & (y == 0)].mean(0)
        score, yt = x[~train] @ direction, y[~train]
        ranks = np.argsort(np.argsort(score)) + 1
        n1, n0 = int(yt.sum()), int((1 - yt).sum())
        auc = (ranks[yt == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
        assert auc > lowest, (name, auc)


class _Draws:
    """A stand-in for np.random.default_rng: every uniform 0.5 except the slots given, bytes all zero."""

    def __init__(self, slots):
        self.slots = slots

    def __call__(self, seed=None):
        return self

    def random(self, n):
        u = np.full(n, 0.5)
        for k, value in self.slots.items():
            u[k] = value
        return u

    def bytes(self, n):
        return bytes(n)


@pytest.mark.parametrize("name, slot, off, on, rows", [
    ("Blond_Hair", 15, 0.5, 0.75, slice(0, 96)),  # cdf: 0.28 black, 0.53 dark brown, 0.71 brown, 0.85 blond
    ("Dark_Skin", 11, 0.3, 0.95, slice(0, 96)),
    ("Long_Hair", 28, 0.5, 0.9, slice(60, 96)),  # long hair falls past the chin
    ("Bangs", 75, 0.9, 0.1, slice(0, 48)),  # the fringe lies on the forehead
    ("Mouth_Slightly_Open", 71, 0.2, 0.95, slice(48, 96)),  # the mouth is in the lower half
])
def test_each_planted_label_is_the_draw_the_renderer_uses(monkeypatch, name, slot, off, on, rows):
    """Changing one planted draw flips its label and changes the rendered face where the attribute shows."""
    j = ATTRIBUTE_NAMES.index(name)
    faces, labels = [], []
    for value in (off, on):
        monkeypatch.setattr(np.random, "default_rng", _Draws({slot: value}))
        faces.append(render_face(0, size=96).astype(np.int16))
        labels.append(int(planted_attributes([0])[0, j]))
    monkeypatch.undo()
    assert labels == [0, 1], (name, labels)
    diff = np.abs(faces[1] - faces[0]).sum(-1)
    assert diff[rows].sum() > 0.8 * diff.sum() > 0, (name, diff[rows].sum(), diff.sum())


# render_block output before the attributes were added (computed on the renderer of commit 4220eaf)
RENDER_BLOCK_SHA256 = {
    (0, 40, 32, 0): "aa94b4d79833cde0677bcab2fac68f35da632301351412ed273cade3ed7a1b33",
    (0, 12, 96, 0): "ef23db685c3d3eb5d14af75d270a9d70ecf6b2eb2e7b6f4393d8779b545e7229",
    (100, 120, 64, 0): "81c278bdf39681fd142cc99cd0e3e0b90eeb350ee760fd910a79088fbed2b3ea",
    (0, 10, 48, 7): "58659636d39435c96f70081f87612d32381d30096ba8fb300ee1820fe6dcdc2d",
}


def test_render_block_is_byte_identical_to_before_the_labels():
    got = {k: hashlib.sha256(render_block(k[0], k[1], size=k[2], seed=k[3]).tobytes()).hexdigest()
           for k in RENDER_BLOCK_SHA256}
    assert got == RENDER_BLOCK_SHA256


def test_a_source_subset_keeps_its_labels_aligned(labelled_root):
    root, table = labelled_root
    src = open_source(root, limit=7)
    np.testing.assert_array_equal(src.attributes, expected_for(src.ids, table))
    assert src.without_labels().attributes is None and src.attributes is not None


def test_the_real_celeba_subset_matches_the_shared_csv(tmp_path):
    """200 real CelebA images (../shared/data) labelled from attr_male_attractive.csv (all 202,599 rows)."""
    csv_path = CELEBA_SUBSET / "attr_male_attractive.csv"
    if not (CELEBA_SUBSET / "img_align_celeba").is_dir() or not csv_path.is_file():
        pytest.skip(f"real CelebA subset not found at {CELEBA_SUBSET} (../shared/data is absent on a user's clone)")
    run = tmp_path / "run"
    attrs = prepare(CELEBA_SUBSET, run, size=32, workers=1, progress=False, limit=200)
    assert "attributes" not in open_cache(run) or (CELEBA_SUBSET / "list_attr_celeba.txt").is_file()
    names, values, info = run_labels(run, csv_path)
    with open(csv_path) as f:
        table = {r[0]: (int(r[1]), int(r[3])) for r in csv.reader(f) if r[0]}
    ids = [str(i) for i in open_cache(run)["ids"][:].tolist()]
    assert names == ["Attractive", "Male"] and len(ids) == attrs["counts"]["images"] == 200
    np.testing.assert_array_equal(values, np.array([table[i] for i in ids], np.int8))
    assert info["matched"] == 200 and info["unmatched_ids"] == 0 and info["unused_rows"] == len(table) - 200
    assert list(info["skipped"]) == ["Partition"]
