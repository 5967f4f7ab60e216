"""The explore folder's data files: every byte the page reads, as scripts that open from disk.

A page opened from ``file://`` may not ``fetch`` its neighbours, but it may load
``<script>`` and ``<img>`` from them. So each file here is a script that hands its
arrays (base64 of little-endian typed arrays) to ``window.zspace``, or a JPEG:

``data.js``         every point's layouts, colours, labels and ids; the probes; meta
``decoder.js``      the decoder's weights, batch norm folded in, for the page's own decoder
``z/z_XXXX.js``     float16 latents and neighbour positions of ``chunk`` points, loaded on demand
``thumbs/img_XXXX.jpg``, ``rec_XXXX.jpg``   atlases of ``atlas x atlas`` thumbnails: the run's
                    images and their reconstructions, in page order
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from engine.data.imagecache import open_cache
from engine.explore.columns import Points
from engine.explore.config import ExploreConfig
from engine.files import write_text_atomic
from engine.generation.generate import decode_with
from engine.latents.store import open_latents

logger = logging.getLogger(__name__)


def b64(a: np.ndarray) -> str:
    """Base64 of the array's little-endian bytes (C order)."""
    a = np.ascontiguousarray(a)
    return base64.b64encode(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode("ascii")


def _array(a: np.ndarray) -> dict:
    kinds = {"float32": "f4", "int32": "i4", "int8": "i1", "uint16": "u2", "float16": "f2"}
    return {"dtype": kinds[str(a.dtype)], "shape": list(a.shape), "b64": b64(a)}


def write_data(out: Path, pts: Points) -> int:
    """``data.js``: everything the map draws at load; returns its size in bytes."""
    data = {
        "meta": pts.meta,
        "ids": pts.ids,
        "rows": _array(pts.rows.astype(np.int32)),
        "layouts": {k: _array(np.ascontiguousarray(v, np.float32)) for k, v in pts.layouts.items()},
        "colours": [{**c.meta(), "values": _array(c.values.astype(np.float32))} for c in pts.colours],
        "attributes": pts.attributes,
        "labels": _array(pts.labels) if pts.labels is not None else None,
        "probes": {k: _array(np.ascontiguousarray(v, np.float32)) for k, v in pts.probes.items()},
    }
    text = "window.ZSPACE_DATA = " + json.dumps(data, separators=(",", ":")) + ";\n"
    write_text_atomic(out / "data.js", text)
    return len(text)


def folded_decoder(model) -> dict:
    """The decoder as the page runs it: dense layer, then transposed convolutions with batch norm folded into
    their weights and biases. Weights of each convolution are laid out (in, ky, kx, out) so that the page's inner
    loop runs over contiguous output channels."""
    cfg = model.config
    layers = []
    mods = list(model.decoder_conv)
    i = 0
    while i < len(mods):
        conv = mods[i]
        w = conv.weight.detach().cpu().double()  # (in, out, k, k)
        b = conv.bias.detach().cpu().double() if conv.bias is not None else torch.zeros(w.shape[1], dtype=torch.float64)
        act = "sigmoid"
        if i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.BatchNorm2d):
            bn = mods[i + 1]
            scale = bn.weight.detach().cpu().double() / torch.sqrt(bn.running_var.cpu().double() + bn.eps)
            w = w * scale.view(1, -1, 1, 1)
            b = (b - bn.running_mean.cpu().double()) * scale + bn.bias.detach().cpu().double()
            act = "leaky"
            i += 3  # conv, batch norm, LeakyReLU
        else:
            i += 1
        layers.append({"cin": int(w.shape[0]), "cout": int(w.shape[1]), "k": int(w.shape[2]),
                       "stride": int(conv.stride[0]), "pad": int(conv.padding[0]), "act": act,
                       "w": _array(w.permute(0, 2, 3, 1).contiguous().float().numpy()),
                       "b": _array(b.float().numpy())})
    return {"z_dim": cfg.z_dim, "side": model.side, "channels": cfg.widths[-1], "size": cfg.size,
            "leak": cfg.leak,
            "dense_w": _array(model.from_z.weight.detach().cpu().float().numpy()),  # (flat, D), flat in (c, y, x)
            "dense_b": _array(model.from_z.bias.detach().cpu().float().numpy()), "layers": layers}


