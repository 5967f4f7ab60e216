"""Local PCA of kNN neighbourhoods, and per-point summaries of local dimension.

For point i with neighbour rows ``X = z[neighbours[i]]`` (k, D), the local
covariance is ``C = X_c^T X_c / (k - 1)`` (D, D) with ``X_c = X - mean(X)``,
i.e. ``np.cov(X, rowvar=False)``. Its nonzero eigenvalues are those of the
k x k Gram matrix ``G = X_c X_c^T / (k - 1)``, so with k (16) << D (256) the
kernel builds G (k^2 D / 2 multiply-adds instead of k D^2 / 2, and a 16 x 16
instead of a 256 x 256 eigenproblem) and solves it with a small eigenvalue-only
symmetric solver in numba: Householder tridiagonalisation followed by implicit
QL with Wilkinson shifts (Numerical Recipes ``tred2``/``tqli``, eigenvalues
only). When k > D the D x D covariance is the smaller matrix and is used
instead. Either way ``m = min(k, D)`` eigenvalues come out, descending; the
rest of C's spectrum is exactly zero.

All arithmetic is float64. Rows are shifted by the neighbourhood's first row
before centring: that removes the common offset of the cloud (cancellation)
and makes a neighbourhood of identical points give exactly zero eigenvalues.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernels.checks import check_out, check_rows, use_threads

__all__ = [
    "local_pca",
    "local_pca_serial",
    "local_dim_summary",
    "local_dim_summary_serial",
]

# QL iterations allowed per eigenvalue before a row is declared not converged
# (only NaN/inf input gets there; finite symmetric input converges in 2-3).
_MAX_QL_ITER = 60

# The dot products may be reassociated (so LLVM vectorises the reductions) and
# fused; no 'nnan'/'ninf', so NaN input still propagates. Kept out of the
# eigen solver, whose convergence tests rely on strict IEEE rounding.
_DOT_MATH = {"reassoc", "contract", "nsz", "arcp"}


# Helpers are cached (they are serial); the parallel kernels below that call
# them are not, since numba's cache of parallel=True functions is unreliable
# (pynndescent PR #175).
@numba.njit(fastmath=_DOT_MATH, cache=True)
def _gram_rows(y, k, d, scale, a):
    """a[r, s] = scale * <y[r], y[s]> for r, s < k (the k x k Gram of the rows)."""
    for r in range(k):
        for s in range(r + 1):
            acc = 0.0
            for j in range(d):
                acc += y[r, j] * y[s, j]
            a[r, s] = acc * scale
            a[s, r] = acc * scale


@numba.njit(fastmath=_DOT_MATH, cache=True)
def _gram_cols(y, k, d, scale, a):
    """a[u, v] = scale * sum_r y[r, u] y[r, v] for u, v < d (the covariance, when k > D)."""
    for u in range(d):
        for v in range(d):
            a[u, v] = 0.0
    for r in range(k):
        for u in range(d):
            yu = y[r, u] * scale
            for v in range(u + 1):
                a[u, v] += yu * y[r, v]
    for u in range(d):
        for v in range(u):
            a[v, u] = a[u, v]


@numba.njit(cache=True)
def _tridiagonalize(a, p, diag, off):
    """Householder reduction of the symmetric a[:p, :p] (overwritten) to tridiagonal (diag[:p], off[:p])."""
    # Householder: zero column c below the subdiagonal with H = I - beta v v^T,
    # applied as A <- A - v q^T - q v^T on the trailing block (GVL 8.3.1).
    # v is kept in row c right of the diagonal (equal to column c by symmetry
    # and no longer needed), so every inner loop below runs along a row.
    for c in range(p - 2):
        sigma = 0.0
        for j in range(c + 1, p):
            sigma += a[c, j] * a[c, j]
        diag[c] = a[c, c]
        if sigma == 0.0:
            off[c] = 0.0
            continue
        x0 = a[c, c + 1]
        alpha = -np.sqrt(sigma) if x0 >= 0.0 else np.sqrt(sigma)
        a[c, c + 1] = x0 - alpha
        vv = sigma - x0 * x0 + a[c, c + 1] * a[c, c + 1]
        beta = 2.0 / vv
        # u = beta A v into off[c+1:] (not yet in use), then q = u - K v.
        kk = 0.0
        for i in range(c + 1, p):
            s = 0.0
            for j in range(c + 1, p):
                s += a[i, j] * a[c, j]
            s *= beta
            off[i] = s
            kk += a[c, i] * s
        kk *= 0.5 * beta
        for i in range(c + 1, p):
            off[i] -= kk * a[c, i]
        # Both triangles: v_i q_j + q_i v_j is symmetric in (i, j) exactly.
        for i in range(c + 1, p):
            vi = a[c, i]
            qi = off[i]
            for j in range(c + 1, p):
                a[i, j] -= vi * off[j] + qi * a[c, j]
        off[c] = alpha
    if p >= 2:
        diag[p - 2] = a[p - 2, p - 2]
        off[p - 2] = a[p - 1, p - 2]
    diag[p - 1] = a[p - 1, p - 1]
    off[p - 1] = 0.0


@numba.njit(cache=True)
def _tridiagonal_eigvals(diag, off, p):
    """Eigenvalues of the tridiagonal (diag[:p], off[:p]) into diag, unsorted; False if QL did not converge."""
    # Implicit QL with Wilkinson shift on (diag, off); off[i] couples i and i+1.
    eps = np.finfo(np.float64).eps
    for l in range(p):
        it = 0
        while True:
            m = l
            while m < p - 1:
                dd = abs(diag[m]) + abs(diag[m + 1])
                if abs(off[m]) <= eps * dd:
                    break
                m += 1
            if m == l:
                break
            it += 1
            if it > _MAX_QL_ITER:
                return False
            g = (diag[l + 1] - diag[l]) / (2.0 * off[l])
            r = np.sqrt(g * g + 1.0)
            g = diag[m] - diag[l] + off[l] / (g + (r if g >= 0.0 else -r))
            s = 1.0
            c = 1.0
            shift = 0.0
            deflated = False
            i = m - 1
            while i >= l:
                f = s * off[i]
                b = c * off[i]
                # Plain sqrt, not hypot (3x faster here): the caller scales
                # the matrix to unit trace, so f*f + g*g cannot overflow.
                r = np.sqrt(f * f + g * g)
                off[i + 1] = r
                if r == 0.0:
                    # Underflow: the matrix split here; restart the sweep.
                    diag[i + 1] -= shift
                    off[m] = 0.0
                    deflated = True
                    break
                s = f / r
                c = g / r
                g = diag[i + 1] - shift
                r = (diag[i] - g) * s + 2.0 * c * b
                shift = s * r
                diag[i + 1] = g + shift
                g = c * r - b
                i -= 1
            if deflated:
                continue
            diag[l] -= shift
            off[l] = g
            off[m] = 0.0
    return True


@numba.njit(cache=True)
def _symmetric_eigvals(a, p, diag, off):
    """Eigenvalues of the symmetric p x p matrix a[:p, :p] (overwritten) into diag[:p], unsorted.

    off: scratch of length >= p. Returns False if QL did not converge (NaN/inf input).
    """
    _tridiagonalize(a, p, diag, off)
    return _tridiagonal_eigvals(diag, off, p)


@numba.njit(cache=True)
def _local_pca_row(z, nb, y, a, diag, off, out):
    """Eigenvalues of one neighbourhood's covariance into out (m,), descending."""
    k = nb.shape[0]
    d = z.shape[1]
    i0 = nb[0]
    # Shift by the first neighbour, then centre: exact zeros for duplicates and
    # no cancellation against the cloud's offset.
    for r in range(k):
        ir = nb[r]
        for j in range(d):
            y[r, j] = np.float64(z[ir, j]) - np.float64(z[i0, j])
    for j in range(d):
        s = 0.0
        for r in range(k):
            s += y[r, j]
        mu = s / k
        for r in range(k):
            y[r, j] -= mu
    scale = 1.0 / (k - 1)
    if k <= d:
        p = k
        _gram_rows(y, k, d, scale, a)
    else:
        p = d
        _gram_cols(y, k, d, scale, a)
    # Scale to trace in [0.5, 1) by a power of two (exact both ways), so the
    # solver's squares neither overflow nor underflow whatever the units of z.
    tr = 0.0
    for t in range(p):
        tr += a[t, t]
    e2 = 0
    if tr > 0.0 and tr < np.inf:
        e2 = math.frexp(tr)[1]
        down = math.ldexp(1.0, -e2)
        for u in range(p):
            for v in range(p):
                a[u, v] *= down
    ok = _symmetric_eigvals(a, p, diag, off)
    up = math.ldexp(1.0, e2)
    for t in range(p):
        diag[t] *= up
    if not ok:
        for t in range(p):
            out[t] = np.nan
        return
    # Insertion sort, descending (p is small). C is PSD: rounding can leave
    # -1e-17-sized values in the null space; clamp them to zero.
    for t in range(p):
        v = diag[t] if diag[t] > 0.0 else 0.0
        u = t
        while u > 0 and out[u - 1] < v:
            out[u] = out[u - 1]
            u -= 1
        out[u] = v


