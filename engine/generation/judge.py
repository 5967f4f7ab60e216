"""The independent judge of "is this a face": OpenCV's Haar frontal-face cascade.

Nobody in this project trained it: the cascade file ships inside the
opencv-python-headless 4.x wheel (``cv2.data.haarcascades``), so its verdicts
cannot have been tuned to our autoencoder. FID weights are not available here;
the face rate with its confidence interval, checked against positive and negative
controls by :func:`calibration`, is what ``zspace judge`` reports instead.

Detector settings (fixed; chosen from measurements on 600 CelebA images centre-
cropped to 96 px, 600 uniform-noise and 600 smoothed-noise images, seed 0):

* grayscale (ITU-R 601 luma, ``cv2.COLOR_RGB2GRAY``), resized to 128 x 128 with
  ``INTER_LINEAR``. The cascade's window is 24 px and the images are 64-128 px;
  a fixed working size makes ``minSize`` and the scale pyramid independent of
  the input size, and 128 px found more real and synthetic faces than 96 px.
* ``equalizeHist``: decoded images are often low in contrast (the autoencoder
  averages); equalising gives the cascade's fixed thresholds the same footing
  for real and decoded images. It also stretches smoothed noise to full
  contrast, which makes that control harder, not easier.
* ``scaleFactor=1.1`` (OpenCV's default), ``minNeighbors=4``, ``minSize`` 40%
  of the side (51 px at 128). The images are face crops whose face fills most
  of the frame, so a small detection is a false alarm on texture by
  construction.

Measured face rates (600 images per row, detector at 128 px, minSize 40%;
real = CelebA subset at 96 px; blurred = the real images Gaussian-blurred, a
stand-in for decoder output; smoothed noise as in :func:`calibration`, sigma 2 px,
and coarser, sigma 4 px; synthetic = ``engine.synthetic.render_block(0, 600, 96)``):

=========================  =====  =====  =====  =====  =====  =====
minNeighbors               2      3      **4**  5      6      8
=========================  =====  =====  =====  =====  =====  =====
real                       0.962  0.957  0.955  0.945  0.942  0.930
blurred real, sigma 1.5    0.948  0.943  0.933  0.918  0.912  0.903
blurred real, sigma 3      0.907  0.897  0.875  0.857  0.840  0.822
synthetic faces            0.872  0.853  0.838  0.828  0.815  0.800
uniform noise              0.000  0.000  0.000  0.000  0.000  0.000
smoothed noise, sigma 2    0.012  0.003  0.002  0.000  0.000  0.000
smoothed noise, sigma 4    0.033  0.025  0.020  0.012  0.005  0.005
upside-down real           0.475  0.405  0.353  0.312  0.273  0.218
=========================  =====  =====  =====  =====  =====  =====

4 is the knee: from 2 to 4, false alarms on smoothed noise fall from 1.2% to
0.2% (sigma 2) and from 3.3% to 2.0% (sigma 4) while real faces lose 0.7 points;
beyond 4 each step costs blurred (decoder-like) faces 1.5-2 points for false
alarms already near 0. Upside-down faces still fire at about a third of the
upright rate: the cascade's features are largely symmetric dark-over-light
bands, so this control bounds what "face" means to the judge rather than being
zero. Working size 96 instead of 128 (minNeighbors 4) measured real 0.945,
synthetic 0.807, noise 0.000, smoothed noise 0.002.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engine.data.sources import IMAGE_SUFFIXES, crop_resize
from engine.deps import CASCADE, OPENCV_FIX, DependencyError, face_detector

logger = logging.getLogger(__name__)

__all__ = [
    "FaceDetector",
    "wilson_interval",
    "detect",
    "face_rate",
    "sharpness",
    "calibration",
    "load_images",
    "judge_path",
]

Z95 = 1.959963984540054  # standard normal quantile 0.975
ARRAY_SUFFIXES = (".npy", ".npz")


def _check_images(images, name: str = "images") -> np.ndarray:
    """Validate a uint8 (N, S, S, 3) batch and return it C-contiguous (flips and crops come as views)."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"{name} must have shape (N, S, S, 3) (square RGB images), got {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 in [0, 255], got dtype {a.dtype}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0); a rate needs at least one image")
    return np.ascontiguousarray(a)


