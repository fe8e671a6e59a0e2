"""Compiled passes over one spectrum row for the line search (:mod:`idexdask.analysis.peaks`).

The search smooths each row with a boxcar (:func:`smooth_row`, SciPy's
``uniform_filter1d`` running sum, the same values), counts its finite and
pre-trigger samples and its sample steps against a probed step as it reads the
row, and takes the robust sigma of the smoothed pre-trigger samples
(:func:`row_sigma`).  A row with a formula time axis has its times formed
where they are read (no time row written and read back).
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.peak_search import PROM_BLOCK, block_stats, formula_row
from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.analysis.selection import median_and_mad

_TIME_BLOCK = 512
"""Formula times formed at once (in cache) for the step counts."""

__all__ = ["count_formula_times", "filled_at", "finite_or_zero", "row_sigma", "scale_at",
           "smooth_formula_row", "smooth_row", "uniform_row", "write_times"]


@numba.njit(cache=True, nogil=True)
def uniform_row(
    src: np.ndarray, w: int, nearest: bool, ext: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``scipy.ndimage.uniform_filter1d(src, w, mode="nearest" or "reflect")`` into ``out``.

    The same running sum as SciPy's (``NI_UniformFilter1D``: the sum of the
    first window, then one sample in and one out per step, divided by ``w`` at
    each output), so the values are bitwise equal; ``ext`` is scratch of
    ``len(src) + w`` values.
    """
    n = src.shape[0]
    s1 = w // 2
    s2 = w - s1 - 1
    for i in range(s1):  # original index -(s1 - i)
        ext[i] = src[0] if nearest else src[min(s1 - i - 1, n - 1)]
    ext[s1 : s1 + n] = src
    for i in range(s2):  # original index n + i
        ext[s1 + n + i] = src[n - 1] if nearest else src[max(n - 1 - i, 0)]
    tmp = 0.0
    for j in range(w):
        tmp += ext[j]
    out[0] = tmp / w
    for j in range(1, n):
        tmp += ext[j + w - 1] - ext[j - 1]
        out[j] = tmp / w


@numba.njit(cache=True, nogil=True, inline="always")
def filled_at(yr: np.ndarray, i: int) -> float:  # pragma: no cover - compiled
    """``yr[i]`` with the index clamped into the row (``mode="nearest"``), 0 where not finite."""
    v = yr[min(max(i, 0), yr.shape[0] - 1)]
    return v if v - v == 0.0 else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def scale_at(numr: np.ndarray, d: float, i: int) -> float:  # pragma: no cover - compiled
    """Relative noise ``numr[i] / d`` at ``i`` reflected into the row (``mode="reflect"``),
    1 where not finite (``x == d``: exactly 1, or a non-finite quotient)."""
    n = numr.shape[0]
    if i < 0:
        i = min(-i - 1, n - 1)
    elif i >= n:
        i = max(2 * n - 1 - i, 0)
    x = numr[i]
    if x == d:
        return 1.0
    v = x / d
    return v if v - v == 0.0 else 1.0


@numba.njit(cache=True, nogil=True)
def _first_at_or_after(ft: np.ndarray, n: int, stop_us: float) -> int:
    # pragma: no cover - compiled
    """The first sample of formula times ``ft`` (increasing: positive step and
    scale) at or after ``stop_us``, or without a time; the samples before it
    are those with a time below ``stop_us``.  By bisection on
    :func:`~idexdask.analysis.peak_search.formula_row`'s expression, which
    never decreases with the sample (each of its operations is rounded
    monotonically)."""
    start, step_us, scale = ft[0], ft[1], ft[3]
    first, last = 0, min(max(int(ft[2]), 0), n)  # samples with a time (not NaN)
    while first < last:  # a NaN start: no time below stop_us
        mid = (first + last) // 2
        if (np.float64(mid) * step_us + start) * scale < stop_us:
            first = mid + 1
        else:
            last = mid
    return first


