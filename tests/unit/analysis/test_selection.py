"""Exact order statistics by bracketing (idexdask.analysis.selection) against NumPy.

The kernels select values of the row (no arithmetic but the mean of the two middle
values of an even count, one correctly rounded operation, as NumPy does), so their
results equal ``numpy.median`` / ``numpy.partition`` exactly on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.selection import code_median_mad, median_and_mad, order_pair


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


def _code_rows() -> list[tuple[np.ndarray, float, float, bool, float]]:
    """(samples, scale, offset, single, fill): samples that are values of integer codes."""
    from idexdask.adccodes import decode_codes

    rng = np.random.default_rng(7)
    n = 100_001
    quiet = np.round(rng.normal(size=n) * 2.7).astype(np.int16) * 16  # 12-bit in 16-bit words
    volts = decode_codes(quiet, 6.25e-5, -1.685)
    holes = volts.copy()
    holes[rng.random(n) < 0.1] = np.nan  # missing samples (decoded fill codes)
    dn = np.round(500 + rng.normal(size=n - 1) * 4.0)  # 10-bit DN as float64, even count
    dn[::97] = 65535.0  # fill
    spiky = np.round(rng.standard_cauchy(size=n) * 3.0).clip(-30000, 30000)  # wide span
    return [
        (volts, 6.25e-5, -1.685, True, np.nan),
        (holes, 6.25e-5, -1.685, True, np.nan),
        (dn, 1.0, 0.0, False, 65535.0),
        (quiet.astype(np.int64), 1.0, 0.0, False, np.nan),  # integer samples
        (spiky, 1.0, 0.0, False, np.nan),
        (np.full(n, 3.0), 1.0, 0.0, False, np.nan),  # one code
    ]


@pytest.mark.parametrize("index", range(6))
def test_code_median_mad_equals_numpy(index):
    """The order statistics read from the codes' counts are values of the samples
    (or the mean of two, one rounding), so they equal NumPy's exactly."""
    x, scale, offset, single, fill = _code_rows()[index]
    n = x.size
    ok, count, med, mad = code_median_mad(x, n, fill == fill, fill, scale, offset, single,
                                          np.empty(n, np.int32))
    valid = x.astype(float)
    valid = valid[np.isfinite(valid) & (valid != fill)]
    assert ok and count == valid.size
    ref_med = _partition_median(valid)
    assert med == ref_med == np.median(valid)
    assert mad == _partition_median(np.abs(valid - ref_med))


def test_code_median_mad_refuses_values_off_the_codes():
    """A sample that is no code's value, or codes spanning more than 16 bits: not ok
    (the caller selects on the values instead); no valid sample: NaN."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=20_000) * 3.0)
    codes = np.empty(x.size, np.int32)
    assert code_median_mad(x, x.size, False, np.nan, 1.0, 0.0, False, codes)[0]
    off = x.copy()
    off[123] += 0.5
    assert not code_median_mad(off, x.size, False, np.nan, 1.0, 0.0, False, codes)[0]
    wide = x.copy()
    wide[5] = 70_000.0
    assert not code_median_mad(wide, x.size, False, np.nan, 1.0, 0.0, False, codes)[0]
    # float32 values of codes checked at float32: a float64 scale of them is not
    volts = (x * 6.25e-5 - 1.685).astype(np.float32)
    assert code_median_mad(volts, x.size, False, np.nan, 6.25e-5, -1.685, True, codes)[0]
    assert not code_median_mad(volts.astype(float), x.size, False, np.nan, 6.25e-5, -1.685,
                               False, codes)[0]
    ok, count, med, mad = code_median_mad(np.full(10, np.nan), 10, False, np.nan, 1.0, 0.0,
                                          False, codes)
    assert ok and count == 0 and np.isnan(med) and np.isnan(mad)


@pytest.mark.parametrize("index", range(6))
def test_code_prefix_stats_is_code_median_mad_and_the_prefix_sum(index):
    """One pass over the first ``end`` samples: the order statistics of
    code_median_mad (the same code twice: equal), the extremes, and the sum of
    the valid samples in NumPy's pairwise order over the whole row."""
    from idexdask.analysis.selection import CODE_COUNTS, code_prefix_stats
    from idexdask.numerics import pairwise_sum_zero_tail

    x, scale, offset, single, fill = _code_rows()[index]
    n = x.size
    end = (4 * n) // 5 + 3
    counts = np.zeros(CODE_COUNTS, np.int32)
    got = code_prefix_stats(x, end, fill == fill, fill, scale, offset, single, counts)
    ok, count, med, mad = code_median_mad(x, end, fill == fill, fill, scale, offset, single,
                                          np.empty(n, np.int32))
    assert got.ok and ok and (got.count, got.median, got.mad) == (count, med, mad)
    assert not counts.any()  # left all zero for the next row
    head = x[:end].astype(float)
    valid = np.isfinite(head) & (head != fill)
    assert (got.low, got.high) == (head[valid].min(), head[valid].max())
    row = np.zeros(n)
    row[:end][valid] = head[valid]
    # both compiled without fastmath: the same additions in the same order, exact
    # on any machine (no SIMD dispatch or contraction between them)
    assert got.total == pairwise_sum_zero_tail(row, 0, n, end)
    # NumPy's own sum: the same order, within a few ulp where its run-time SIMD
    # dispatch orders the leaf blocks differently
    np.testing.assert_allclose(got.total, row.sum(), rtol=8 * np.finfo(float).eps)


