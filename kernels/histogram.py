"""Per-component and 1-D histograms with numpy-identical binning.

Binning contract (the same as ``np.histogram(v, bins=edges)`` with an edges
array): for ``nbins = len(edges) - 1`` bins, bin ``k < nbins - 1`` counts values
with ``edges[k] <= v < edges[k + 1]``; the last bin is closed,
``edges[-2] <= v <= edges[-1]``. Values outside ``[edges[0], edges[-1]]`` and
NaNs are not counted. Comparisons are made in float64 (a float32 value is
widened exactly), as numpy's ``searchsorted`` does.

Bins are uniform: edges are ``lo + width * arange(nbins + 1)`` in float64
(``uniform_edges``). The kernel estimates the bin as ``floor((v - lo) / width)``
and then corrects it by one step against the edges recomputed with the very
same float64 expression, because the estimate can be off by one next to an edge
(both it and the edges are rounded). That makes values exactly on an edge land
where numpy puts them, while the whole per-value computation stays branch-free
and vectorizes.

Outputs are accumulated into (``+=``), never zeroed, so a caller streaming row
blocks allocates ``out`` once with zeros and calls once per block.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.checks import check_out, check_rows, use_threads

__all__ = [
    "uniform_edges",
    "component_histograms",
    "component_histograms_serial",
    "histogram_1d",
]


def uniform_edges(lo: float, width: float, nbins: int) -> np.ndarray:
    """Bin edges ``lo + width * arange(nbins + 1)``, float64 (nbins + 1,).

    The kernels recompute edge k as ``lo + width * k`` with this same rounding,
    so ``np.histogram(v, bins=uniform_edges(lo, width, nbins))`` is their exact
    reference. Use these edges (not ``np.linspace``) when plotting the counts.
    """
    _check_uniform(lo, width, nbins)
    return float(lo) + float(width) * np.arange(nbins + 1, dtype=np.float64)


def _check_uniform(lo, width, nbins):
    if not (isinstance(nbins, (int, np.integer)) and nbins >= 1):
        raise ValueError(f"nbins must be an integer >= 1, got {nbins!r}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite positive number, got {width!r}")
    if not np.isfinite(lo):
        raise ValueError(f"lo must be finite, got {lo!r}")
    hi = float(lo) + float(width) * nbins
    # The arithmetic bin estimate must be within one bin of the truth for the
    # single-step correction to be exact; that holds while rounding of the edges
    # (about 1e-16 * |edge|) is far below a bin width.
    if float(width) < 2.0**-40 * max(abs(float(lo)), abs(hi)):
        raise ValueError(f"width={width!r} is too small relative to the edge magnitudes (lo={lo!r}, hi={hi!r})")


def _component_histograms_body(x, lo, width, nbins, nslabs, out):
    n, d = x.shape
    inv_w = 1.0 / width
    # Same expression as uniform_edges for k = nbins: the identical rounding.
    hi = lo + width * np.float64(nbins)
    top = np.float64(nbins - 1)
    # Slot 0 of each column's row is a trash bin for NaN / out-of-range values,
    # so the scatter below never branches; slots 1..nbins are the real bins.
    stride = nbins + 1
    # One partial count per row slab (nslabs = the thread count, 1 serially),
    # reduced once at the end: no atomics, no false sharing. int32 halves the
    # cache footprint of the scatter (a slab counts at most N < 2**31 values
    # per bin; the wrapper checks N).
    partial = np.zeros((nslabs, d * stride), dtype=np.int32)
    per = (n + nslabs - 1) // nslabs
    for t in numba.prange(nslabs):
        start = t * per
        stop = min(n, start + per)
        counts = partial[t]
        slot = np.empty(d, dtype=np.int32)
        for i in range(start, stop):
            # Pass 1 is branch-free so LLVM vectorizes it: estimate the bin,
            # then correct it by one against the edges recomputed exactly as
            # uniform_edges computes them (lo + width * k, no FMA).
            for j in range(d):
                v = np.float64(x[i, j])
                kf = np.floor((v - lo) * inv_w)
                kf = kf if kf > -1.0 else -1.0
                kf = kf if kf < top + 1.0 else top + 1.0
                kf = kf - 1.0 if v < lo + width * kf else kf
                kf = kf + 1.0 if v >= lo + width * (kf + 1.0) else kf
                # The last bin is closed: v == hi belongs to bin nbins - 1.
                kf = kf if kf < top else top
                inside = (v >= lo) & (v <= hi)  # False for NaN
                s = np.int32(kf) + np.int32(1) if inside else np.int32(0)
                slot[j] = s + np.int32(j * stride)
            # Pass 2: the scatter, the only part that cannot be vectorized.
            for j in range(d):
                counts[slot[j]] += 1
    for t in range(nslabs):
        for j in range(d):
            for k in range(nbins):
                out[j, k] += partial[t, j * stride + k + 1]


# Threaded variants are never cached: numba's on-disk cache of parallel=True
# functions is unreliable (pynndescent PR #175), so they compile once per process.
# The slab count is an argument rather than numba.get_num_threads() inside the
# body because that call is a dynamic global, which numba refuses to cache.
_component_histograms_par = numba.njit(parallel=True)(_component_histograms_body)
_component_histograms_ser = numba.njit(cache=True)(_component_histograms_body)


def _check_row_count(name, n):
    # The per-thread partial counts are int32.
    if n >= 2**31:
        raise ValueError(f"{name} has {n} rows; pass blocks of fewer than 2**31 rows")


def component_histograms(x, lo, width, nbins, out, parallel=None):
    """Histogram every column of ``x`` at once, accumulating into ``out``.

    x: float32 or float64 (N, D), C-contiguous (N may be 0).
    lo, width, nbins: bins with edges ``uniform_edges(lo, width, nbins)``, i.e.
    ``lo + width * arange(nbins + 1)`` in float64.
    out: int64 (D, nbins), C-contiguous.

    ``out[j] += np.histogram(x[:, j], bins=uniform_edges(lo, width, nbins))[0]``
    exactly, for every j; NaNs are not counted. Returns ``out``.

    One row-major pass over ``x``; parallel over row slabs with per-thread
    partial counts (``parallel=False`` runs the same body on one thread; counts
    are integers, so both give identical results).
    """
    check_rows(x, "x")
    _check_row_count("x", x.shape[0])
    _check_uniform(lo, width, nbins)
    check_out(out, "out", np.int64, (x.shape[1], nbins))
    if use_threads(parallel, x.size):
        _component_histograms_par(x, float(lo), float(width), int(nbins), numba.get_num_threads(), out)
    else:
        _component_histograms_ser(x, float(lo), float(width), int(nbins), 1, out)
    return out


def component_histograms_serial(x, lo, width, nbins, out):
    """``component_histograms`` on one thread (for determinism tests)."""
    return component_histograms(x, lo, width, nbins, out, parallel=False)


def histogram_1d(v, lo, width, nbins, out, parallel=None):
    """``out += np.histogram(v, bins=uniform_edges(lo, width, nbins))[0]`` exactly.

    v: float32 or float64 (N,), C-contiguous; NaNs are not counted.
    out: int64 (nbins,). Returns ``out``. Runs the column kernel on the (N, 1)
    view of ``v`` (no copy), so it shares its compiled code.
    """
    check_rows(v, "v", ndim=1)
    _check_row_count("v", v.shape[0])
    _check_uniform(lo, width, nbins)
    # Checked here, not only by component_histograms on the reshaped view: a
    # non-contiguous out would be reshaped into a copy and the counts lost.
    check_out(out, "out", np.int64, (nbins,))
    component_histograms(v.reshape(-1, 1), lo, width, nbins, out.reshape(1, -1), parallel=parallel)
    return out
