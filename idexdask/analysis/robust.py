"""Robust statistics of sampled signals: medians, MAD sigmas and baseline levels.

Shared by the line search (:mod:`idexdask.analysis.peaks`), the signal-quality
products, the TOF gain merge and the impact-charge fits:

* :func:`nanmedian_rows` and :func:`robust_sigma`: NaN-ignoring median and
  ``MAD_TO_SIGMA`` x median absolute deviation over the last axis, by compiled
  selection (O(n) per row) with the same values as ``numpy.nanmedian``;
* :func:`baseline_sigma`: each event's pre-trigger baseline level (a clipped
  mean) and noise sigma, floored at the quantisation noise;
* the compiled building blocks :func:`median_inplace`, :func:`gather_finite`
  and :func:`baseline_level`, which other compiled kernels call per row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np

from idexdask.numerics import (
    pairwise_combine,
    pairwise_leaves,
    pairwise_sum,
    pairwise_sum_zero_tail,
)

__all__ = [
    "CLIP_FLOOR",
    "MAD_TO_SIGMA",
    "baseline_level",
    "baseline_sigma",
    "clipped_mean",
    "clipped_prefix_mean",
    "gather_finite",
    "median_inplace",
    "nanmedian_rows",
    "quiet_nan_warnings",
    "robust_sigma",
]

MAD_TO_SIGMA = 1.4826
"""Median absolute deviation -> Gaussian sigma (1 / Phi^-1(3/4))."""


def nanmedian_rows(x: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN.

    Compiled selection (O(n) per row) on the finite values of each row, the
    same values as ``numpy.nanmedian`` (which falls back to a Python loop over
    rows when NaN are present).  NaN where a row has no finite value.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 0:
        return np.asarray(np.nan if np.isnan(x) else x)
    lead, n = x.shape[:-1], x.shape[-1]
    if n == 0:
        return np.full(lead, np.nan)
    flat = np.ascontiguousarray(x).reshape(-1, n)
    return _nanmedian_2d(flat).reshape(lead)


@numba.njit(cache=True, nogil=True)
def median_inplace(buf: np.ndarray, k: int) -> float:  # pragma: no cover - compiled
    """Median of ``buf[:k]`` (k >= 1, no NaN), the same value as sorting; clobbers ``buf``.

    ``buf[k:2k]`` is used as scratch: ``buf`` must hold at least ``2k`` values.
    """
    kth = k // 2
    work = buf[k : 2 * k]
    work[:] = buf[:k]
    hi = _select(work, k, kth)
    if k % 2:
        return hi
    # the (kth-1)-th smallest: hi itself when enough values equal it, else the
    # largest value below it (two loops: each compiles branch-free, together not)
    below = 0
    for j in range(k):
        below += buf[j] < hi
    lo = -np.inf
    for j in range(k):
        v = buf[j]
        if v < hi and v > lo:
            lo = v
    if below < kth:
        lo = hi
    return 0.5 * (lo + hi)


@numba.njit(cache=True, nogil=True)
def _select(work: np.ndarray, n: int, kth: int) -> float:  # pragma: no cover - compiled
    """``kth`` smallest of ``work[:n]`` (no NaN); reorders ``work``.

    Quickselect whose passes are branch-free counts and compactions, so that
    data with few distinct values (integer DN) cost no mispredicted branches.
    """
    while n > 32:
        a, b, c = work[0], work[n // 2], work[n - 1]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        n_lt = 0
        n_eq = 0
        for i in range(n):
            v = work[i]
            n_lt += v < pivot
            n_eq += v == pivot
        if kth < n_lt:
            w = 0
            for i in range(n):
                v = work[i]
                work[w] = v
                w += v < pivot
            n = n_lt
        elif kth < n_lt + n_eq:
            return pivot
        else:
            w = 0
            for i in range(n):
                v = work[i]
                work[w] = v
                w += v > pivot
            kth -= n_lt + n_eq
            n -= n_lt + n_eq
    for i in range(1, n):  # insertion sort of the last few
        v = work[i]
        j = i - 1
        while j >= 0 and work[j] > v:
            work[j + 1] = work[j]
            j -= 1
        work[j + 1] = v
    return work[kth]


@numba.njit(cache=True, nogil=True, inline="always")
def gather_finite(x, r, buf):  # pragma: no cover - compiled
    """Copy the non-NaN values of row ``r`` to the front of ``buf``; return their count."""
    k = 0
    for j in range(x.shape[1]):
        v = x[r, j]
        if not np.isnan(v):
            buf[k] = v
            k += 1
    return k


@numba.njit(cache=True, nogil=True)
def _nanmedian_2d(x: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    rows, n = x.shape
    out = np.empty(rows)
    buf = np.empty(2 * n)
    for r in range(rows):
        k = gather_finite(x, r, buf)
        out[r] = median_inplace(buf, k) if k else np.nan
    return out


@numba.njit(cache=True, nogil=True)
def _median_mad_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Per-row NaN-ignoring median and median absolute deviation from it."""
    rows, n = x.shape
    med = np.empty(rows)
    mad = np.empty(rows)
    buf = np.empty(2 * n)
    for r in range(rows):
        k = gather_finite(x, r, buf)
        if k == 0:
            med[r] = np.nan
            mad[r] = np.nan
            continue
        m = median_inplace(buf, k)
        med[r] = m
        kk = 0
        for j in range(n):
            d = abs(x[r, j] - m)
            if not np.isnan(d):
                buf[kk] = d
                kk += 1
        mad[r] = median_inplace(buf, kk) if kk else np.nan
    return med, mad


