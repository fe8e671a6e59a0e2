"""Compiled kernels of the pickup analysis: the one pass per record that counts
its missing samples and forms the running sums, the smoothed derivative's noise
and its entry and exit edges."""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.pickup.order_stats import (
    BINS,
    COPIES,
    bin_keys,
    binned_median_and_mad,
    block_extremes,
)
from idexdask.analysis.selection import median_and_mad

__all__ = [
    "BLOCK",
    "CHUNK",
    "cumsum_span",
    "derivative_at",
    "derivative_chunks",
    "derivative_rows",
    "derivative_window",
    "extreme_index",
    "first_extreme",
    "first_maximum",
    "first_minimum",
    "largest_block",
]

CHUNK = 4096
"""Samples per chunk of :func:`derivative_chunks` (its sums and means stay in cache)."""
BLOCK = 1024
"""Derivative values per block minimum of :func:`derivative_chunks`."""


@numba.njit(cache=True, nogil=True, inline="always")
def derivative_at(core, n, w, i):  # pragma: no cover - compiled
    """``d[i]``: ``core[i - w]`` on ``[w, n - w]``, else 0 (see :func:`derivative_rows`)."""
    if w <= i <= n - w:
        return core[i - w]
    return 0.0


@numba.njit(cache=True, nogil=True)
def derivative_window(core, n, w, centre, half, out):  # pragma: no cover - compiled
    """``out[k] = d[clip(centre - half + k, 0, n - 1)]`` for d of :func:`derivative_at`
    (a copy of the core where the window lies inside it)."""
    if centre - half >= w and centre + half <= n - w:
        out[:] = core[centre - half - w : centre + half + 1 - w]
        return
    for k in range(2 * half + 1):
        out[k] = derivative_at(core, n, w, min(max(centre + k - half, 0), n - 1))


@numba.njit(cache=True, nogil=True)
def first_extreme(core, n, w, lo, hi, sign):  # pragma: no cover - compiled
    """``lo + numpy.argmax(sign * d[lo:hi])`` for d of :func:`derivative_at`: the
    first largest value, or the first NaN; d is 0 outside ``[w, n - w]``."""
    a = max(lo, w)
    b = max(min(hi, n - w + 1), a)
    best = -np.inf
    at = -1
    first_nan = -1
    for i in range(a, b):
        v = sign * core[i - w]
        if v > best:
            best = v
            at = i
        if v != v and first_nan < 0:
            first_nan = i
    return extreme_index(best, at, first_nan, lo, a, b, hi)


@numba.njit(cache=True, nogil=True, inline="always")
def extreme_index(best, at, first_nan, lo, a, b, hi):  # pragma: no cover - compiled
    """:func:`first_extreme`'s index from its scan of ``d[a:b]`` (``best`` first at
    ``at``, the first NaN at ``first_nan``; -1: none) and the zeros of d on
    ``[lo, a)`` and ``[b, hi)``."""
    if first_nan >= 0:
        return first_nan
    # the zeros before and after the core, at their first index
    if lo < a and (at < 0 or not (best > 0.0)):
        return lo
    if b < hi and (at < 0 or 0.0 > best):
        return b
    return at if at >= 0 else lo


