"""Compiled kernel of the pickup analysis's step 4: the level of a window of each
record and its error (see :func:`idexdask.analysis.pickup.levels.pulse_levels`)."""

from __future__ import annotations

import numba
import numpy as np

from idexdask.adccodes import code_value
from idexdask.analysis.pickup.order_stats import (
    BINS,
    COPIES,
    add_counts,
    linear_median,
    window_median_and_mad,
)
from idexdask.analysis.robust import MAD_TO_SIGMA

__all__ = ["LEVEL_BINS", "code_level", "window_levels"]

LEVEL_BINS = 4096
"""Most bins of :func:`code_level`'s histogram of a window's codes."""


@numba.njit(cache=True, nogil=True)
def window_levels(y, polarity, fill, w, lo, hi, codes, exact, gain, offset):
    # pragma: no cover - compiled
    """Median of each record's window ``y[e, lo:hi]`` along the polarity, and its error.

    The error is the MAD-scaled scatter of the ``w``-sample running means that
    lie inside the window (differences of the window's own running float64
    sums, from its first sample) over the square root of the number of
    independent means, ``n_s / w``; windows holding fewer
    than ``w`` such means use the scatter of the samples themselves.  Medians
    and MADs are those of ``numpy.median`` over the finite values
    (:func:`~idexdask.analysis.pickup.order_stats.window_median_and_mad`).

    Parameters
    ----------
    y : numpy.ndarray, (rows, n)
        The records, V, any float dtype (non-finite: missing).
    polarity : float
        ±1.
    fill : numpy.ndarray, (rows,)
        Value of each row's non-finite samples, V.
    w : int
        Samples per running mean.
    lo, hi : numpy.ndarray, (rows,), int64
        Window of each row (clipped to the record; empty: NaN level and error).
    codes : numpy.ndarray of int16, (rows, n) or (0, 0)
        The codes ``y`` was decoded from (``y = float32(gain * code - offset)``),
        where the reader kept them: the level of a row in ``exact`` is then the
        median of its codes' values (:func:`code_level`).
    exact : numpy.ndarray of bool, (rows,)
        Rows exactly on their ``codes`` with no missing sample: with ``codes``
        given, read from the codes alone (each code as the value it decodes
        to, :func:`~idexdask.adccodes.code_value`), never from ``y``.
    gain, offset : numpy.ndarray, (rows,)
        Each row's ADC scale, V per code and V.

    Returns
    -------
    level, err : numpy.ndarray, (rows,)
        V.
    """
    rows, n = y.shape
    level = np.full(rows, np.nan)
    err = np.full(rows, np.nan)
    longest = 0
    for e in range(rows):
        longest = max(longest, min(hi[e], n) - max(lo[e], 0))
    size = max(longest, 1)
    values = np.empty(size)
    sums = np.empty(size + w + 1)  # the window's running sums
    work = (np.empty(size, dtype=np.uint16), np.empty((COPIES, BINS), dtype=np.int32),
            np.empty(size), np.empty(size), np.empty(size))  # keys, counts, buf, dev, scratch
    given = codes.shape[0] == rows and codes.shape[1] == n
    for e in range(rows):
        a = max(lo[e], 0)
        b = min(hi[e], n)
        if b <= a:
            continue
        b_s = min(hi[e] - w + 1, n)  # means s[i] of y[i:i+w] inside the window
        n_s = max(b_s - a, 0)
        found = np.nan
        coded = given and exact[e]  # read from the codes: y may hold no values
        if coded and n_s >= w:  # the window's values not needed below
            found = code_level(codes[e], a, b, polarity, gain[e], offset[e], work[0],
                               work[1])
        if found == found:
            level[e] = found
        else:
            if coded:
                count = _code_window(codes[e], polarity, gain[e], offset[e], a, b, values)
            else:
                count = _window(y[e], polarity, fill[e], a, b, values)
            k = _finite(values, count)
            if k:
                level[e] = linear_median(values, k, work[0], work[1], work[2], work[4])
        if n_s >= w:
            stop = max(min(b_s, n - w + 1), a)  # means past the record's end: none
            if coded:
                cs = _code_window_sums(codes[e], polarity, gain[e], offset[e], a, stop + w,
                                       sums)
            else:
                cs = _window_sums(y[e], polarity, fill[e], a, stop + w, sums)
            for i in range(stop - a):  # no carried dependency: vectorised
                values[i] = (cs[i + w] - cs[i]) / w
            k = _finite(values, stop - a)
            spread = MAD_TO_SIGMA * window_median_and_mad(values, k, *work)[1] if k else np.nan
            err[e] = spread / np.sqrt(max(n_s / w, 1.0))
        else:  # the window's own values, still in the buffer
            err[e] = MAD_TO_SIGMA * window_median_and_mad(values, k, *work)[1] if k else np.nan
    return level, err


