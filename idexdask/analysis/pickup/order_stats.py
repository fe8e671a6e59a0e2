"""Exact median and MAD of a long row from the bins of its values, formed in cache.

The pickup derivative's median and median absolute deviation are order
statistics of ~500,000 values per lab record (4 MB: each pass over them once
formed is a read from memory, ~0.4 ms).  :func:`bin_keys` puts each value in a
bin as the value is formed (in cache, in the derivative's own pass) and keeps
its bin number (2 bytes a value) and the bins' counts.  The bins are contiguous
ranges of values in value order: sign, binary exponent (clamped to
``[EXP_LO, EXP_HI]``, so the smallest and largest magnitudes share the end
bins) and the first four mantissa bits, :data:`BINS` in all (-0.0 lies in the
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
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.selection import median_and_mad, order_pair

__all__ = [
    "BINS",
    "COPIES",
    "EXP_HI",
    "EXP_LO",
    "bin_bounds",
    "bin_keys",
    "binned_median_and_mad",
]

_SUB_BITS = 4
"""Mantissa bits in a bin number (bins of relative width 1/16)."""
EXP_LO = 1023 - 96
"""Smallest biased float64 exponent with bins of its own (2**-96); smaller
magnitudes, zero included, share the bin next to zero on each side."""
EXP_HI = 1023 + 31
"""Largest biased exponent with bins of its own (2**31); larger magnitudes,
infinities and NaN included, share the end bins."""
_HALF = (EXP_HI - EXP_LO + 1) << _SUB_BITS
BINS = 2 * _HALF
"""Bins in all: negative values in bins ``[0, BINS / 2)``, the others above."""
COPIES = 4
"""Interleaved copies of the counts: neighbouring values of a smooth row fall in
one bin, and four counters take turns so that no increment waits for the last."""


@numba.njit(cache=True, nogil=True, inline="always")
def _bin(u):  # pragma: no cover - compiled
    """Bin number of the float64 with bits ``u`` (uint64), without branches (the
    signs of a noisy row's values defeat prediction)."""
    top = np.int64((u >> np.uint64(52 - _SUB_BITS)) & np.uint64(0x7FFF))  # exponent, sub
    magnitude = min(max(top - (EXP_LO << _SUB_BITS), 0), _HALF - 1)
    negative = np.int64(u >> np.uint64(63))
    return _HALF + magnitude - negative * (2 * magnitude + 1)


@numba.njit(cache=True, nogil=True)
def bin_keys(values, keys, counts):  # pragma: no cover - compiled
    """Bin numbers of ``values`` (contiguous float64) into ``keys`` (uint16, same
    size), each added to ``counts`` (COPIES, BINS), int32."""
    size = values.size
    bits = values.view(np.uint64)
    for t in range(size):  # no carried dependency: vectorised
        keys[t] = _bin(bits[t])
    top = size - size % COPIES
    for t in range(0, top, COPIES):
        counts[0, keys[t]] += 1
        counts[1, keys[t + 1]] += 1
        counts[2, keys[t + 2]] += 1
        counts[3, keys[t + 3]] += 1
    for t in range(top, size):
        counts[0, keys[t]] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _from_bits(u):  # pragma: no cover - compiled
    a = np.empty(1, dtype=np.uint64)
    a[0] = u
    return a.view(np.float64)[0]


@numba.njit(cache=True, nogil=True)
def bin_bounds(b):  # pragma: no cover - compiled
    """The smallest and largest float64 values in bin ``b`` (±inf at the ends)."""
    magnitude = b - _HALF if b >= _HALF else _HALF - 1 - b
    e = np.uint64(EXP_LO + (magnitude >> _SUB_BITS))
    sub = np.uint64(magnitude & ((1 << _SUB_BITS) - 1))
    low = (e << np.uint64(52)) | (sub << np.uint64(52 - _SUB_BITS))
    high = low | np.uint64((1 << (52 - _SUB_BITS)) - 1)
    large = np.inf if magnitude == _HALF - 1 else _from_bits(high)
    small = 0.0 if magnitude == 0 else _from_bits(low)
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
    k = n // 2
    k_lo = k if n % 2 else k - 1
    total = np.zeros(BINS, dtype=np.int64)
    for c in range(COPIES):
        for b in range(BINS):
            total[b] += counts[c, b]
    b_lo, b_hi, below = _rank_bins(total, k_lo, k)
    if b_lo < 0:
        return median_and_mad(x, n, scratch)
    flags = np.zeros(BINS, dtype=np.uint8)
    for b in range(b_lo, b_hi + 1):
        flags[b] = 1
    med_lo, _ = bin_bounds(b_lo)
    _, med_hi = bin_bounds(b_hi)
    r_lo, r_hi, certain = _deviation_bins(total, med_lo, med_hi, k_lo, k, flags)
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
    if not (k - below < n_med):
        return median_and_mad(x, n, scratch)
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
        return median_and_mad(x, n, scratch)
    a, b = order_pair(buf_dev, c, k_lo - low, k - low, scratch)
    return med, a if n % 2 else 0.5 * (a + b)
