"""``zspace run``: every stage in order, each skipped when its output is already complete.

Stages so far: prepare -> train -> encode -> stats. Each stage is itself resumable and
idempotent (the cache by its fingerprint, training by its last checkpoint, the
latents by the checkpoint's hash), so rerunning after an interruption picks up
where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.encode import encode
from engine.imagecache import prepare
from engine.model import ModelConfig
from engine.stats import compute_stats
from engine.train import TrainConfig, train

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "synthetic:10000"


@dataclass
class Profile:
    source: str = DEFAULT_SOURCE  # built-in synthetic faces: no download on a fresh machine
    size: int = 96  # the study's image side
    z_dim: int = 256  # the study's latent dimension
    epochs: int = 24  # the study's training length
    batch_size: int = 64


PROFILES = {
    "study": Profile(),
    # finishes in a few minutes on a 2-core CPU and still produces every output
    "quick": Profile(source="synthetic:3000", epochs=4),
}


def run(
    run_dir: str | os.PathLike,
    source: str | None = None,
    quick: bool = False,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Run every stage into ``run_dir``; returns {stage: seconds} plus where the outputs are."""
    profile = PROFILES["quick" if quick else "study"]
    source = source or profile.source
    run = Path(run_dir)
    timings: dict[str, float] = {}

    def stage(name, func, *args, **kwargs):
        t0 = time.perf_counter()
        logger.info("== %s", name)
        result = func(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 2)
        logger.info("== %s done in %.1f s", name, timings[name])
        return result

    stage("prepare", prepare, source, run, size=profile.size, progress=progress)
    cfg = TrainConfig(epochs=epochs or profile.epochs, batch_size=profile.batch_size, device=device)
    stage("train", train, run, cfg, ModelConfig(size=profile.size, z_dim=profile.z_dim), resume=True, progress=progress)
    stage("encode", encode, run, device=device, progress=progress)
    stage("stats", compute_stats, run, progress=progress)
    return {"run": str(run), "seconds": timings, "latents": str(run / "latents.zarr"),
            "figures": [str(run / "train"), str(run / "stats")]}
