"""Attribute labels: CelebA's ``list_attr_celeba.txt`` or a CSV, matched to a run's rows by file name.

Formats ``read_labels`` accepts:

* CelebA's official ``list_attr_celeba.txt``: line 1 the number of rows, line 2 the
  attribute names, then one row per image, ``000001.jpg`` and one value per name,
  1 or -1, separated by any amount of whitespace. The count must equal the rows:
  it is the format's only check against a truncated file, so a mismatch is an error.
* A CSV (``,``, ``;`` or tab separated, or a whitespace table) with a header. The file-name column is the
  one whose header is empty (``,Attractive,Partition,Male``) or one of
  ``FILE_COLUMNS`` (``image_id``, ``file``, ``filename`` ...), else the first column
  when all its values end in .jpg/.jpeg/.png.

Every other column is an attribute when its values lie in {0, 1} or in {-1, 1};
values map to 1 (positive) and 0 (negative). Numeric columns with other values
(a partition 0/1/2, an identity) are not attributes and are listed in
``Labels.skipped`` with the reason; a value that is not a number is an error.

Matching (``match_labels``): an id and a label row match when their names are
equal; failing that, when their short names are (the file name without folders
and without its extension), so ``img_align_celeba/000001.jpg``, ``000001.jpg``
and ``000001.png`` all match the row ``000001.jpg``, but only where no other id
and no other label row has that short name (such ids stay unlabelled and are
counted as ``ambiguous``).

In ``RUN/images.zarr`` (written by ``prepare``, see ``store_labels``):
  attributes  int8 (N, A), row-aligned with ``images``: 1 positive, 0 negative, -1 unlabelled;
              its own attribute ``names`` (A,) str
  attrs       ``attribute_names``, ``attribute_counts`` (matched, unmatched_ids, unused_rows,
              ambiguous), ``attribute_source``, ``attribute_skipped``; ``attribute_error``
              when the source's label file could not be read
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from engine.files import swap_in
from engine.layout import cache_path, latents_path
from engine.stores import WRITE_ALL, check_arrays, missing_rows, open_group

logger = logging.getLogger(__name__)

ATTR_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")  # looked for in a CelebA root, in this order
FILE_COLUMNS = ("image_id", "image", "file", "filename", "file_name", "image_name", "img", "name", "path")
LABELS_ARRAY = "attributes"
_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png")
_ALLOWED = "CelebA's list_attr_celeba.txt (count line, names line, 'NNNNNN.jpg 1 -1 ...' rows) or a CSV with a " \
           "header and a file-name column"


class LabelsError(ValueError):
    """A label file or a labelled store that cannot be used; the message names the file and what is allowed."""


@dataclass
class Labels:
    """Attribute labels of images, one row per file.

    ``names`` (A,) attribute names; ``files`` (M,) file names as written in the label
    file; ``values`` int8 (M, A), 1 positive, 0 negative; ``skipped`` column -> why it
    is not an attribute; ``source`` the file read; ``format`` "celeba" or "csv".
    """

    names: list[str]
    files: list[str]
    values: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    source: str = ""
    format: str = ""


# ---------------------------------------------------------------- reading


def read_labels(path: str | os.PathLike) -> Labels:
    """Read a label file (see the module docstring for the formats); ``LabelsError`` on bad input."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: no such label file; expected {_ALLOWED}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError:
        raise LabelsError(f"{path}: not a UTF-8 text file; expected {_ALLOWED}") from None
    lines = text.splitlines()
    first = next((k for k, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise LabelsError(f"{path}: the file is empty; expected {_ALLOWED}")
    head = lines[first].strip()
    if head.isdigit():
        names, files, cells, where = _official_rows(path, lines, first)
        fmt = "celeba"
    else:
        names, files, cells, where = _csv_rows(path, lines, first)
        fmt = "csv"
    if not files:
        raise LabelsError(f"{path}: a header but no label rows; expected {_ALLOWED}")
    _refuse_duplicates(path, files, where)
    keep, values, skipped = _attribute_columns(path, names, cells, where)
    if not keep:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "only the file-name column"
        raise LabelsError(f"{path}: no attribute column ({why}); an attribute column holds only 0/1 or -1/1")
    labels = Labels(names=keep, files=files, values=values, skipped=skipped, source=str(path), format=fmt)
    logger.info("%s: %d rows, %d attributes%s", path, len(files), len(keep),
                f", {len(skipped)} other columns skipped ({', '.join(skipped)})" if skipped else "")
    return labels


def _official_rows(path: Path, lines: list[str], first: int) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    """(names, files, value cells, line number of each row) of the count-line format."""
    count = int(lines[first].strip())
    k = next((j for j in range(first + 1, len(lines)) if lines[j].strip()), None)
    if k is None:
        raise LabelsError(f"{path}: a count line but no names line; expected {_ALLOWED}")
    names = lines[k].split()
    files, cells, where = [], [], []
    for j in range(k + 1, len(lines)):
        parts = lines[j].split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise LabelsError(f"{path}:{j + 1}: {len(parts) - 1} values after the file name, but the names line "
                              f"(line {k + 1}) has {len(names)} names; every row needs one value per name")
        files.append(parts[0])
        cells.append(parts[1:])
        where.append(j + 1)
    if count != len(files):
        raise LabelsError(f"{path}: the first line says {count} rows but the file holds {len(files)}; the count "
                          f"must equal the number of rows (a truncated or edited file?)")
    return names, files, cells, where


def _delimiter(header: str) -> str | None:
    for d in (",", "\t", ";"):
        if d in header:
            return d
    return None  # whitespace-separated table with a header


def _csv_rows(path: Path, lines: list[str], first: int) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    """(attribute column names, files, value cells, line number of each row) of a CSV with a header."""
    delim = _delimiter(lines[first])
    body = [(j + 1, line) for j, line in enumerate(lines) if j >= first and line.strip()]
    if delim is None:
        rows = [(j, line.split()) for j, line in body]
    else:
        rows = list(zip((j for j, _ in body), csv.reader((line for _, line in body), delimiter=delim)))
    header = [h.strip() for h in rows[0][1]]
    data = rows[1:]
    if delim is None and data and all(len(r) == len(header) + 1 for _, r in data):
        header = ["", *header]  # a names line over 'file value ...' rows: the official layout without its count
    for j, r in data:
        if len(r) != len(header):
            raise LabelsError(f"{path}:{j}: {len(r)} fields, but the header (line {first + 1}) has {len(header)}; "
                              f"every row needs one field per column")
    col = _file_column(header, data)
    if col is None:
        raise LabelsError(f"{path}: no file-name column in the header {header}; name it one of "
                          f"{', '.join(FILE_COLUMNS)}, leave its header empty, or put file names ending in "
                          f".jpg/.png in the first column")
    names = [h for c, h in enumerate(header) if c != col]
    files = [r[col].strip() for _, r in data]
    cells = [[v.strip() for c, v in enumerate(r) if c != col] for _, r in data]
    return names, files, cells, [j for j, _ in data]


def _file_column(header: list[str], data: list[tuple[int, list[str]]]) -> int | None:
    for c, h in enumerate(header):
        if h == "" or h.lower() in FILE_COLUMNS:
            return c
    if data and all(r[0].strip().lower().endswith(_IMAGE_ENDINGS) for _, r in data):
        return 0
    return None


def _refuse_duplicates(path: Path, files: list[str], where: list[int]) -> None:
    seen: dict[str, int] = {}
    for f, line in zip(files, where):
        if f in seen:
            raise LabelsError(f"{path}: file name {f!r} has two rows (lines {seen[f]} and {line}); each image may "
                              f"have one row")
        seen[f] = line


def _numbers(path: Path, names: list[str], cells: list[list[str]], where: list[int]) -> np.ndarray:
    """float64 (M, A) of the cells; ``LabelsError`` naming the line and column of the first non-number."""
    flat = [v for row in cells for v in row]
    try:
        return np.array(flat, dtype=np.int16).reshape(len(cells), len(names)).astype(np.float64)
    except (ValueError, OverflowError):
        pass  # not all small integers: try as floats, then find the culprit
    try:
        return np.array(flat, dtype=np.float64).reshape(len(cells), len(names))
    except ValueError:
        pass
    for row, line in zip(cells, where):
        for name, v in zip(names, row):
            try:
                float(v)
            except ValueError:
                raise LabelsError(f"{path}:{line}: column {name!r} holds {v!r}, not a number; attribute values "
                                  f"are 0/1 or -1/1") from None
    raise LabelsError(f"{path}: values that are not numbers; attribute values are 0/1 or -1/1")


def _shown(values: np.ndarray) -> str:
    """Distinct values of a column for a message: at most five, integers without a decimal point."""
    u = np.unique(values)
    nan = bool(np.isnan(u).any())
    u = u[~np.isnan(u)]
    text = [str(int(x)) if float(x).is_integer() else f"{x:g}" for x in u[:5]]
    if len(u) > 5:
        text.append(f"... ({len(u)} distinct)")
    if nan:
        text.append("missing values")
    return ", ".join(text)


def _attribute_columns(path: Path, names: list[str], cells: list[list[str]],
                       where: list[int]) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """(attribute names, int8 (M, A) of 1/0, skipped column -> reason) from the value cells."""
    x = _numbers(path, names, cells, where)
    keep, cols, skipped = [], [], {}
    for c, name in enumerate(names):
        col = x[:, c]
        present = set(np.unique(col[~np.isnan(col)]).tolist()) if not np.isnan(col).all() else set()
        if name in keep or name in skipped:
            skipped[f"{name} (column {c + 2})"] = "a second column of that name"
        elif np.isnan(col).any() or not (present <= {0.0, 1.0} or present <= {-1.0, 1.0}):
            skipped[name] = f"values {_shown(col)}: not two-valued 0/1 or -1/1"
        else:
            keep.append(name)
            cols.append(col == 1.0)
    values = np.stack(cols, axis=1).astype(np.int8) if cols else np.zeros((len(cells), 0), np.int8)
    return keep, values, skipped


# ---------------------------------------------------------------- matching


def _short(name: str) -> str:
    """The file name without folders and without its extension: 'img_align_celeba/000001.jpg' -> '000001'."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return os.path.splitext(base)[0] or base


def match_labels(labels: Labels, ids) -> tuple[np.ndarray, dict]:
    """Label rows aligned to ``ids`` (N,) str: int8 (N, A), 1/0, -1 where an id has no label row.

    The matching rule is the module docstring's. Returns (values, counts) with counts
    ``matched``, ``unmatched_ids`` (ids without a label row), ``unused_rows`` (label
    rows matching no id) and ``ambiguous`` (ids left unlabelled because their short
    name is shared). ``LabelsError`` when nothing matches, with an example of each side.
    """
    ids = [str(i) for i in np.asarray(ids).ravel().tolist()]
    files = list(labels.files)
    row_of = {f: r for r, f in enumerate(files)}
    if len(row_of) != len(files):
        dup = next(f for f, n in Counter(files).items() if n > 1)
        raise LabelsError(f"{labels.source}: file name {dup!r} has two label rows; each image may have one row")
    match = np.full(len(ids), -1, np.int64)
    used = np.zeros(len(files), bool)
    rest = []
    for i, name in enumerate(ids):
        r = row_of.get(name)
        if r is None:
            rest.append(i)
        else:
            match[i], used[r] = r, True
    ambiguous = 0
    if rest:
        free = [r for r in range(len(files)) if not used[r]]
        row_keys = Counter(_short(files[r]) for r in free)
        key_row = {_short(files[r]): r for r in free}
        id_keys = Counter(_short(ids[i]) for i in rest)
        for i in rest:
            k = _short(ids[i])
            if k in row_keys:
                if row_keys[k] == 1 and id_keys[k] == 1:
                    match[i] = key_row[k]
                    used[key_row[k]] = True
                else:
                    ambiguous += 1
    ok = match >= 0
    counts = {"matched": int(ok.sum()), "unmatched_ids": int((~ok).sum()), "unused_rows": int((~used).sum()),
              "ambiguous": ambiguous}
    if not ok.any():
        raise LabelsError(
            f"{labels.source}: none of its {len(files)} rows matches any of the {len(ids)} ids (ids look like "
            f"{ids[0] if ids else 'nothing'!r}, label rows like {files[0] if files else 'nothing'!r}); rows match "
            f"by file name, e.g. the row '000001.jpg' matches the id '000001.jpg' or 'img_align_celeba/000001.jpg'")
    values = np.full((len(ids), len(labels.names)), -1, np.int8)
    values[ok] = labels.values[match[ok]]
    if counts["unmatched_ids"]:
        logger.warning("%s: %d of %d images have no label row%s", labels.source, counts["unmatched_ids"], len(ids),
                       f" ({ambiguous} because their file name is shared)" if ambiguous else "")
    logger.info("%s: labels for %d images; %d label rows without an image ignored", labels.source,
                counts["matched"], counts["unused_rows"])
    return values, counts


def usable(values: np.ndarray, names: list[str], min_count: int = 20) -> tuple[list[int], dict[str, str]]:
    """Attributes a readout can be trained and tested on.

    ``values`` int8 (N, A) with 1/0 and -1 for unlabelled rows. Returns (indices of
    the attributes with at least ``min_count`` positives and ``min_count`` negatives,
    {name: why not} for the others, e.g. "3 positives (at least 20 of each needed)").
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values must be (N, {len(names)}) to match names, got shape {values.shape}")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    pos = (values == 1).sum(axis=0)
    neg = (values == 0).sum(axis=0)
    keep, why = [], {}
    for j, name in enumerate(names):
        short = [f"{n} {what}" for n, what in ((int(pos[j]), "positives"), (int(neg[j]), "negatives"))
                 if n < min_count]
        if short:
            why[name] = f"{', '.join(short)} (at least {min_count} of each needed)"
        else:
            keep.append(j)
    return keep, why


# ---------------------------------------------------------------- images.zarr


def store_labels(group: zarr.Group, path: Path, names: list[str], values: np.ndarray, info: dict) -> None:
    """Write ``values`` int8 (N, A) as the array ``attributes`` of the image cache ``group`` at ``path``.

    Built as ``attributes.tmp`` and renamed into place, so a reader sees the old
    labels or the new ones, never half of them; the names travel inside the array
    (its attribute ``names``), the group attributes repeat them for people reading
    zarr.json. ``info`` gives ``source``, ``format``, ``skipped`` and the label rows
    left unused (``unused_rows``, ``ambiguous``).
    """
    values = np.ascontiguousarray(values, dtype=np.int8)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values must be (N, {len(names)}) to match names, got shape {values.shape}")
    tmp = LABELS_ARRAY + ".tmp"
    shutil.rmtree(Path(path) / tmp, ignore_errors=True)
    n, a = values.shape
    # fill -1: a chunk that never reached the disk reads as unlabelled, not as negatives
    arr = group.create_array(tmp, shape=(n, a), chunks=(max(1, min(n, 65536)), a), dtype="int8", fill_value=-1,
                             config=WRITE_ALL)
    arr[:] = values
    arr.attrs.update(names=list(names))
    swap_in(Path(path) / tmp, Path(path) / LABELS_ARRAY)
    matched = int((values != -1).any(axis=1).sum())
    counts = {"matched": matched, "unmatched_ids": n - matched, "unused_rows": int(info.get("unused_rows", 0)),
              "ambiguous": int(info.get("ambiguous", 0))}
    group.attrs.update(attribute_names=list(names), attribute_counts=counts,
                       attribute_source=str(info.get("source", "")), attribute_format=str(info.get("format", "")),
                       attribute_skipped=dict(info.get("skipped", {})))
    if "attribute_error" in group.attrs:
        del group.attrs["attribute_error"]


def stored_equal(group: zarr.Group, path: Path, names: list[str], values: np.ndarray) -> bool:
    """True when the cache already holds exactly these labels, every chunk on disk."""
    if LABELS_ARRAY not in group:
        return False
    arr = group[LABELS_ARRAY]
    if arr.attrs.get("names") != list(names) or arr.shape != values.shape:
        return False
    if missing_rows(arr, Path(path) / LABELS_ARRAY):
        return False
    return bool(np.array_equal(arr[:], values))


def _open_cache(run: Path) -> zarr.Group:
    path = cache_path(run)
    rebuild = f"zspace prepare SOURCE --run {run} --overwrite"
    group = open_group(path, "r", rebuild)
    if not group.attrs.get("complete"):
        raise LabelsError(f"{path} is incomplete (interrupted prepare): rerun 'zspace prepare' to finish it")
    check_arrays(group, path, ("ids",), rebuild, required=("ids",))
    return group


def _run_ids(run: Path) -> tuple[list[str], str]:
    """(ids of the rows labels are aligned to, which store they come from): images.zarr, else latents.zarr."""
    if cache_path(run).exists():
        return [str(i) for i in _open_cache(run)["ids"][:].tolist()], "images.zarr"
    path = latents_path(run)
    if not path.exists():
        raise FileNotFoundError(f"{run} has neither images.zarr nor latents.zarr: run 'zspace prepare SOURCE --run "
                                f"{run}' or 'zspace import-latents FILE --run {run}' first")
    group = open_group(path, "r", f"zspace encode --run {run} --overwrite")
    if "ids" not in group:
        raise LabelsError(f"{path} has no ids to match labels against; labels need the images' file names as ids")
    check_arrays(group, path, ("ids",), f"zspace encode --run {run} --overwrite")
    return [str(i) for i in group["ids"][:].tolist()], "latents.zarr"


def _latents_agree(run: Path, ids: list[str]) -> bool | None:
    """Whether latents.zarr's rows are images.zarr's (True when encoded from it); None without latents or ids."""
    path = latents_path(run)
    try:
        group = zarr.open_group(path, mode="r")
        lat = group["ids"][:].tolist() if "ids" in group else None
    except Exception:  # no latents, or damaged ones: the stage reading them says so
        return None
    return None if lat is None else [str(i) for i in lat] == ids


def stored_labels(run_dir: str | os.PathLike) -> tuple[list[str], np.ndarray, dict]:
    """(names, int8 (N, A) of 1/0/-1 aligned to images.zarr rows, info) as ``prepare`` stored them."""
    run = Path(run_dir)
    path = cache_path(run)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist, so the run has no labels from prepare: run 'zspace prepare "
                                f"SOURCE --run {run}' or pass an attribute file (list_attr_celeba.txt or a CSV)")
    group = _open_cache(run)
    spec = (group.attrs.get("source") or {}).get("spec", "SOURCE")
    if LABELS_ARRAY not in group:
        err = group.attrs.get("attribute_error")
        if err:
            raise LabelsError(f"{path} holds no labels: its source's label file could not be read ({err}); fix it "
                              f"and rerun 'zspace prepare {spec} --run {run}', or pass an attribute file")
        raise LabelsError(f"{path} holds no labels: its source {spec!r} has none (a CelebA root gets them from "
                          f"list_attr_celeba.txt, synthetic:N plants its own); pass an attribute file "
                          f"(list_attr_celeba.txt or a CSV)")
    check_arrays(group, path, (LABELS_ARRAY,), f"zspace prepare {spec} --run {run}")
    arr = group[LABELS_ARRAY]
    names = arr.attrs.get("names")
    n = group["ids"].shape[0]
    if not isinstance(names, list) or arr.shape != (n, len(names)):
        raise LabelsError(f"{path}/{LABELS_ARRAY} has shape {arr.shape} for {n} images and "
                          f"{len(names) if isinstance(names, list) else 'no'} names; rebuild it with "
                          f"'zspace prepare {spec} --run {run} --overwrite'")
    values = np.asarray(arr[:], dtype=np.int8)
    counts = dict(group.attrs.get("attribute_counts") or {})
    info = {"source": group.attrs.get("attribute_source", ""), "format": group.attrs.get("attribute_format", ""),
            "aligned_to": "images.zarr", "rows": n, **counts,
            "skipped": dict(group.attrs.get("attribute_skipped") or {})}
    return [str(x) for x in names], values, info


def run_labels(run_dir: str | os.PathLike,
               attrs_file: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray, dict]:
    """Labels of a run's rows: (names (A,), int8 (N, A) of 1/0 and -1 unlabelled, info).

    Rows are images.zarr's (latents.zarr's equal them when encoded from it), or
    latents.zarr's when the run has no image cache (latents brought in with
    import-latents). From ``attrs_file`` when given (any format ``read_labels``
    takes, matched by file name against those rows' ids), else from what
    ``prepare`` stored. ``info``: source, format, aligned_to, rows, matched,
    unmatched_ids, unused_rows, ambiguous, skipped (column -> reason) and
    latents_rows_match (images.zarr rows are latents.zarr rows; None without
    latents). Raises ``LabelsError`` or ``FileNotFoundError`` when the run has no
    labels, saying where they could come from.
    """
    run = Path(run_dir)
    if attrs_file is None:
        names, values, info = stored_labels(run)
    else:
        labels = read_labels(attrs_file)
        ids, aligned = _run_ids(run)
        values, counts = match_labels(labels, ids)
        names = list(labels.names)
        info = {"source": labels.source, "format": labels.format, "aligned_to": aligned, "rows": len(ids), **counts,
                "skipped": dict(labels.skipped)}
    if info["aligned_to"] == "images.zarr":
        ids = [str(i) for i in _open_cache(run)["ids"][:].tolist()]
        info["latents_rows_match"] = _latents_agree(run, ids)
        if info["latents_rows_match"] is False:
            logger.warning("%s holds other rows than images.zarr (imported latents?): labels follow images.zarr",
                           latents_path(run))
    else:
        info["latents_rows_match"] = True
    return names, values, info
