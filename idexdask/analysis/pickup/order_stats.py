"""Exact median and MAD of a long row from the bins of its values, formed in cache.

The pickup derivative's median and median absolute deviation are order
statistics of ~500,000 values per lab record (4 MB: each pass over them once
formed is a read from memory, ~0.4 ms).  :func:`bin_keys` puts each value in a
bin as the value is formed (in cache, in the derivative's own pass) and keeps
its bin number (2 bytes a value) and the bins' counts.  The bins are contiguous
ranges of values in value order: sign, binary exponent (clamped to
``[EXP_LO, EXP_HI]``, so the smallest and largest magnitudes share the end
bins) and the first six mantissa bits, :data:`BINS` in all (-0.0 lies in the
bin below 0.0's: a row of signed zeros may give the other zero than NumPy).

:func:`binned_median_and_mad` then finds the bins holding the median's ranks
from the counts, and the bins whose values' deviations from any median in those
bins can hold the MAD's ranks (the computed ``|x - median|`` is monotone in
``x`` on either side, so a bin's range of deviations is exact); one scan of the
bin numbers gathers those bins' values (a few thousand), and the ranks are
selected among them, the counts of the bins below added.  The results are
order statistics of the row itself, no arithmetic beyond
:func:`~idexdask.analysis.selection.median_and_mad`'s, so they equal its values
and NumPy's; where the counts do not verify (they cannot for NaN-free rows)
the row goes to :func:`~idexdask.analysis.selection.median_and_mad`.

:func:`int_keys` and :func:`binned_median_and_mad_of_ints` do the same for
integers (the derivative formed from ADC codes,
:mod:`~idexdask.analysis.pickup.code_kernels`): the bins of their float64
values, the bin numbers not kept, the values gathered by comparisons with the
flagged bins' value ranges.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from idexdask.analysis.selection import median_and_mad, order_pair

__all__ = [
    "BINS",
    "COPIES",
    "EXP_HI",
    "EXP_LO",
    "add_counts",
    "bin_bounds",
    "bin_keys",
    "binned_median_and_mad",
    "binned_median_and_mad_of_ints",
    "block_extremes",
    "int_keys",
    "linear_median",
    "value_bin",
    "value_range",
    "window_median_and_mad",
]

_SUB_BITS = 6
"""Mantissa bits in a bin number (bins of relative width 1/64: a noisy row's
median and MAD ranks fall in bins of ~1 % of its values, gathered in one scan)."""
EXP_LO = 1023 - 96
"""Smallest biased float64 exponent with bins of its own (2**-96); smaller
magnitudes, zero included, share the bin next to zero on each side."""
EXP_HI = 1023 + 31
"""Largest biased exponent with bins of its own (2**31); larger magnitudes,
infinities and NaN included, share the end bins."""
_TOP_MASK = (1 << (11 + _SUB_BITS)) - 1
"""The exponent's 11 bits and the sub-bin bits of a float64 shifted down."""
_HALF = (EXP_HI - EXP_LO + 1) << _SUB_BITS
BINS = 2 * _HALF
"""Bins in all: negative values in bins ``[0, BINS / 2)``, the others above."""
COPIES = 4
"""Interleaved copies of the counts: neighbouring values of a smooth row fall in
one bin, and four counters take turns so that no increment waits for the last."""


