"""Tests of idexdask.analysis.pickup.order_stats: the binned median and MAD."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.pickup.order_stats import (
    BINS,
    COPIES,
    bin_bounds,
    bin_keys,
    binned_median_and_mad,
)

# The median and MAD are order statistics (values of the row), the only
# arithmetic the mean of two middle values and |x - median|, one rounding each:
# a relative tolerance of a few ulps covers a NumPy that formed either otherwise.
RTOL = 4 * np.finfo(float).eps


def _binned(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    keys = np.empty(n, dtype=np.uint16)
    counts = np.zeros((COPIES, BINS), dtype=np.int32)
    bin_keys(x, keys, counts)
    assert counts.sum() == n
    return binned_median_and_mad(x, n, keys, counts, np.empty(n), np.empty(n), np.empty(n))


def _numpy(x: np.ndarray) -> tuple[float, float]:
    med = np.median(x)
    return med, np.median(np.abs(x - med))


def _rows() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    smooth = np.convolve(rng.normal(size=60_000), np.ones(400) / 400, mode="valid") * 1e-3
    return [
        rng.normal(size=10_001),  # odd count
        rng.normal(size=10_000) + 3.0,  # even count, all positive
        np.round(rng.normal(size=50_000) * 3) / 7,  # many ties, zeros
        rng.standard_cauchy(100_001),  # heavy tails: end bins
        smooth - smooth.mean(),  # a smoothed derivative: neighbours in one bin
        np.full(20_000, 1.5),  # constant: MAD 0
        np.r_[np.zeros(9_000), np.ones(9_001)],
        -np.abs(rng.normal(size=30_000)) * 1e-300,  # magnitudes below the bins' range
        rng.normal(size=4_000) * 1e20,  # above it
        np.r_[np.full(5_000, np.inf), rng.normal(size=6_000)],  # infinities sort last
        rng.integers(-3, 4, size=9).astype(float),
        np.array([2.0]),
    ]


@pytest.mark.parametrize("index", range(len(_rows())))
def test_binned_median_and_mad_equal_numpy(index):
    x = _rows()[index]
    np.testing.assert_allclose(_binned(x), _numpy(x), rtol=RTOL, atol=0)


def test_binned_median_and_mad_random_scales():
    """Rows of few distinct values at scales across the bins' exponent range."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 3000))
        x = rng.integers(-5, 6, n) * 10.0 ** rng.integers(-40, 40)
        if rng.random() < 0.5:
            x = x + rng.normal(size=n)
        np.testing.assert_allclose(_binned(x), _numpy(x), rtol=RTOL, atol=0)


def test_bins_are_contiguous_value_ranges_in_order():
    """Every value lies within its bin's bounds, and the bounds increase with the bin."""
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(size=5000) * 10.0 ** rng.integers(-120, 40, 5000),
              0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1e308]
    keys = np.empty(x.size, dtype=np.uint16)
    counts = np.zeros((COPIES, BINS), dtype=np.int32)
    bin_keys(x, keys, counts)
    for v, b in zip(x, keys, strict=True):
        lo, hi = bin_bounds(int(b))
        assert lo <= v <= hi
    order = np.lexsort((keys, x))  # -0.0 and 0.0 are equal values in two bins
    assert np.all(np.diff(keys[order].astype(int)) >= 0)
    highs = np.array([bin_bounds(b)[1] for b in range(BINS)])
    lows = np.array([bin_bounds(b)[0] for b in range(BINS)])
    assert np.all(lows[1:] >= highs[:-1])
    assert lows[0] == -np.inf and highs[-1] == np.inf
