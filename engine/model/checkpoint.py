"""Checkpoints: ``RUN/checkpoints/last.pt`` and ``best.pt``, written atomically, read back as a model.

A checkpoint is a dict: ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch``,
``best_val``, ``val_loss``, ``rng`` (torch, numpy and CUDA generator states) and
``config`` (``{"model": ModelConfig dict, "train": TrainConfig dict}``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from engine.model.autoencoder import Autoencoder, ModelConfig


def rng_state() -> dict:
    """Every generator training draws from, so a resumed run continues the same random stream."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename: never half a checkpoint."""
    _atomic(lambda tmp: torch.save(obj, tmp), Path(path))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` over ``dst`` atomically (``best.pt`` from ``last.pt``)."""
    _atomic(lambda tmp: shutil.copyfile(src, tmp), Path(dst))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, truncated or holding non-finite weights."""


def _alternative(path: Path) -> str:
    other = path.with_name("last.pt" if path.name == "best.pt" else "best.pt")
    if not other.is_file():
        return "retrain with 'zspace train --overwrite'"
    if path.name == "last.pt":  # resuming needs last.pt; encode and generate can use best.pt
        return f"encode/generate can use --checkpoint {other}; to train on, retrain with 'zspace train --overwrite'"
    return f"pass --checkpoint {other}"


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The checkpoint dict of ``path``; a one-line ``CheckpointError`` when the file is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: run 'zspace train' first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        raise CheckpointError(f"checkpoint {path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                              f"{_alternative(path)}") from None
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