@dataclass(frozen=True)
class FaceDetector:
    """Haar frontal-face detector with fixed settings (see the module docstring for why).

    ``work_size``: side (px) every image is resized to before detection;
    ``scale_factor``, ``min_neighbors``: passed to ``detectMultiScale``;
    ``min_size_frac``: smallest accepted face as a fraction of ``work_size``;
    ``equalize``: apply ``cv2.equalizeHist`` to the grayscale image.
    """

    work_size: int = 128
    scale_factor: float = 1.1
    min_neighbors: int = 4
    min_size_frac: float = 0.4
    equalize: bool = True

    def __post_init__(self):
        if not (isinstance(self.work_size, (int, np.integer)) and self.work_size >= 24):
            raise ValueError(f"work_size must be an integer >= 24 (the cascade window), got {self.work_size!r}")
        if not self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor!r}")
        if not (isinstance(self.min_neighbors, (int, np.integer)) and self.min_neighbors >= 0):
            raise ValueError(f"min_neighbors must be an integer >= 0, got {self.min_neighbors!r}")
        if not 0.0 < self.min_size_frac <= 1.0:
            raise ValueError(f"min_size_frac must be in (0, 1], got {self.min_size_frac!r}")

    @property
    def min_size(self) -> int:
        """Smallest accepted face side in pixels of the working image."""
        return max(24, int(round(self.min_size_frac * self.work_size)))

    def settings(self) -> dict:
        """JSON-able settings, saved beside every rate so results can be compared."""
        d = asdict(self)
        d.update(cascade=CASCADE, min_size=self.min_size, opencv=cv2.__version__,
                 preprocess="RGB2GRAY, INTER_LINEAR resize to work_size" + (", equalizeHist" if self.equalize else ""))
        return d

    def _cascade(self):
        # loaded lazily and kept out of the dataclass fields: CascadeClassifier does
        # not pickle, and a frozen detector should stay cheap to pass to workers
        c = self.__dict__.get("_cc")
        if c is None:
            cls, path = face_detector()  # OpenCV 4's main wheel or the contrib build; else one line what to install
            c = cls(path)
            if c.empty():
                raise DependencyError(f"OpenCV could not load the Haar cascade {path}: {OPENCV_FIX}")
            object.__setattr__(self, "_cc", c)
        return c

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cc", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def gray(self, image: np.ndarray) -> np.ndarray:
        """uint8 (S, S, 3) RGB -> uint8 (work_size, work_size): what the cascade sees."""
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if g.shape[0] != self.work_size:
            g = cv2.resize(g, (self.work_size, self.work_size), interpolation=cv2.INTER_LINEAR)
        return cv2.equalizeHist(g) if self.equalize else g

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Detections in one uint8 (S, S, 3) image: int32 (k, 4) (x, y, w, h) in working-image pixels."""
        m = self.min_size
        r = self._cascade().detectMultiScale(self.gray(image), scaleFactor=self.scale_factor,
                                            minNeighbors=self.min_neighbors, minSize=(m, m))
        return np.asarray(r, np.int32).reshape(-1, 4)

    def detect(self, images: np.ndarray) -> np.ndarray:
        """bool (N,): True where at least one face is found in uint8 (N, S, S, 3) RGB ``images``."""
        a = _check_images(images)
        return np.fromiter((len(self.boxes(im)) > 0 for im in a), dtype=bool, count=len(a))


DEFAULT = FaceDetector()


def wilson_interval(count: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``count / n``.

    With p = count/n: centre = (p + z^2/(2n)) / (1 + z^2/n),
    half = z * sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n); returns (centre - half,
    centre + half) clipped to [0, 1]. Unlike the normal (Wald) interval it stays
    inside [0, 1] and is not zero-width at 0/n or n/n, which is where controls sit.
    """
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(count, (int, np.integer)) and 0 <= count <= n):
        raise ValueError(f"count must be an integer in [0, n={n}], got {count!r}")
    p = count / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the bounds are exactly 0 at count 0 and 1 at count n; say so instead of rounding noise
    lo = 0.0 if count == 0 else max(0.0, centre - half)
    hi = 1.0 if count == n else min(1.0, centre + half)
    return lo, hi


def detect(images: np.ndarray, detector: FaceDetector | None = None) -> np.ndarray:
    """bool (N,): face found, for uint8 (N, S, S, 3) RGB ``images`` (default detector settings)."""
    return (detector or DEFAULT).detect(images)


def face_rate(images: np.ndarray, detector: FaceDetector | None = None) -> dict:
    """Face rate of uint8 (N, S, S, 3) ``images`` as a JSON-able dict.

    Keys: ``count`` (images with a face), ``n``, ``rate`` = count / n, ``ci95``
    [low, high] (Wilson score interval, 95%).
    """
    hits = detect(images, detector)
    count, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(count, n)
    return {"count": count, "n": n, "rate": count / n, "ci95": [lo, hi]}


def sharpness(images: np.ndarray) -> np.ndarray:
    """float64 (N,): variance of the Laplacian of each grayscale image, at native size.

    ``var(cv2.Laplacian(gray, CV_64F))`` with the 3x3 aperture; gray is ITU-R 601
    luma in [0, 255]. Blurry decoder output scores low; it only compares images
    of the same size (the value scales with resolution).
    """
    a = _check_images(images)
    return np.array([cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for im in a],
                    dtype=np.float64)


