"""Exact order statistics of long rows in about one pass (compiled kernels).

``numpy.median`` of a 500,000-sample lab record selects over the whole row
(introselect, several passes with swaps), and the median absolute deviation
selects a second time.  :func:`order_pair` finds the same values by bracketing:
a sample of the row at random positions (i.i.d. draws from its values, however
correlated neighbouring samples are), sorted, gives two pivots around the wanted ranks;
one pass counts the values below the lower pivot and gathers those between the
pivots (a few per cent of the row); the ranks are selected among those.  The
result is the exact order statistic (a value of the row, no arithmetic), so the
median and MAD built on it equal NumPy's.  Where the pivots miss the ranks (a
row whose sample happens to be unrepresentative), the whole row is selected
instead: never a wrong value, only the slower path.

NaN sorts last, as in ``numpy.partition``.

Samples recorded as ADC codes (integers, or the float values a code scale
decodes them to: :mod:`idexdask.adccodes`) take few distinct values: a
pre-trigger baseline of 400,000 scope samples holds a few dozen.
:func:`code_median_mad` finds their median and MAD from a histogram of the
codes: one vectorised pass forms each sample's code (checked to decode back to
exactly the sample), one pass counts them, and the order statistics are read
from the counts.  Each code stands for one value, and codes rise with values,
so the counts give the same order statistics as a selection on the values.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from idexdask.adccodes import code_value
from idexdask.analysis.robust import order_pair_inplace
from idexdask.numerics import pairwise_combine, pairwise_leaves, pairwise_sum

__all__ = ["CODE_COUNTS", "CodePrefixStats", "code_median_mad", "code_prefix_stats",
           "counted_median_mad", "median_and_mad", "order_pair", "prefix_sum_near_first"]

_SAMPLE = 4096
"""Values in the random sample that places the pivots."""
_MARGIN_SIGMAS = 4.0
"""Pivots this many binomial standard deviations of the sample rank beyond the wanted ranks."""
_SEED = 21
"""Seed of the sample positions (any: the result is exact; fixed, so runs repeat)."""
_SMALL = 8192
"""Rows this short are selected directly."""


@numba.njit(cache=True, nogil=True)
def _select(a: np.ndarray, k: int, finite_end: int) -> float:  # pragma: no cover - compiled
    """The ``k``-th smallest of ``a[:finite_end]`` (NaN-free), reordering it.

    Quickselect with a three-way partition: values equal to the pivot end the
    search, so rows with many repeated values (quantised records) stay linear.
    """
    lo = 0
    hi = finite_end
    while hi - lo > 16:
        mid = (lo + hi) // 2
        p0, p1, p2 = a[lo], a[mid], a[hi - 1]
        pivot = max(min(p0, p1), min(max(p0, p1), p2))  # median of three
        lt = lo
        i = lo
        gt = hi
        while i < gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                gt -= 1
                a[i] = a[gt]
                a[gt] = v
            else:
                i += 1
        if k < lt:
            hi = lt
        elif k >= gt:
            lo = gt
        else:
            return pivot
    for i in range(lo + 1, hi):  # insertion sort of the last few
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    return a[k]


@numba.njit(cache=True, nogil=True)
def _pair_of(a: np.ndarray, k_lo: int, k_hi: int) -> tuple[float, float]:
    # pragma: no cover - compiled
    """Order statistics ``k_lo <= k_hi`` of ``a``, NaN last (``a`` reordered in place)."""
    end = a.size
    i = 0
    while i < end:  # NaN to the end
        if a[i] != a[i]:
            end -= 1
            v = a[end]
            a[end] = a[i]
            a[i] = v
        else:
            i += 1
    lo = _select(a, k_lo, end) if k_lo < end else np.nan
    if k_hi == k_lo:
        return lo, lo
    return lo, _select(a, k_hi, end) if k_hi < end else np.nan


@numba.njit(cache=True, nogil=True)
def _bracket(
    x: np.ndarray, n: int, k_lo: int, k_hi: int, out: np.ndarray, centre: float
) -> tuple[int, int, float]:  # pragma: no cover - compiled
    """Gather into ``out`` the values of ``x[:n]`` between two pivots that bracket
    ranks ``k_lo`` and ``k_hi``; return how many lie below the lower pivot, how
    many were gathered and NaN, or (-1, -1, NaN) when the pivots miss the ranks.
    With a finite ``centre`` the values are ``|x - centre|``, formed as they are read.

    Where the two pivots are one value (quantised records: a code holding more
    than the margin's share of the samples), the values are counted, not
    gathered: when that value spans both ranks it is returned as the third
    element (both order statistics), with nothing written to ``out``."""
    dev = centre == centre
    m = min(n, _SAMPLE)
    sample = np.empty(m)
    state = np.uint64(_SEED)
    for i in range(m):  # positions drawn uniformly (splitmix64): i.i.d. draws of the values
        state += np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        v = x[np.int64(z % np.uint64(n))]
        sample[i] = abs(v - centre) if dev else v
    margin = int(_MARGIN_SIGMAS * 0.5 * np.sqrt(m)) + 2
    p_lo = k_lo * m // n - margin
    p_hi = k_hi * m // n + margin
    low, high = _pair_of(sample, max(p_lo, 0), min(p_hi, m - 1))
    low = low if p_lo >= 0 else -np.inf
    high = high if p_hi < m else np.inf
    if low != low or high != high:
        return -1, -1, np.nan
    if low == high:
        below = 0
        c = 0
        for i in range(n):  # branch-free counts, nothing written
            v = abs(x[i] - centre) if dev else x[i]
            below += v < low
            c += v == low
        if below <= k_lo and k_hi < below + c:
            return below, c, low
        return -1, -1, np.nan
    below = 0
    c = 0
    for i in range(n):  # branch-free: about half the values fall on either side
        v = abs(x[i] - centre) if dev else x[i]
        below += v < low
        out[c] = v
        c += (v >= low) & (v <= high)
    if below <= k_lo and k_hi < below + c:
        return below, c, np.nan
    return -1, -1, np.nan


@numba.njit(cache=True, nogil=True)
def order_pair(
    x: np.ndarray, n: int, k_lo: int, k_hi: int, scratch: np.ndarray, centre: float = np.nan
) -> tuple[float, float]:  # pragma: no cover - compiled
    """The ``k_lo``-th and ``k_hi``-th smallest of ``x[:n]`` (0-based, ``k_lo <= k_hi``),
    or of ``|x[:n] - centre|`` when ``centre`` is a number.

    Parameters
    ----------
    x : numpy.ndarray of float64, (>= n,)
        Values; not modified.
    n : int
        Number of values used.
    k_lo, k_hi : int
        Ranks, ``0 <= k_lo <= k_hi < n``.
    scratch : numpy.ndarray of float64, (>= n,)
        Work space, overwritten.
    centre : float
        NaN (the default): the values themselves; else their distances from it.

    Returns
    -------
    (float, float)
        The two order statistics, exactly as ``numpy.partition`` places them.
    """
    if n > _SMALL:
        below, c, both = _bracket(x, n, k_lo, k_hi, scratch, centre)
        if both == both:  # one value holds both ranks
            return both, both
        if below >= 0:
            k_lo -= below
            k_hi -= below
            if k_hi - k_lo <= 1 and 2 * c <= scratch.size:
                # the gathered values lie between two finite pivots: no NaN;
                # a branch-free selection (tied, quantised values: ~7x faster)
                return order_pair_inplace(scratch, c, k_lo, k_hi)
            if c > _SMALL:  # a second bracket within the first
                inner = np.empty(c)
                below, c2, both = _bracket(scratch, c, k_lo, k_hi, inner, np.nan)
                if both == both:
                    return both, both
                if below >= 0:
                    return _pair_of(inner[:c2], k_lo - below, k_hi - below)
            return _pair_of(scratch[:c], k_lo, k_hi)
    for i in range(n):  # the whole row
        scratch[i] = abs(x[i] - centre) if centre == centre else x[i]
    return _pair_of(scratch[:n], k_lo, k_hi)


@numba.njit(cache=True, nogil=True)
def median_and_mad(x: np.ndarray, n: int, scratch: np.ndarray) -> tuple[float, float]:
    # pragma: no cover - compiled
    """Median of ``x[:n]`` and the median of ``|x - median|`` (not scaled to sigma).

    The medians are those of ``numpy.median`` for NaN-free values: the middle
    value, or the mean ``0.5 * (a + b)`` of the two middle values of an even
    count, in the order of ``numpy.partition`` (NaN last: a row with NaN gets
    the middle of that order, not NaN).  ``scratch`` is a work space of at least
    ``n`` values.
    """
    k = n // 2
    if n % 2:
        med, _ = order_pair(x, n, k, k, scratch, np.nan)
    else:
        a, b = order_pair(x, n, k - 1, k, scratch, np.nan)
        med = 0.5 * (a + b)
    if med != med:  # every deviation NaN
        return med, med
    if n % 2:
        mad, _ = order_pair(x, n, k, k, scratch, med)
        return med, mad
    a, b = order_pair(x, n, k - 1, k, scratch, med)
    return med, 0.5 * (a + b)


_CODE_SPAN = 65536
"""Codes a histogram of :func:`code_median_mad` spans at most (a 16-bit ADC's)."""
_TABLES = 4
"""Interleaved count tables: consecutive samples with one code (a quiet baseline)
update different counters, not one counter in a dependency chain."""
_EXCLUDED = np.iinfo(np.int32).max
"""Code of a sample that is not counted (NaN, fill)."""
CODE_COUNTS = _TABLES * (2 * _CODE_SPAN + 1)
"""Counters of the histogram :func:`code_prefix_stats` counts into (int32)."""


class CodePrefixStats(NamedTuple):
    """What :func:`code_prefix_stats` finds of a row's first samples."""

    ok: bool
    """The valid samples are values of codes spanning fewer than 65,536 (else
    nothing else is set)."""
    count: int
    """Valid samples."""
    median: float
    mad: float
    """As :func:`median_and_mad` of the valid samples (not scaled to sigma)."""
    low: float
    high: float
    """Smallest and largest valid sample (NaN for none)."""
    total: float
    """Sum of the valid samples, others 0, over the whole row in NumPy's order."""


@numba.njit(cache=True, nogil=True)
def code_median_mad(
    x: np.ndarray,
    n: int,
    has_fill: bool,
    fill: float,
    scale: float,
    offset: float,
    single: bool,
    codes: np.ndarray,
) -> tuple[bool, int, float, float]:  # pragma: no cover - compiled
    """Median and MAD (not scaled to sigma) of the valid values of ``x[:n]`` from
    their codes; the values of :func:`median_and_mad` on those values.

    Parameters
    ----------
    x : numpy.ndarray, (>= n,)
        Samples (integers or floats); NaN and ``fill`` (when ``has_fill``) are
        not counted.
    n : int
        Samples used.
    has_fill, fill : bool, float
        Whether samples equal to ``fill`` are missing, and that value.
    scale, offset : float
        The code scale: the value of code ``c`` is ``c * scale + offset``
        (float64), rounded to float32 when ``single``.
    single : bool
        Whether the samples are float32 values of codes.
    codes : numpy.ndarray of int32, (>= n,)
        Work space, overwritten.

    Returns
    -------
    ok : bool
        False when some valid sample is not exactly the value of an integer
        code, or the codes span more than 65,536: then nothing else is set
        (use :func:`median_and_mad`).
    count : int
        Valid samples.
    median, mad : float
        As :func:`median_and_mad` of the valid samples (NaN when none).
    """
    inverse = 1.0 / scale
    fill = fill if has_fill else np.nan  # never equal: no fill
    big = np.int32(_EXCLUDED)
    small = np.int32(-_EXCLUDED)
    ok = True
    lo = big
    hi = small
    count = 0
    for i in range(n):  # branch-free, reductions of selects: it vectorises
        v = np.float64(x[i])
        use = (v - v == 0.0) & (v != fill)
        c = np.rint((v - offset) * inverse)
        c = min(max(c, -1073741824.0), 1073741824.0)  # (NaN: not used)
        ok &= ~use | (code_value(c, scale, offset, single) == v)
        ci = np.int32(c)
        lo = min(lo, ci if use else big)
        hi = max(hi, ci if use else small)
        codes[i] = ci if use else big
        count += use
    lo = np.int64(lo)
    hi = np.int64(hi)
    if not ok or (count and hi - lo >= _CODE_SPAN):
        return False, count, np.nan, np.nan
    if count == 0:
        return True, 0, np.nan, np.nan
    span = hi - lo + 1  # bucket span: excluded samples
    width = span + 1
    counts = np.zeros(_TABLES * width, dtype=np.int64)
    for i in range(n - n % _TABLES):
        b = min(np.int64(codes[i]) - lo, span)
        counts[(i % _TABLES) * width + b] += 1
    for i in range(n - n % _TABLES, n):
        counts[min(np.int64(codes[i]) - lo, span)] += 1
    for t in range(1, _TABLES):  # into the first table
        for b in range(span):
            counts[b] += counts[t * width + b]
    med, mad = counted_median_mad(counts, lo, span, count, scale, offset, single)
    return True, count, med, mad


@numba.njit(cache=True, nogil=True)
def counted_median_mad(
    counts: np.ndarray, lo: int, span: int, count: int, scale: float, offset: float,
    single: bool,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Median and MAD (not scaled to sigma) of ``count >= 1`` samples of codes
    ``lo .. lo + span - 1``, ``counts[b]`` of them of code ``lo + b``: the values of
    :func:`median_and_mad` on their values (see :func:`code_median_mad`)."""
    k = count // 2
    # the median: the k-th (and (k-1)-th) smallest values
    below = 0
    b_lo = -1
    b_hi = -1
    for b in range(span):
        below += counts[b]
        if b_lo < 0 and below > k - 1:
            b_lo = b
        if below > k:
            b_hi = b
            break
    v_hi = code_value(np.float64(lo + b_hi), scale, offset, single)
    if count % 2:
        med = v_hi
    else:
        med = 0.5 * (code_value(np.float64(lo + b_lo), scale, offset, single) + v_hi)
    # the MAD: the deviations |value - med| rise from med outwards on either
    # side; merging the two sides in order gives the k-th (and (k-1)-th)
    up = 0
    while up < span and code_value(np.float64(lo + up), scale, offset, single) < med:
        up += 1
    down = up - 1
    taken = 0
    d_lo = np.nan
    d_hi = np.nan
    while True:
        d_up = np.inf
        if up < span:
            d_up = abs(code_value(np.float64(lo + up), scale, offset, single) - med)
        d_down = np.inf
        if down >= 0:
            d_down = abs(code_value(np.float64(lo + down), scale, offset, single) - med)
        if d_up <= d_down:
            taken += counts[up]
            d = d_up
            up += 1
        else:
            taken += counts[down]
            d = d_down
            down -= 1
        if d_lo != d_lo and taken > k - 1:
            d_lo = d
        if taken > k:
            d_hi = d
            break
    if count % 2:
        return med, d_hi
    return med, 0.5 * (d_lo + d_hi)


@numba.njit(cache=True, nogil=True)
def code_prefix_stats(
    x: np.ndarray,
    end: int,
    has_fill: bool,
    fill: float,
    scale: float,
    offset: float,
    single: bool,
    counts: np.ndarray,
) -> CodePrefixStats:  # pragma: no cover - compiled
    """:func:`code_median_mad` of the samples ``x[:end]`` and their sum, in one pass.

    The sum is that of the valid samples (others 0) over the whole row
    ``x``, in NumPy's pairwise order (:func:`idexdask.numerics.pairwise_sum`:
    leaves of at most 128 samples, each formed as it is read): what
    :func:`~idexdask.analysis.robust.clipped_prefix_mean` sums when its clip
    keeps every valid sample.  Each leaf's codes are counted while in cache,
    into a histogram spanning ``2 * 65536`` codes around the first valid one.

    Parameters
    ----------
    x, end, has_fill, fill, scale, offset, single
        As :func:`code_median_mad` (``n = end``).
    counts : numpy.ndarray of int32, (CODE_COUNTS,)
        All zero; left all zero.

    Returns
    -------
    CodePrefixStats
        ``ok`` False (nothing else set) where :func:`code_median_mad` refuses.
    """
    n = x.shape[0]
    inverse = 1.0 / scale
    fill = fill if has_fill else np.nan  # never equal: no fill
    anchor = np.int64(0)
    for i in range(end):  # the histogram is centred on the first valid code
        v = np.float64(x[i])
        if v - v == 0.0 and v != fill:
            c = min(max(np.rint((v - offset) * inverse), -1073741824.0), 1073741824.0)
            anchor = np.int64(c) - _CODE_SPAN
            break
    width = 2 * _CODE_SPAN + 1  # the last bucket: samples not counted
    big = np.int64(_EXCLUDED)
    ok = True
    lo = big
    hi = -big
    count = 0
    block = np.empty(128)
    bins = np.empty(128, dtype=np.int64)
    starts = pairwise_leaves(n)
    sums = np.zeros(starts.size - 1)  # a leaf from end on holds only 0: sums to +0.0
    for leaf in range(sums.size):
        cl = starts[leaf]
        cn = starts[leaf + 1] - cl
        if cl < end:
            leaf_x = x[cl : cl + cn]  # a view: indices from 0 load contiguously
            for i in range(cn):  # branch-free: it vectorises
                v = np.float64(leaf_x[i])
                use = (cl + i < end) & (v - v == 0.0) & (v != fill)
                c = np.rint((v - offset) * inverse)
                c = min(max(c, -1073741824.0), 1073741824.0)  # (NaN: not used)
                ci = np.int64(c)
                rel = ci - anchor
                inside = (rel >= 0) & (rel < width - 1)
                ok &= ~use | ((code_value(c, scale, offset, single) == v) & inside)
                lo = min(lo, ci if use else big)
                hi = max(hi, ci if use else -big)
                bins[i] = rel if (use & inside) else width - 1
                count += use
                block[i] = v if use else 0.0
            for i in range(cn - cn % _TABLES):  # the leaf's codes, while in cache
                counts[(i % _TABLES) * width + bins[i]] += 1
            for i in range(cn - cn % _TABLES, cn):
                counts[bins[i]] += 1
            sums[leaf] = pairwise_sum(block, 0, cn)
    # the counts touched: the valid codes' buckets inside the histogram, the last
    b0 = max(lo - anchor, 0) if count else 0
    b1 = min(hi - anchor, width - 2) if count else -1
    med = np.nan
    mad = np.nan
    good = ok and not (count and hi - lo >= _CODE_SPAN)
    if good and count:
        span = hi - lo + 1
        merged = np.zeros(span, dtype=np.int64)
        for t in range(_TABLES):
            for b in range(span):
                merged[b] += counts[t * width + b0 + b]
        med, mad = counted_median_mad(merged, lo, span, count, scale, offset, single)
    for t in range(_TABLES):  # left all zero
        counts[t * width + b0 : t * width + b1 + 1] = 0
        counts[t * width + width - 1] = 0
    if not good:
        return CodePrefixStats(False, count, np.nan, np.nan, np.nan, np.nan, np.nan)
    low = code_value(np.float64(lo), scale, offset, single) if count else np.nan
    high = code_value(np.float64(hi), scale, offset, single) if count else np.nan
    return CodePrefixStats(True, count, med, mad, low, high, pairwise_combine(sums, n))


@numba.njit(cache=True, nogil=True)
def prefix_sum_near_first(
    x: np.ndarray, end: int, half: float, fill: float
) -> tuple[int, bool, float]:  # pragma: no cover - compiled
    """Count and sum of the valid samples among ``x[:end]`` (finite and not
    ``fill``; a NaN ``fill``: none), the sum over the whole row with the others
    0 in NumPy's pairwise order (:func:`idexdask.numerics.pairwise_sum`, each
    leaf formed as it is read); and whether every valid sample lies within
    ``half`` of the first (``|v - first| <= half`` as rounded).

    This is the TOF gain merge's baseline level where the clip keeps every
    sample (:func:`idexdask.analysis.robust.clipped_prefix_mean` where it
    does not): each leaf is read through a view of the row, so that its loads are contiguous
    vector loads (an index ``start + i`` that might be negative is wrapped
    per value, which compiles to a gather: ~1.8x slower on a 400,000-sample
    lab baseline).
    """
    n = x.shape[0]
    first = np.nan
    for i in range(end):
        v = np.float64(x[i])
        if v - v == 0.0 and v != fill:
            first = v
            break
    count = 0
    far = False
    block = np.empty(128)
    starts = pairwise_leaves(n)
    sums = np.zeros(starts.size - 1)  # a leaf from end on holds only 0: sums to +0.0
    for leaf in range(sums.size):
        cl = starts[leaf]
        cn = starts[leaf + 1] - cl
        if cl >= end:
            break
        k = min(cn, end - cl)
        leaf_x = x[cl : cl + k]
        if fill == fill:  # a loop per kind of fill: the per-sample work is the cost
            for i in range(k):  # loops that vectorise
                v = np.float64(leaf_x[i])
                keep = (v - v == 0.0) & (v != fill)
                block[i] = v if keep else 0.0
                far |= keep & (abs(v - first) > half)
                count += keep
        else:
            for i in range(k):
                v = np.float64(leaf_x[i])
                keep = v - v == 0.0
                block[i] = v if keep else 0.0
                far |= keep & (abs(v - first) > half)
                count += keep
        for i in range(k, cn):
            block[i] = 0.0
        sums[leaf] = pairwise_sum(block, 0, cn)
    return count, not far, pairwise_combine(sums, n)