def test_code_prefix_stats_refuses_as_code_median_mad():
    """Off the codes, or codes spanning 16 bits or more (here beyond the histogram
    around the first code): not ok, and the histogram is left all zero."""
    from idexdask.analysis.selection import CODE_COUNTS, code_prefix_stats

    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=5_000) * 3.0)
    counts = np.zeros(CODE_COUNTS, np.int32)
    assert code_prefix_stats(x, x.size, False, np.nan, 1.0, 0.0, False, counts).ok
    for j, value in ((77, 0.5), (5, 70_000.0), (9, -65_540.0), (4_000, 65_530.0)):
        bad = x.copy()
        bad[j] = value if j != 77 else bad[j] + value
        assert not code_prefix_stats(bad, x.size, False, np.nan, 1.0, 0.0, False, counts).ok
        assert not counts.any()
    none = code_prefix_stats(np.full(10, np.nan), 10, False, np.nan, 1.0, 0.0, False, counts)
    assert none.ok and none.count == 0 and np.isnan(none.median) and none.total == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("fill", [np.nan, -7.0])
def test_prefix_sum_near_first_counts_and_sums_the_valid_prefix(dtype, fill):
    """The valid samples among the first ``end`` (finite and not the fill): their
    count, whether each lies within ``half`` of the first valid one, and their
    sum over the whole row (others 0) in NumPy's pairwise order; ``end`` inside
    a leaf, samples missing before and inside it."""
    from idexdask.analysis.selection import prefix_sum_near_first
    from idexdask.numerics import pairwise_sum_zero_tail

    rng = np.random.default_rng(8)
    n = 50_003
    x = (rng.normal(size=n) * 40.0 + 3.0).astype(dtype)
    x[[0, 1, 5_000, 9_999]] = -7  # the fill where there is one (the first valid: index 2)
    if dtype != np.int16:
        x[[3, 700, 12_345]] = [np.nan, np.inf, -np.inf]
    end = (4 * n) // 5 + 3
    head = x[:end].astype(float)
    valid = np.isfinite(head) & (head != fill)
    row = np.zeros(n)
    row[:end][valid] = head[valid]
    first = head[valid][0]
    far = np.abs(head[valid] - first).max()
    for half in (far, np.nextafter(far, 0.0), 0.0, np.inf):
        count, within, total = prefix_sum_near_first(x, end, half, fill)
        assert count == valid.sum()
        assert within == (half >= far)
        # both compiled without fastmath: the same additions in the same order,
        # exact on any machine (no SIMD dispatch or contraction between them)
        assert total == pairwise_sum_zero_tail(row, 0, n, end)
        # NumPy's own sum: the same order, within a few ulp of the values' scale
        # where its run-time SIMD dispatch orders the leaf blocks differently
        np.testing.assert_allclose(total, row.sum(), rtol=0,
                                   atol=8 * np.finfo(float).eps * np.abs(row).sum())
    nothing = prefix_sum_near_first(np.full(300, np.nan, dtype=np.float32), 200, 1.0, np.nan)
    assert nothing[0] == 0 and nothing[1] and nothing[2] == 0.0