def _local_pca_body(z, neighbours, nslabs, out):
    n = neighbours.shape[0]
    k = neighbours.shape[1]
    d = z.shape[1]
    p = min(k, d)
    # nslabs contiguous slabs of points: one per thread, 1 serially.
    per = (n + nslabs - 1) // nslabs
    for t in numba.prange(nslabs):
        # Per-thread scratch: the centred neighbourhood (k, D) float64 (32 KB
        # at k=16, D=256, stays in L1/L2), the p x p matrix and two vectors.
        y = np.empty((k, d), dtype=np.float64)
        a = np.empty((p, p), dtype=np.float64)
        diag = np.empty(p, dtype=np.float64)
        off = np.empty(max(p, 1), dtype=np.float64)
        start = t * per
        stop = min(n, start + per)
        for i in range(start, stop):
            _local_pca_row(z, neighbours[i], y, a, diag, off, out[i])


# nslabs is an argument because numba.get_num_threads() in the body is a
# dynamic global, which would stop the serial variant from being cached.
_local_pca_par = numba.njit(parallel=True)(_local_pca_body)
_local_pca_ser = numba.njit(cache=True)(_local_pca_body)


def local_pca(z: np.ndarray, neighbours: np.ndarray, out_eigvals: np.ndarray, parallel: bool | None = None) -> np.ndarray:
    """Eigenvalues of every point's neighbourhood covariance.

    z: float32 (N, D), C-contiguous.
    neighbours: int64 (M, k), C-contiguous, k >= 2; row i holds the indices into
    z of point i's neighbourhood (whether the point itself is among them is the
    caller's choice; the k rows given are the neighbourhood).
    out_eigvals: float64 (M, m), C-contiguous, m = min(k, D).

    ``out_eigvals[i] = eigvalsh(np.cov(z[neighbours[i]], rowvar=False))[::-1][:m]``:
    descending, ddof=1, computed in float64 from the k x k Gram matrix (the
    D x D covariance when k > D); values are >= 0 (rounding negatives clamped).
    A row with non-finite input gives NaNs. Returns ``out_eigvals``.

    Parallel over contiguous slabs of points, per-thread scratch; every row is
    computed by the same code on one thread, so ``parallel=False`` gives
    bit-identical results.
    """
    check_rows(z, "z", dtypes=(np.float32,))
    check_rows(neighbours, "neighbours", dtypes=(np.int64,), dims="(M, k)")
    if neighbours.shape[1] < 2:
        raise ValueError(f"neighbours must have k >= 2 columns (a neighbourhood of one point has no spread), "
                         f"got shape {neighbours.shape}")
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= z.shape[0]):
        raise ValueError(f"neighbours must index rows of z (0 .. {z.shape[0] - 1}), "
                         f"got values in [{neighbours.min()}, {neighbours.max()}]")
    if z.shape[1] < 1:
        raise ValueError(f"z must have at least one column, got shape {z.shape}")
    check_out(out_eigvals, "out_eigvals", np.float64, (neighbours.shape[0], min(neighbours.shape[1], z.shape[1])))
    if use_threads(parallel, neighbours.size * z.shape[1]):
        _local_pca_par(z, neighbours, numba.get_num_threads(), out_eigvals)
    else:
        _local_pca_ser(z, neighbours, 1, out_eigvals)
    return out_eigvals


