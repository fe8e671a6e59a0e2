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
* :func:`pairwise_leaves` and :func:`pairwise_combine`: the leaves of that
  recursion and their combination, for kernels that form each leaf's values
  as they read them.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "pairwise_combine",
    "pairwise_leaves",
    "pairwise_sum",
    "pairwise_sum_sparse",
    "pairwise_sum_zero_tail",
]


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
def pairwise_leaves(n: int) -> np.ndarray:  # pragma: no cover - compiled
    """Where the leaves of NumPy's pairwise summation of ``n`` values start.

    Returns
    -------
    numpy.ndarray of int64, (leaves + 1,)
        The first index of each leaf (at most 128 values), in order, then ``n``.
    """
    starts = np.empty(n // 32 + 2, dtype=np.int64)
    k = 0
    s_lo = np.empty(128, dtype=np.int64)
    s_n = np.empty(128, dtype=np.int64)
    s_lo[0], s_n[0] = 0, n
    top = 1
    while top:  # the left half popped first: leaves in order
        top -= 1
        cl, cn = s_lo[top], s_n[top]
        if cn <= 128:
            starts[k] = cl
            k += 1
        else:
            n2 = cn // 2
            n2 -= n2 % 8
            s_lo[top], s_n[top] = cl + n2, cn - n2
            s_lo[top + 1], s_n[top + 1] = cl, n2
            top += 2
    starts[k] = n
    return starts[: k + 1]


@numba.njit(cache=True, nogil=True)
def pairwise_combine(leaf_sums: np.ndarray, n: int) -> float:  # pragma: no cover - compiled
    """The sum of ``n`` values from their leaves' sums (:func:`pairwise_leaves`
    order), combined in NumPy's pairwise order.

    A kernel that forms each leaf's values as it reads them (a mask, a clip,
    a conversion) sums the leaves with :func:`pairwise_sum` and combines them
    here: the sum NumPy would give of the formed row, without writing the row.
    """
    s_n = np.empty(128, dtype=np.int64)
    s_state = np.empty(128, dtype=np.int64)
    vals = np.empty(128)
    nv = 0
    leaf = 0
    s_n[0], s_state[0] = n, 0
    top = 1
    while top:
        top -= 1
        cn, st = s_n[top], s_state[top]
        if cn <= 128:
            vals[nv] = leaf_sums[leaf]
            leaf += 1
            nv += 1
        elif st == 0:
            n2 = cn // 2
            n2 -= n2 % 8
            s_n[top], s_state[top] = cn, 1  # combine after both halves
            s_n[top + 1], s_state[top + 1] = cn - n2, 0
            s_n[top + 2], s_state[top + 2] = n2, 0
            top += 3
        else:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
    return vals[0]


@numba.njit(cache=True, nogil=True)
def _tree_sum(
    a: np.ndarray, lo: int, n: int, end: int, cnt: np.ndarray
) -> float:  # pragma: no cover - compiled
    """The pairwise sum of ``a[lo:lo+n]``; leaves known to be all +0.0 (see
    :func:`_marked_before`) are 0 without being read (a subtree of +0.0 leaves
    combines to +0.0, as its sum would)."""
    starts = pairwise_leaves(n)
    sums = np.empty(starts.size - 1)
    for j in range(sums.size):
        cl = lo + starts[j]
        cn = starts[j + 1] - starts[j]
        empty = _marked_before(cnt, end, cl + cn) == _marked_before(cnt, end, cl)
        sums[j] = 0.0 if empty else _block(a, cl, cn)
    return pairwise_combine(sums, n)


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
