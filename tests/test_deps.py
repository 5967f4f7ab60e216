"""Dependencies that do not fit give one line naming the package and what to install, before a stage starts."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cli import main
from engine.deps import DependencyError, explain_import_error, face_detector
from engine.generation.judge import FaceDetector, detect
from engine.data.synthetic import render_block

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def opencv(monkeypatch):
    """Install a stand-in ``cv2`` module for the test; the detector lookup is redone each time."""
    face_detector.cache_clear()

    def install(module):
        monkeypatch.setitem(sys.modules, "cv2", module)
        face_detector.cache_clear()
        return module

    yield install
    face_detector.cache_clear()


def opencv5_main_wheel() -> types.ModuleType:
    """cv2 as OpenCV 5's main wheel has it: no CascadeClassifier, an empty data folder."""
    fake = types.ModuleType("cv2")
    fake.__version__ = "5.0.0"
    fake.data = types.SimpleNamespace(haarcascades=str(Path(cv2.data.haarcascades).parent / "no-cascades") + os.sep)
    return fake


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    return err


def test_opencv_without_the_cascade_is_one_line_before_compare_starts(trained_copy, opencv, capsys):
    opencv(opencv5_main_wheel())
    with pytest.raises(DependencyError, match="OpenCV 5.0.0 does not have.*opencv-python-headless>=4.8,<5"):
        face_detector()
    for argv in (["compare", "--run", str(trained_copy), "--n", "8", "--device", "cpu"],
                 ["facemap", "--run", str(trained_copy), "--n", "20", "--device", "cpu"],
                 ["judge", str(trained_copy / "train")]):
        assert main(argv) == 2, argv[0]
        err = one_line(capsys)
        assert "CascadeClassifier" in err and "pip install" in err, err
    assert not (trained_copy / "generate").exists() and not (trained_copy / "facemap").exists(), "a stage started"


def test_zspace_run_checks_the_judge_before_its_first_stage(tmp_path, opencv, capsys):
    opencv(opencv5_main_wheel())
    run = tmp_path / "run"
    assert main(["run", "synthetic:200", "--run", str(run), "--quick", "--device", "cpu"]) == 2
    assert "CascadeClassifier" in one_line(capsys)
    assert not (run / "images.zarr").exists(), "prepare ran before the judge was checked"


def test_a_missing_cascade_file_and_a_missing_opencv_are_named(opencv):
    fake = opencv5_main_wheel()
    fake.CascadeClassifier = cv2.CascadeClassifier
    opencv(fake)
    with pytest.raises(DependencyError, match="haarcascade_frontalface_default.xml, which OpenCV 5.0.0 does not ship"):
        face_detector()
    opencv(None)  # import cv2 raises ImportError
    with pytest.raises(DependencyError, match="needs OpenCV, which failed to import.*pip install"):
        face_detector()


def test_the_contrib_build_is_used_where_the_main_wheel_lacks_the_cascade(opencv):
    """OpenCV 5 with the contrib build: the class under cv2.xobjdetect, the cascade files shipped again."""
    images = render_block(0, 40, 96)  # synthetic faces: about 84% found by the cascade (judge.py)
    expect = detect(images, FaceDetector())  # with the real OpenCV 4 module
    fake = opencv5_main_wheel()
    calls = []

    def contrib_cascade(path):  # a factory, not a subclass: subclassed OpenCV classes crash the garbage collector
        calls.append(path)
        return cv2.CascadeClassifier(path)

    fake.xobjdetect = types.SimpleNamespace(CascadeClassifier=contrib_cascade)
    fake.data = cv2.data
    for name in ("cvtColor", "resize", "equalizeHist", "COLOR_RGB2GRAY", "INTER_LINEAR", "__version__"):
        setattr(fake, name, getattr(cv2, name))
    opencv(fake)
    cls, path = face_detector()
    assert cls is contrib_cascade and path.endswith("haarcascade_frontalface_default.xml")
    got = detect(images, FaceDetector())  # a fresh detector: it loads its cascade through face_detector()
    assert calls == [path], "the judge did not load the contrib build's cascade"
    np.testing.assert_array_equal(got, expect)
    assert 0 < got.mean(), "the control images hold faces the cascade finds"


def test_numba_that_refuses_the_installed_numpy_is_one_line(tmp_path):
    """numba raises a bare ImportError from its __init__ outside its numpy window: the CLI names it and the fix."""
    fake = tmp_path / "shadow" / "numba"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.4.")\n')
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-m", "cli", "stats", "--run", str(tmp_path / "run")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("zspace stats: error: numba cannot be imported (Numba needs NumPy 2.3 or less"), err
    assert "pip install -U numba" in err, err


def test_import_errors_outside_the_dependencies_are_not_hidden():
    assert explain_import_error(ImportError("cannot import name 'x' from 'engine.nothing'", name="engine.nothing")) is None
    line = explain_import_error(ModuleNotFoundError("No module named 'faiss'", name="faiss"))
    assert line.startswith("faiss cannot be imported") and "pip install faiss-cpu" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the CPU-only message cannot be seen")
def test_cuda_asked_of_a_torch_without_it_is_one_line(trained_copy, capsys):
    for argv in (["encode", "--run", str(trained_copy), "--device", "cuda"],
                 ["generate", "--run", str(trained_copy), "--sampler", "mvn", "--device", "cuda:1"]):
        assert main(argv) == 2, argv[0]
        err = one_line(capsys)
        assert "--device cuda" in err and ("built without CUDA" if torch.version.cuda is None else "sees no GPU") in err
