"""The pickup derivative's pass from a record's ADC codes, its values never written out.

:mod:`~idexdask.analysis.pickup.code_kernels` forms the integer derivative
``D[k + w] = sign (S[k + 2 w] - 2 S[k + w] + S[k])`` (``S`` the prefix sums of
the codes) of a record.  Its median and MAD are order statistics of integers,
so an exact histogram of the values gives them with no second look at the
values: here each value is counted in the pass that forms it, in one bin per
attainable value, and the values themselves are not kept (a lab record's 2 MB
of int32 derivative, written and read back, cost more than their arithmetic).

A scope's ADC of fewer bits than its 16-bit codes records codes that share
their low bits (a 12-bit ADC: multiples of 16), and then so does every ``D``;
the bins are those of ``D >> shift``, ``shift`` the low bits the first chunk's
codes share, checked on every value (the OR of the values' low bits).
:data:`HIST_BINS` bins centred on zero cover ``|D >> shift| < HIST_BINS / 2``;
the values beyond are counted in the two end bins.  The median and MAD are
exact where their ranks fall in the inner bins (the deviations' counts are
differences of the bins' cumulative counts); a record whose ranks reach an end
bin, or whose values do not share the low bits, returns unverified and goes
to :func:`~idexdask.analysis.pickup.code_kernels.code_derivative`'s pass.

The edge searches read the derivative where they need it: the pass keeps the
extremes of each :data:`~idexdask.analysis.pickup.kernels.BLOCK` values and
the prefix sum at each chunk's start, from which :func:`derivative_span` forms
any stretch of ``D`` again, the same integers.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.pickup.centroid_kernels import clipped_weight
from idexdask.analysis.pickup.code_kernels import (
    chunk_prefix_sums,
    decode_chunk,
    int_extremes,
    recorded_derivative_rows,
)
from idexdask.analysis.pickup.kernels import BLOCK, CHUNK, extreme_index, largest_block

__all__ = [
    "HIST_BINS",
    "MAX_SHIFT",
    "derivative_span",
    "edge_run_window",
    "histogram_derivative",
    "histogram_derivative_rows",
    "histogram_median_and_mad",
    "histogram_search",
    "shared_low_bits",
]

HIST_BITS = 16
HIST_BINS = 1 << HIST_BITS
"""Bins of the derivative's histogram (256 kB of int32 counts: in the L2 cache)."""
_CENTRE = HIST_BINS // 2
_GROUP_BITS = 8
_GROUP = 1 << _GROUP_BITS
"""Bins per group of the histogram's cumulative counts (rank queries sum a group's bins)."""
MAX_SHIFT = 12
"""Most low bits the codes may share (a 4-bit ADC in 16-bit codes)."""
_SPARES = 4
"""Counters taking turns for the values below the bins (and as many above), added
to the end bins after the pass: a run of such values (a fifth of a QD_1 record
lies beyond the bins) would otherwise wait on one counter at each step."""


@numba.njit(cache=True, nogil=True)
def shared_low_bits(codes):  # pragma: no cover - compiled
    """Low bits every one of the (non-empty) integer ``codes`` shares with the
    first, at most :data:`MAX_SHIFT` (all of them for a constant record)."""
    first = np.int32(codes[0])
    acc = np.int32(0)
    for t in range(codes.size):  # no carried dependency beyond the OR: vectorised
        acc |= np.int32(codes[t]) ^ first
    shift = 0
    while shift < MAX_SHIFT and (acc >> shift) & 1 == 0:
        shift += 1
    return shift


@numba.njit(cache=True, nogil=True)
def _span_sums(codes, total, sums):  # pragma: no cover - compiled
    """``sums[0] = total``, ``sums[t + 1] = total + codes[0] + ... + codes[t]`` (int64)."""
    sums[0] = total
    for t in range(codes.size):
        total += codes[t]
        sums[t + 1] = total


