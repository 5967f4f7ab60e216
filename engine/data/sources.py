"""Image sources: a CelebA root, any folder of images, or the built-in synthetic set.

A source is a picklable list of items (id, split, identity) plus a way to load a
block of them as preprocessed uint8 arrays. Worker processes receive the source
once (pool initializer) and then only block bounds, so listing 202,599 names does
not travel with every task.

Preprocessing follows the study: the centred square crop of the aligned image
(side = the shorter edge; for CelebA's 178x218 that is rows 20..198, all columns),
resized to ``size`` x ``size`` with PIL's antialiased bilinear filter. JPEGs are
decoded in draft mode (libjpeg DCT scaling by 1/2, 1/4 or 1/8) whenever the scaled
crop is still at least ``size`` pixels, which makes small sizes much cheaper.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.labels import ATTR_FILES, LabelsError, match_labels, read_labels
from engine.data.synthetic import ATTRIBUTE_NAMES, planted_attributes, render_block, render_face

logger = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALIDATION: "validation", TEST: "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CROP = "centre square (side = shorter edge), antialiased bilinear resize"


class SourceError(ValueError):
    """A source that cannot be read at all (missing, empty, unknown kind)."""


def hashed_split(name: str) -> int:
    """Deterministic 80/10/10 train/validation/test split from a file name (CRC-32)."""
    h = zlib.crc32(name.encode("utf-8")) % 100
    return TRAIN if h < 80 else VALIDATION if h < 90 else TEST


MAX_UPSCALE = 4  # an image may be enlarged at most 4x: a 1x1 picture is not a face at 96 px
MAX_ASPECT = 4  # longer side / shorter side: a centred square of a 1000x10 strip shows nothing


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale scaled to 8 bits (PIL's convert would clip them at 255)."""
    if img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64) / 257.0  # 65535 -> 255
    elif img.mode == "I":  # 16-bit PNGs open as "I" in some Pillow versions: read as 16 bits, larger by the peak
        a = np.asarray(img, dtype=np.float64)
        top = a.max() if a.size else 0.0
        a = a * (255.0 / max(65535.0, top))
    elif img.mode == "F":  # floating point: [0, 1] when it fits, else [0, 255] clipped
        a = np.asarray(img, dtype=np.float64)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
    else:
        return img
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def crop_resize(img: Image.Image, size: int) -> np.ndarray:
    """Centred square crop of ``img`` resized to uint8 (size, size, 3) RGB.

    Grayscale, palette and CMYK images become RGB; 16-bit images are scaled to 8 bits,
    not clipped; transparent pixels are composited over white so an RGBA cut-out
    does not turn black. An image whose shorter side is under ``size / MAX_UPSCALE``
    or whose sides differ more than ``MAX_ASPECT``:1 raises ``SourceError``, so
    prepare skips, counts and lists it.
    """
    if img.format == "JPEG" and min(img.size) >= 2 * size:
        w, h = img.size
        m = min(w, h)
        # draft() keeps the image at least as large as requested, so ask for the
        # full frame at the scale where the crop is just >= size. Only called when
        # a reduction applies: draft also switches libjpeg to its faster, coarser
        # upsampling, which would change full-size results for nothing.
        img.draft("RGB", (-(-size * w // m), -(-size * h // m)))
    img = _to_8bit(img)
    w, h = img.size
    if min(w, h) * MAX_UPSCALE < size or max(w, h) > MAX_ASPECT * min(w, h):
        raise SourceError(f"{w}x{h} image: zspace skips images whose shorter side is under 1/{MAX_UPSCALE} of the "
                          f"output side ({size} px) or whose sides differ more than {MAX_ASPECT}:1")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    m = min(w, h)
    left, top = (w - m) // 2, (h - m) // 2
    # crop first: resize(box=...) would let the filter reach pixels outside the square
    out = img.crop((left, top, left + m, top + m)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


@dataclass
class Source:
    """Base class: ``ids`` (N,) str, ``split`` (N,) int8, ``identity`` (N,) int32 (-1 unknown).

    Labels, when the source has them: ``attributes`` int8 (N, A), 1 positive, 0
    negative, -1 unlabelled, with ``attribute_names`` (A,); ``attribute_info`` says
    where they came from (source, format, match counts, skipped columns) or, with
    ``attributes`` None, why a label file present could not be used (``error``).
    """

    spec: str
    ids: list[str]
    split: np.ndarray
    identity: np.ndarray
    kind: str = "base"
    attributes: np.ndarray | None = None
    attribute_names: list[str] = field(default_factory=list)
    attribute_info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> tuple[list[str], np.ndarray, dict] | None:
        """(names, int8 (N, A), info) of the items' labels, or None when the source has none."""
        if self.attributes is None:
            return None
        return list(self.attribute_names), self.attributes, dict(self.attribute_info)

    def without_labels(self) -> "Source":
        """The same items without their labels: what worker processes receive (they only decode)."""
        return dataclasses.replace(self, attributes=None)

    def _labels_at(self, index: np.ndarray) -> dict:
        """The label fields of the subset ``index``, as keyword arguments; rows of the images left out count as
        unused."""
        info = dict(self.attribute_info)
        if self.attributes is None:
            return dict(attribute_info=info)
        kept = self.attributes[index]
        matched = int((kept != -1).any(axis=1).sum())
        left_out = int((self.attributes != -1).any(axis=1).sum()) - matched
        info.update(matched=matched, unmatched_ids=len(kept) - matched,
                    unused_rows=int(info.get("unused_rows", 0)) + left_out)
        return dict(attributes=kept, attribute_names=list(self.attribute_names), attribute_info=info)

    def describe(self) -> dict:
        """JSON-able description stored in the cache's attributes."""
        return {"kind": self.kind, "spec": self.spec, "n_items": len(self)}

    def load(self, i: int, size: int) -> np.ndarray:
        raise NotImplementedError

    def load_block(self, start: int, stop: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Images of items [start, stop) as uint8 (n, size, size, 3).

        Returns (images, ok, errors): ``ok`` (n,) bool marks rows that loaded;
        ``errors`` holds one message per failed row, in order. Failed rows are zero.
        """
        n = stop - start
        out = np.zeros((n, size, size, 3), np.uint8)
        ok = np.ones(n, bool)
        errors: list[str] = []
        for k in range(n):
            try:
                out[k] = self.load(start + k, size)
            except Exception as exc:  # a corrupt file must never end a long run
                ok[k] = False
                errors.append(f"{type(exc).__name__}: {exc}")
        return out, ok, errors

    def subset(self, index: np.ndarray) -> "Source":
        """The items at ``index`` (sorted), as a source of the same kind."""
        raise NotImplementedError


@dataclass
class FileSource(Source):
    """Images addressed by relative path inside a folder or a zip archive."""

    root: str = ""
    paths: list[str] = field(default_factory=list)
    archive: str | None = None  # zip file; paths are member names then
    kind: str = "folder"

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_zip", None)  # each process opens its own handle
        return state

    def describe(self) -> dict:
        d = super().describe()
        d.update(root=self.root, archive=self.archive)
        return d

    def _open(self, i: int) -> Image.Image:
        if self.archive is None:
            return Image.open(os.path.join(self.root, self.paths[i]))
        zf = self.__dict__.get("_zip")
        if zf is None:
            zf = self.__dict__["_zip"] = zipfile.ZipFile(self.archive)
        return Image.open(io.BytesIO(zf.read(self.paths[i])))

    def load(self, i: int, size: int) -> np.ndarray:
        with self._open(i) as img:
            return crop_resize(img, size)

    def subset(self, index: np.ndarray) -> "FileSource":
        return FileSource(
            spec=self.spec, ids=[self.ids[i] for i in index], split=self.split[index],
            identity=self.identity[index], kind=self.kind, root=self.root,
            paths=[self.paths[i] for i in index], archive=self.archive, **self._labels_at(index),
        )


@dataclass
class SyntheticSource(Source):
    """``synthetic:N``: procedural faces rendered on demand, item i from seed (seed, i)."""

    seed: int = 0
    index: np.ndarray | None = None  # rendered image numbers (a --limit keeps a subset)
    kind: str = "synthetic"

    def describe(self) -> dict:
        d = super().describe()
        d.update(seed=self.seed)
        return d

    def load(self, i: int, size: int) -> np.ndarray:
        return render_face(int(self.index[i]), size=size, seed=self.seed)

    def load_block(self, start, stop, size):
        idx = self.index[start:stop]
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1:  # contiguous: render in one go
            images = render_block(int(idx[0]), int(idx[-1]) + 1, size=size, seed=self.seed)
            return images, np.ones(len(idx), bool), []
        return super().load_block(start, stop, size)

    def labels(self) -> tuple[list[str], np.ndarray, dict]:
        """The attributes the renderer planted in each item (``engine.data.synthetic.planted_attributes``)."""
        n = len(self.index)
        info = {"source": f"{self.spec} (planted by the renderer)", "format": "synthetic", "matched": n,
                "unmatched_ids": 0, "unused_rows": 0, "ambiguous": 0, "skipped": {}}
        return list(ATTRIBUTE_NAMES), planted_attributes(self.index, seed=self.seed), info

    def subset(self, index):
        return SyntheticSource(
            spec=self.spec, ids=[self.ids[i] for i in index], split=self.split[index],
            identity=self.identity[index], seed=self.seed, index=self.index[index],
        )


def _read_table(path: Path) -> dict[str, int]:
    """``name value`` rows (CelebA's partition and identity files) as a dict."""
    table: dict[str, int] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise SourceError(f"{path}:{lineno}: expected 'NAME VALUE', got {line.strip()!r}")
            try:
                table[parts[0]] = int(parts[1])
            except ValueError:
                raise SourceError(f"{path}:{lineno}: value {parts[1]!r} is not an integer") from None
    return table


def _celeba(root: Path, spec: str) -> FileSource:
    folder, archive = root / "img_align_celeba", root / "img_align_celeba.zip"
    if folder.is_dir():
        paths = sorted(
            e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
        )
        paths = [f"img_align_celeba/{p}" for p in paths]
        arch = None
    else:
        with zipfile.ZipFile(archive) as zf:
            paths = sorted(
                n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("__MACOSX")
            )
        arch = str(archive)
    if not paths:
        raise SourceError(f"no images in {folder if arch is None else archive}")
    ids = [p.rsplit("/", 1)[-1] for p in paths]

    part_file = root / "list_eval_partition.txt"
    if part_file.is_file():
        partition = _read_table(part_file)
        missing = sum(1 for i in ids if i not in partition)
        if missing:
            logger.warning("%d images are not in %s; they get a deterministic split", missing, part_file)
        split = np.array([partition.get(i, hashed_split(i)) for i in ids], np.int8)
        ignored = len(partition) - (len(ids) - missing)
        logger.info("partition file: %d rows, %d without an image ignored", len(partition), ignored)
    else:
        logger.info("no list_eval_partition.txt in %s: deterministic 80/10/10 split from file names", root)
        split = np.array([hashed_split(i) for i in ids], np.int8)

    id_file = root / "identity_CelebA.txt"
    identity = np.full(len(ids), -1, np.int32)
    if id_file.is_file():
        table = _read_table(id_file)
        identity[:] = [table.get(i, -1) for i in ids]
    return FileSource(
        spec=spec, ids=ids, split=split, identity=identity, kind="celeba",
        root=str(root), paths=paths, archive=arch, **_celeba_labels(root, ids),
    )


def _celeba_labels(root: Path, ids: list[str]) -> dict:
    """The label fields of a CelebA root's source: from its ``list_attr_celeba.txt`` (or ``.csv``) when present.

    A label file that cannot be used costs the labels, never the images: prepare goes
    on and records why (``attribute_info["error"]``).
    """
    attr_file = next((root / name for name in ATTR_FILES if (root / name).is_file()), None)
    if attr_file is None:
        return {}
    try:
        labels = read_labels(attr_file)
        values, counts = match_labels(labels, ids)
    except LabelsError as exc:
        logger.warning("%s; the images are prepared without labels", exc)
        return dict(attribute_info={"source": str(attr_file), "error": str(exc)})
    info = {"source": labels.source, "format": labels.format, **counts, "skipped": dict(labels.skipped)}
    return dict(attributes=values, attribute_names=list(labels.names), attribute_info=info)


def _folder(root: Path, spec: str) -> FileSource:
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                paths.append(name if rel == "." else f"{rel}/{name}")
    paths.sort()
    if not paths:
        raise SourceError(f"no .jpg/.jpeg/.png images found under {root}")
    split = np.array([hashed_split(p) for p in paths], np.int8)
    return FileSource(
        spec=spec, ids=paths, split=split, identity=np.full(len(paths), -1, np.int32),
        kind="folder", root=str(root), paths=paths,
    )


def _synthetic(spec: str) -> SyntheticSource:
    parts = spec.split(":")
    try:
        n = int(parts[1])
        seed = int(parts[2]) if len(parts) > 2 else 0
        if n <= 0 or len(parts) > 3:
            raise ValueError
    except (ValueError, IndexError):
        raise SourceError(f"synthetic source {spec!r}: expected 'synthetic:N' or 'synthetic:N:SEED' with N > 0") from None
    ids = [f"synthetic-{i:07d}" for i in range(n)]
    return SyntheticSource(
        spec=spec, ids=ids, split=np.array([hashed_split(i) for i in ids], np.int8),
        identity=np.full(n, -1, np.int32), seed=seed, index=np.arange(n, dtype=np.int64),
    )


def open_source(spec: str | os.PathLike, limit: int | None = None) -> Source:
    """Resolve a SOURCE argument.

    ``synthetic:N[:SEED]``; a CelebA root (holding ``img_align_celeba/`` or
    ``img_align_celeba.zip``; ``img_align_celeba/`` itself also works); or any
    folder of .jpg/.png images, searched recursively. ``limit`` keeps N items
    spread evenly over the sorted listing, so every split stays represented.
    """
    spec = str(spec)
    if spec.startswith("synthetic:"):
        source: Source = _synthetic(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SourceError(f"source {spec!r} does not exist")
        if not path.is_dir():
            raise SourceError(f"source {spec!r} is not a folder (expected a CelebA root, an image folder or synthetic:N)")
        path = path.resolve()
        if path.name == "img_align_celeba" and (path.parent / "list_eval_partition.txt").is_file():
            path = path.parent
        if (path / "img_align_celeba").is_dir() or (path / "img_align_celeba.zip").is_file():
            source = _celeba(path, spec)
        else:
            source = _folder(path, spec)
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be a positive number of images, got {limit}")
        if limit < len(source):
            index = np.unique(np.linspace(0, len(source) - 1, limit).round().astype(np.int64))
            source = source.subset(index)
    return source