def write_decoder(out: Path, model) -> int:
    """``decoder.js``: the folded decoder, or null when the page has none (no trusted checkpoint)."""
    body = json.dumps(folded_decoder(model), separators=(",", ":")) if model is not None else "null"
    text = "window.ZSPACE_DECODER = " + body + ";\n"
    write_text_atomic(out / "decoder.js", text)
    return len(text)


F16_MAX = 65504.0


def write_latents(out: Path, pts: Points, cfg: ExploreConfig) -> int:
    """``z/z_XXXX.js``: float16 latents (float32 when a value is beyond float16's range) and neighbour positions,
    ``cfg.chunk`` points a file; returns bytes."""
    folder = out / "z"
    folder.mkdir(exist_ok=True)
    total = 0
    dtype = np.float16 if np.abs(pts.z).max(initial=0.0) < F16_MAX else np.float32
    for c, s in enumerate(range(0, pts.n, cfg.chunk)):
        z16 = pts.z[s : s + cfg.chunk].astype(dtype)
        nb = pts.neighbours[s : s + cfg.chunk] if pts.neighbours is not None else np.zeros((len(z16), 0), np.int32)
        text = (f"zspace.chunk({c},{json.dumps(_array(z16))},{json.dumps(_array(np.ascontiguousarray(nb)))});\n")
        write_text_atomic(folder / f"z_{c:04d}.js", text)
        total += len(text)
    return total


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 (S, S, 3) -> uint8 (side, side, 3), box-filtered (each thumbnail pixel the mean of its source area)."""
    if image.shape[0] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BOX))


def atlas_of(thumbs: np.ndarray, per_side: int) -> np.ndarray:
    """uint8 (m, t, t, 3), m <= per_side^2 -> one image: thumbnail i at column i % per_side, row i // per_side."""
    m, t = len(thumbs), thumbs.shape[1]
    rows = -(-m // per_side)
    grid = np.zeros((rows * per_side, t, t, 3), np.uint8)
    grid[:m] = thumbs
    return grid.reshape(rows, per_side, t, t, 3).transpose(0, 2, 1, 3, 4).reshape(rows * t, per_side * t, 3)


def write_thumbnails(out: Path, run: Path, pts: Points, cfg: ExploreConfig, decoder, progress: bool) -> dict:
    """Atlases of the run's images at the points' rows and of the decoder's reconstructions of their latents.
    Without an image cache whose rows are the latents' only reconstructions are written; without a decoder
    ((model, device, precision) or None) only images."""
    folder = out / "thumbs"
    folder.mkdir(exist_ok=True)
    images = None
    try:
        cache = open_cache(run)
        latents = open_latents(run)
        lat_ids = latents["ids"] if "ids" in latents else None
        same_rows = (cache["images"].shape[0] == latents["z"].shape[0]
                     and (lat_ids is None or np.array_equal(np.asarray(cache["ids"][:]), np.asarray(lat_ids[:]))))
        images = cache["images"] if same_rows else None
        if not same_rows:
            logger.warning("images.zarr holds other rows than latents.zarr: the page shows reconstructions only")
    except (FileNotFoundError, ValueError) as exc:
        logger.warning("no image thumbnails (%s): the page shows reconstructions only", str(exc).split(":")[0])
    per = cfg.atlas * cfg.atlas
    sizes = {"img": 0, "rec": 0}
    bar = tqdm(total=pts.n, unit="pt", desc="thumbnails", disable=None if progress else True, leave=False)
    for a, s in enumerate(range(0, pts.n, per)):
        rows = pts.rows[s : s + per]
        kinds = {}
        if decoder is not None:
            model, dev, prec = decoder
            kinds["rec"] = decode_with(model, pts.z[s : s + per], dev, prec)
        if images is not None:
            kinds["img"] = np.asarray(images.oindex[rows])
        for kind, batch in kinds.items():
            path = folder / f"{kind}_{a:04d}.jpg"
            atlas = atlas_of(np.stack([thumbnail(im, cfg.thumb) for im in batch]), cfg.atlas)
            Image.fromarray(atlas).save(path, quality=cfg.quality)
            sizes[kind] += path.stat().st_size
        bar.update(len(rows))
    bar.close()
    return {"images": images is not None, "bytes": sizes}