@intrinsic
def _float_bits(typingctx, x):  # pragma: no cover - compiled
    """The bits of the float64 ``x`` as a uint64 (a register move, no memory)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint64))

    return types.uint64(types.float64), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _bin(u):  # pragma: no cover - compiled
    """Bin number of the float64 with bits ``u`` (uint64), without branches (the
    signs of a noisy row's values defeat prediction)."""
    top = np.int64((u >> np.uint64(52 - _SUB_BITS)) & np.uint64(_TOP_MASK))  # exponent, sub
    magnitude = min(max(top - (EXP_LO << _SUB_BITS), 0), _HALF - 1)
    negative = -np.int64(u >> np.uint64(63))  # all bits set for a negative value
    return _HALF + (magnitude ^ negative)  # _HALF - 1 - magnitude below zero


@numba.njit(cache=True, nogil=True, inline="always")
def add_counts(keys, n, counts):  # pragma: no cover - compiled
    """Add each of ``keys[:n]`` (bin numbers) to ``counts`` (COPIES, bins): keys
    in turn go to the COPIES rows, so that consecutive equal keys (a quiet row)
    do not wait on one counter; a bin's count is the sum of its column."""
    top = n - n % COPIES
    for t in range(0, top, COPIES):
        counts[0, keys[t]] += 1
        counts[1, keys[t + 1]] += 1
        counts[2, keys[t + 2]] += 1
        counts[3, keys[t + 3]] += 1
    for t in range(top, n):
        counts[0, keys[t]] += 1


@numba.njit(cache=True, nogil=True)
def bin_keys(values, keys, counts):  # pragma: no cover - compiled
    """Bin numbers of ``values`` (contiguous float64) into ``keys`` (uint16, same
    size), each added to ``counts`` (COPIES, BINS), int32."""
    size = values.size
    bits = values.view(np.uint64)
    for t in range(size):  # no carried dependency: vectorised
        keys[t] = _bin(bits[t])
    add_counts(keys, size, counts)


@numba.njit(cache=True, nogil=True)
def bin_bounds(b):  # pragma: no cover - compiled
    """The smallest and largest float64 values in bin ``b`` (±inf at the ends)."""
    magnitude = b - _HALF if b >= _HALF else _HALF - 1 - b
    exponent = EXP_LO + (magnitude >> _SUB_BITS) - 1023 - _SUB_BITS
    sub = (1 << _SUB_BITS) + (magnitude & ((1 << _SUB_BITS) - 1))
    # (1 + sub / 16) 2**e and the largest value below the next bin's: exact, normal
    small = 0.0 if magnitude == 0 else math.ldexp(float(sub), exponent)
    large = np.inf if magnitude == _HALF - 1 else np.nextafter(
        math.ldexp(float(sub + 1), exponent), 0.0)
    if b >= _HALF:
        return small, large
    return -large, -small


@numba.njit(cache=True, nogil=True)
def _rank_bins(total, k_lo, k_hi):  # pragma: no cover - compiled
    """The bins holding ranks ``k_lo <= k_hi`` of the counts ``total``, and the
    count of the bins below the first."""
    b_lo = -1
    below = 0
    seen = 0
    for b in range(total.size):
        if b_lo < 0 and seen + total[b] > k_lo:
            b_lo = b
            below = seen
        seen += total[b]
        if seen > k_hi:
            return b_lo, b, below
    return -1, -1, 0


@numba.njit(cache=True, nogil=True)
def _deviation_bins(total, med_lo, med_hi, k_lo, k_hi, flags):  # pragma: no cover - compiled
    """Mark in ``flags`` (bit 2) the bins that can hold deviation ranks ``k_lo``,
    ``k_hi`` for a median anywhere in ``[med_lo, med_hi]``; return the pivots
    ``R_lo <= R_hi`` and the count of the bins whose deviations all lie below
    ``R_lo``.  Fewer than ``k_lo + 1`` values can lie below ``R_lo``, at least
    ``k_hi + 1`` lie at or below ``R_hi``."""
    used = 0
    for b in range(total.size):
        used += total[b] > 0
    dev_min = np.empty(used)
    dev_max = np.empty(used)
    count = np.empty(used, dtype=np.int64)
    which = np.empty(used, dtype=np.int64)
    j = 0
    for b in range(total.size):
        if total[b] == 0:
            continue
        a, z = bin_bounds(b)
        if z <= med_lo:
            lo, hi = abs(z - med_lo), abs(a - med_hi)
        elif a >= med_hi:
            lo, hi = abs(a - med_hi), abs(z - med_lo)
        else:
            lo, hi = 0.0, max(abs(a - med_hi), abs(z - med_lo))
        dev_min[j] = lo
        dev_max[j] = hi
        count[j] = total[b]
        which[j] = b
        j += 1
    by_max = np.argsort(dev_max, kind="mergesort")
    r_hi = np.inf
    seen = 0
    for t in range(used):
        seen += count[by_max[t]]
        if seen > k_hi:
            r_hi = dev_max[by_max[t]]
            break
    by_min = np.argsort(dev_min, kind="mergesort")
    r_lo = 0.0
    seen = 0  # values in the bins whose smallest deviation is below the candidate
    t = 0
    while t < used:
        v = dev_min[by_min[t]]
        if seen > k_lo:
            break
        r_lo = v
        while t < used and dev_min[by_min[t]] == v:
            seen += count[by_min[t]]
            t += 1
    certain = 0
    for j in range(used):
        if dev_max[j] < r_lo:
            certain += count[j]
        elif dev_min[j] <= r_hi:
            flags[which[j]] |= 2
    return r_lo, r_hi, certain


@numba.njit(cache=True, nogil=True)
def binned_median_and_mad(x, n, keys, counts, buf_med, buf_dev, scratch):
    # pragma: no cover - compiled
    """:func:`~idexdask.analysis.selection.median_and_mad` of the NaN-free
    ``x[:n]`` whose bins :func:`bin_keys` gave.

    Parameters
    ----------
    x : numpy.ndarray of float64, (>= n,)
        Values without NaN; not modified.
    n : int
    keys : numpy.ndarray of uint16, (>= n,)
        Bin numbers of ``x[:n]``.
    counts : numpy.ndarray of int32, (COPIES, BINS)
        Their counts.
    buf_med, buf_dev, scratch : numpy.ndarray of float64, (>= n,)
        Work space, overwritten (a few thousand values of each are written).

    Returns
    -------
    (float, float)
        The median and the (unscaled) median absolute deviation.
    """
    found, k_lo, k, below, flags, r_lo, r_hi, certain = _flagged_bins(counts, n)
    if not found:
        return median_and_mad(x, n, scratch)
    n_med = 0
    n_dev = 0
    for i in range(n):  # the values of the flagged bins
        f = flags[keys[i]]
        if f:
            if f & 1:
                buf_med[n_med] = x[i]
                n_med += 1
            if f & 2:
                buf_dev[n_dev] = x[i]
                n_dev += 1
    ok, med, mad = _select_flagged(n, k_lo, k, below, r_lo, r_hi, certain, buf_med, n_med,
                                   buf_dev, n_dev, scratch)
    if not ok:
        return median_and_mad(x, n, scratch)
    return med, mad


@numba.njit(cache=True, nogil=True)
def int_keys(values, keys, counts):  # pragma: no cover - compiled
    """Add the bins of the integers ``values`` (those of their float64 values,
    :func:`bin_keys`) to ``counts`` (COPIES, BINS), int32; ``keys`` (uint16, at
    least ``values.size``) is work space (the bin numbers are not kept:
    :func:`binned_median_and_mad_of_ints` gathers by the bins' value ranges)."""
    size = values.size
    for t in range(size):  # no carried dependency: vectorised
        keys[t] = value_bin(values[t])
    add_counts(keys, size, counts)


@numba.njit(cache=True, nogil=True)
def binned_median_and_mad_of_ints(x, n, counts, buf_med, buf_dev, scratch):
    # pragma: no cover - compiled
    """The median and MAD of the integers ``x[:n]`` (``numpy.median``'s values,
    exact: integers, their half-sums and distances are float64 numbers) from
    the counts :func:`int_keys` gave, as :func:`binned_median_and_mad`.

    The flagged bins are contiguous runs of values: the median's one run and the
    deviations' (one each side of the median, as a rule), so the values are
    gathered by comparisons with the runs' bounds, a mask formed in a loop
    without branches per block of :data:`_GATHER` values and only its flagged
    values moved.

    Parameters
    ----------
    x : numpy.ndarray of int32 or int64, (>= n,)
        Values (``|x| < 2**52``); not modified.
    n : int
        ``n >= 1``.
    counts : numpy.ndarray of int32, (COPIES, BINS)
        Their counts.
    buf_med, buf_dev, scratch : numpy.ndarray of float64, (>= n,)
        Work space, overwritten (a few thousand values of each are written).

    Returns
    -------
    (float, float)
        The median and the (unscaled) median absolute deviation; NaN, NaN if
        the counts do not hold ``n`` values or the deviations' bins form more
        than two runs.
    """
    found, k_lo, k, below, flags, r_lo, r_hi, certain = _flagged_bins(counts, n)
    if not found:
        return np.nan, np.nan
    runs = np.zeros((3, 2))  # the median's run, then the deviations' runs
    n_runs = 0
    b = 0
    while b < BINS:
        if flags[b] & 2:
            start = b
            while b < BINS and flags[b] & 2:
                b += 1
            if n_runs == 2:
                return np.nan, np.nan
            runs[1 + n_runs, 0] = bin_bounds(start)[0]
            runs[1 + n_runs, 1] = bin_bounds(b - 1)[1]
            n_runs += 1
        else:
            b += 1
    first = -1
    last = -1
    for b in range(BINS):
        if flags[b] & 1:
            last = b
            if first < 0:
                first = b
    runs[0, 0] = bin_bounds(first)[0]
    runs[0, 1] = bin_bounds(last)[1]
    if n_runs < 2:  # an empty run
        runs[2, 0] = np.inf
        runs[2, 1] = -np.inf
    if n_runs < 1:
        runs[1, 0] = np.inf
        runs[1, 1] = -np.inf
    n_med, n_dev = _gather_runs(x, n, runs, buf_med, buf_dev)
    ok, med, mad = _select_flagged(n, k_lo, k, below, r_lo, r_hi, certain, buf_med, n_med,
                                   buf_dev, n_dev, scratch)
    if not ok:
        return np.nan, np.nan
    return med, mad


_GATHER = 1024
"""Values per block of :func:`_gather_runs`'s mask."""


@numba.njit(cache=True, nogil=True)
def _gather_runs(x, n, runs, buf_med, buf_dev):  # pragma: no cover - compiled
    """The values of ``x[:n]`` in the median's run ``runs[0]`` into ``buf_med``, those
    in the deviations' runs ``runs[1]``, ``runs[2]`` into ``buf_dev``; their counts.
    A mask per block without branches, then its flagged values moved, eight mask
    bytes at a time skipped where none is set.  ``buf_med`` and ``buf_dev`` hold
    at least ``n`` values (a value is written one place past those gathered)."""
    m_lo, m_hi = runs[0, 0], runs[0, 1]
    a_lo, a_hi = runs[1, 0], runs[1, 1]
    c_lo, c_hi = runs[2, 0], runs[2, 1]
    mask = np.zeros(_GATHER, dtype=np.uint8)
    words = mask.view(np.uint64)
    n_med = 0
    n_dev = 0
    for b0 in range(0, n, _GATHER):
        size = min(_GATHER, n - b0)
        for t in range(size):  # no branches: vectorised
            v = np.float64(x[b0 + t])
            mask[t] = (np.uint8((v >= m_lo) & (v <= m_hi))
                       | (np.uint8(((v >= a_lo) & (v <= a_hi)) | ((v >= c_lo) & (v <= c_hi)))
                          << np.uint8(1)))
        for t in range(size, _GATHER):
            mask[t] = 0
        for q in range(_GATHER // 8):
            if words[q] == 0:
                continue
            # without branches: each value written at the next free place of
            # both buffers, which advance only where it is flagged (a flagged
            # value every few samples mispredicts a branch per value)
            for t in range(8 * q, 8 * q + 8):
                f = mask[t]
                v = np.float64(x[b0 + t])
                buf_med[n_med] = v
                n_med += f & 1
                buf_dev[n_dev] = v
                n_dev += f >> 1
    return n_med, n_dev


@numba.njit(cache=True, nogil=True, inline="always")
def value_bin(v):  # pragma: no cover - compiled
    """Bin number of the number ``v`` (that of its float64 value)."""
    return _bin(_float_bits(np.float64(v)))


@numba.njit(cache=True, nogil=True)
def _flagged_bins(counts, n):  # pragma: no cover - compiled
    """The bins to gather for the median and MAD of ``n`` values with these
    counts: ``(found, k_lo, k, below, flags, r_lo, r_hi, certain)``, ``flags``
    bit 1 on the median's bins, bit 2 on those that can hold the MAD's
    (:func:`_deviation_bins`); ``found`` False where the counts hold too few values."""
    k = n // 2
    k_lo = k if n % 2 else k - 1
    total = np.zeros(BINS, dtype=np.int64)
    for c in range(COPIES):
        for b in range(BINS):
            total[b] += counts[c, b]
    flags = np.zeros(BINS, dtype=np.uint8)
    b_lo, b_hi, below = _rank_bins(total, k_lo, k)
    if b_lo < 0:
        return False, k_lo, k, below, flags, 0.0, 0.0, 0
    for b in range(b_lo, b_hi + 1):
        flags[b] = 1
    med_lo, _ = bin_bounds(b_lo)
    _, med_hi = bin_bounds(b_hi)
    r_lo, r_hi, certain = _deviation_bins(total, med_lo, med_hi, k_lo, k, flags)
    return True, k_lo, k, below, flags, r_lo, r_hi, certain


@numba.njit(cache=True, nogil=True)
def _select_flagged(n, k_lo, k, below, r_lo, r_hi, certain, buf_med, n_med, buf_dev, n_dev,
                    scratch):  # pragma: no cover - compiled
    """``(ok, median, mad)`` from the gathered values of the flagged bins
    (:func:`_flagged_bins`); ``ok`` False where the counts do not verify."""
    if not (k - below < n_med):
        return False, np.nan, np.nan
    a, b = order_pair(buf_med, n_med, k_lo - below, k - below, scratch)
    med = a if n % 2 else 0.5 * (a + b)
    low = 0
    c = 0
    for i in range(n_dev):  # deviations below the lower pivot, and those between
        v = abs(buf_dev[i] - med)
        if v < r_lo:
            low += 1
        elif v <= r_hi:
            buf_dev[c] = v
            c += 1
    low += certain
    if not (low <= k_lo and k < low + c):
        return False, np.nan, np.nan
    a, b = order_pair(buf_dev, c, k_lo - low, k - low, scratch)
    return True, med, a if n % 2 else 0.5 * (a + b)


_LINEAR_BINS = 4096
"""Bins of :func:`linear_median` across a window's range of values."""


@numba.njit(cache=True, nogil=True)
def block_extremes(values):  # pragma: no cover - compiled
    """Largest and smallest of finite ``values`` (four independent comparisons
    per step rather than one chain); ``(-inf, inf)`` when empty."""
    hi0 = hi1 = hi2 = hi3 = -np.inf
    lo0 = lo1 = lo2 = lo3 = np.inf
    size = values.size
    top = size - size % 4
    for t in range(0, top, 4):
        v0 = values[t]
        v1 = values[t + 1]
        v2 = values[t + 2]
        v3 = values[t + 3]
        hi0 = v0 if v0 > hi0 else hi0
        hi1 = v1 if v1 > hi1 else hi1
        hi2 = v2 if v2 > hi2 else hi2
        hi3 = v3 if v3 > hi3 else hi3
        lo0 = v0 if v0 < lo0 else lo0
        lo1 = v1 if v1 < lo1 else lo1
        lo2 = v2 if v2 < lo2 else lo2
        lo3 = v3 if v3 < lo3 else lo3
    for t in range(top, size):
        v = values[t]
        hi0 = v if v > hi0 else hi0
        lo0 = v if v < lo0 else lo0
    return max(max(hi0, hi1), max(hi2, hi3)), min(min(lo0, lo1), min(lo2, lo3))


@numba.njit(cache=True, nogil=True)
def value_range(x, n):  # pragma: no cover - compiled
    """Smallest and largest of the NaN-free ``x[:n]`` (``n >= 1``)."""
    high, low = block_extremes(x[:n])
    return low, high


@numba.njit(cache=True, nogil=True)
def linear_median(x, n, keys, counts, buf, scratch):  # pragma: no cover - compiled
    """``numpy.median`` of the NaN-free ``x[:n]`` (``n >= 1``) by bins of equal
    width across its range: ``int((x - min) * (bins / (max - min)))`` is a
    monotone function of ``x`` (each operation rounds monotonically), so the bins
    are contiguous ranges of values in order; the middle ranks are selected
    among the values of their bins.

    For the windows of step 4 (a few ten thousand quantised samples, or their
    running means: a narrow range of values, so a bin per ADC code or finer),
    where one counting pass and a small selection cost less than a quickselect's
    passes with their mispredicted branches.

    Parameters
    ----------
    x : numpy.ndarray of float64, (>= n,)
    n : int
    keys : numpy.ndarray of uint16, (>= n,)
    counts : numpy.ndarray of int32, (COPIES, >= 4096)
    buf, scratch : numpy.ndarray of float64, (>= n,)
        Work space, overwritten.

    Returns
    -------
    float
    """
    k = n // 2
    k_lo = k if n % 2 else k - 1
    low, high = value_range(x, n)
    scale = _LINEAR_BINS / (high - low) if high > low else 0.0
    if not (scale > 0.0 and scale < np.inf and high - low < np.inf):
        if high == low:
            return low
        a, b = order_pair(x, n, k_lo, k, scratch)
        return a if n % 2 else 0.5 * (a + b)
    counts[:, :_LINEAR_BINS] = 0
    for i in range(n):  # no carried dependency: vectorised
        keys[i] = min(np.int64((x[i] - low) * scale), _LINEAR_BINS - 1)
    add_counts(keys, n, counts)
    seen = 0
    b_lo = -1
    below = 0
    b_hi = _LINEAR_BINS - 1
    for b in range(_LINEAR_BINS):
        c = counts[0, b] + counts[1, b] + counts[2, b] + counts[3, b]
        if b_lo < 0 and seen + c > k_lo:
            b_lo = b
            below = seen
        seen += c
        if seen > k:
            b_hi = b
            break
    m = 0
    for i in range(n):  # the values of the middle bins, without branches (quantised
        buf[m] = x[i]  # samples fill the middle bins: a branch would mispredict)
        key = keys[i]
        m += (key >= b_lo) & (key <= b_hi)
    a, b = order_pair(buf, m, k_lo - below, k - below, scratch)
    return a if n % 2 else 0.5 * (a + b)


@numba.njit(cache=True, nogil=True)
def window_median_and_mad(x, n, keys, counts, buf, dev, scratch):
    # pragma: no cover - compiled
    """:func:`~idexdask.analysis.selection.median_and_mad` of the NaN-free
    ``x[:n]`` (``n >= 1``) by two :func:`linear_median`, of the values and of
    their deviations ``|x - median|`` (formed as that function forms them).

    Parameters
    ----------
    x : numpy.ndarray of float64, (>= n,)
    n : int
    keys : numpy.ndarray of uint16, (>= n,)
    counts : numpy.ndarray of int32, (COPIES, >= 4096)
    buf, dev, scratch : numpy.ndarray of float64, (>= n,)
        Work space, overwritten.

    Returns
    -------
    (float, float)
        The median and the (unscaled) median absolute deviation.
    """
    med = linear_median(x, n, keys, counts, buf, scratch)
    for i in range(n):
        dev[i] = abs(x[i] - med)
    return med, linear_median(dev, n, keys, counts, buf, scratch)
