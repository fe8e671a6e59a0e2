"""Compiled kernel of the pickup analysis's edge timing: the centroid of each
derivative peak's part above half height, in one pass per window."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["PAIRWISE_BLOCK", "clipped_weight", "edge_centroids", "pairwise_sum"]

PAIRWISE_BLOCK = 128
"""Values summed by eight running sums before halving (NumPy's ``PW_BLOCKSIZE``)."""


@numba.njit(cache=True, nogil=True)
def _block_sum(a, lo, n):  # pragma: no cover - compiled
    """NumPy's sum of a block of ``n <= PAIRWISE_BLOCK`` values ``a[lo:lo + n]``."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    top = n - n % 8
    while i < top:
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
def pairwise_sum(a, lo, n):  # pragma: no cover - compiled
    """Sum of ``a[lo:lo + n]`` by NumPy's pairwise summation (``numpy.add.reduce``
    along a contiguous axis): halves split at multiples of 8 down to blocks of
    :data:`PAIRWISE_BLOCK`, each summed by eight interleaved running sums, the
    halves' sums added.

    The halving runs on an explicit stack, not by recursion: numba's cache does
    not reload self-recursive functions safely.
    """
    if n <= PAIRWISE_BLOCK:
        return _block_sum(a, lo, n)
    depth = 64  # halvings of any int64 length
    start = np.empty(depth, dtype=np.int64)
    size = np.empty(depth, dtype=np.int64)
    stage = np.empty(depth, dtype=np.int64)  # 0: neither half summed, 1: the first, 2: both
    first = np.empty(depth)
    second = np.empty(depth)
    start[0], size[0], stage[0] = lo, n, 0
    top = 1
    total = 0.0
    while top:
        f = top - 1
        half = size[f] // 2
        half -= half % 8
        if size[f] <= PAIRWISE_BLOCK or stage[f] == 2:
            if size[f] <= PAIRWISE_BLOCK:
                value = _block_sum(a, start[f], size[f])
            else:
                value = first[f] + second[f]
            top -= 1
            if top == 0:
                total = value
            elif stage[top - 1] == 0:
                first[top - 1] = value
                stage[top - 1] = 1
            else:
                second[top - 1] = value
                stage[top - 1] = 2
        elif stage[f] == 0:
            start[top], size[top], stage[top] = start[f], half, 0
            top += 1
        else:
            start[top], size[top], stage[top] = start[f] + half, size[f] - half, 0
            top += 1
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def clipped_weight(x):  # pragma: no cover - compiled
    """``numpy.clip(x, 0.0, None)``: x above 0 or NaN, else 0."""
    return x if (x > 0.0 or x != x) else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")  # 0 / 0: NaN, as NumPy
def edge_centroids(window, peak_idx, n, half, sign):  # pragma: no cover - compiled
    """Centroid (fractional sample index) of the part of each peak above half
    height, and the peak's half-width in samples.

    The weights are ``sign * window - 0.5 * peak`` clipped at 0 (as
    ``numpy.clip``: NaN kept), zero outside the contiguous run of positive
    weights around the centre ``half``; each window position lies at sample
    ``clip(peak_idx - half + k, 0, n - 1)``.  The centroid is the sum of weight
    times index over the sum of weights, both summed over the whole window as
    NumPy sums a row (:func:`pairwise_sum`); the half-width is half the run's
    length.

    Parameters
    ----------
    window : numpy.ndarray, (rows, 2 half + 1)
        The derivative around each peak, V.
    peak_idx : numpy.ndarray, (rows,), int64
    n : int
        Samples per record.
    half : int
    sign : float
        +1 for a maximum, -1 for a minimum.

    Returns
    -------
    centroid, half_width : numpy.ndarray, (rows,)
        Samples.
    """
    rows, width = window.shape
    centroid = np.empty(rows)
    half_width = np.empty(rows)
    weights = np.zeros(width)
    moments = np.zeros(width)
    for r in range(rows):
        peak = sign * window[r, half]
        lo = half
        while lo > 0 and clipped_weight(sign * window[r, lo - 1] - 0.5 * peak) > 0.0:
            lo -= 1
        hi = half
        while hi < width and clipped_weight(sign * window[r, hi] - 0.5 * peak) > 0.0:
            hi += 1
        for k in range(lo, hi):
            wt = clipped_weight(sign * window[r, k] - 0.5 * peak)
            weights[k] = wt
            moments[k] = wt * np.float64(min(max(peak_idx[r] + k - half, 0), n - 1))
        total = pairwise_sum(weights, 0, width)
        centroid[r] = pairwise_sum(moments, 0, width) / total
        half_width[r] = (hi - lo) / 2.0
        for k in range(lo, hi):  # zeros again for the next row
            weights[k] = 0.0
            moments[k] = 0.0
    return centroid, half_width
