"""idexdask.numerics: the pairwise recursion's leaves and their combination."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.numerics import pairwise_combine, pairwise_leaves, pairwise_sum


def reference_sum(a: np.ndarray) -> float:
    """NumPy's pairwise summation written out in Python (leaves of at most 128
    values with eight accumulators, halves split at a multiple of 8)."""
    n = a.size
    if n < 8:
        res = 0.0
        for v in a:
            res += float(v)
        return res
    if n <= 128:
        r = [float(v) for v in a[:8]]
        stop = n - n % 8
        for i in range(8, stop, 8):
            for k in range(8):
                r[k] += float(a[i + k])
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(stop, n):
            res += float(a[i])
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return reference_sum(a[:n2]) + reference_sum(a[n2:])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 128, 129, 136, 1000, 20_003, 500_002])
def test_leaves_cover_the_row_in_order(n):
    starts = pairwise_leaves(n)
    assert starts[0] == 0 and starts[-1] == n
    sizes = np.diff(starts)
    assert np.all(sizes <= 128) and (n == 0 or np.all(sizes > 0))
    if n > 128:  # NumPy's halves: no leaf below 64 - 7 values
        assert sizes.min() >= 57


@pytest.mark.parametrize("n", [0, 1, 7, 128, 129, 136, 1000, 20_003, 100_001])
def test_combined_leaves_are_numpys_pairwise_sum(n):
    """The same additions in the same order as the Python statement of NumPy's
    recursion (scalar IEEE float64 adds, no SIMD reordering on either side):
    equal; and equal to pairwise_sum, which combines its leaves the same way."""
    a = np.random.default_rng(n).normal(size=n) * 10.0 ** np.random.default_rng(1).integers(
        -3, 4, size=n)
    starts = pairwise_leaves(n)
    leaves = zip(starts[:-1], starts[1:], strict=True)
    sums = np.array([pairwise_sum(a, lo, hi - lo) for lo, hi in leaves])
    total = pairwise_combine(sums, n)
    assert total == reference_sum(a)
    assert total == pairwise_sum(a, 0, n)
    # NumPy's own sum: the same order, but its leaf loop may be dispatched to
    # SIMD code on some CPUs, so only within rounding of the sum's magnitude
    np.testing.assert_allclose(total, a.sum(), rtol=0, atol=1e-12 * np.abs(a).sum() + 1e-300)
