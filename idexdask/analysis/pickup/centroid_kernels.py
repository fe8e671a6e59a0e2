"""Compiled kernel of the pickup analysis's edge timing: the centroid of each
derivative peak's part above half height, in one pass per window."""

from __future__ import annotations

import numba
import numpy as np

from idexdask.numerics import pairwise_combine, pairwise_leaves, pairwise_sum

__all__ = ["clipped_weight", "edge_centroids", "run_sum"]


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
    NumPy sums a row (:func:`run_sum`: the leaves of its pairwise order that
    hold no weight are not read); the half-width is half the run's length.

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
    leaves = pairwise_leaves(width)
    sums = np.empty(leaves.size - 1)
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
        total = run_sum(weights, leaves, sums, lo, hi)
        centroid[r] = run_sum(moments, leaves, sums, lo, hi) / total
        half_width[r] = (hi - lo) / 2.0
        for k in range(lo, hi):  # zeros again for the next row
            weights[k] = 0.0
            moments[k] = 0.0
    return centroid, half_width


@numba.njit(cache=True, nogil=True)
def run_sum(values, leaves, sums, lo, hi):  # pragma: no cover - compiled
    """``values.sum()`` in NumPy's pairwise order, ``values`` being +0.0 outside
    ``[lo, hi)`` and non-negative (or NaN) inside: the leaves
    (:func:`~idexdask.numerics.pairwise_leaves` of ``values.size``) outside the
    run are +0.0 without being read (+0.0 leaves combine to +0.0, and adding
    +0.0 leaves any such sum as it is).  ``sums``: a leaf's sum each."""
    for j in range(sums.size):
        a = leaves[j]
        b = leaves[j + 1]
        sums[j] = pairwise_sum(values, a, b - a) if (b > lo and a < hi) else 0.0
    return pairwise_combine(sums, values.size)