def _median_and_sigma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring median and 1.4826 x MAD over the last axis of a 2-D array."""
    med, mad = _median_mad_2d(np.ascontiguousarray(x, dtype=float))
    return med, MAD_TO_SIGMA * mad


def robust_sigma(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """1.4826 x median absolute deviation, ignoring NaN.

    Parameters
    ----------
    x : numpy.ndarray
        Samples (any unit).
    axis : int
        Axis to reduce.

    Returns
    -------
    numpy.ndarray
        Robust Gaussian sigma, same unit as ``x``; NaN where no finite sample.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    if x.ndim >= 1 and x.shape[-1] > 0:
        lead = x.shape[:-1]
        return _median_and_sigma(x.reshape(-1, x.shape[-1]))[1].reshape(lead)
    with np.errstate(all="ignore"):
        med = nanmedian_rows(x)
        return MAD_TO_SIGMA * nanmedian_rows(np.abs(x - med[..., None]))


@contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's 'All-NaN slice' RuntimeWarnings (documented NaN results)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def baseline_sigma(
    y: np.ndarray,
    t: np.ndarray,
    stop_us: float,
    min_samples: int = 16,
    quantum: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust baseline level and sigma of each event from samples before ``stop_us``.

    Parameters
    ----------
    y : numpy.ndarray
        Signals (n_events, n_samples), NaN where missing.
    t : numpy.ndarray
        Times (n_events, n_samples), µs from the trigger.
    stop_us : float
        End of the pre-trigger baseline, µs.
    min_samples : int
        Fewer finite samples before ``stop_us``: the first 10 % of the trace is
        used instead.
    quantum : float
        Quantisation step of ``y`` (1 DN for integer data, the ADC step in V
        for scope captures; 0 when unknown): the sigma is never below the
        quantisation noise ``quantum / sqrt(12)``.

    Returns
    -------
    level, sigma : numpy.ndarray
        Mean of the samples within 4 sigma of the median (not quantised like a
        median of integer data) and 1.4826 x MAD per event (n_events,), NaN
        where no finite sample.  A quiet quantised baseline can have MAD = 0:
        the standard deviation of its samples is used then, and the result is
        floored at ``quantum / sqrt(12)``.
    """
    y = np.asarray(y, dtype=float)
    t2 = np.broadcast_to(np.asarray(t, dtype=float), y.shape)
    n_first = max(int(0.1 * y.shape[1]), 1)
    level, med, mad = _baseline_rows(y, t2, float(stop_us), int(min_samples), n_first)
    sigma = MAD_TO_SIGMA * mad
    zero = np.nonzero(sigma == 0)[0]
    if zero.size:  # rare: a MAD that collapsed on quantised data
        yz, tz = y[zero], t2[zero]
        use = (tz < stop_us) & np.isfinite(yz)
        short = use.sum(axis=1) < min_samples
        head = np.zeros_like(use)
        head[:, :n_first] = True
        use = np.where(short[:, None], head & np.isfinite(yz), use)
        with quiet_nan_warnings():
            sigma[zero] = np.nanstd(np.where(use, yz, np.nan), axis=1)
    floor = abs(float(quantum)) / math.sqrt(12.0) if math.isfinite(quantum) else 0.0
    return level, np.fmax(sigma, floor) if floor > 0 else sigma


@numba.njit(cache=True, nogil=True)
def _baseline_rows(
    y: np.ndarray, t: np.ndarray, stop_us: float, min_samples: int, n_first: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row: the :func:`baseline_sigma` level, median and MAD, in one compiled pass."""
    rows, n = y.shape
    level = np.empty(rows)
    med = np.empty(rows)
    mad = np.empty(rows)
    vals = np.empty(n)
    pos = np.empty(n, dtype=np.int64)
    buf = np.empty(2 * n)
    row = np.zeros(n)  # kept all-zero between rows
    for r in range(rows):
        k = 0
        for j in range(n):
            if t[r, j] < stop_us and np.isfinite(y[r, j]):
                vals[k] = y[r, j]
                pos[k] = j
                k += 1
        if k < min_samples:  # too short a pre-trigger baseline: first part of the trace
            k = 0
            for j in range(min(n_first, n)):
                if np.isfinite(y[r, j]):
                    vals[k] = y[r, j]
                    pos[k] = j
                    k += 1
        level[r], med[r], mad[r] = baseline_level(vals, pos, k, n, buf, row)
    return level, med, mad


