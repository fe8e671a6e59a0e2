"""Compiled kernels of the TOF gain merge (:func:`idexdask.analysis.tof.merge_gains`).

One pass per event row over its gains: each gain's baseline (a clipped mean of
the pre-trigger samples, their median and MAD found by the one-pass bracketing
selection), its positive-going signal and saturated samples, the ratio of each
gain to the next higher one from their overlap, and the merged row.  Every value
is computed with the operations of the array statement of the merge, so the
results are the same (``tests/unit/analysis/test_tof_merge.py``).
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.robust import MAD_TO_SIGMA, clipped_mean, median_inplace
from idexdask.analysis.selection import median_and_mad
from idexdask.numerics import pairwise_sum_sparse

__all__ = ["clipped_baseline", "divide_sum_of_squares", "load_row", "merge_rows", "ratio_row",
           "ratio_work"]


@numba.njit(cache=True, nogil=True)
def ratio_work(n: int) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Scratch arrays of :func:`ratio_row` for rows of ``n`` samples."""
    return (
        np.empty(n, dtype=np.int64),  # selected sample indices
        np.zeros(n + 1, dtype=np.int64),  # selected samples before each index
        np.empty(n),  # residuals of the selected samples
        np.empty(2 * n),  # median scratch
        np.zeros(n),  # h * lo, all-zero between calls
        np.zeros(n),  # h * h, all-zero between calls
    )


@numba.njit(cache=True, nogil=True)
def ratio_row(
    h: np.ndarray,
    lo: np.ndarray,
    ok: np.ndarray,
    thresh: float,
    sig_l: float,
    work: tuple[np.ndarray, ...],
) -> tuple[float, int]:  # pragma: no cover - compiled
    """Origin slope of ``lo`` on ``h`` over one row's overlap, refit without outliers.

    ``work`` comes from :func:`ratio_work`.

    The sums run over whole rows with zeros outside the selection, as numpy
    would sum them (same rounding), but pairwise-summation leaves holding no
    selected sample are known to be zero without being read.
    """
    idx, cnt, resid, buf, hl, hh = work
    n = h.shape[0]
    m = 0
    for j in range(n):
        s = ok[j] and h[j] > thresh
        idx[m] = j
        m += s
        cnt[j + 1] = m
    for i in range(m):
        j = idx[i]
        hl[j] = h[j] * lo[j]
        hh[j] = h[j] * h[j]
    b = divide_sum_of_squares(pairwise_sum_sparse(hl, n, cnt), pairwise_sum_sparse(hh, n, cnt))
    k = 0
    for i in range(m):
        j = idx[i]
        v = lo[j] - b * h[j]
        resid[i] = v
        if not np.isnan(v):
            buf[k] = v
            k += 1
    spread = np.nan
    if k:
        med = median_inplace(buf, k)
        kk = 0
        for i in range(m):
            if not np.isnan(resid[i]):
                buf[kk] = abs(resid[i] - med)
                kk += 1
        spread = MAD_TO_SIGMA * median_inplace(buf, kk)
    lim = np.nan if (np.isnan(spread) or np.isnan(sig_l)) else 4.0 * max(spread, sig_l)
    c = 0
    for i in range(m):
        j = idx[i]
        if abs(resid[i]) <= lim:
            c += 1
        else:
            hl[j] = 0.0
            hh[j] = 0.0
    slope = divide_sum_of_squares(pairwise_sum_sparse(hl, n, cnt), pairwise_sum_sparse(hh, n, cnt))
    for i in range(m):
        j = idx[i]
        hl[j] = 0.0
        hh[j] = 0.0
    return slope, c