def calibration(real_images: np.ndarray, reconstructions: np.ndarray | None = None, seed: int = 0,
                detector: FaceDetector | None = None) -> dict:
    """Face rates of the judge on positive and negative controls, each a :func:`face_rate` dict.

    Keys: ``real`` (the uint8 (N, S, S, 3) ``real_images``, expected high),
    ``reconstructions`` (only when given), ``noise`` (uniform uint8 noise),
    ``smoothed_noise`` (uniform noise Gaussian-blurred with sigma = S/48 px, i.e.
    2 px at 96, so blobs are about the size of eyes), ``upside_down``
    (``np.flip(real_images, axis=1)``), plus ``settings`` (detector settings,
    seed, smoothing sigma). Every control has the same N as ``real_images``, so
    their intervals are equally wide.
    """
    real = _check_images(real_images, "real_images")
    det = detector or DEFAULT
    n, s = real.shape[0], real.shape[1]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=real.shape, dtype=np.uint8)
    sigma = s / 48.0
    # a fresh draw, so the smoothed set is not a filtered copy of the noise set
    smooth = rng.integers(0, 256, size=real.shape, dtype=np.uint8)
    for k in range(n):
        smooth[k] = cv2.GaussianBlur(smooth[k], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    out = {"real": face_rate(real, det)}
    if reconstructions is not None:
        out["reconstructions"] = face_rate(_check_images(reconstructions, "reconstructions"), det)
    out["noise"] = face_rate(noise, det)
    out["smoothed_noise"] = face_rate(smooth, det)
    out["upside_down"] = face_rate(np.flip(real, axis=1), det)
    out["settings"] = {"detector": det.settings(), "seed": int(seed), "smoothing_sigma_px": sigma, "n": n, "size": s}
    logger.info("judge calibration: %s", {k: round(v["rate"], 3) for k, v in out.items() if k != "settings"})
    return out


def _array_to_images(a: np.ndarray, path: Path, size: int) -> np.ndarray:
    """Validate an array read from ``path`` and convert to uint8 (N, size, size, 3)."""
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[1] != a.shape[2] or a.shape[0] == 0:
        raise ValueError(f"{path}: array must have shape (N, S, S, 3) with N > 0 (square RGB images), got {a.shape}")
    if a.dtype == np.uint8:
        out = a
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: float images must be finite, got NaN or inf (shape {a.shape})")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{path}: float images must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}] (shape {a.shape})")
        out = np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"{path}: images must be uint8 or float in [0, 1], got dtype {a.dtype} (shape {a.shape})")
    if out.shape[1] != size:
        # same resampling as the image folders, so array and folder inputs judge alike
        out = np.stack([crop_resize(Image.fromarray(im), size) for im in out])
    return np.ascontiguousarray(out)


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if "images" in keys:
            return z["images"]
        if len(keys) == 1:
            return z[keys[0]]
        raise ValueError(f"{path}: .npz must hold one array or one named 'images', found {keys}")


def load_images(path: str | os.PathLike, size: int = 96) -> np.ndarray:
    """Images to judge as uint8 (N, size, size, 3) RGB.

    ``path`` is a folder (PNG/JPEG found recursively, sorted by relative path,
    each centre-cropped and resized with :func:`engine.sources.crop_resize`), one
    image file, or an ``.npy``/``.npz`` array (N, S, S, 3) of uint8 or float in
    [0, 1] (floats are rounded to uint8; S != size is resized like the images).
    Unreadable image files are skipped, counted and logged; a folder with no
    readable image is a ValueError.
    """
    if not (isinstance(size, (int, np.integer)) and size >= 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"path does not exist: {p}")
    if p.is_file() and p.suffix.lower() in ARRAY_SUFFIXES:
        return _array_to_images(_read_array(p), p, size)
    if p.is_file():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"path {p} must be a folder, an image ({', '.join(IMAGE_SUFFIXES)}) or an array (.npy, .npz)")
        files = [p]
    else:
        files = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda f: f.relative_to(p).as_posix())
        if not files:
            raise ValueError(f"path {p} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)")
    out, bad = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(crop_resize(im, size))
        except Exception as exc:  # one corrupt file must not end a judging run
            bad.append(f"{f}: {type(exc).__name__}: {exc}")
    if bad:
        logger.warning("skipped %d of %d unreadable images under %s; first: %s", len(bad), len(files), p, bad[0])
    if not out:
        raise ValueError(f"path {p}: none of {len(files)} image files could be read; first error: {bad[0]}")
    return np.stack(out)


def judge_path(path: str | os.PathLike, size: int = 96, detector: FaceDetector | None = None) -> dict:
    """Judge the images at ``path`` (see :func:`load_images`): JSON-able dict.

    Keys: the :func:`face_rate` keys (count, n, rate, ci95), ``sharpness_mean``
    (mean variance of the Laplacian at ``size`` px), ``path``, ``size`` and
    ``detector`` (settings).
    """
    det = detector or DEFAULT
    face_detector()  # before reading a folder of images: one line what to install
    images = load_images(path, size)
    res = face_rate(images, det)
    res["sharpness_mean"] = float(sharpness(images).mean())
    res.update(path=str(path), size=int(size), detector=det.settings())
    logger.info("judged %s: %d/%d faces (rate %.3f, 95%% CI %.3f-%.3f)", path, res["count"], res["n"],
                res["rate"], *res["ci95"])
    return res