def local_pca_serial(z, neighbours, out_eigvals):
    """``local_pca`` compiled without threads (for determinism tests)."""
    return local_pca(z, neighbours, out_eigvals, parallel=False)


def _local_dim_summary_body(eigvals, out_n90, out_pr, out_lin):
    n, m = eigvals.shape
    for i in numba.prange(n):
        lam = eigvals[i]
        # Total as the left-to-right running sum, so the 90% threshold test
        # matches np.cumsum(l) >= 0.9 * np.cumsum(l)[-1] exactly.
        total = 0.0
        sq = 0.0
        for t in range(m):
            total += lam[t]
            sq += lam[t] * lam[t]
        if not total > 0.0:  # degenerate (all zero) or NaN neighbourhood
            out_n90[i] = 0
            out_pr[i] = 0.0
            out_lin[i] = 0.0
            continue
        target = 0.9 * total
        run = 0.0
        c = m
        for t in range(m):
            run += lam[t]
            if run >= target:
                c = t + 1
                break
        out_n90[i] = c
        out_pr[i] = np.float32(total * total / sq)
        l2 = lam[1] if m > 1 else 0.0
        out_lin[i] = np.float32((lam[0] - l2) / lam[0])


_local_dim_summary_par = numba.njit(parallel=True)(_local_dim_summary_body)
_local_dim_summary_ser = numba.njit(cache=True)(_local_dim_summary_body)