@numba.njit(cache=True, nogil=True)
def divide_sum_of_squares(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``a / b`` for ``b >= 0`` (a sum of squares), IEEE results at ``b == 0`` as numpy."""
    if b == 0.0:
        if a == 0.0 or np.isnan(a):
            return np.nan
        return np.inf if a > 0 else -np.inf
    return a / b


@numba.njit(cache=True, nogil=True)
def clipped_baseline(
    vals: np.ndarray, pos: np.ndarray, k: int, n: int, buf: np.ndarray, row: np.ndarray
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Clipped-mean level and MAD of the ``k`` baseline samples ``vals[:k]`` (finite).

    The values of :func:`~idexdask.analysis.robust.baseline_level` (the same
    median, MAD, clip and ``numpy.nanmean`` rounding of the mean), with the
    median and MAD found by :func:`~idexdask.analysis.selection.median_and_mad`:
    the same order statistics in about one pass over the ~400k pre-trigger
    samples of a lab record instead of two full quickselects.  ``pos[:k]`` are
    the samples' increasing indices in a row of ``n``; ``buf`` is scratch of
    ``n`` values, ``row`` an all-zero scratch row of ``n``, left all-zero.
    NaN for ``k == 0``.
    """
    if k == 0:
        return np.nan, np.nan
    m, d = median_and_mad(vals, k, buf)
    return clipped_mean(vals, pos, k, n, m, d, row), d


@numba.njit(cache=True, nogil=True, inline="always")
def load_row(raw, r, has_fill, fill, out):  # pragma: no cover - compiled
    """Row ``r`` of ``raw`` as float64 into ``out``, NaN where missing (NaN or fill)."""
    for j in range(raw.shape[1]):
        v = np.float64(raw[r, j])
        out[j] = np.nan if (v != v or (has_fill and v == fill)) else v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def merge_rows(
    x0: np.ndarray,
    x1: np.ndarray,
    x2: np.ndarray,
    n_gains: int,
    t: np.ndarray,
    pre_count: np.ndarray,
    stop_us: float,
    min_samples: int,
    n_first: int,
    pol: np.ndarray,
    has_fill: np.ndarray,
    fill: np.ndarray,
    vmin: np.ndarray,
    vmax: np.ndarray,
    flag: np.ndarray,
    t0: np.ndarray,
    t1: np.ndarray,
    guard: int,
    qsig: np.ndarray,
    k_sigma: float,
    nominal: np.ndarray,
    min_overlap: int,
    signal: np.ndarray,
    sigma: np.ndarray,
    source: np.ndarray,
    floor: np.ndarray,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """:func:`~idexdask.analysis.tof.merge_gains` of every event, one row at a time (see there).

    Per gain ``g`` (``x0``, ``x1``, ``x2``, the first ``n_gains`` used): the
    :func:`~idexdask.analysis.robust.baseline_sigma` level and sigma (sigma
    replaced by ``qsig`` where that is finite and positive, else never below
    ``floor[g]``, the quantisation noise), the positive-going
    signal ``pol * (x - level)``, its saturated samples (``>= vmax``, ``<= vmin``
    (NaN: none), the quality interval ``[t0, t1]`` where ``flag``, grown by
    ``guard`` samples), the ratio to the next higher gain (``nominal[g]`` when not
    measured) and the merged spectrum.  Every value is computed with the
    operations of the array version, so the results are the same.

    The baseline samples of row ``r`` are those whose time ``t[r]`` is below
    ``stop_us``: the first ``pre_count[r]`` where that is not -1 (a rising axis,
    located without reading ``t``).

    Fills ``signal``, ``sigma``, ``source`` (rows, n; allocated by the caller:
    NumPy maps large arrays on huge pages, which makes them much cheaper to
    write) and returns per gain and row ``ratio``, ``status``, ``overlap`` and
    ``noise``.
    """
    rows, n = x0.shape
    ratio = np.ones((n_gains, rows))
    status = np.zeros((n_gains, rows), dtype=np.int8)
    overlap = np.zeros((n_gains, rows), dtype=np.int32)
    noise = np.empty((n_gains, rows))
    xf = np.empty((n_gains, n))
    sat = np.zeros((n_gains, n), dtype=np.bool_)
    raw_sat = np.empty(n, dtype=np.bool_)
    ok = np.empty(n, dtype=np.bool_)
    pre = np.empty(n, dtype=np.int64)
    vals = np.empty(n)
    pos = np.empty(n, dtype=np.int64)
    buf = np.empty(n)
    zero_row = np.zeros(n)
    work = ratio_work(n)
    for r in range(rows):
        # the pre-trigger samples: the first pre_count[r] (a rising formula
        # axis), else those whose time is below stop_us
        prefix = pre_count[r] >= 0
        n_pre = pre_count[r] if prefix else 0
        if not prefix:
            for j in range(n):
                if t[r, j] < stop_us:
                    pre[n_pre] = j
                    n_pre += 1
        for g in range(n_gains):
            if g == 0:
                load_row(x0, r, has_fill[0], fill[0], xf[0])
            elif g == 1:
                load_row(x1, r, has_fill[1], fill[1], xf[1])
            else:
                load_row(x2, r, has_fill[2], fill[2], xf[2])
            y = xf[g]
            k = 0
            for i in range(n_pre):
                j = i if prefix else pre[i]
                v = y[j]
                if np.isfinite(v):
                    vals[k] = v
                    pos[k] = j
                    k += 1
            if k < min_samples:
                k = 0
                for j in range(min(n_first, n)):
                    if np.isfinite(y[j]):
                        vals[k] = y[j]
                        pos[k] = j
                        k += 1
            base, mad = clipped_baseline(vals, pos, k, n, buf, zero_row)
            q = qsig[g, r]
            noise[g, r] = q if (np.isfinite(q) and q > 0) else max(MAD_TO_SIGMA * mad, floor[g])
            # saturated samples (grown by the guard) and the positive-going signal;
            # the loops are written branch-free (bitwise tests, selects)
            vmx = vmax[g]
            vmn = vmin[g]
            p = pol[g]
            any_sat = False
            for j in range(n):
                v = y[j]
                s = (v >= vmx) | (v <= vmn)
                raw_sat[j] = s
                any_sat |= s
                y[j] = p * (v - base)
            if flag[g, r]:
                lo_t = t0[g, r]
                hi_t = t1[g, r]
                for j in range(n):
                    s = (t[r, j] >= lo_t) & (t[r, j] <= hi_t)
                    raw_sat[j] |= s
                    any_sat |= s
            sg = sat[g]
            if guard > 0 and any_sat:
                sg[:] = False
                for j in range(n):
                    if raw_sat[j]:
                        sg[max(j - guard, 0) : min(j + guard + 1, n)] = True
            else:
                sg[:] = raw_sat
        # ratios to the next higher gain, from the overlap
        for g in range(1, n_gains):
            h = xf[g - 1]
            lo = xf[g]
            sh = sat[g - 1]
            sl = sat[g]
            for j in range(n):
                # v - v == 0: finite
                ok[j] = ~sh[j] & ~sl[j] & (h[j] - h[j] == 0.0) & (lo[j] - lo[j] == 0.0)
            a = k_sigma * noise[g - 1, r]
            b = k_sigma * noise[g, r] * nominal[g]
            thresh = np.nan if (np.isnan(a) or np.isnan(b)) else max(a, b)
            slope, c = ratio_row(h, lo, ok, thresh, noise[g, r], work)
            rr = 1.0 / slope
            good = c >= min_overlap and np.isfinite(rr) and rr > 0
            st = np.int8(0) if good else np.int8(1)
            ratio[g, r] = ratio[g - 1, r] * (rr if good else nominal[g])
            status[g, r] = max(st, status[g - 1, r]) if g > 1 else st
            overlap[g, r] = c
        # the merged row: highest unsaturated gain, scaled to the first
        y0 = xf[0]
        s0 = sat[0]
        sig_r = sigma[r]
        out_r = signal[r]
        src_r = source[r]
        sig_r[:] = noise[0, r]
        missing = 0
        for j in range(n):
            v = y0[j]
            use = ~s0[j] & (v - v == 0.0)
            out_r[j] = v if use else np.nan
            src_r[j] = np.int8(0) if use else np.int8(-1)
            missing += not use
        for g in range(1, n_gains):
            if missing == 0:  # nothing left to fill in this row
                break
            yg = xf[g]
            sg = sat[g]
            f = ratio[g, r]
            sg_r = noise[g, r] * f
            code = np.int8(g)
            missing = 0
            for j in range(n):
                v = yg[j]
                put = (src_r[j] < 0) & ~sg[j] & (v - v == 0.0)
                out_r[j] = v * f if put else out_r[j]
                sig_r[j] = sg_r if put else sig_r[j]
                src_r[j] = code if put else src_r[j]
                missing += src_r[j] < 0
    return ratio, status, overlap, noise
