"""Dependencies that must fit: each misfit is one line naming the package and what to install.

zspace leans on compiled packages whose versions must agree (numba with numpy,
OpenCV's Haar cascades, a CUDA build of torch). When one does not fit, the user
gets a ``DependencyError`` (a ``ValueError``: the command line prints it as one
line, exit 2), raised before a stage starts, never a traceback from its middle:

* OpenCV 5 moved ``CascadeClassifier`` and the Haar cascade files out of the
  main wheels into the contrib build: :func:`face_detector` finds the class in
  either (``cv2.CascadeClassifier``, ``cv2.xobjdetect.CascadeClassifier``) and
  the cascade file in ``cv2.data.haarcascades``, else says what to install.
* numba supports a window of numpy versions and refuses to import outside it:
  :func:`explain_import_error` turns that (and any failed import of a compiled
  dependency) into the line that says which package and what to install.
* ``--device cuda`` with a torch built without CUDA, or with no GPU visible:
  ``engine.model.precision.resolve_device`` says which of the two and what to do.
"""

from __future__ import annotations

import functools
import os
import re

CASCADE = "haarcascade_frontalface_default.xml"
OPENCV_FIX = "pip install 'opencv-python-headless>=4.8,<5' (or opencv-contrib-python-headless, which keeps them)"


class DependencyError(ValueError):
    """An installed package that does not fit (missing, too new, too old, or built without a feature)."""


@functools.lru_cache(maxsize=1)
def face_detector() -> tuple[type, str]:
    """(OpenCV's ``CascadeClassifier`` class, path of the frontal-face cascade), from the main or contrib build.

    ``DependencyError`` when OpenCV is missing, lacks the class (OpenCV 5's main wheels) or lacks the file.
    """
    try:
        import cv2
    except ImportError as exc:
        raise DependencyError(f"the face judge needs OpenCV, which failed to import ({_first_line(exc)}): "
                              f"{OPENCV_FIX}") from None
    cls = getattr(cv2, "CascadeClassifier", None) or getattr(getattr(cv2, "xobjdetect", None), "CascadeClassifier", None)
    version = getattr(cv2, "__version__", "?")
    if cls is None:
        raise DependencyError(f"the face judge needs OpenCV's Haar cascade detector, which OpenCV {version} does not "
                              f"have (OpenCV 5 moved cv2.CascadeClassifier to the contrib build): {OPENCV_FIX}")
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(folder, CASCADE) if folder else None
    if path is None or not os.path.isfile(path):
        raise DependencyError(f"the face judge needs {CASCADE}, which OpenCV {version} does not ship "
                              f"(looked in {folder or 'cv2.data.haarcascades, absent'}): {OPENCV_FIX}")
    return cls, path


# compiled dependencies whose failed import is an installation problem, with what fixes it
_FIXES = {
    "numba": "pip install -U numba, or a numpy that the installed numba supports",
    "llvmlite": "pip install -U numba llvmlite",
    "cv2": OPENCV_FIX,
    "faiss": "pip install faiss-cpu",
    "openTSNE": "pip install openTSNE",
    "torch": "pip install torch",
    "zarr": "pip install 'zarr>=3'",
    "sklearn": "pip install scikit-learn",
    "scipy": "pip install scipy",
}


def explain_import_error(exc: ImportError) -> str | None:
    """One line for a failed import of a dependency (which package, its own reason, what to install), or None
    when the failure is not one of zspace's dependencies (a bug to show in full)."""
    name = (exc.name or "").split(".")[0]
    text = _first_line(exc)
    if name not in _FIXES:  # numba raises a bare ImportError from its own __init__ (no .name): find it in the text
        found = re.search(r"\b(Numba|numba|llvmlite|cv2|faiss|openTSNE|torch|zarr|sklearn|scipy)\b", text)
        if found is None:
            return None
        name = found.group(1).lower() if found.group(1) == "Numba" else found.group(1)
    return f"{name} cannot be imported ({text}): {_FIXES[name]}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


__all__ = ["CASCADE", "DependencyError", "EXPLORE_FIX", "bokeh_version", "explain_import_error", "face_detector"]


EXPLORE_FIX = "pip install 'zspace[explore]' (Bokeh >= 3.4, whose BokehJS the page carries)"


def bokeh_version() -> str:
    """The installed Bokeh's version, which the explore page draws with; ``DependencyError`` when it is missing or
    older than 3.4 (WebGL scatter with typed-array columns, hover callbacks)."""
    try:
        import bokeh
    except ImportError:
        raise DependencyError(f"the explore page needs Bokeh, which is not installed: {EXPLORE_FIX}") from None
    version = getattr(bokeh, "__version__", "0")
    major, minor = ([int(x) for x in re.findall(r"\d+", version)] + [0, 0])[:2]
    if (major, minor) < (3, 4):
        raise DependencyError(f"the explore page needs Bokeh >= 3.4, found {version}: {EXPLORE_FIX}")
    return version
