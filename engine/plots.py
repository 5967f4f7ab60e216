"""Figures shared by the stages: image grids (PIL, no axes) and line plots (matplotlib, Agg)."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def image_grid(images: np.ndarray, ncols: int, pad: int = 2, scale: int = 1) -> Image.Image:
    """uint8 (n, S, S, 3) -> one PIL image, row-major, ``pad`` white pixels between tiles."""
    n, s = images.shape[0], images.shape[1]
    nrows = -(-n // ncols)
    grid = np.full((nrows * (s + pad) + pad, ncols * (s + pad) + pad, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, ncols)
        y, x = pad + r * (s + pad), pad + c * (s + pad)
        grid[y : y + s, x : x + s] = images[k]
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def save_image_grid(path: str | os.PathLike, images: np.ndarray, ncols: int, scale: int = 1) -> None:
    image_grid(images, ncols, scale=scale).save(path)


def save_loss_curve(path: str | os.PathLike, history: list[dict], loss_name: str) -> None:
    """Train and validation loss per epoch from the training log."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{loss_name.upper()} loss per pixel")
    ax.set_title("Autoencoder reconstruction loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