@numba.njit(cache=True, nogil=True)
def derivative_span(row, recorded, gain, offset, single, sign, w, checkpoints, k0, k1, out,
                    work):  # pragma: no cover - compiled
    """``out[:k1 - k0]``: the derivative core ``D[k + w]`` for ``k`` in ``k0:k1``
    (``0 <= k0 <= k1 <= n - 2 w + 1``) from the codes (``recorded``, else those
    of ``row``, which the pass found exactly on them) and the prefix sum at the
    chunk start before ``k0`` (``checkpoints[q] = S[q CHUNK]``): the same
    integers as the pass's.  ``work``: int64, at least ``k1 - k0 + 2 w + CHUNK``
    values (the sums, then the codes found).  Returns that view."""
    size = k1 - k0
    if size <= 0:
        return out[:0]
    q = k0 // CHUNK
    start = q * CHUNK
    stop = k1 + 2 * w - 1  # S[k1 - 1 + 2 w] is the last sum needed: codes start:stop
    sums = work[: stop - start + 1]  # sums[t] = S[start + t]
    if recorded.size:
        _span_sums(recorded[start:stop], np.int64(checkpoints[q]), sums)
    else:
        codes = work[stop - start + 1 :].view(np.int32)[: stop - start]  # found, summed
        inverse = 1.0 / gain
        for c0 in range(start, stop, CHUNK):
            c1 = min(c0 + CHUNK, stop)
            decode_chunk(row, c0, c1, gain, offset, inverse, single, codes[c0 - start:])
        _span_sums(codes, np.int64(checkpoints[q]), sums)
    lo = k0 - start
    for t in range(size):  # no carried dependency: vectorised
        out[t] = sign * (sums[lo + t + 2 * w] - 2 * sums[lo + t + w] + sums[lo + t])
    return out[:size]


