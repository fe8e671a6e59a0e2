"""The line search's one-read smoothing pass of a formula-axis row (row_smoothing)."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.peak_search import (
    PROM_BLOCK,
    block_stats,
    find_peaks_in_blocks,
    find_peaks_scaled,
    formula_row,
)
from idexdask.analysis.row_smoothing import count_formula_times, smooth_formula_row, smooth_row

_EMPTY = np.empty(0)


def _row(rng, n, quantum=0.01):
    y = np.round(rng.normal(0.0, 3.0, n)) * quantum
    y[n // 2: n // 2 + 6] += 2.0
    return y


def _general(y, ft, w, stop_us, numr, d, pivot):
    """smooth_row's general passes on the materialised time row."""
    n = y.size
    t = np.empty(n)
    formula_row(ft[0], ft[1], int(ft[2]), ft[3], t)
    out = np.empty(n)
    return smooth_row(y, t, w, stop_us, numr, d, out, pivot, _EMPTY), out


@pytest.mark.numerics
@pytest.mark.parametrize("n", [1000, 40_001])
def test_one_read_pass_equals_the_general_passes(n):
    """Where it applies (finite row, power-of-two boxcar, increasing formula axis),
    the one-read pass gives the general passes' smoothed row, pre-trigger count,
    relative-noise flag and step counts, and each block's extremes.

    Exact equality, not a tolerance: both are the same compiled scalar
    arithmetic (the running sum adds the same samples in the same order, the
    formula times are formed by the same three rounded operations, and the
    counts are integers), with no library code that picks SIMD paths by CPU."""
    rng = np.random.default_rng(5)
    y = _row(rng, n)
    noise = 0.03
    flat = np.full(n, noise)
    varying = flat.copy()
    varying[n // 2: n // 2 + 50] = noise * 7.5  # a lower gain scaled up
    axes = (
        np.array([-4e-5, 1e-9, n, 1e6]),  # a lab axis: 80 % pre-trigger at 0 µs
        np.array([-4e-5, 1e-9, n - n // 8, 1e6]),  # a count that ends early (NaN times)
        np.array([1e-6, 1e-9, n, 1e6]),  # no pre-trigger sample
        np.array([-3e-5, 2e-9, n, 1e6]),
    )
    for ft in axes:
        for w in (1, 2, 8):
            for numr in (_EMPTY, flat, varying):
                for pivot in (np.nan, ft[1] * ft[3], 1e-3):
                    out = np.full(n, np.nan)
                    n_blocks = (n + PROM_BLOCK - 1) // PROM_BLOCK
                    bmax, bmin = np.empty(n_blocks), np.empty(n_blocks)
                    got = smooth_formula_row(y, w, 0.0, numr, noise, out, pivot, ft, bmax, bmin)
                    want, want_out = _general(y, ft, w, 0.0, numr, noise, pivot)
                    assert got[0]
                    n_fin, k, prefix, vary, below, equal, valid = want
                    assert n_fin == n and prefix
                    assert got[1:] == (k, vary, below, equal, valid)
                    assert vary == (numr is varying)  # the scaled-up stretch is seen
                    assert np.array_equal(out, want_out)
                    ref_max, ref_min = np.empty(n_blocks), np.empty(n_blocks)
                    for b in range(n_blocks):
                        block_stats(want_out, b, ref_max, ref_min)
                    assert np.array_equal(bmax, ref_max) and np.array_equal(bmin, ref_min)


def test_one_read_pass_declines_what_it_does_not_cover():
    """A non-finite sample (anywhere), a boxcar width that is not a power of two,
    and a decreasing axis leave the row to the general passes (False)."""
    rng = np.random.default_rng(8)
    n = 5000
    ft = np.array([-4e-6, 1e-9, n, 1e6])
    out = np.empty(n)
    blocks = np.empty((n + PROM_BLOCK - 1) // PROM_BLOCK)
    y = _row(rng, n)
    assert smooth_formula_row(y, 8, 0.0, _EMPTY, 1.0, out, np.nan, ft, blocks, blocks.copy())[0]
    for where in (0, 3, 2500, n - 1):
        bad = y.copy()
        bad[where] = np.nan if where % 2 else np.inf
        assert not smooth_formula_row(bad, 8, 0.0, _EMPTY, 1.0, out, np.nan, ft, blocks,
                                      blocks.copy())[0]  # fmt: skip
    assert not smooth_formula_row(y, 6, 0.0, _EMPTY, 1.0, out, np.nan, ft, blocks,
                                  blocks.copy())[0]  # fmt: skip
    backwards = np.array([4e-6, -1e-9, n, 1e6])
    assert not smooth_formula_row(y, 8, 0.0, _EMPTY, 1.0, out, np.nan, backwards, blocks,
                                  blocks.copy())[0]  # fmt: skip
    huge = np.full(n, 1e308)
    huge[1::2] = -1e308  # differences overflow: the running sum is not finite
    assert not smooth_formula_row(huge, 8, 0.0, _EMPTY, 1.0, out, np.nan, ft, blocks,
                                  blocks.copy())[0]  # fmt: skip


def test_peaks_from_given_block_extremes_equal_peaks_found_alone():
    """find_peaks_in_blocks on the block extremes a smoothing pass formed gives
    find_peaks_scaled's peaks, heights and prominences (the same arithmetic)."""
    rng = np.random.default_rng(13)
    n = 30_000
    y = _row(rng, n)
    y[rng.integers(0, n, 40)] += rng.uniform(0.2, 2.0, 40)
    ft = np.array([-2e-5, 1e-9, n, 1e6])
    out = np.empty(n)
    n_blocks = (n + PROM_BLOCK - 1) // PROM_BLOCK
    bmax, bmin = np.empty(n_blocks), np.empty(n_blocks)
    assert smooth_formula_row(y, 8, 0.0, _EMPTY, 1.0, out, np.nan, ft, bmax, bmin)[0]
    found = 0
    for div in (0.004, 0.00731, 0.01):  # the smoothed noise is ~0.01
        want = find_peaks_scaled(out, div, 5.0, 1e299, 3.0)
        got = find_peaks_in_blocks(out, div, 5.0, 1e299, 3.0, bmax.copy(), bmin.copy())
        found += want[0].size
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)
    assert found > 10


def _reference_counts(y, out, t, stop_us, pivot):
    """NumPy's pre-trigger samples (count, index sum) and, with a pivot, the time
    steps below, equal to it and not NaN."""
    pre = (t < stop_us) & np.isfinite(y) & np.isfinite(out)
    counts = [int(pre.sum()), int(np.flatnonzero(pre).sum())]
    if pivot == pivot:
        steps = np.diff(t)
        counts += [int((steps < pivot).sum()), int((steps == pivot).sum()),
                   int((~np.isnan(steps)).sum())]  # fmt: skip
    else:
        counts += [0, 0, 0]
    return tuple(counts)


@pytest.mark.numerics
@pytest.mark.parametrize("n", [3, 1000, 4099])
def test_counts_equal_numpy_on_rows_with_gaps(n):
    """The pre-trigger and step counts of smooth_row (formula times and a time
    row) and count_formula_times equal NumPy's on rows with non-finite samples
    (pre-trigger samples that are not the row's first ones), counts that end
    early (NaN times) and with and without a pivot.

    Exact equality: the counts are integers of comparisons of the same values;
    the formula times are three correctly rounded IEEE operations in NumPy as
    in the compiled code (no fused multiply-add without fastmath), and NumPy's
    integer sums are exact."""
    rng = np.random.default_rng(21)
    y = _row(rng, n)
    y[rng.integers(0, n, max(n // 50, 1))] = np.nan
    y[n // 3] = np.inf
    for count in (0, 1, n - n // 7, n):
        ft = np.array([-0.5e-9 * n, 1e-9, count, 1e6])  # half the row pre-trigger
        t = np.empty(n)
        formula_row(ft[0], ft[1], count, ft[3], t)
        for pivot in (np.nan, ft[1] * ft[3], 1e-3):
            out = np.empty(n)
            smoothed = smooth_row(y, t, 2, 0.0, _EMPTY, 1.0, out, pivot, _EMPTY)
            want = _reference_counts(y, out, t, 0.0, pivot)
            k, index_sum = want[:2]
            assert smoothed[1] == k and smoothed[4:] == want[2:]
            assert smoothed[2] == (index_sum == k * (k - 1) // 2)
            assert count_formula_times(y, out, 0.0, pivot, ft) == want
            out_f = np.empty(n)
            got = smooth_row(y, t, 2, 0.0, _EMPTY, 1.0, out_f, pivot, ft)
            assert np.array_equal(out_f, out, equal_nan=True)  # the same compiled pass
            assert got == smoothed
    assert 0 < want[0] < n  # the last row has pre-trigger samples and others
