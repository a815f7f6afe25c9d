"""The fast exact percentiles and the banded normalisation give numpy's answers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from depthcraft.tasks.lib.depthmap import DepthMap, normalized_nearness, percentiles

RNG = np.random.default_rng(7)
ARRAYS = {
    "uniform float32": RNG.random((1200, 1000)).astype(np.float32),
    "few distinct values": np.round(RNG.random((1100, 1000)) * 10).astype(np.float32),
    "normal float64, odd size": RNG.standard_normal(1_500_001),
    "constant": np.zeros(1_200_000, np.float32),
    "sorted": np.sort(RNG.random(1_100_000).astype(np.float32)),
    "reversed": np.sort(RNG.random(1_100_000).astype(np.float32))[::-1].copy(),
    # a sample drawn with a stride sees only the small values: the brackets miss, and the
    # answer comes from the fallback
    "strided trap": np.tile(np.r_[np.zeros(99, np.float32), np.float32(1e6)], 12_000),
    "small (plain numpy)": RNG.random(5000).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("q", [[0.2, 99.8], [1, 99], [0, 100], [50], [33.3, 66.6, 12.5], [0.0001, 99.9999]])
def test_percentiles_equal_numpy_bit_for_bit(name, q):
    a = ARRAYS[name]
    got, want = percentiles(a, q), np.percentile(a, q)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want), (name, q, got, want)


def test_nan_gives_numpy_answer():
    a = RNG.random(1_100_000).astype(np.float32)
    a[12345] = np.nan
    assert np.isnan(percentiles(a, [1, 99])).all()


def test_normalized_nearness_equals_the_plain_float64_expression():
    d = (RNG.random((700, 900)) * 40 + 3).astype(np.float32)
    for kind, robust in (("relative_inverse", 0.002), ("depth", 0.0), ("disparity", 0.01)):
        dm = DepthMap(d, kind)
        a = d if kind != "depth" else (1.0 / np.maximum(d, 1e-6))
        lo, hi = np.percentile(a, [100 * robust, 100 * (1 - robust)]) if robust else (float(a.min()), float(a.max()))
        want = np.clip((a.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        got = normalized_nearness(dm, robust=robust)
        assert got.dtype == np.float32 and np.array_equal(got, want), kind
        assert got is not d  # a new array: callers work on it in place
