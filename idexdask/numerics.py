"""Compiled sums that round exactly as NumPy's ``sum`` does (pairwise summation).

The analysis and calibration kernels compiled with numba must give the same
numbers as the NumPy code they replace, bit for bit.  ``numpy.sum`` of a
contiguous float64 array adds blocks of at most 128 values with eight
accumulators and combines the blocks pairwise, splitting at half the length
rounded down to a multiple of 8; a plain loop rounds differently.  These
functions run that recursion on an explicit stack.

* :func:`pairwise_sum`: ``a[lo:lo+n].sum()``.
* :func:`pairwise_sum_zero_tail`: the same where ``a`` is known to be +0.0 from
  index ``end`` on (those blocks are not read).
* :func:`pairwise_sum_sparse`: the same where ``a`` is +0.0 outside marked
  samples, ``cnt[i]`` counting the marked samples before ``i``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["pairwise_sum", "pairwise_sum_sparse", "pairwise_sum_zero_tail"]


@numba.njit(cache=True, nogil=True)
def _block(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """NumPy's pairwise-summation leaf (``n <= 128``): eight accumulators, then the rest."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def _marked_before(cnt: np.ndarray, end: int, i: int) -> int:  # pragma: no cover - compiled
    """Samples that may be non-zero before index ``i``: ``cnt[i]``, or ``min(i, end)``."""
    return cnt[i] if cnt.size else min(i, end)


@numba.njit(cache=True, nogil=True)
def _tree_sum(
    a: np.ndarray, lo: int, n: int, end: int, cnt: np.ndarray
) -> float:  # pragma: no cover - compiled
    """The pairwise recursion over ``a[lo:lo+n]``; blocks and subtrees known to be
    all +0.0 (see :func:`_marked_before`) are 0 without being read."""
    s_lo = np.empty(128, dtype=np.int64)
    s_n = np.empty(128, dtype=np.int64)
    s_state = np.empty(128, dtype=np.int64)
    vals = np.empty(128)
    nv = 0
    s_lo[0], s_n[0], s_state[0] = lo, n, 0
    top = 1
    while top:
        top -= 1
        cl, cn, st = s_lo[top], s_n[top], s_state[top]
        empty = _marked_before(cnt, end, cl + cn) == _marked_before(cnt, end, cl)
        if cn <= 128 or empty:
            vals[nv] = 0.0 if empty else _block(a, cl, cn)
            nv += 1
        elif st == 0:
            n2 = cn // 2
            n2 -= n2 % 8
            s_lo[top], s_n[top], s_state[top] = cl, cn, 1  # combine after both halves
            s_lo[top + 1], s_n[top + 1], s_state[top + 1] = cl + n2, cn - n2, 0
            s_lo[top + 2], s_n[top + 2], s_state[top + 2] = cl, n2, 0
            top += 3
        else:
            right = vals[nv - 1]
            left = vals[nv - 2]
            nv -= 2
            vals[nv] = left + right
            nv += 1
    return vals[0]


@numba.njit(cache=True, nogil=True)
def pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """``a[lo:lo+n].sum()`` with NumPy's rounding (``n <= 128``: one leaf, no stack)."""
    if n <= 128:
        return _block(a, lo, n)
    return _tree_sum(a, lo, n, lo + n, np.empty(0, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def pairwise_sum_zero_tail(
    a: np.ndarray, lo: int, n: int, end: int
) -> float:  # pragma: no cover - compiled
    """``a[lo:lo+n].sum()`` with NumPy's rounding, ``a`` being +0.0 from ``end`` on."""
    return _tree_sum(a, lo, n, end, np.empty(0, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def pairwise_sum_sparse(a: np.ndarray, n: int, cnt: np.ndarray) -> float:  # pragma: no cover
    """``a[:n].sum()`` with NumPy's rounding, ``a`` being +0.0 outside the marked
    samples (``cnt[i]``: marked samples before ``i``, ``cnt.size > n``)."""
    return _tree_sum(a, 0, n, n, cnt)
