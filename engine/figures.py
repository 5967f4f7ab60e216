"""Figures shared by the stages: image grids (PIL, no axes) and matplotlib figures.

Every figure is a ``matplotlib.figure.Figure`` on its own ``FigureCanvasAgg``: nothing
goes through pyplot, so importing zspace never switches a notebook's backend and no
figure is left open in a global registry.
"""

from __future__ import annotations

import os

import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(figsize: tuple[float, float], dpi: float | None = None, layout: str | None = None) -> Figure:
    """An empty figure drawn by Agg, independent of pyplot's state."""
    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], dpi: float | None = None,
             layout: str | None = None, **kw):
    """(figure, axes) as ``pyplot.subplots`` returns them, without pyplot."""
    fig = new_figure(figsize, dpi, layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float | None = None, tight: bool = False) -> str:
    """Write ``fig`` as PNG to ``path`` and return the file name."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi if dpi is not None else "figure")
    return os.path.basename(path)


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


def save_loss_curve(path: str | os.PathLike, history: list[dict], loss_name: str, latent_term: str | None = None
                    ) -> None:
    """Train and validation loss per epoch from the training log. ``latent_term``: the name of the latent term a
    vae or rae adds to the training objective (the validation loss is the reconstruction alone)."""
    epochs = [h["epoch"] for h in history]
    fig, ax = subplots(figsize=(6, 4), dpi=100)
    label = "train" if latent_term is None else f"train objective (reconstruction + {latent_term})"
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label=label)
    ax.plot(epochs, [h["val_loss"] for h in history], "s-",
            label="validation" if latent_term is None else "validation reconstruction")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{loss_name.upper()} loss per pixel")
    ax.set_title("Autoencoder reconstruction loss")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, tight=True)