@numba.njit(cache=True, nogil=True)
def baseline_level(
    vals: np.ndarray, pos: np.ndarray, k: int, n: int, buf: np.ndarray, row: np.ndarray
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """Clipped-mean level, median and MAD of the ``k`` baseline samples ``vals[:k]``.

    ``pos[:k]`` are their (increasing) sample indices in a row of ``n``; ``buf``
    is scratch of ``2 n`` values and ``row`` an all-zero scratch row of ``n``,
    left all-zero.  The mean is summed as ``numpy.nanmean`` of the row with the
    other samples NaN would be (same rounding).  NaN for ``k == 0``.
    """
    if k == 0:
        return np.nan, np.nan, np.nan
    buf[:k] = vals[:k]
    m = median_inplace(buf, k)
    for j in range(k):
        buf[j] = abs(vals[j] - m)
    d = median_inplace(buf, k)
    return clipped_mean(vals, pos, k, n, m, d, row), m, d


@numba.njit(cache=True, nogil=True)
def clipped_mean(
    vals: np.ndarray, pos: np.ndarray, k: int, n: int, m: float, d: float, row: np.ndarray
) -> float:  # pragma: no cover - compiled
    """Mean of the ``k`` samples ``vals[:k]`` within 4 sigma (``MAD_TO_SIGMA * d``,
    at least 0.5) of their median ``m``; ``m`` where none is finite.

    ``pos[:k]`` are the samples' increasing indices in a row of ``n``; the mean
    is summed as ``numpy.nanmean`` of the row with the other samples NaN would
    be (same rounding) in ``row``, an all-zero scratch row of ``n``, left all-zero.
    """
    lim = 4.0 * max(MAD_TO_SIGMA * d, 0.5)
    count = 0
    for j in range(k):
        if abs(vals[j] - m) <= lim:
            row[pos[j]] = vals[j]
            count += 1
    mean = pairwise_sum_zero_tail(row, 0, n, pos[k - 1] + 1) / count if count else np.nan
    for j in range(k):
        row[pos[j]] = 0.0
    return mean if np.isfinite(mean) else m


@numba.njit(cache=True, nogil=True)
def _prefix_sum_kept(
    x: np.ndarray, end: int, n: int, fill: float, centre: float, lim: float
) -> tuple[int, float]:  # pragma: no cover - compiled
    """Count and sum of the samples of ``x[:end]`` kept: finite, not ``fill``, within
    ``lim`` of ``centre``; the sum over the row of ``n`` with the others 0, in
    NumPy's pairwise order (each leaf's values formed as they are read)."""
    count = 0
    block = np.empty(128)
    starts = pairwise_leaves(n)
    sums = np.zeros(starts.size - 1)  # a leaf from end on holds only 0: sums to +0.0
    for leaf in range(sums.size):
        cl = starts[leaf]
        cn = starts[leaf + 1] - cl
        if cl >= end:
            break
        k = min(cn, end - cl)
        # read through a view of the leaf: an index ``cl + i`` that might be
        # negative is wrapped per value, which compiles to a gather, not to
        # contiguous vector loads
        leaf_x = x[cl : cl + k]
        for i in range(k):  # a loop that vectorises
            v = np.float64(leaf_x[i])
            keep = (v - v == 0.0) & (v != fill) & (abs(v - centre) <= lim)
            block[i] = v if keep else 0.0
            count += keep
        for i in range(k, cn):  # the samples from end on: 0 in the sum
            block[i] = 0.0
        sums[leaf] = pairwise_sum(block, 0, cn)
    return count, pairwise_combine(sums, n)


@numba.njit(cache=True, nogil=True)
def clipped_prefix_mean(
    x: np.ndarray, end: int, n: int, m: float, d: float, fill: float = np.nan
) -> float:  # pragma: no cover - compiled
    """:func:`clipped_mean` of the baseline samples ``x[:end]`` of a row of ``n``.

    The samples are the first ``end`` of the row (NaN or ``fill`` where
    missing: never in the clip; a NaN ``fill``: none); the sum runs over the
    row as ``numpy.nanmean`` would sum it with the other samples NaN
    (:func:`idexdask.numerics.pairwise_sum`'s blocks and pairing), each block's
    values formed as they are read, without the scratch row of
    :func:`clipped_mean`.
    """
    lim = 4.0 * max(MAD_TO_SIGMA * d, 0.5)
    count, total = _prefix_sum_kept(x, end, n, fill, m, lim)
    if count == 0:
        return m
    mean = total / count
    return mean if np.isfinite(mean) else m


CLIP_FLOOR = 4.0 * 0.5
"""Smallest half-width of :func:`clipped_mean`'s clip (4 x its 0.5 floor on the
sigma), in the samples' unit."""
