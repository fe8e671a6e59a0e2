"""Tests of the pickup compiled kernels: order statistics, window levels, edge centroids."""

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


@pytest.mark.parametrize("index", range(len(_rows())))
def test_window_median_and_mad_equal_numpy(index):
    """The linear-bin selection of step 4's windows, on the same rows (and on
    quantised samples, the windows' usual content)."""
    from idexdask.analysis.pickup.order_stats import linear_median, window_median_and_mad

    x = _rows()[index]
    if not np.all(np.isfinite(x)):
        x = x[np.isfinite(x)]
    n = x.size
    work = (np.empty(n, dtype=np.uint16), np.zeros((COPIES, BINS), dtype=np.int32),
            np.empty(n), np.empty(n), np.empty(n))
    np.testing.assert_allclose(window_median_and_mad(x, n, *work), _numpy(x), rtol=RTOL, atol=0)
    codes = np.round(x[: n // 2 + 1] * 40) * 2.5e-6 - 0.043  # float ADC codes
    m = codes.size
    assert linear_median(codes, m, work[0], work[1], work[2], work[4]) == pytest.approx(
        np.median(codes), rel=RTOL, abs=0)


def test_window_levels_match_the_array_formulas():
    """Step 4's compiled windows: the median of each window along the polarity and
    the MAD-scaled scatter of its running means over sqrt(n_s / w), as the
    array formulas give them (short windows: the samples' own scatter)."""
    from idexdask.analysis.pickup.level_kernels import window_levels
    from idexdask.analysis.robust import MAD_TO_SIGMA

    rng = np.random.default_rng(5)
    rows, n, w = 3, 20_000, 50
    y = (np.round(rng.normal(size=(rows, n)) * 30) * 2.5e-6 - 0.04).astype(np.float32)
    y[1, 100:300] = np.nan  # read as the fill value
    fill = np.array([0.0, -0.041, 0.0])
    filled = -np.where(np.isfinite(y), y.astype(np.float64), fill[:, None])
    lo = np.array([50, 0, 19_990])
    hi = np.array([12_345, 90, 25_000])  # a long, a short and a window past the end
    level, err = window_levels(y, -1.0, fill, w, lo, hi, np.empty((0, 0), dtype=np.int16),
                               np.zeros(rows, dtype=bool), np.full(rows, np.nan),
                               np.full(rows, np.nan))
    for e in range(rows):
        a, b = lo[e], min(hi[e], n)
        window = filled[e, a:b]
        assert level[e] == pytest.approx(np.median(window), rel=RTOL, abs=0)
        b_s = min(hi[e] - w + 1, n)
        n_s = max(b_s - a, 0)
        if n_s >= w:
            stop = max(min(b_s, n - w + 1), a)
            cs = np.zeros(stop + w - a)  # the window's sums from its first sample
            np.cumsum(filled[e, a : stop + w - 1], out=cs[1:])
            means = (cs[w:] - cs[: stop - a]) / w
            spread = MAD_TO_SIGMA * np.median(np.abs(means - np.median(means)))
            expected = spread / np.sqrt(max(n_s / w, 1.0))
        else:
            expected = MAD_TO_SIGMA * np.median(np.abs(window - np.median(window)))
        # the means are differences of the same sums; a few ulps of the running
        # sum (|cs| < ~1e3) for a NumPy whose cumsum would group the additions otherwise
        assert err[e] == pytest.approx(expected, rel=1e-9, abs=0)


@pytest.mark.parametrize("polarity", [-1.0, 1.0])
def test_window_levels_from_codes_equal_those_from_the_volts(polarity):
    """A row exactly on its recorded codes takes its windows' medians from the
    codes' counts: the same middle samples, so the same values as the volts'
    selection (one code algorithm, two routes to the same order statistics)."""
    from idexdask.analysis.pickup.level_kernels import LEVEL_BINS, code_level, window_levels

    rng = np.random.default_rng(7)
    rows, n, w = 4, 30_000, 40
    gain = np.float64(np.float32(2.5e-6))
    offset = np.float64(np.float32(0.043))
    codes = (np.round(rng.normal(size=(rows, n)) * 25 + 900) * 16).astype(np.int16)
    codes[2, :] = (np.round(rng.normal(size=n) * 25) + 900).astype(np.int16)  # no shared bits
    codes[3, : n // 2] += LEVEL_BINS + 1  # no shared bits, wider than the bins: the volts' route
    y = (gain * codes.astype(np.float64) - offset).astype(np.float32)
    lo = np.array([100, 3_001, 50, 0])
    hi = np.array([12_345, 29_000, 20_050, n])  # odd and even lengths
    args = (y, polarity, np.zeros(rows), w, lo, hi)
    scale = (np.full(rows, gain), np.full(rows, offset))
    from_volts = window_levels(*args, np.empty((0, 0), dtype=np.int16),
                               np.zeros(rows, dtype=bool), *scale)
    from_codes = window_levels(*args, codes, np.ones(rows, dtype=bool), *scale)
    # order statistics of the same values and the same half-sum: exact
    np.testing.assert_array_equal(from_codes[0], from_volts[0])
    np.testing.assert_array_equal(from_codes[1], from_volts[1])
    keys, counts = np.empty(n, dtype=np.uint16), np.empty((4, LEVEL_BINS), dtype=np.int32)
    for e in range(rows):
        window = polarity * y[e, lo[e] : hi[e]].astype(np.float64)
        assert from_codes[0][e] == pytest.approx(np.median(window), rel=RTOL, abs=0)
        # the codes' route taken where the window spans at most LEVEL_BINS codes
        found = code_level(codes[e], lo[e], hi[e], polarity, gain, offset, keys, counts)
        assert np.isnan(found) == (e == 3)
        if e != 3:
            assert found == from_volts[0][e]


def test_pairwise_sum_and_edge_centroids_match_numpy():
    """The centroid kernel's sums follow NumPy's row sums; its centroid and
    half-width those of the array formulas (weights above half the peak in the
    contiguous run around it)."""
    from idexdask.analysis.pickup.centroid_kernels import edge_centroids
    from idexdask.numerics import pairwise_sum

    rng = np.random.default_rng(9)
    for n in (1, 7, 8, 100, 128, 129, 1000, 30_001):
        x = rng.normal(size=n) * 10.0 ** rng.integers(-3, 3, size=n)
        # the same additions in the same order; a few ulps of the sum of |x| for a
        # NumPy that grouped them otherwise
        assert pairwise_sum(x, 0, n) == pytest.approx(x.sum(), rel=0, abs=1e-13 * np.abs(x).sum())
    half, n = 40, 500
    k = np.arange(2 * half + 1)
    window = np.exp(-0.5 * ((k - half) / 9.0) ** 2)[None, :] * np.array([[1.0], [-2.0], [1.0]])
    window[2, half + 12] = -1.0  # the run ends there, though the peak rises again after
    window[2, half + 14 :] = 1.0
    peak = np.array([100, 60, 480])  # the last window is clipped at the record's end
    for sign, rows in ((1.0, [0, 2]), (-1.0, [1])):
        cen, hw = edge_centroids(window[rows], peak[rows], n, half, sign)
        for j, r in enumerate(rows):
            wts = np.clip(sign * window[r] - 0.5 * sign * window[r, half], 0.0, None)
            inside = np.zeros(k.size, bool)
            lo = hi = half
            while lo > 0 and wts[lo - 1] > 0:
                lo -= 1
            while hi < k.size and wts[hi] > 0:
                hi += 1
            inside[lo:hi] = True
            wts = np.where(inside, wts, 0.0)
            index = np.clip(peak[r] - half + k, 0, n - 1).astype(float)
            assert cen[j] == pytest.approx((wts * index).sum() / wts.sum(), rel=1e-12)
            assert hw[j] == (hi - lo) / 2.0