@numba.njit(cache=True, nogil=True)
def histogram_derivative(
    row, recorded, fill, single, sign, gain, offset, w, hist, block_max, block_min,
    checkpoints, sums, codes, values, keys
):  # pragma: no cover - compiled
    """One record's derivative counted in ``hist`` (:data:`HIST_BINS` int32 and
    ``2 _SPARES`` spare counters after them, zeroed by the caller), the
    extremes of each :data:`BLOCK` values and the prefix sums at each chunk's
    start, its values not kept.

    The record goes in chunks as
    :func:`~idexdask.analysis.pickup.code_kernels.code_derivative`'s pass (the
    recorded codes, else those found from ``row`` and checked); each chunk's
    derivative values are formed in ``values`` (``CHUNK`` int32) and counted in
    bin ``clip((D >> shift) + HIST_BINS / 2, 0, HIST_BINS - 1)``.

    Returns
    -------
    (int, int)
        ``status`` (1: counted; 0: a chunk is not exactly on its codes, or holds
        ``fill``: the float path's; -1: values that do not share the ``shift``
        low bits, the counts unusable) and ``shift``.
    """
    n = row.size
    m = n - 2 * w + 1
    inverse = 1.0 / gain
    sums[0] = 0
    base = 0  # sums[t] = S[base + t]
    held = 1
    total = np.int64(0)
    k_next = 0  # first derivative value not formed yet
    shift = -1
    low_bits = np.int32(0)  # OR of the values' low bits
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        size = c1 - c0
        checkpoints[c0 // CHUNK] = total
        ok, total, held, base = chunk_prefix_sums(row, c0, c1, gain, offset, inverse, single,
                                                  codes, recorded, fill, sums, held, base,
                                                  k_next, total)
        if not ok:
            return 0, 0
        if shift < 0:  # the chunk's codes: read, not changed, by its sums
            shift = shared_low_bits(recorded[c0:c1]) if recorded.size else shared_low_bits(
                codes[:size])
        k_end = min(c1 - 2 * w + 1, m)
        if k_end <= k_next:
            continue
        low = sums[k_next - base : k_end - base]
        mid = sums[k_next + w - base : k_end + w - base]
        high = sums[k_next + 2 * w - base : k_end + 2 * w - base]
        count = k_end - k_next
        d = values[:count]
        mask = np.int32((1 << shift) - 1)
        for t in range(count):  # no carried dependency: vectorised
            v = np.int32(sign * (high[t] - 2 * mid[t] + low[t]))
            d[t] = v
            low_bits |= v & mask
        for t in range(count):  # no carried dependency: vectorised
            u = (d[t] >> shift) + _CENTRE
            spare = HIST_BINS + (t & (_SPARES - 1))  # beyond the bins: a spare counter
            keys[t] = u if 0 <= u < HIST_BINS else (spare if u < 0 else spare + _SPARES)
        top = count - count % 4
        for t in range(0, top, 4):  # four increments in flight
            hist[keys[t]] += 1
            hist[keys[t + 1]] += 1
            hist[keys[t + 2]] += 1
            hist[keys[t + 3]] += 1
        for t in range(top, count):
            hist[keys[t]] += 1
        # the blocks' extremes, merged where a block spans two chunks
        k = k_next
        while k < k_end:
            blk = k // BLOCK
            end = min((blk + 1) * BLOCK, k_end)
            hi, lo = int_extremes(d[k - k_next : end - k_next])
            if k == blk * BLOCK:
                block_max[blk] = hi
                block_min[blk] = lo
            else:
                block_max[blk] = max(block_max[blk], hi)
                block_min[blk] = min(block_min[blk], lo)
            k = end
        k_next = k_end
    for j in range(_SPARES):  # the values beyond the bins, into the end bins
        hist[0] += hist[HIST_BINS + j]
        hist[HIST_BINS - 1] += hist[HIST_BINS + _SPARES + j]
    if n % CHUNK == 0:
        checkpoints[n // CHUNK] = total
    if low_bits != 0:
        return -1, shift
    return 1, shift


@numba.njit(cache=True, nogil=True)
def _count_below(hist, groups, key):  # pragma: no cover - compiled
    """Values in the bins below ``key`` (``0 <= key <= HIST_BINS``)."""
    g = key >> _GROUP_BITS
    total = groups[g]
    for b in range(g << _GROUP_BITS, key):
        total += hist[b]
    return total


@numba.njit(cache=True, nogil=True)
def _rank_key(hist, groups, rank):  # pragma: no cover - compiled
    """The bin holding the value of ``rank`` (0-based, counted from the smallest)."""
    g = 0
    while groups[g + 1] <= rank:
        g += 1
    seen = groups[g]
    b = g << _GROUP_BITS
    while seen + hist[b] <= rank:
        seen += hist[b]
        b += 1
    return b


@numba.njit(cache=True, nogil=True)
def _deviation_rank(hist, groups, med2, rank):  # pragma: no cover - compiled
    """The smallest doubled deviation ``e`` such that more than ``rank`` values
    ``u`` (bin ``u + HIST_BINS / 2``) have ``|2 u - med2| <= e``; -1 where that
    reaches an end bin (its values are not all ``u``)."""
    lo = 0
    hi = 2 * HIST_BINS
    while lo < hi:
        e = (lo + hi) // 2
        a = max(-((e - med2) // 2), -_CENTRE)  # ceil((med2 - e) / 2)
        b = min((med2 + e) // 2, _CENTRE - 1)  # floor((med2 + e) / 2)
        inside = _count_below(hist, groups, b + _CENTRE + 1) - _count_below(
            hist, groups, a + _CENTRE)
        if inside > rank:
            hi = e
        else:
            lo = e + 1
    a = -((lo - med2) // 2)
    b = (med2 + lo) // 2
    if a <= -_CENTRE or b >= _CENTRE - 1:
        return -1
    return lo


@numba.njit(cache=True, nogil=True)
def histogram_median_and_mad(hist, n, shift):  # pragma: no cover - compiled
    """The median and MAD of the ``n >= 1`` values counted by :func:`histogram_derivative`
    (``numpy.median``'s values: integers, their half-sums and distances are
    exact float64 numbers); ``(False, nan, nan)`` where a rank falls in an end bin.

    Parameters
    ----------
    hist : numpy.ndarray of int32, (HIST_BINS,)
        The counts of ``D >> shift``.
    n : int
    shift : int

    Returns
    -------
    (bool, float, float)
        Whether verified, the median and the (unscaled) median absolute deviation.
    """
    groups = np.zeros(HIST_BINS // _GROUP + 1, dtype=np.int64)  # values below each group
    for g in range(HIST_BINS // _GROUP):
        total = 0
        for b in range(g << _GROUP_BITS, (g + 1) << _GROUP_BITS):
            total += hist[b]
        groups[g + 1] = groups[g] + total
    if groups[-1] != n:
        return False, np.nan, np.nan
    k = n // 2
    k_lo = k if n % 2 else k - 1
    a = _rank_key(hist, groups, k_lo)
    b = _rank_key(hist, groups, k)
    if a == 0 or b == HIST_BINS - 1:
        return False, np.nan, np.nan
    med2 = (a - _CENTRE) + (b - _CENTRE)  # twice the median, in units of 2**shift
    e_lo = _deviation_rank(hist, groups, med2, k_lo)
    e_hi = _deviation_rank(hist, groups, med2, k)
    if e_lo < 0 or e_hi < 0:
        return False, np.nan, np.nan
    unit = 0.5 * float(1 << shift)  # a doubled unit, in values
    median = med2 * unit
    mad = e_lo * unit if n % 2 else 0.5 * (e_lo * unit + e_hi * unit)
    return True, median, mad


@numba.njit(cache=True, nogil=True)
def histogram_search(
    row, recorded, gain, offset, single, sign, w, n, checkpoints, block_max, block_min,
    min_transit, max_transit, scratch, work
):  # pragma: no cover - compiled
    """The entry and exit edge peaks of :func:`~idexdask.analysis.pickup.kernels.first_maximum`
    and :func:`~idexdask.analysis.pickup.kernels.first_minimum` (first on ties,
    the zeros of ``d`` outside the core as :func:`extreme_index` counts them),
    from the blocks' extremes and the blocks read again by :func:`derivative_span`.

    Returns
    -------
    (int, int)
        Sample indices of the entry peak and of the exit peak (0 if its range is empty).
    """
    m = n - 2 * w + 1
    best, first = largest_block(block_max)
    at = -1
    if first >= 0:
        k0 = first * BLOCK
        d = derivative_span(row, recorded, gain, offset, single, sign, w, checkpoints, k0,
                            min(k0 + BLOCK, m), scratch, work)
        for t in range(d.size):
            if d[t] == best:
                at = k0 + t + w
                break
    at = extreme_index(best, at, -1, 0, w, max(n - w + 1, w), n)
    lo = min(at + min_transit, n)
    hi = min(at + max_transit + 1, n)
    if hi <= lo:
        return at, 0
    a = max(lo, w)
    b = max(min(hi, n - w + 1), a)
    k0 = a - w
    k1 = b - w
    low = np.inf
    out = -1
    whole = False  # the least value lies in the whole block at out, not yet located
    k = k0
    while k < k1:  # the first block holding the least value; partial blocks read
        blk = k // BLOCK
        end = min((blk + 1) * BLOCK, k1)
        if k == blk * BLOCK and end == (blk + 1) * BLOCK:
            if block_min[blk] < low:
                low = block_min[blk]
                out = k
                whole = True
        else:
            d = derivative_span(row, recorded, gain, offset, single, sign, w, checkpoints, k,
                                end, scratch, work)
            for t in range(d.size):
                if d[t] < low:
                    low = d[t]
                    out = k + t
                    whole = False
        k = end
    if whole:
        d = derivative_span(row, recorded, gain, offset, single, sign, w, checkpoints, out,
                            out + BLOCK, scratch, work)
        for t in range(d.size):
            if d[t] == low:
                out += t
                break
    if out >= 0:
        out += w
    return at, extreme_index(-low, out, -1, lo, a, b, hi)


@numba.njit(cache=True, nogil=True)
def _window_values(row, recorded, gain, offset, single, sign, w, n, checkpoints, centre, half,
                   k0, k1, scratch, work, out):  # pragma: no cover - compiled
    """``out[k0:k1]`` of :func:`~idexdask.analysis.pickup.kernels.derivative_window`
    (``out[k] = d[clip(centre - half + k, 0, n - 1)]``, d 0 outside ``[w, n - w]``)
    from the codes, in values of ``gain / w`` (``D * gain``, one rounding in the
    division, as the written-out pass scales them)."""
    i0 = max(centre - half + k0, w)
    i1 = max(min(centre - half + k1 - 1, n - w) + 1, i0)
    d = derivative_span(row, recorded, gain, offset, single, sign, w, checkpoints,
                        i0 - w, i1 - w, scratch, work)
    if centre - half + k0 >= w and centre - half + k1 - 1 <= n - w:  # inside the core
        for k in range(k0, k1):  # no carried dependency: vectorised
            out[k] = np.float64(d[k - k0]) * gain / w
        return
    for k in range(k0, k1):
        i = min(max(centre - half + k, 0), n - 1)
        value = np.float64(d[i - i0]) if w <= i < i1 else 0.0
        out[k] = value * gain / w


_RUN_RADIUS = 2048
"""Window positions each side of an edge's peak formed first (a lab edge's part
above half height spans a few hundred to a few thousand samples)."""


@numba.njit(cache=True, nogil=True)
def edge_run_window(row, recorded, gain, offset, single, sign, w, n, checkpoints, centre,
                    half, side, scratch, work, out):  # pragma: no cover - compiled
    """The values of an edge window (:func:`_window_values` of ``out``, all
    ``2 half + 1``, zeros as given) that its centroid reads
    (:func:`~idexdask.analysis.pickup.centroid_kernels.edge_centroids`, peak
    sign ``side``): the centre and the run around it whose weight ``side * v -
    peak / 2`` is positive, with the values that end it; the rest stays 0, which
    ends the run as those values do (a positive peak makes its weight negative).
    A peak that is not positive gets the whole window."""
    width = 2 * half + 1
    radius = min(half, _RUN_RADIUS)
    while True:
        k0 = half - radius
        k1 = half + radius + 1
        _window_values(row, recorded, gain, offset, single, sign, w, n, checkpoints, centre,
                       half, k0, k1, scratch, work, out)
        if k0 == 0 and k1 == width:
            return
        peak = side * out[half]
        if not peak > 0.0:
            radius = half
            continue
        lo = half
        while lo > k0 and clipped_weight(side * out[lo - 1] - 0.5 * peak) > 0.0:
            lo -= 1
        hi = half
        while hi < k1 and clipped_weight(side * out[hi] - 0.5 * peak) > 0.0:
            hi += 1
        if (lo > k0 or k0 == 0) and (hi < k1 or k1 == width):
            return
        radius = half


@numba.njit(cache=True, nogil=True)
def histogram_derivative_rows(
    y, recorded, fill, single, polarity, gain, offset, w, min_transit, max_transit, half
):  # pragma: no cover - compiled
    """:func:`~idexdask.analysis.pickup.code_kernels.recorded_derivative_rows`'s
    results (the same arguments, the same values) with each derivative counted
    in the histogram of its values (:func:`histogram_derivative`) instead of
    written out; rows whose histogram does not verify (see the module
    docstring) go to that function."""
    rows, n = y.shape
    m = n - 2 * w + 1
    exact = np.zeros(rows, dtype=np.bool_)
    mad = np.full(rows, np.nan)
    i_in = np.zeros(rows, dtype=np.int64)
    i_out = np.zeros(rows, dtype=np.int64)
    win_in = np.zeros((rows, 2 * half + 1))
    win_out = np.zeros((rows, 2 * half + 1))
    if m < 1 or w >= 1 << 15:
        return exact, mad, i_in, i_out, win_in, win_out
    hist = np.empty(HIST_BINS + 2 * _SPARES, dtype=np.int32)
    block_max = np.empty((m + BLOCK - 1) // BLOCK)
    block_min = np.empty((m + BLOCK - 1) // BLOCK)
    checkpoints = np.empty(n // CHUNK + 1, dtype=np.int64)
    sums = np.empty(2 * w + 1 + 8 * CHUNK, dtype=np.int64)
    codes = np.empty(CHUNK, dtype=np.int32)
    values = np.empty(CHUNK, dtype=np.int32)
    keys = np.empty(CHUNK, dtype=np.int32)
    scratch = np.empty(max(BLOCK, 2 * half + 1), dtype=np.int32)
    work = np.empty(2 * (scratch.size + 2 * w + CHUNK + 1), dtype=np.int64)  # derivative_span
    sign = 1 if polarity > 0 else -1
    given = recorded.shape[0] == rows and recorded.shape[1] == n
    none = np.empty(0, dtype=np.int16)
    for r in range(rows):
        g = gain[r]
        o = offset[r]
        if not (g > 0.0 and g < np.inf and o - o == 0.0):
            continue
        codes_r = recorded[r] if given else none
        hist[:] = 0
        status, shift = histogram_derivative(
            y[r], codes_r, fill, single, sign, g, o, w, hist, block_max, block_min,
            checkpoints, sums, codes, values, keys)
        if status == 0:
            continue
        ok = False
        mad_d = np.nan
        if status == 1:
            ok, _, mad_d = histogram_median_and_mad(hist, m, shift)
        if not ok:  # the derivative written out and its bins gathered
            part = recorded_derivative_rows(
                y[r : r + 1], recorded[r : r + 1] if given else recorded, fill, single,
                polarity, gain[r : r + 1], offset[r : r + 1], w, min_transit, max_transit, half)
            exact[r] = part[0][0]
            mad[r] = part[1][0]
            i_in[r] = part[2][0]
            i_out[r] = part[3][0]
            win_in[r] = part[4][0]
            win_out[r] = part[5][0]
            continue
        if not mad_d > 0.0:  # zero: the float pass decides
            continue
        at, out = histogram_search(y[r], codes_r, g, o, single, sign, w, n, checkpoints,
                                   block_max, block_min, min_transit, max_transit, scratch,
                                   work)
        mad[r] = mad_d * g / w
        i_in[r] = at
        i_out[r] = out
        edge_run_window(y[r], codes_r, g, o, single, sign, w, n, checkpoints, at, half, 1.0,
                        scratch, work, win_in[r])
        edge_run_window(y[r], codes_r, g, o, single, sign, w, n, checkpoints, out, half, -1.0,
                        scratch, work, win_out[r])
        exact[r] = True
    return exact, mad, i_in, i_out, win_in, win_out
