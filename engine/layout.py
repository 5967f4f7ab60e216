"""The run directory ``RUN/``: where every stage reads and writes, in one place.

```
RUN/images.zarr      prepare     images uint8 (N, S, S, 3), ids, split
RUN/checkpoints/     train       last.pt, best.pt
RUN/train/           train       config.json, log.jsonl, figures
RUN/latents.zarr     encode      z float32 (N, D), ids, split, recon_mse (a vae: logvar); later pca, knn_*, local_*
RUN/stats/ structure/ tsne/ attributes/ generate/ facemap/ report/   one folder per later stage
```

No heavy imports: the command line, the pipeline and every layer use these paths.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_CHUNK_BYTES = 1 << 20  # row chunks of latent arrays hold at least 1 MB (the store's contract)


def cache_path(run_dir: str | os.PathLike) -> Path:
    """``RUN/images.zarr``, the prepared image cache."""
    return Path(run_dir) / "images.zarr"


def latents_path(run_dir: str | os.PathLike) -> Path:
    """``RUN/latents.zarr``, the latent store."""
    return Path(run_dir) / "latents.zarr"


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def default_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``best.pt`` (lowest validation loss) when it exists, else ``last.pt``."""
    best = checkpoints_dir(run_dir) / "best.pt"
    return best if best.exists() else checkpoints_dir(run_dir) / "last.pt"


def stage_dir(run_dir: str | os.PathLike, stage: str) -> Path:
    """The folder a stage writes its figures and tables into: ``RUN/<stage>/``."""
    return Path(run_dir) / stage


def chunk_rows(z_dim: int, target_bytes: int = 4 << 20) -> int:
    """Rows per chunk of a float32 (N, z_dim) array: about 4 MB, never under 1 MB, a multiple of 256."""
    rows = max(target_bytes, MIN_CHUNK_BYTES) // (4 * z_dim)
    return max(256, rows // 256 * 256)
