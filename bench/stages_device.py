"""The analysis on a GPU: the exact kNN graph as blocked torch on the device against what a user would write.

Where no GPU is present the stage gives one row saying so (the CUDA figures are owed to a machine with one);
``knn_device_rows`` itself runs on any torch device, so the harness's tests run it on the CPU at a small size.
"""

from __future__ import annotations

import time

import numpy as np

from bench.measure import measure
from bench.results import Row
from bench.stages_analysis import latent_cloud


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def cdist_topk(x, k: int, dev, block: int = 4096):
    """The plain torch a user writes: per query block, ``torch.cdist`` to every point, then ``topk(k + 1)`` and
    the point itself dropped (its own distance, 0, is among the smallest)."""
    import torch

    xs = torch.as_tensor(x, device=dev)
    out_d, out_i = [], []
    for s in range(0, len(x), block):
        d = torch.cdist(xs[s : s + block], xs)
        d[torch.arange(d.shape[0], device=dev), torch.arange(s, s + d.shape[0], device=dev)] = float("inf")
        v, i = torch.topk(d, k, dim=1, largest=False)
        out_d.append(v.cpu().numpy())
        out_i.append(i.cpu().numpy())
    return np.concatenate(out_d), np.concatenate(out_i)


def knn_device_rows(n: int, k: int, device: str) -> list[Row]:
    """The exact graph of an (n, 256) cloud on ``device``: ours (``knn_graph_device``) against blocked
    ``torch.cdist`` + ``topk`` on the same device and ``faiss.knn`` on the CPU; agreement with ours in the notes."""
    import faiss
    import torch

    from engine.analysis.torch_kernels import knn_graph_device

    dev = torch.device(device)
    x = latent_cloud(n)
    knn_graph_device(x[:2048], k, dev)  # warm-up: kernels, allocator
    _sync(dev)
    out = {}
    t_o, peak = measure(lambda: out.update(graph=knn_graph_device(x, k, dev)), 1)
    i_o = out["graph"][1]
    cdist_topk(x[:2048], k, dev)
    t0 = time.perf_counter()
    _, i_c = cdist_topk(x, k, dev)
    _sync(dev)
    t_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, i_f = faiss.knn(x, x, k + 1)
    t_f = time.perf_counter() - t0
    same_c = float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(i_o, i_c)]) / k)
    flops = n * n * 2 * 256 / t_o / 1e12
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU torch"
    size = f"{n:,} x 256, k={k}"
    return [
        Row("knn_device", size, t_o, t_c, f"blocked fp32 torch on {name}, exact selection",
            "torch.cdist + topk per 4,096-row block, same device", f"{n / t_o:,.0f} pts/s ({flops:.1f} TFLOP/s)",
            peak_mb=peak, notes=f"cdist's neighbours agree with ours on {same_c:.1%}"),
        Row("knn_device", size, t_o, t_f, f"blocked fp32 torch on {name}", "faiss.knn(x, x, k + 1) on the CPU",
            f"{n / t_o:,.0f} pts/s", peak_mb=peak,
            notes=f"faiss's neighbours agree with ours on "
                  f"{np.mean([len(np.intersect1d(a[1:], b)) for a, b in zip(i_f, i_o)]) / k:.1%} (its own row dropped)"),
    ]


def stage_device(ctx) -> list[Row]:
    """CUDA rows where a GPU is present (202,599 points, k = 90: structure's graph); else the same code on CPU
    torch at a smaller size, each row saying that the CUDA figures are owed."""
    import torch

    if torch.cuda.is_available():
        return knn_device_rows(ctx["sizes"].device_knn_rows, 90, "cuda")
    rows = knn_device_rows(ctx["sizes"].device_cpu_rows, 16, "cpu")
    for r in rows:
        r.notes = ("no GPU on this machine, so CPU torch (on a CPU structure runs the numba self-join instead); the "
                   "CUDA figures are owed: 'zspace bench --only device' on a GPU machine; " + r.notes)
    return rows
