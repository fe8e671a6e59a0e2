"""Exact order statistics by bracketing (idexdask.analysis.selection) against NumPy.

The kernels select values of the row (no arithmetic but the mean of the two middle
values of an even count, one correctly rounded operation, as NumPy does), so their
results equal ``numpy.median`` / ``numpy.partition`` exactly on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.selection import median_and_mad, order_pair


def _rows() -> list[np.ndarray]:
    rng = np.random.default_rng(21)
    n = 100_001
    walk = np.cumsum(rng.normal(size=n))  # strongly correlated neighbours
    quantised = np.round(rng.normal(size=n) * 3.0)  # many repeated values
    return [
        rng.normal(size=n),
        rng.normal(size=n - 1),  # even count
        walk,
        quantised,
        np.sort(rng.normal(size=n)),  # sorted
        np.full(n, 2.5),  # constant
        np.tile([0.0, 1.0], n // 2),  # two values, periodic
        np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),  # NaN sort last
        np.where(rng.random(n) < 0.7, np.nan, rng.normal(size=n)),  # median is NaN
        rng.normal(size=5),  # short
        rng.standard_cauchy(size=n),  # heavy tails
        # one code holds most samples: both pivots on it, the values only counted
        np.round(rng.normal(size=n - 1) * 0.4) * 0.002 - 0.001,
    ]


def _partition_median(a: np.ndarray) -> float:
    """The middle value(s) of ``numpy.partition`` (NaN last): ``numpy.median`` of a
    NaN-free row."""
    k = a.size // 2
    if a.size % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return float(0.5 * (part[k - 1] + part[k]))


@pytest.mark.parametrize("index", range(12))
def test_median_and_mad_equal_numpy(index):
    x = _rows()[index]
    n = x.size
    med, mad = median_and_mad(x, n, np.empty(n))
    ref_med = _partition_median(x)
    ref_mad = _partition_median(np.abs(x - ref_med))
    assert np.array_equal([med, mad], [ref_med, ref_mad], equal_nan=True)
    if not np.isnan(x).any():
        assert med == np.median(x)


@pytest.mark.parametrize("index", range(12))
def test_order_pair_equals_partition(index):
    x = _rows()[index]
    n = x.size
    for k_lo, k_hi in ((0, 0), (n // 3, n // 3 + 1), (n - 2, n - 1), (n // 2, n // 2)):
        copy = x.copy()
        got = order_pair(copy, n, k_lo, k_hi, np.empty(n))
        assert np.array_equal(copy, x, equal_nan=True)  # the input is not modified
        ref = np.partition(x, (k_lo, k_hi))
        assert np.array_equal(got, (ref[k_lo], ref[k_hi]), equal_nan=True), (k_lo, k_hi)


def test_order_pair_of_distances_from_a_centre():
    """With a centre, the order statistics of |x - centre|, formed while reading x."""
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(size=50_001))
    centre = float(np.median(x))
    n = x.size
    got = order_pair(x, n, n // 2 - 1, n // 2, np.empty(n), centre)
    ref = np.partition(np.abs(x - centre), (n // 2 - 1, n // 2))
    assert got == (ref[n // 2 - 1], ref[n // 2])