@numba.njit(cache=True, nogil=True, error_model="numpy")
def smooth_formula_row(
    yr: np.ndarray, w: int, stop_us: float, numr: np.ndarray, d: float, out: np.ndarray,
    pivot: float, ft: np.ndarray, bmax: np.ndarray, bmin: np.ndarray,
) -> tuple[bool, int, bool, int, int, int]:  # pragma: no cover - compiled
    """:func:`smooth_row` of a row with formula times ``ft``, reading the row once.

    Applies to a row of finite samples, a boxcar of a power-of-two width and
    an increasing axis (positive step and scale), a lab capture's row: then
    the running sum is the only pass that reads the row (and ``numr``), and
    what the other passes of :func:`smooth_row` would count follows without
    reading it again:

    * every sample is finite, checked as it enters the running sum; the
      running sum of finite samples is finite at its end only if it was
      finite all along (an overflow leaves ``inf`` or NaN, which no finite
      sample returns to a number), and so then is every smoothed value;
    * the pre-trigger samples (time below ``stop_us``, the sample and its
      smoothed value finite) are then the first ``k``: a formula time
      ``(j step + start) scale`` never decreases with ``j`` (each of its
      three operations is rounded monotonically), so ``k`` is found by
      bisection on the same expression;
    * the time steps against ``pivot`` are counted from the formula alone, in
      a loop that reads no memory (it vectorises);
    * with ``bmax``, ``bmin`` of one value per block of
      :data:`~idexdask.analysis.peak_search.PROM_BLOCK` samples (empty for
      none), each block's largest and smallest smoothed value
      (:func:`~idexdask.analysis.peak_search.block_stats`, what the peak
      search would read the row again for) are written as they are formed.

    The running sum adds the same samples in the same order as
    :func:`smooth_row`'s, so every value is the same.  Where the conditions do
    not hold, ``False`` is returned and ``out`` is to be formed by
    :func:`smooth_row`'s general passes.

    Returns
    -------
    (bool, int, bool, int, int, int)
        Whether it applied; then the pre-trigger samples (the row's first
        ones), whether the relative noise ``numr / d`` varies, and the steps
        below and equal to the pivot and the steps that are not NaN (0
        without a pivot).
    """
    n = yr.shape[0]
    s1 = w // 2
    s2 = w - s1 - 1
    start, step_us, scale = ft[0], ft[1], ft[3]
    blocks = bmax.shape[0] > 0
    lo = s1 + 1  # j - 1 - s1 >= 0 from here
    hi = n - s2  # j + s2 <= n - 1 below here
    if (w & (w - 1)) != 0 or hi <= lo or not (step_us > 0.0 and scale > 0.0):
        return False, 0, False, 0, 0, 0
    bad = 0
    for j in range(lo + s2):  # the samples the first window and the head read: 0..w-1
        v = yr[j]
        bad += not v - v == 0.0
    if bad:
        return False, 0, False, 0, 0, 0
    inv_w = 1.0 / w  # exact: w is a power of two
    tmp = 0.0
    for i in range(w):  # the first window: ext[0..w-1] = filled[i - s1]
        tmp += filled_at(yr, i - s1)
    out[0] = tmp * inv_w
    for j in range(1, lo):
        tmp += filled_at(yr, j + s2) - filled_at(yr, j - 1 - s1)
        out[j] = tmp * inv_w
    differ = 0
    has_scale = numr.shape[0] == n
    if has_scale:
        for j in range(lo):
            differ += numr[j] != d
        tail = numr[hi:]  # a view indexed from 0: contiguous loads (no wrapped index)
        for j in range(n - hi):
            differ += tail[j] != d
    # block by block: the running sum's chain of additions hides the other
    # loads, counts and each block's extremes
    # (each block read through views indexed from 0: no index wrapped per value)
    for b in range(lo // PROM_BLOCK, (hi - 1) // PROM_BLOCK + 1):
        top = -np.inf
        low = np.inf
        a = max(b * PROM_BLOCK, lo)
        e = min((b + 1) * PROM_BLOCK, hi)
        ahead = yr[a + s2 : e + s2]
        behind = yr[a - 1 - s1 : e - 1 - s1]
        dst = out[a:e]
        if has_scale:
            scl = numr[a:e]
            for i in range(e - a):
                v = ahead[i]
                tmp += v - behind[i]
                o = tmp * inv_w
                dst[i] = o
                top = o if o > top else top
                low = o if o < low else low
                bad += not v - v == 0.0
                differ += scl[i] != d
        else:
            for i in range(e - a):
                v = ahead[i]
                tmp += v - behind[i]
                o = tmp * inv_w
                dst[i] = o
                top = o if o > top else top
                low = o if o < low else low
                bad += not v - v == 0.0
        if blocks:
            bmax[b] = top
            bmin[b] = low
    for j in range(max(hi, 1), n):
        tmp += filled_at(yr, j + s2) - filled_at(yr, j - 1 - s1)
        out[j] = tmp * inv_w
    if bad or not tmp - tmp == 0.0:
        return False, 0, False, 0, 0, 0
    if blocks:  # the blocks the loop above did not cover whole
        for b in range((lo - 1) // PROM_BLOCK + 1):
            block_stats(out, b, bmax, bmin)
        for b in range(hi // PROM_BLOCK, bmax.shape[0]):
            block_stats(out, b, bmax, bmin)
    varying = False
    if differ:
        for j in range(n):
            x = numr[j]
            if x != d:
                q = x / d
                varying |= q - q == 0.0 and q != 1.0
    first = _first_at_or_after(ft, n, stop_us)
    m_f = min(max(int(ft[2]), 0), n)  # samples with a time (not NaN)
    below = equal = valid = 0
    if pivot == pivot:
        n_steps = max(min(n - 1, m_f - 1), 0)  # both times of the step exist
        times = np.empty(_TIME_BLOCK + 1)
        for j0 in range(0, n_steps, _TIME_BLOCK):  # each time formed once, a block at a time
            m = min(_TIME_BLOCK, n_steps - j0)
            for i in range(m + 1):
                times[i] = (np.float64(j0 + i) * step_us + start) * scale
            for i in range(m):
                step = times[i + 1] - times[i]
                below += step < pivot
                equal += step == pivot
                valid += step == step
    return True, first, varying, below, equal, valid


@numba.njit(cache=True, nogil=True, error_model="numpy")
def smooth_row(
    yr: np.ndarray, tr: np.ndarray, w: int, stop_us: float, numr: np.ndarray, d: float,
    out: np.ndarray, pivot: float, ft: np.ndarray,
) -> tuple[int, int, bool, bool, int, int, int]:  # pragma: no cover - compiled
    """Boxcar of ``w`` samples of one row into ``out``; its finite and pre-trigger
    samples, and whether its relative noise varies.

    ``scipy.ndimage.uniform_filter1d(filled, w, mode="nearest")`` of the row
    with non-finite samples as 0, by :func:`uniform_row`'s running sum (the
    same additions in the same order, so the same values), read straight from
    the row.  The pre-trigger samples are those at ``t < stop_us`` where the
    sample and its smoothed value are finite.  ``numr`` (the row's noise
    scale, empty for none) and ``d``: whether any relative noise ``numr / d``
    (non-finite -> 1) is not 1; ``x == d`` gives exactly 1 (or a non-finite
    quotient), so the quotient is only formed where they differ.

    A row with formula times that :func:`smooth_formula_row` applies to (a
    lab capture's) is read once by that function instead.  Each pass is a
    simple loop (branch-free counts the compiler vectorises); the running sum
    skips the index clamping inside the row, and the test for non-finite
    samples where the row has none.

    With a ``pivot`` (not NaN) the time steps ``tr[j + 1] - tr[j]`` are
    counted against it as the row is read (for
    :func:`~idexdask.analysis.sample_step.step_is_median`).  With formula
    terms ``ft`` (start, step, count, scale of
    :func:`~idexdask.analysis.peak_search.formula_row`; empty for none) the
    times are formed where they are read, as ``formula_row`` forms them, and
    ``tr`` is not read: no time row is written and read back.

    Returns
    -------
    (int, int, bool, bool, int, int, int)
        The number of finite samples, of pre-trigger samples, whether those
        are the row's first ones (their smoothed values are then ``out[:k]``),
        whether the relative noise varies, and the steps below and equal to
        the pivot and the steps that are not NaN (0 without a pivot).
    """
    n = yr.shape[0]
    s1 = w // 2
    s2 = w - s1 - 1
    n_fin = 0
    for j in range(n):
        v = yr[j]
        n_fin += v - v == 0.0
    varying = False
    if numr.shape[0] == n:
        differ = 0
        for j in range(n):
            differ += numr[j] != d
        if differ:
            for j in range(n):
                x = numr[j]
                if x != d:
                    q = x / d
                    varying |= q - q == 0.0 and q != 1.0
    tmp = 0.0
    for i in range(w):  # the first window: ext[0..w-1] = filled[i - s1]
        tmp += filled_at(yr, i - s1)
    # dividing by a power of two is multiplying by its exact reciprocal (the
    # same value), a quarter of the cost: w = 8 at 1 GS/s, 2 at 260 MS/s
    power_of_two = (w & (w - 1)) == 0
    inv_w = 1.0 / w
    lo = min(s1 + 1, n)  # j - 1 - s1 >= 0 from here
    hi = max(n - s2, lo)  # j + s2 <= n - 1 below here
    out[0] = tmp * inv_w if power_of_two else tmp / w
    for j in range(1, lo):
        tmp += filled_at(yr, j + s2) - filled_at(yr, j - 1 - s1)
        out[j] = tmp * inv_w if power_of_two else tmp / w
    if n_fin == n and power_of_two:
        for j in range(lo, hi):
            tmp += yr[j + s2] - yr[j - 1 - s1]
            out[j] = tmp * inv_w
    elif power_of_two:
        for j in range(lo, hi):
            tmp += finite_or_zero(yr[j + s2]) - finite_or_zero(yr[j - 1 - s1])
            out[j] = tmp * inv_w
    else:
        for j in range(lo, hi):
            tmp += finite_or_zero(yr[j + s2]) - finite_or_zero(yr[j - 1 - s1])
            out[j] = tmp / w
    for j in range(max(hi, 1), n):
        tmp += filled_at(yr, j + s2) - filled_at(yr, j - 1 - s1)
        out[j] = tmp * inv_w if power_of_two else tmp / w
    # the pre-trigger samples: k distinct indices summing to k (k - 1) / 2 are 0..k-1;
    # with a pivot, the time steps below, equal to it and not NaN, in the same pass
    k = 0
    index_sum = 0
    below = 0
    equal = 0
    valid = 0
    counted = 0
    if ft.shape[0] == 4:
        k, index_sum, below, equal, valid = count_formula_times(yr, out, stop_us, pivot, ft)
    else:
        if pivot == pivot:
            counted = n - 1
            for j in range(counted):
                yj = yr[j]
                v = out[j]
                c = (tr[j] < stop_us) & (yj - yj == 0.0) & (v - v == 0.0)
                k += c
                index_sum += j if c else 0
                step = tr[j + 1] - tr[j]
                below += step < pivot
                equal += step == pivot
                valid += step == step
        ytail = yr[counted:]  # views indexed from 0: contiguous loads (no wrapped index)
        otail = out[counted:]
        ttail = tr[counted:]
        for i in range(n - counted):
            yj = ytail[i]
            v = otail[i]
            c = (ttail[i] < stop_us) & (yj - yj == 0.0) & (v - v == 0.0)
            k += c
            index_sum += counted + i if c else 0
    return n_fin, k, index_sum == k * (k - 1) // 2, varying, below, equal, valid


@numba.njit(cache=True, nogil=True)
def count_formula_times(
    yr: np.ndarray, out: np.ndarray, stop_us: float, pivot: float, ft: np.ndarray
) -> tuple[int, int, int, int, int]:  # pragma: no cover - compiled
    """:func:`smooth_row`'s counts with the times of formula terms ``ft``.

    The times are those :func:`~idexdask.analysis.peak_search.formula_row`
    writes (``(j step + start) scale``, NaN from ``count`` on), formed where
    they are read.  Returns the pre-trigger samples, the sum of their indices
    and, with a pivot, the time steps below, equal to it and not NaN.
    """
    n = yr.shape[0]
    start, step_us, scale = ft[0], ft[1], ft[3]
    m_f = min(max(int(ft[2]), 0), n)  # samples with a time (not NaN)
    k = index_sum = below = equal = valid = 0
    done = 0
    if pivot == pivot:
        done = max(min(n - 1, m_f - 1), 0)
        for j in range(done):  # both times of the step exist
            yj = yr[j]
            v = out[j]
            t0 = (np.float64(j) * step_us + start) * scale
            t1 = (np.float64(j + 1) * step_us + start) * scale
            c = (t0 < stop_us) & (yj - yj == 0.0) & (v - v == 0.0)
            k += c
            index_sum += j if c else 0
            step = t1 - t0
            below += step < pivot
            equal += step == pivot
            valid += step == step
    # the samples with a time not counted above (the last one's step ends at a
    # NaN time: not a valid step); from m_f on the time is NaN
    # (read through views indexed from 0: contiguous loads, where an index
    # from ``done`` on is wrapped per value and compiles to gathers)
    ytail = yr[done:m_f]
    otail = out[done:m_f]
    for i in range(m_f - done):
        j = done + i
        yj = ytail[i]
        v = otail[i]
        c = (((np.float64(j) * step_us + start) * scale) < stop_us) & (yj - yj == 0.0) & (
            v - v == 0.0
        )
        k += c
        index_sum += j if c else 0
    return k, index_sum, below, equal, valid


@numba.njit(cache=True, nogil=True, inline="always")
def finite_or_zero(v: float) -> float:  # pragma: no cover - compiled
    """``v``, 0 where it is not finite."""
    return v if v - v == 0.0 else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def row_sigma(
    out: np.ndarray, yr: np.ndarray, tr: np.ndarray, stop_us: float, n_first: int, k: int,
    prefix: bool, vals: np.ndarray, scratch: np.ndarray, floor: float,
) -> float:  # pragma: no cover - compiled
    """Robust sigma of a smoothed row's pre-trigger samples (``baseline_sigma``'s rules).

    ``out``: the smoothed row; ``k`` pre-trigger samples (``t < stop_us``, the
    sample and its smoothed value finite), the row's first ones when
    ``prefix``; the first ``n_first`` finite samples when fewer than 16.
    1.4826 x their MAD, their standard deviation where the MAD is 0, at least
    ``floor``; NaN for none.  ``vals`` and ``scratch``: work space of the row's
    length.
    """
    n = out.shape[0]
    base_vals = out if prefix else vals  # the smoothed pre-trigger samples
    if k >= 16 and not prefix:
        k = 0
        for j in range(n):
            v = out[j]
            if tr[j] < stop_us and yr[j] - yr[j] == 0.0 and v - v == 0.0:
                vals[k] = v
                k += 1
    if k < 16:
        base_vals = vals
        k = 0
        for j in range(min(n_first, n)):
            v = out[j]
            if yr[j] - yr[j] == 0.0 and np.isfinite(v):
                vals[k] = v
                k += 1
    if not k:
        return np.nan
    _, mad = median_and_mad(base_vals, k, scratch)
    zs = MAD_TO_SIGMA * mad
    if zs == 0.0:  # a MAD that collapsed on a quiet quantised baseline
        mean = 0.0
        for j in range(k):
            mean += base_vals[j]
        mean /= k
        var = 0.0
        for j in range(k):
            var += (base_vals[j] - mean) ** 2
        zs = np.sqrt(var / k)
    return max(zs, floor)


@numba.njit(cache=True, nogil=True)
def write_times(ft: np.ndarray, count: int, tbuf: np.ndarray) -> bool:
    # pragma: no cover - compiled
    """Write the formula times ``ft`` of one row into ``tbuf[0]``; True."""
    formula_row(ft[0], ft[1], count, ft[3], tbuf[0])
    return True
