"""Every kernel equals its plain-numpy reference (kernels/reference.py), on data
chosen to break it: values exactly on bin edges and just outside, NaNs, empty
and single-row blocks, D=1, float32 and float64; serial equals parallel;
blockwise moments merged equal one-shot and np.cov."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.histogram import component_histograms, component_histograms_serial, histogram_1d, uniform_edges
from kernels.moments import block_moments, covariance, merge_moments, row_norms_serial
from kernels.raster import density_raster, density_raster_serial
from kernels.reference import COMPARISONS

DTYPES = [np.float32, np.float64]
# (lo, width, nbins): the study's 0.25 bins over [-10, 10]; widths that are not
# binary fractions, so edges are rounded and the floor estimate can be one off.
BINNINGS = [(-10.0, 0.25, 80), (-3.0, 0.1, 60), (-2.7, 0.3, 17)]


def assert_counts_equal(ours, ref, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    bad = np.argwhere(ours != ref)
    assert bad.size == 0, (f"{what}: {len(bad)} cells differ, first at {tuple(bad[0])}: "
                           f"ours {ours[tuple(bad[0])]} vs numpy {ref[tuple(bad[0])]}; totals {ours.sum()} vs {ref.sum()}")


def edge_data(rng, n, d, lo, width, nbins, dtype):
    """Values exactly on edges lo + width * k (k = -2 .. nbins + 2, so the last
    edge and edges outside the range too), one float step either side of them,
    normals, NaNs and infinities."""
    k = rng.integers(-2, nbins + 3, size=(n, d))
    on_edge = (lo + width * k.astype(np.float64)).astype(dtype)
    step = rng.integers(-1, 2, size=(n, d))
    x = np.where(step < 0, np.nextafter(on_edge, dtype(-np.inf)),
                 np.where(step > 0, np.nextafter(on_edge, dtype(np.inf)), on_edge))
    kind = rng.random((n, d))
    x = np.where(kind < 0.2, rng.standard_normal((n, d)) * width * nbins / 4, x).astype(dtype)
    x[kind > 0.98] = np.nan
    x[0, 0] = np.inf
    x[-1, -1] = -np.inf
    return np.ascontiguousarray(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lo,width,nbins", BINNINGS)
def test_component_histograms_equal_numpy_on_edges(dtype, lo, width, nbins):
    rng = np.random.default_rng(nbins)
    ours_f, ref_f = COMPARISONS["component_histograms"]
    x = edge_data(rng, 3000, 7, lo, width, nbins, dtype)
    # In float32 an edge like -2.7 + 0.3 k is not representable; its nearest
    # float32 sits within half an ulp of the edge, the hardest case to bin.
    edges = uniform_edges(lo, width, nbins).astype(dtype)
    on_edge = np.isin(x, edges).sum()
    assert on_edge > 2000, f"only {on_edge} values on an edge: the test would not exercise edges"
    assert_counts_equal(ours_f(x, lo, width, nbins), ref_f(x, lo, width, nbins),
                        f"component_histograms {np.dtype(dtype).name} lo={lo} width={width} nbins={nbins}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_component_histograms_random_normal_and_serial(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20001, 33)).astype(dtype) * 3
    lo, width, nbins = -10.0, 0.25, 80
    ref = COMPARISONS["component_histograms"][1](x, lo, width, nbins)
    par = component_histograms(x, lo, width, nbins, np.zeros((33, nbins), np.int64))
    ser = component_histograms_serial(x, lo, width, nbins, np.zeros((33, nbins), np.int64))
    assert_counts_equal(par, ref, "parallel vs numpy")
    assert_counts_equal(ser, par, "serial vs parallel")
    assert par.sum() > 0.99 * x.size, f"counted {par.sum()} of {x.size}: suspicious for N(0, 9) in [-10, 10]"


def test_component_histograms_accumulate_over_blocks_empty_and_single_row():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, 5)).astype(np.float32)
    lo, width, nbins = -3.0, 0.1, 60
    out = np.zeros((5, nbins), np.int64)
    for a, b in [(0, 0), (0, 1), (1, 1), (1, 1777), (1777, 5000)]:  # empty, single row, uneven
        component_histograms(np.ascontiguousarray(x[a:b]), lo, width, nbins, out)
    assert_counts_equal(out, COMPARISONS["component_histograms"][1](x, lo, width, nbins), "blockwise vs one-shot numpy")
    empty = component_histograms(np.zeros((0, 5), np.float32), lo, width, nbins, np.zeros((5, nbins), np.int64))
    assert empty.sum() == 0, f"empty block counted {empty.sum()}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_1d_equals_numpy_d1(dtype):
    rng = np.random.default_rng(3)
    lo, width, nbins = 0.0, 0.3, 17
    v = edge_data(rng, 4000, 1, lo, width, nbins, dtype)[:, 0].copy()
    ours_f, ref_f = COMPARISONS["histogram_1d"]
    assert_counts_equal(ours_f(v, lo, width, nbins), ref_f(v, lo, width, nbins), f"histogram_1d {np.dtype(dtype).name}")
    one = histogram_1d(np.array([lo + width * nbins], dtype), lo, width, nbins, np.zeros(nbins, np.int64))
    assert one[-1] == 1 and one.sum() == 1, f"value on the last edge must land in the closed last bin, got {one}"


def test_histogram_rejects_bad_arguments():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="width"):
        component_histograms(x, 0.0, 0.0, 4, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="out"):
        component_histograms(x, 0.0, 1.0, 4, np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        component_histograms(np.zeros((3, 4), np.float32)[:, ::2], 0.0, 1.0, 4, np.zeros((2, 4), np.int64))


def test_argument_errors_name_parameter_got_and_allowed():
    x = np.zeros((3, 4), np.float32)
    # Each message names the parameter, what was passed and what is allowed.
    with pytest.raises(ValueError, match=r"x must be a C-contiguous float32/float64 \(N, D\) array, "
                                         r"got int32 array of shape \(3, 4\), C-contiguous"):
        row_norms_serial(x.astype(np.int32), np.empty(3))
    with pytest.raises(ValueError, match=r"x must .* got float32 array of shape \(4, 3\), not C-contiguous"):
        row_norms_serial(x.T, np.empty(4))
    with pytest.raises(ValueError, match=r"x must .* got list \(not a numpy array\)"):
        block_moments([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float64 array of shape \(3,\), "
                                         r"got float32 array of shape \(3,\)"):
        row_norms_serial(x, np.empty(3, np.float32))
    with pytest.raises(ValueError, match=r"v must be a C-contiguous float32/float64 \(N,\) array, got float32 array of shape \(3, 4\)"):
        histogram_1d(x, 0.0, 1.0, 4, np.zeros(4, np.int64))
    # A strided out would be reshaped into a copy and the counts silently lost.
    with pytest.raises(ValueError, match=r"out must be a C-contiguous int64 array of shape \(4,\), .*not C-contiguous"):
        histogram_1d(x[:, 0].copy(), 0.0, 1.0, 4, np.zeros(8, np.int64)[::2])
    with pytest.raises(ValueError, match=r"basis must have shape \(2, 4\), got shape \(3, 4\)"):
        density_raster(x, np.zeros(4), np.zeros((3, 4)), (0, 0), (1, 1), 2, 2, np.zeros((2, 2), np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_norms_equal_numpy(dtype):
    rng = np.random.default_rng(4)
    ours_f, ref_f = COMPARISONS["row_norms"]
    for shape in [(1000, 37), (1, 256), (0, 8), (50, 1)]:
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        ours, ref = ours_f(x), ref_f(x)
        np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=0, err_msg=f"row_norms {np.dtype(dtype).name} {shape}")
        ser = row_norms_serial(x, np.empty(shape[0]))
        assert np.array_equal(ser, ours), f"serial vs parallel differ by {np.abs(ser - ours).max() if ser.size else 0}"


def assert_moments_close(got, want, what, rtol=1e-10):
    (n1, m1, c1), (n2, m2, c2) = got, want
    assert n1 == n2, f"{what}: n {n1} != {n2}"
    scale = max(np.abs(c2).max(), 1.0) if c2.size else 1.0
    err_m = np.abs(m1 - m2).max() if m1.size else 0.0
    err_c = np.abs(c1 - c2).max() if c1.size else 0.0
    assert err_m <= rtol * max(np.abs(m2).max() if m2.size else 1.0, 1.0), f"{what}: mean off by {err_m:.3g}"
    assert err_c <= rtol * scale, f"{what}: co-moment off by {err_c:.3g} (scale {scale:.3g}, rtol {rtol})"


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_moments_equal_numpy_and_blockwise_merge(dtype):
    rng = np.random.default_rng(5)
    d = 9
    # Off-centre and correlated, like the latent cloud (a centre of 5, widths up to 8).
    a = rng.standard_normal((d, d))
    x = (rng.standard_normal((40000, d)) @ a + 5.0).astype(dtype)
    ours_f, ref_f = COMPARISONS["block_moments"]
    one_shot = ours_f(x)
    assert_moments_close(one_shot, ref_f(x), f"block_moments {np.dtype(dtype).name} vs np.cov")
    cov = covariance(one_shot[0], one_shot[2])
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)

    merged = (0, np.zeros(d), np.zeros((d, d)))
    cuts = [0, 0, 1, 2, 17, 17, 20000, 39999, 40000]  # empty blocks, single rows, uneven
    for a_, b_ in zip(cuts[:-1], cuts[1:]):
        merged = merge_moments(*merged, *block_moments(np.ascontiguousarray(x[a_:b_])))
    assert_moments_close(merged, one_shot, f"blockwise merged vs one-shot {np.dtype(dtype).name}")


def test_block_moments_edge_cases():
    ours_f, ref_f = COMPARISONS["block_moments"]
    n, mean, m = block_moments(np.zeros((0, 4), np.float32))
    assert n == 0 and mean.shape == (4,) and m.shape == (4, 4) and not m.any() and not mean.any(), \
        f"empty block gave n={n}, mean={mean}, M={m}"
    row = np.array([[1.5, -2.0, 3.25]], np.float32)
    n, mean, m = block_moments(row)
    assert n == 1 and np.array_equal(mean, row[0].astype(np.float64)) and not m.any(), f"single row: {n}, {mean}, {m}"
    x1 = np.random.default_rng(6).standard_normal((3001, 1))  # D = 1, float64
    assert_moments_close(ours_f(x1), ref_f(x1), "D=1")
    with pytest.raises(ValueError, match="n > ddof"):
        covariance(1, np.zeros((1, 1)))
    # More rows than one BLAS chunk, so the chunk loop is exercised.
    big = np.random.default_rng(7).standard_normal((40000, 3)) + 100.0
    assert_moments_close(ours_f(big), ref_f(big), "several chunks, large mean")


def test_merge_moments_symmetric_in_order():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((300, 4)), rng.standard_normal((71, 4)) + 3
    ab = merge_moments(*block_moments(x), *block_moments(y))
    ba = merge_moments(*block_moments(y), *block_moments(x))
    assert_moments_close(ab, ba, "merge order", rtol=1e-12)
    assert_moments_close(ab, block_moments(np.vstack([x, y])), "merge vs stacked", rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_density_raster_equals_histogram2d(dtype):
    rng = np.random.default_rng(9)
    d = 12
    x = (rng.standard_normal((20000, d)) * 2).astype(dtype)
    x[::97, 3] = np.nan
    mean = rng.standard_normal(d) * 0.1
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    basis = np.ascontiguousarray(q.T)
    ours_f, ref_f = COMPARISONS["density_raster"]
    args = (x, mean, basis, (-1.5, -2.0), (2.5, 1.0), 40, 30)
    ours = ours_f(*args)
    assert_counts_equal(ours, ref_f(*args), f"density_raster {np.dtype(dtype).name}")
    assert ours.sum() > 1000, f"only {ours.sum()} points in the window: the test is too weak"
    ser = density_raster_serial(x, mean, basis, (-1.5, -2.0), (2.5, 1.0), 40, 30, np.zeros((30, 40), np.int64))
    assert_counts_equal(ser, ours, "serial vs parallel raster")


def test_density_raster_edges_exact():
    """Axis-aligned basis and a zero mean make u, v the first two columns exactly,
    so points can sit exactly on cell edges and on the (excluded) upper edge."""
    rng = np.random.default_rng(10)
    nx, ny, lo, hi = 8, 5, (-1.0, -0.5), (0.6, 0.5)
    xe, ye = np.linspace(lo[0], hi[0], nx + 1), np.linspace(lo[1], hi[1], ny + 1)
    n = 5000
    x = np.zeros((n, 3))
    x[:, 0] = np.concatenate([xe, [hi[0] + 0.1, lo[0] - 1e-12]])[rng.integers(0, nx + 3, n)]
    x[:, 1] = np.concatenate([ye, [hi[1] + 0.1]])[rng.integers(0, ny + 2, n)]
    x[:, 2] = rng.standard_normal(n)
    basis = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    args = (x, np.zeros(3), basis, lo, hi, nx, ny)
    ours = COMPARISONS["density_raster"][0](*args)
    assert_counts_equal(ours, COMPARISONS["density_raster"][1](*args), "raster with points on edges")
    on_upper = (x[:, 0] == hi[0]) | (x[:, 1] == hi[1])
    inside = (x[:, 0] >= lo[0]) & (x[:, 0] < hi[0]) & (x[:, 1] >= lo[1]) & (x[:, 1] < hi[1])
    assert on_upper.sum() > 100 and ours.sum() == inside.sum(), \
        f"counted {ours.sum()}, expected {inside.sum()} (with {on_upper.sum()} points on an upper edge excluded)"
    # Accumulates into out; an empty block adds nothing.
    out = ours.copy()
    density_raster(np.zeros((0, 3)), np.zeros(3), basis, lo, hi, nx, ny, out)
    assert np.array_equal(out, ours), "empty block changed the raster"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_serial_and_threaded_equal_numpy(dtype):
    from kernels.moments import column_sums

    x = np.random.default_rng(4).normal(3.0, 2.0, (5003, 7)).astype(dtype)
    ref = x.astype(np.float64).sum(0)
    for parallel in (False, True, None):
        np.testing.assert_allclose(column_sums(x, parallel=parallel), ref, rtol=1e-12, err_msg=str(parallel))


def test_small_inputs_run_the_cached_serial_variant_large_ones_threads():
    from kernels.checks import PARALLEL_MIN_ELEMENTS, use_threads

    assert not use_threads(None, PARALLEL_MIN_ELEMENTS - 1) and use_threads(None, PARALLEL_MIN_ELEMENTS)
    assert use_threads(True, 10) and not use_threads(False, 10**9)
