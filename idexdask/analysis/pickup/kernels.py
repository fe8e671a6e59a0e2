"""Compiled kernels of the pickup analysis: finite-sample counts and the one pass
per record that forms the running sums, the smoothed derivative's noise and its
entry and exit edges."""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.selection import median_and_mad

__all__ = ["derivative_at", "derivative_rows", "extreme_index", "finite_counts", "first_extreme"]


@numba.njit(cache=True, nogil=True)
def finite_counts(y):  # pragma: no cover - compiled
    """Finite samples per row of ``y`` (rows, n): an int64 array (rows,)."""
    rows, n = y.shape
    out = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        c = 0
        for i in range(n):
            v = np.float64(y[r, i])
            c += v - v == 0.0
        out[r] = c
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def derivative_at(core, n, w, i):  # pragma: no cover - compiled
    """``d[i]``: ``core[i - w]`` on ``[w, n - w]``, else 0 (see :func:`derivative_rows`)."""
    if w <= i <= n - w:
        return core[i - w]
    return 0.0


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
    y, polarity, fill, w, min_transit, max_transit, half, cs_out
):  # pragma: no cover - compiled
    """Per row: cumulative sums, the derivative's noise, its entry and exit edges.

    ``cs_out[r, i]`` is the sequential float64 sum of the first ``i`` samples
    ``polarity * y`` (non-finite samples read as ``fill[r]``), the sums
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
    cs_out : numpy.ndarray, (rows, n + 1), float64
        Filled with the cumulative sums, V.

    Returns
    -------
    mad : numpy.ndarray, (rows,)
        Median absolute deviation of the derivative, V (unscaled).
    i_in, i_out : numpy.ndarray, (rows,), int64
        Sample indices of the entry and exit edge peaks (``i_out`` 0 if the
        search range is empty).
    win_in, win_out : numpy.ndarray, (rows, 2 half + 1)
        The derivative around each edge, V.
    """
    rows, n = y.shape
    m = n - 2 * w + 1
    mad = np.empty(rows)
    i_in = np.zeros(rows, dtype=np.int64)
    i_out = np.zeros(rows, dtype=np.int64)
    win_in = np.empty((rows, 2 * half + 1))
    win_out = np.empty((rows, 2 * half + 1))
    ring = np.empty(w)  # the last w running means
    core = np.empty(m)
    scratch = np.empty(m)
    for r in range(rows):
        cs = cs_out[r]
        total = 0.0
        cs[0] = 0.0
        # one pass: the sums; each running mean mean_fwd[j] as soon as its w
        # samples are summed, kept w samples in a ring (no array of the means);
        # the derivative core and first_extreme's scan for its maximum
        best = -np.inf
        at = -1
        first_nan = -1
        slot = 0  # ring index of mean_fwd[j - w], where mean_fwd[j] goes
        for i in range(n):
            v = np.float64(y[r, i])
            if v - v != 0.0:  # NaN or infinite
                v = fill[r]
            total += polarity * v
            cs[i + 1] = total
            j = i + 1 - w
            if j >= 0:
                mean_j = (total - cs[j]) / w
                if j >= w:
                    d = mean_j - ring[slot]
                    core[j - w] = d
                    if d > best:
                        best = d
                        at = j
                    if d != d and first_nan < 0:
                        first_nan = j
                ring[slot] = mean_j
                slot = slot + 1 if slot + 1 < w else 0
        # d's maximum over the row (first_extreme(core, n, w, 0, n, 1.0))
        at = extreme_index(best, at, first_nan, 0, w, max(n - w + 1, w), n)
        i_in[r] = at
        _, mad[r] = median_and_mad(core, m, scratch)
        lo = min(at + min_transit, n)
        hi = min(at + max_transit + 1, n)
        out = first_extreme(core, n, w, lo, hi, -1.0) if hi > lo else 0
        i_out[r] = out
        for k in range(2 * half + 1):
            win_in[r, k] = derivative_at(core, n, w, min(max(at + k - half, 0), n - 1))
            win_out[r, k] = derivative_at(core, n, w, min(max(out + k - half, 0), n - 1))
    return mad, i_in, i_out, win_in, win_out