def local_dim_summary(eigvals, out_n90, out_pr, out_lin, parallel: bool | None = None):
    """Per-point local-dimension summaries of descending eigenvalues ``l``.

    eigvals: float64 (M, m), C-contiguous, each row descending and >= 0 (as
    ``local_pca`` writes them).
    out_n90: int32 (M,): smallest c with ``l_1 + .. + l_c >= 0.9 * sum(l)``.
    out_pr: float32 (M,): participation ratio ``(sum l)^2 / sum l^2`` (1 for
    one direction, c for c equal directions).
    out_lin: float32 (M,): linearity ``(l_1 - l_2) / l_1`` (l_2 = 0 when m = 1).
    A row whose eigenvalues sum to zero (all points identical) or to NaN gives
    n90 = 0, pr = 0, lin = 0. Returns ``(out_n90, out_pr, out_lin)``.
    """
    check_rows(eigvals, "eigvals", dtypes=(np.float64,), dims="(M, m)")
    if eigvals.shape[1] < 1:
        raise ValueError(f"eigvals must have m >= 1 columns, got shape {eigvals.shape}")
    n = eigvals.shape[0]
    check_out(out_n90, "out_n90", np.int32, (n,))
    check_out(out_pr, "out_pr", np.float32, (n,))
    check_out(out_lin, "out_lin", np.float32, (n,))
    (_local_dim_summary_par if use_threads(parallel, eigvals.size) else _local_dim_summary_ser)(eigvals, out_n90, out_pr, out_lin)
    return out_n90, out_pr, out_lin


def local_dim_summary_serial(eigvals, out_n90, out_pr, out_lin):
    """``local_dim_summary`` compiled without threads."""
    return local_dim_summary(eigvals, out_n90, out_pr, out_lin, parallel=False)
