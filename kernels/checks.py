"""Argument checks shared by every kernel wrapper.

The numba kernels index raw memory row-major and would silently compute
garbage (or write into a temporary copy) when handed a transposed view, the
wrong dtype or a mis-shaped output, so each public wrapper validates its
arrays with these before dispatching. Every check raises ``ValueError`` naming
the parameter, what it got (dtype, shape, contiguity) and what is allowed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOAT_DTYPES", "PARALLEL_MIN_ELEMENTS", "check_rows", "check_out", "check_shape", "use_threads"]

FLOAT_DTYPES = (np.float32, np.float64)

# Below about a million elements a kernel runs in milliseconds on one thread, while its
# threaded variant, never cached on disk, costs seconds of compilation in every new
# process: ``parallel=None`` (the default) picks the cached serial variant for such inputs.
PARALLEL_MIN_ELEMENTS = 1 << 20


def use_threads(parallel: bool | None, size: int) -> bool:
    """The variant to run: ``parallel`` when given, else threads for inputs of at least PARALLEL_MIN_ELEMENTS."""
    return bool(parallel) if parallel is not None else size >= PARALLEL_MIN_ELEMENTS

# Shape labels used in messages when the caller gives none.
_DIMS = {1: "(N,)", 2: "(N, D)"}


def _allowed(dtypes) -> str:
    return "/".join(np.dtype(t).name for t in dtypes)


def _got(a) -> str:
    if not isinstance(a, np.ndarray):
        return f"got {type(a).__name__} (not a numpy array)"
    layout = "C-contiguous" if a.flags.c_contiguous else "not C-contiguous"
    return f"got {a.dtype} array of shape {a.shape}, {layout}"


def check_rows(x, name: str, dtypes=FLOAT_DTYPES, ndim: int = 2, dims: str | None = None) -> None:
    """Require ``x`` to be a C-contiguous ndarray with ``ndim`` dims and a dtype in ``dtypes``.

    Any length along every axis is accepted (empty blocks included). ``dims``
    labels the axes in the message, e.g. ``"(M, k)"``; by default ``(N,)`` or
    ``(N, D)``.
    """
    dtypes = tuple(np.dtype(t) for t in dtypes)
    if (isinstance(x, np.ndarray) and x.ndim == ndim and x.dtype in dtypes and x.flags.c_contiguous):
        return
    label = dims or _DIMS.get(ndim, f"{ndim}-D")
    raise ValueError(f"{name} must be a C-contiguous {_allowed(dtypes)} {label} array, {_got(x)}")


def check_out(out, name: str, dtype, shape: tuple) -> None:
    """Require ``out`` to be a C-contiguous ndarray of exactly ``dtype`` and ``shape``.

    For output buffers: the kernel writes into them in place, so a copy made
    by a conversion would silently lose the result.
    """
    shape = tuple(int(s) for s in shape)
    if (isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype) and out.shape == shape
            and out.flags.c_contiguous):
        return
    raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape {shape}, {_got(out)}")


def check_shape(a: np.ndarray, name: str, shape: tuple) -> None:
    """Require the array ``a`` (already converted by the wrapper) to have exactly ``shape``."""
    shape = tuple(int(s) for s in shape)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {a.shape}")
