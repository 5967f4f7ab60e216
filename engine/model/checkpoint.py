"""Checkpoints: ``RUN/checkpoints/last.pt`` and ``best.pt``, written atomically, read back as a model.

A checkpoint is a dict: ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch``,
``best_val``, ``val_loss``, ``rng`` (torch, numpy and CUDA generator states) and
``config`` (``{"model": ModelConfig dict, "train": TrainConfig dict, "data": {...}}``).

Everything in it is a tensor or a plain value (dict, list, tuple, str, int, float,
bool, None): ``save_checkpoint`` refuses anything else, and ``read_checkpoint``
reads with ``torch.load(weights_only=True)``, whose unpickler builds only those
types and never imports or calls what a file names. A checkpoint from a colleague
or a download therefore cannot run code when zspace opens it; one that tries is
refused with a ``CheckpointError`` naming what it asked for. The one exception
allowed on reading is numpy's array reconstruction (``ndarray``, ``dtype`` and
``_reconstruct``: data, not code), which the previous format used for the numpy
RNG state, so its checkpoints still load and resume.

A refused checkpoint whose source you trust can be re-saved as weights and plain
values: ``python -c "import torch; c = torch.load('in.pt', weights_only=False);
torch.save({k: c[k] for k in ('model', 'config', 'epoch')}, 'out.pt')"`` (enough for
encode and generation; ``train --resume`` needs a ``last.pt`` zspace wrote).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from engine.model.autoencoder import Autoencoder, ModelConfig


def rng_state() -> dict:
    """Every generator training draws from, so a resumed run continues the same random stream.

    numpy's legacy state ``('MT19937', key uint32 (624,), pos, has_gauss, cached_gaussian)`` is kept as a dict
    with the key as an int64 tensor: types ``torch.load(weights_only=True)`` reads without numpy's pickles.
    """
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    if isinstance(np_state, dict):
        np_state = (np_state["bit_generator"], np.asarray(np_state["key"], dtype=np.int64).astype(np.uint32),
                    np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(np_state)  # a tuple: the previous format, read as it was written
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_synced(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def _signals_held():
    """SIGTERM, SIGINT and SIGHUP wait until the write is done, then act as they would have (torchrun ends the
    ranks of a failed job with SIGTERM; a write they cut would leave a temporary file behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = {s: signal.signal(s, lambda sig, frame: held.append(sig)) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


def _atomic(write, path: Path) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync, rename; the temporary file goes on failure."""
    tmp = path.with_suffix(".tmp")
    with _signals_held():
        try:
            write(tmp)
            _replace_synced(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.Size)  # exact types: np.float64 is a float too


def check_plain(obj, where: str = "checkpoint") -> None:
    """``TypeError`` naming the first value of ``obj`` (nested dicts, lists, tuples) that is not a tensor or a
    plain value: what ``torch.load(weights_only=True)`` could not read back."""
    if type(obj) in (dict, collections.OrderedDict):  # a state dict is an OrderedDict
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where} has a key of type {type(k).__name__}: only str and int keys are stored")
            check_plain(v, f"{where}[{k!r}]")
    elif type(obj) in (list, tuple):  # exact: a namedtuple or a dict subclass would pickle its class
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif type(obj) not in PLAIN and not torch.is_tensor(obj):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds only "
                        f"tensors and plain values (dict, list, tuple, str, int, float, bool, None)")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename: never half a checkpoint. Everything
    in ``obj`` must be a tensor or a plain value (``check_plain``), so that it reads back with
    ``weights_only=True``."""
    check_plain(obj)
    _atomic(lambda tmp: torch.save(obj, tmp), Path(path))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` over ``dst`` atomically (``best.pt`` from ``last.pt``)."""
    _atomic(lambda tmp: shutil.copyfile(src, tmp), Path(dst))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, truncated or holding non-finite weights."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint that names Python objects to build (``os.system``...): refused unread, never a mere finding."""


def _alternative(path: Path) -> str:
    other = path.with_name("last.pt" if path.name == "best.pt" else "best.pt")
    if not other.is_file():
        return "retrain with 'zspace train --overwrite'"
    if path.name == "last.pt":  # resuming needs last.pt; encode and generate can use best.pt
        return f"encode/generate can use --checkpoint {other}; to train on, retrain with 'zspace train --overwrite'"
    return f"pass --checkpoint {other}"


def _numpy_array_globals() -> list:
    """numpy's array reconstruction, under its numpy 1 and numpy 2 names: what the previous checkpoint format
    (the numpy RNG state as a pickled tuple with a uint32 array) needs beyond tensors and plain values."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint32))[0]  # numpy's _reconstruct, wherever it lives
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), reconstruct, *((reconstruct, f"{m}.multiarray._reconstruct") for m in
                                                  ("numpy.core", "numpy._core"))]


_REFUSED = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>|Unsupported operand \d+")


def _refused(exc: Exception) -> str | None:
    """What a ``weights_only`` load refused (``os.system``, ...), or None when the error is damage, not a refusal."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    m = _REFUSED.search(text.split("WeightsUnpickler error:", 1)[-1])
    return (m.group(1) or m.group(2) or m.group(0)) if m else "an object other than tensors and plain values"


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint dict of ``path``, read with ``torch.load(weights_only=True)``: a file that names any
    Python object beyond tensors, plain values and numpy arrays is refused unread (nothing it names is
    imported or called). A one-line ``CheckpointError`` when the file is refused or damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: run 'zspace train' first")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        refused = _refused(exc)
        if refused is not None:
            raise UnsafeCheckpoint(
                f"checkpoint {path} refused unread: it names {refused}, which unpickling would run, and zspace "
                f"reads only tensors and plain values from a checkpoint; if you trust its source, re-save it as "
                f"README 'When something goes wrong' shows, else {_alternative(path)}") from None
        why = (str(exc).splitlines() or ["the file ends early"])[0][:120]  # an empty file: EOFError without text
        raise CheckpointError(f"checkpoint {path} is damaged ({type(exc).__name__}: {why}); {_alternative(path)}") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "epoch"} <= set(ckpt):
        raise CheckpointError(f"checkpoint {path} is not a zspace checkpoint; {_alternative(path)}")
    return ckpt


def nonfinite_weights(state: dict) -> list[str]:
    """Names of the tensors of a state dict holding NaN or inf."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]


def remove_leftovers(ckpt_dir: Path) -> list[Path]:
    """Delete ``*.tmp`` files an interrupted checkpoint write left behind; returns them."""
    left = sorted(Path(ckpt_dir).glob("*.tmp")) if Path(ckpt_dir).is_dir() else []
    for f in left:
        f.unlink()
    return left


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Autoencoder, dict]:
    """The model of a checkpoint (eval mode) and the checkpoint dict."""
    ckpt = read_checkpoint(path, device)
    bad = nonfinite_weights(ckpt["model"])
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad[0]} and {len(bad) - 1} more): "
                              f"training diverged; retrain with a lower --lr")
    model = Autoencoder(ModelConfig.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def replaced(d: Path) -> Path:
    """Where ``train --overwrite`` keeps the old ``d`` (checkpoints/, train/) until the new training finishes."""
    return d.with_name(d.name + ".replaced")


def settle_replaced(run: Path, finished: bool) -> None:
    """After a training started with --overwrite: drop the old model once the new one finished; put it back
    when no new checkpoint exists (the new training failed or was killed before its first epoch ended)."""
    dirs = (Path(run) / "checkpoints", Path(run) / "train")
    if not replaced(dirs[0]).exists():
        return
    if finished:
        for d in dirs:
            shutil.rmtree(replaced(d), ignore_errors=True)
    elif not (dirs[0] / "last.pt").exists():
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
            if replaced(d).exists():
                os.replace(replaced(d), d)
        logging.getLogger(__name__).warning("the replacing training wrote no checkpoint: the old model is back in %s",
                                            dirs[0])