@numba.njit(cache=True, nogil=True)
def _window_sums(row, polarity, fill, a, b, out):  # pragma: no cover - compiled
    """``out[:b - a]``: ``out[j]`` the sequential float64 sum of ``row[a : a + j]``
    along the polarity, non-finite samples read as ``fill``; returns that view."""
    total = 0.0
    if b > a:
        out[0] = total
    for j in range(1, b - a):
        v = np.float64(row[a + j - 1])
        total += polarity * (v if v - v == 0.0 else fill)
        out[j] = total
    return out[: max(b - a, 0)]


@numba.njit(cache=True, nogil=True)
def _code_window_sums(codes, polarity, gain, offset, a, b, out):  # pragma: no cover - compiled
    """:func:`_window_sums` of the float32 values ``codes`` decode to
    (``float32(gain * code - offset)``, none missing): the same sums."""
    total = 0.0
    if b > a:
        out[0] = total
    for j in range(1, b - a):
        total += polarity * code_value(np.float64(codes[a + j - 1]), gain, -offset, True)
        out[j] = total
    return out[: max(b - a, 0)]


@numba.njit(cache=True, nogil=True)
def _code_window(codes, polarity, gain, offset, a, b, out):  # pragma: no cover - compiled
    """:func:`_window` of the float32 values ``codes`` decode to (none missing)."""
    for i in range(b - a):
        out[i] = polarity * code_value(np.float64(codes[a + i]), gain, -offset, True)
    return b - a


@numba.njit(cache=True, nogil=True)
def _window(row, polarity, fill, a, b, out):  # pragma: no cover - compiled
    """``out[:b - a]``: ``row[a:b]`` along the polarity, non-finite samples read as
    ``fill``; returns ``b - a``."""
    for i in range(b - a):
        v = np.float64(row[a + i])
        out[i] = polarity * (v if v - v == 0.0 else fill)
    return b - a


@numba.njit(cache=True, nogil=True)
def _finite(values, n):  # pragma: no cover - compiled
    """Move the finite values of ``values[:n]`` to its front, in order; return their count."""
    bad = 0
    for i in range(n):  # no branch: counted first, moved only if needed
        v = values[i]
        bad += v - v != 0.0
    if bad == 0:
        return n
    k = 0
    for i in range(n):
        v = values[i]
        if v - v == 0.0:
            values[k] = v
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def code_level(codes, a, b, polarity, gain, offset, keys, counts):  # pragma: no cover - compiled
    """``numpy.median`` of ``polarity * y[a:b]`` (``a < b``) from the codes the
    float32 ``y`` was decoded from: decoding rises with the code (``gain > 0``),
    so the middle values are the decoded middle codes (the other way round for
    ``polarity`` -1), found from the counts of the codes, the same float64
    values and the same half-sum as :func:`~idexdask.analysis.pickup.order_stats.linear_median`.
    The codes' bins are their distinct values (the low bits they all share
    dropped); NaN where the window spans more than :data:`LEVEL_BINS` of them.
    ``keys`` (uint16, at least ``b - a``) and ``counts`` (int32, (COPIES, at
    least :data:`LEVEL_BINS`)): work space."""
    x = codes[a:b]
    first = x[0]
    low = first
    high = first
    shared = 0
    for t in range(x.size):  # in the codes' own width: vectorised
        c = x[t]
        low = min(low, c)
        high = max(high, c)
        shared |= c ^ first
    shift = 0
    while shift < 15 and (shared >> shift) & 1 == 0:
        shift += 1
    span = (np.int64(high) - np.int64(low)) >> shift
    if span >= LEVEL_BINS:
        return np.nan
    for t in range(x.size):  # no carried dependency: vectorised
        keys[t] = (x[t] - low) >> shift
    counts[:, : span + 1] = 0
    add_counts(keys, x.size, counts)
    n = b - a
    k = n // 2
    k_lo = k if n % 2 else k - 1
    if polarity > 0:  # the codes' ranks of the values' ranks k_lo <= k
        r_lo, r_hi = k_lo, k
    else:
        r_lo, r_hi = n - 1 - k, n - 1 - k_lo
    seen = 0
    bin_lo = -1
    bin_hi = -1
    for j in range(span + 1):
        seen += counts[0, j] + counts[1, j] + counts[2, j] + counts[3, j]
        if bin_lo < 0 and seen > r_lo:
            bin_lo = j
        if seen > r_hi:
            bin_hi = j
            break
    v_lo = polarity * code_value(np.float64(np.int64(low) + (bin_lo << shift)), gain, -offset,
                                 True)
    v_hi = polarity * code_value(np.float64(np.int64(low) + (bin_hi << shift)), gain, -offset,
                                 True)
    lower, upper = (v_lo, v_hi) if polarity > 0 else (v_hi, v_lo)
    return lower if n % 2 else 0.5 * (lower + upper)
