"""The bench's baselines compute what our kernels compute, so a ratio compares equal work."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.reference import BASELINES, COMPARISONS


@pytest.fixture(scope="module")
def cloud():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((20_000, 32)) @ rng.normal(size=(32, 32)) * 0.5 + 1).astype(np.float32)
    return x


def test_histogram_baselines_count_what_ours_counts(cloud):
    lo, width = -6.0, 0.25
    nbins = 48
    ours = COMPARISONS["component_histograms"][0](cloud, lo, width, nbins)
    for label, base in BASELINES["component_histograms"]:
        got = base(cloud, lo, width, nbins)
        assert got.shape == ours.shape, label
        # a value within rounding of an edge may fall on the other side in a float32 or linspace computation
        moved = np.abs(got - ours).sum()
        assert moved <= 1e-4 * ours.sum(), (label, moved)
        assert abs(int(got.sum()) - int(ours.sum())) <= 1e-4 * ours.sum(), label


def test_row_norm_and_moment_baselines_agree(cloud):
    ours = COMPARISONS["row_norms"][0](cloud)
    for label, base in BASELINES["row_norms"]:
        np.testing.assert_allclose(base(cloud), ours, rtol=1e-5, err_msg=label)
    n, mean, m = COMPARISONS["block_moments"][0](cloud)
    for label, base in BASELINES["block_moments"]:
        bn, bmean, bm = base(cloud)
        assert bn == n, label
        np.testing.assert_allclose(bmean, mean, rtol=1e-9, atol=1e-9, err_msg=label)
        # float32 sgemm: relative error ~1e-6 of the raw moment, which is ~ (1 + mean^2) / var larger than M
        np.testing.assert_allclose(bm, m, rtol=1e-3, atol=1e-3 * np.abs(m).max(), err_msg=label)


def test_local_pca_gram_baseline_equals_ours(cloud):
    nb = np.random.default_rng(1).integers(0, len(cloud), size=(3000, 17)).astype(np.int64)
    ours = COMPARISONS["local_pca"][0](cloud, nb)
    for label, base in BASELINES["local_pca"]:
        np.testing.assert_allclose(base(cloud, nb), ours, rtol=1e-8, atol=1e-9 * ours.max(), err_msg=label)