@numba.njit(cache=True, nogil=True)
def derivative_rows(
    y, polarity, fill, w, min_transit, max_transit, half, checkpoints
):  # pragma: no cover - compiled
    """Per row: cumulative sums, the derivative's noise, its entry and exit edges.

    ``cs[i]``, the sequential float64 sum of the first ``i`` samples
    ``polarity * y`` (non-finite samples read as ``fill[r]``), are the sums
    ``numpy.cumsum`` forms; ``mean_fwd[i] = (cs[i + w] - cs[i]) / w`` and the
    derivative ``d[i] = mean_fwd[i] - mean_fwd[i - w]`` on ``[w, n - w]``, else 0,
    are the values of the array formulas.  Returns the median absolute deviation
    of ``d[w : n - w + 1]`` (exact, :func:`~idexdask.analysis.selection.median_and_mad`),
    the index of d's maximum and that of its minimum on
    ``[i_in + min_transit, i_in + max_transit]`` (first on ties, NaN first, as
    ``numpy.argmax``), and d on ``clip(i - half ... i + half)`` around each.

    Parameters
    ----------
    y : numpy.ndarray, (rows, n)
        The records, V, any float dtype (non-finite: missing).
    polarity : float
        ±1: the sign that makes the pulse positive.
    fill : numpy.ndarray, (rows,)
        Value of each row's non-finite samples, V.
    w : int
        Samples per running mean (the derivative's half-kernel).
    min_transit, max_transit : int
        Exit search range after the entry edge, samples.
    half : int
        Half-width of the windows around the edges, samples.
    checkpoints : numpy.ndarray, (rows, n // CHUNK + 1), float64
        Filled with ``cs[q * CHUNK]``, V, from which :func:`cumsum_span` forms
        any stretch of the sums again (one row of sums is held at a time: a
        record's 4 MB, not the pack's).

    Returns
    -------
    mad : numpy.ndarray, (rows,)
        Median absolute deviation of the derivative, V (unscaled).
    i_in, i_out : numpy.ndarray, (rows,), int64
        Sample indices of the entry and exit edge peaks (``i_out`` 0 if the
        search range is empty).
    win_in, win_out : numpy.ndarray, (rows, 2 half + 1)
        The derivative around each edge, V.
    missing : numpy.ndarray, (rows,), int64
        Non-finite samples of each row (read as its ``fill``).
    """
    rows, n = y.shape
    m = n - 2 * w + 1
    mad = np.empty(rows)
    i_in = np.zeros(rows, dtype=np.int64)
    i_out = np.zeros(rows, dtype=np.int64)
    missing = np.zeros(rows, dtype=np.int64)
    win_in = np.empty((rows, 2 * half + 1))
    win_out = np.empty((rows, 2 * half + 1))
    core = np.empty(m)  # one row's derivative values
    scratch = np.empty(m)  # the selection's work space (pages touched as it gathers)
    block_max = np.empty((m + BLOCK - 1) // BLOCK)
    block_min = np.empty((m + BLOCK - 1) // BLOCK)
    keys = np.empty(m, dtype=np.uint16)  # each derivative value's bin
    counts = np.empty((COPIES, BINS), dtype=np.int32)
    buf_med = np.empty(m)  # the values of a few bins (pages touched as written)
    buf_dev = np.empty(m)
    for r in range(rows):
        counts[:] = 0
        nonfinite, missing[r] = derivative_chunks(
            y[r], polarity, fill[r], w, core, block_max, block_min, checkpoints[r], keys, counts)
        if nonfinite:  # NaN or infinite derivative values: the plain scans
            at = first_extreme(core, n, w, 0, n, 1.0)
        else:
            at = first_maximum(core, block_max, m, w, n)
        i_in[r] = at
        if nonfinite:
            _, mad[r] = median_and_mad(core, m, scratch)
        else:
            _, mad[r] = binned_median_and_mad(
                core, m, keys, counts, buf_med, buf_dev, scratch)
        lo = min(at + min_transit, n)
        hi = min(at + max_transit + 1, n)
        if hi <= lo:
            out = 0
        elif nonfinite:
            out = first_extreme(core, n, w, lo, hi, -1.0)
        else:
            out = first_minimum(core, block_min, n, w, lo, hi)
        i_out[r] = out
        derivative_window(core, n, w, at, half, win_in[r])
        derivative_window(core, n, w, out, half, win_out[r])
    return mad, i_in, i_out, win_in, win_out, missing


@numba.njit(cache=True, nogil=True)
def derivative_chunks(
    y, polarity, fill, w, core, block_max, block_min, checkpoints, keys, counts
):  # pragma: no cover - compiled
    """One record's derivative core ``core[j - w] = mean_fwd[j] - mean_fwd[j - w]``
    from its cumulative sums ``cs`` and running means ``mean_fwd[j] = (cs[j + w] -
    cs[j]) / w``; the maximum and minimum of each :data:`BLOCK` core values
    (``block_max``, ``block_min``, for :func:`first_maximum` and
    :func:`first_minimum`; not meaningful where the core has non-finite values);
    and ``checkpoints[q] = cs[q * CHUNK]``; each core value's bin and the bins'
    counts (:func:`~idexdask.analysis.pickup.order_stats.bin_keys`).  Returns the
    number of non-finite core values and that of non-finite samples.

    The record goes in chunks of :data:`CHUNK` samples: the sequential sums of a
    chunk, then its means and derivative values in loops without a carried
    dependency (vectorised divisions).  The sums and means live in buffers of the
    last ``w + CHUNK`` values, not in record-long arrays: a fresh 4 MB array costs
    a page fault per 4 kB page on first touch, more than the arithmetic.
    """
    n = y.size
    m = n - 2 * w + 1
    sums = np.empty(w + CHUNK + 1)  # cs[sums_base : sums_base + sums_held]
    sums[0] = 0.0
    sums_base = 0
    sums_held = 1
    means = np.empty(w + CHUNK)  # mean_fwd[means_base : j_next]
    means_base = 0
    total = 0.0
    j_next = 0  # first running mean not formed yet
    k_stat = 0  # first core value not in a block's extremes yet
    nonfinite = 0
    missing_total = 0
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        checkpoints[c0 // CHUNK] = total
        drop = j_next - sums_base  # sums no mean needs any more
        if drop > 0:
            for t in range(sums_held - drop):
                sums[t] = sums[t + drop]
            sums_held -= drop
            sums_base = j_next
        chunk = y[c0:c1]
        new_sums = sums[sums_held : sums_held + chunk.size]
        missing = 0
        for t in range(chunk.size):
            v = np.float64(chunk[t])
            missing += (v - v) != 0.0
        missing_total += missing
        if missing:
            for t in range(chunk.size):
                v = np.float64(chunk[t])
                if v - v != 0.0:  # NaN or infinite
                    v = fill
                total += polarity * v
                new_sums[t] = total
        else:
            for t in range(chunk.size):
                total += polarity * np.float64(chunk[t])
                new_sums[t] = total
        sums_held += chunk.size
        j_end = c1 - w + 1  # the means whose w samples are summed
        if j_end <= j_next:
            continue
        k0 = max(j_next, w) - w
        k1 = j_end - w
        drop = k0 - means_base  # means no derivative value needs any more
        if drop > 0:
            for t in range(j_next - k0):
                means[t] = means[t + drop]
            means_base = k0
        upper = sums[j_next + w - sums_base : j_end + w - sums_base]
        lower = sums[j_next - sums_base : j_end - sums_base]
        formed = means[j_next - means_base : j_end - means_base]
        for t in range(formed.size):
            formed[t] = (upper[t] - lower[t]) / w
        j_next = j_end
        if k1 <= k0:  # no derivative value yet (a kernel longer than a chunk)
            continue
        later = means[k0 + w - means_base : k1 + w - means_base]
        earlier = means[k0 - means_base : k1 - means_base]
        d = core[k0:k1]
        for t in range(d.size):
            d[t] = later[t] - earlier[t]
        for t in range(d.size):
            v = d[t]
            nonfinite += (v - v) != 0.0
        bin_keys(d, keys[k0:k1], counts)
        while k_stat < k1 and (k_stat + BLOCK <= k1 or k1 == m):
            end = min(k_stat + BLOCK, m)
            block_max[k_stat // BLOCK], block_min[k_stat // BLOCK] = block_extremes(
                core[k_stat:end])
            k_stat = end
    if n % CHUNK == 0:
        checkpoints[n // CHUNK] = total
    return nonfinite, missing_total


@numba.njit(cache=True, nogil=True)
def cumsum_span(y, polarity, fill, checkpoints, a, b):  # pragma: no cover - compiled
    """``cs[a:b]`` of :func:`derivative_rows` for one record (``0 <= a <= b <= n + 1``):
    its sequential sums again from the checkpoint before ``a``, the same additions
    in the same order, so the same values."""
    out = np.empty(max(b - a, 0))
    if b <= a:
        return out
    q = a // CHUNK
    total = checkpoints[q]
    i = q * CHUNK  # total = cs[i]
    if i >= a:
        out[i - a] = total
    while i + 1 < b:
        v = np.float64(y[i])
        if v - v != 0.0:  # NaN or infinite
            v = fill
        total += polarity * v
        i += 1
        if i >= a:
            out[i - a] = total
    return out


@numba.njit(cache=True, nogil=True)
def largest_block(block_max):  # pragma: no cover - compiled
    """The largest of the blocks' maxima (``-inf`` if none is above it) and the
    first block that holds it (-1 if none)."""
    best = -np.inf
    first = -1
    for blk in range(block_max.size):
        if block_max[blk] > best:
            best = block_max[blk]
            first = blk
    return best, first


@numba.njit(cache=True, nogil=True)
def first_maximum(core, block_max, m, w, n):  # pragma: no cover - compiled
    """``first_extreme(core, n, w, 0, n, 1.0)`` for a finite core of ``m`` values:
    the first block holding the largest block maximum, scanned for its first index."""
    best, first = largest_block(block_max)
    at = -1
    if first >= 0:
        for k in range(first * BLOCK, min((first + 1) * BLOCK, m)):
            if core[k] == best:
                at = k + w
                break
    return extreme_index(best, at, -1, 0, w, max(n - w + 1, w), n)


@numba.njit(cache=True, nogil=True)
def first_minimum(core, block_min, n, w, lo, hi):  # pragma: no cover - compiled
    """``first_extreme(core, n, w, lo, hi, -1.0)`` for a finite core, the blocks of
    :data:`BLOCK` values whose minimum cannot hold the first minimum skipped."""
    a = max(lo, w)
    b = max(min(hi, n - w + 1), a)
    k0 = a - w
    k1 = b - w
    low = np.inf
    at = -1
    k = k0
    while k < k1:
        blk = k // BLOCK
        end = min((blk + 1) * BLOCK, k1)
        if k == blk * BLOCK and end == (blk + 1) * BLOCK and not (block_min[blk] < low):
            k = end  # a whole block that holds no smaller value
            continue
        for i in range(k, end):
            v = core[i]
            if v < low:
                low = v
                at = i
        k = end
    if at >= 0:
        at += w
    return extreme_index(-low, at, -1, lo, a, b, hi)
