"""Compiled kernels of the TOF gain merge (:func:`idexdask.analysis.tof.merge_gains`).

Per event row, the passes over each gain's recorded samples (read as they are
stored, float32 volts or integer DN, never copied):

* the baseline: a clipped mean of the pre-trigger samples around their median,
  with their MAD.  Where signal quality gives the noise (no MAD needed) and
  the samples lie within the clip's floor of each other (scope volts), one
  pass gives their mean, the clipped mean.  Else, for ADC codes, one pass gives
  the codes' histogram (median, MAD) and the sum (the mean where the clip keeps
  every sample); a clip that leaves samples out reads them once more.  Other
  samples: the one-pass bracketing selection;
* the saturated samples, only where the gain has rails (a pass) or a
  saturated interval (located on a rising formula axis by bisection: no pass);
* per pair of neighbouring gains, the overlap: a float32 block test over the
  higher gain, the exact test only in the blocks it passes;
* one pass that forms the positive-going signal of every gain and writes the
  merged row.

Every value is computed with the operations of the array statement of the
merge, so the results are the same (``tests/unit/analysis/test_tof_merge.py``).
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.robust import (
    CLIP_FLOOR,
    MAD_TO_SIGMA,
    clipped_mean,
    clipped_prefix_mean,
    median_inplace,
)
from idexdask.analysis.selection import (
    CODE_COUNTS,
    code_prefix_stats,
    median_and_mad,
    prefix_sum_near_first,
)
from idexdask.numerics import pairwise_sum

__all__ = ["clipped_baseline", "divide_sum_of_squares", "first_gain_row", "gain_baseline",
           "merge_rows", "overlap_ratio", "overlap_samples", "sample_value"]


_FINITE_SUM = 1e300
"""Largest baseline level taken from :func:`~idexdask.analysis.selection.prefix_sum_near_first`
(its samples' median, the mean of two, cannot overflow)."""
_WITHIN = 0.999 * CLIP_FLOOR / 2
"""Half-width around a baseline's first sample within which every sample is in
the clip of :func:`~idexdask.analysis.robust.clipped_mean`."""

_SCAN_BLOCK = 512
"""Samples per block of :func:`overlap_samples`' vectorised test for any overlap."""


@numba.njit(cache=True, nogil=True, inline="always")
def sample_value(x: np.ndarray, j: int, fill: float) -> float:  # pragma: no cover - compiled
    """``x[j]`` as float64, NaN where it equals ``fill`` (a NaN ``fill``: none)."""
    v = np.float64(x[j])
    return np.nan if v == fill else v


@numba.njit(cache=True, nogil=True)
def _sparse_sums(
    va: np.ndarray, vb: np.ndarray, idx: np.ndarray, m: int, n: int
) -> tuple[float, float]:  # pragma: no cover - compiled
    """``a[:n].sum()`` and ``b[:n].sum()`` with NumPy's rounding (pairwise) of the
    rows ``a`` and ``b`` that are ``va[i]`` and ``vb[i]`` at the increasing indices
    ``idx[i]`` (``i < m``) and +0.0 elsewhere: subtrees holding none of them are
    +0.0 without being formed; each node carries the range of ``idx`` inside it,
    split by a binary search within that range; the two rows share the walk."""
    block_a = np.zeros(128)
    block_b = np.zeros(128)
    s_lo = np.empty(128, dtype=np.int64)
    s_n = np.empty(128, dtype=np.int64)
    s_i0 = np.empty(128, dtype=np.int64)
    s_i1 = np.empty(128, dtype=np.int64)
    s_state = np.empty(128, dtype=np.int64)
    vals_a = np.empty(128)
    vals_b = np.empty(128)
    nv = 0
    s_lo[0], s_n[0], s_i0[0], s_i1[0], s_state[0] = 0, n, 0, m, 0
    top = 1
    while top:
        top -= 1
        cl, cn, i0, i1, st = s_lo[top], s_n[top], s_i0[top], s_i1[top], s_state[top]
        if i0 == i1:
            vals_a[nv] = 0.0
            vals_b[nv] = 0.0
            nv += 1
        elif cn <= 128:
            for i in range(i0, i1):
                block_a[idx[i] - cl] = va[i]
                block_b[idx[i] - cl] = vb[i]
            vals_a[nv] = pairwise_sum(block_a, 0, cn)
            vals_b[nv] = pairwise_sum(block_b, 0, cn)
            for i in range(i0, i1):  # left all zero
                block_a[idx[i] - cl] = 0.0
                block_b[idx[i] - cl] = 0.0
            nv += 1
        elif st == 0:
            n2 = cn // 2
            n2 -= n2 % 8
            lo, hi = i0, i1  # the first index at or after the split
            while lo < hi:
                mid = (lo + hi) // 2
                if idx[mid] < cl + n2:
                    lo = mid + 1
                else:
                    hi = mid
            s_lo[top], s_n[top], s_state[top] = cl, cn, 1  # combine after both halves
            s_i0[top], s_i1[top] = i0, i1
            s_lo[top + 1], s_n[top + 1], s_state[top + 1] = cl + n2, cn - n2, 0
            s_i0[top + 1], s_i1[top + 1] = lo, i1
            s_lo[top + 2], s_n[top + 2], s_state[top + 2] = cl, n2, 0
            s_i0[top + 2], s_i1[top + 2] = i0, lo
            top += 3
        else:
            nv -= 2
            vals_a[nv] = vals_a[nv] + vals_a[nv + 1]
            vals_b[nv] = vals_b[nv] + vals_b[nv + 1]
            nv += 1
    return vals_a[0], vals_b[0]


@numba.njit(cache=True, nogil=True)
def overlap_samples(
    xh: np.ndarray, xl: np.ndarray, fill_h: float, fill_l: float, base_h: float,
    base_l: float, pol_h: float, pol_l: float, sat_h: np.ndarray, sat_l: np.ndarray,
    thresh: float, idx: np.ndarray, hv: np.ndarray, lv: np.ndarray, hits: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """The overlap of a higher gain (``xh``) and the next lower one (``xl``) in one row.

    Samples where both positive-going signals ``pol * (x - base)`` are finite
    and unsaturated and the higher one exceeds ``thresh``: their indices go to
    ``idx``, the two signals to ``hv`` and ``lv``; returns how many.  ``hits``,
    one flag per :data:`_SCAN_BLOCK` samples, marks the blocks where the
    higher signal exceeds ``thresh`` somewhere (:func:`first_gain_row`, which
    read the row already); empty: each block is tested here.
    """
    m = 0
    n = xh.shape[0]
    # the blocks' test in float32 (twice as many samples per vector): a signal
    # above the threshold is a sample at or beyond a float32 limit (pol is +-1;
    # float32 rounding and the signal's are monotonic in the sample), set a few
    # float64 ulp beyond the exact boundary and rounded outwards, so the test
    # never misses a sample (it may pass one to the exact test below)
    edge = base_h + pol_h * thresh
    edge -= pol_h * (abs(base_h) + abs(thresh) + abs(edge)) * 1e-15
    lim = np.float32(pol_h * edge)
    if np.float64(lim) > pol_h * edge:
        lim = np.nextafter(lim, np.float32(-np.inf))
    sign = np.float32(pol_h)
    unit = pol_h == 1.0 or pol_h == -1.0  # the float32 test needs an exact sign flip
    marked = hits.size > 0
    for start in range(0, n, _SCAN_BLOCK):
        stop = min(start + _SCAN_BLOCK, n)
        hit = False
        xb = xh[start:stop]  # a view indexed from 0: contiguous loads, not a gather
        if marked:
            hit = hits[start // _SCAN_BLOCK]
        elif unit:
            for j in range(stop - start):  # a reduction that vectorises
                hit |= sign * np.float32(xb[j]) >= lim
        else:
            for j in range(stop - start):
                hit |= pol_h * (sample_value(xb, j, fill_h) - base_h) > thresh
        if not hit:  # most blocks: no sample above the threshold
            continue
        for j in range(start, stop):
            h = pol_h * (sample_value(xh, j, fill_h) - base_h)
            lo = pol_l * (sample_value(xl, j, fill_l) - base_l)
            if (h > thresh and h - h == 0.0 and lo - lo == 0.0 and not sat_h[j]
                    and not sat_l[j]):
                idx[m] = j
                hv[m] = h
                lv[m] = lo
                m += 1
    return m


@numba.njit(cache=True, nogil=True)
def overlap_ratio(
    idx: np.ndarray, hv: np.ndarray, lv: np.ndarray, m: int, n: int, sig_l: float,
    hl: np.ndarray, hh: np.ndarray, resid: np.ndarray, buf: np.ndarray,
) -> tuple[float, int]:  # pragma: no cover - compiled
    """Origin slope of ``lv`` on ``hv`` over the ``m`` overlap samples of a row of
    ``n`` (:func:`overlap_samples`), refit without the outliers; and the samples kept.

    The sums run over whole rows with zeros outside the overlap (and at the
    outliers), as numpy would sum them (same rounding).  ``hl``, ``hh`` and
    ``resid`` are scratch of ``m`` values, ``buf`` of ``2 m``.
    """
    for i in range(m):
        hl[i] = hv[i] * lv[i]
        hh[i] = hv[i] * hv[i]
    s_hl, s_hh = _sparse_sums(hl, hh, idx, m, n)
    b = divide_sum_of_squares(s_hl, s_hh)
    k = 0
    for i in range(m):
        v = lv[i] - b * hv[i]
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
        if abs(resid[i]) <= lim:
            c += 1
        else:
            hl[i] = 0.0
            hh[i] = 0.0
    s_hl, s_hh = _sparse_sums(hl, hh, idx, m, n)
    return divide_sum_of_squares(s_hl, s_hh), c


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




@numba.njit(cache=True, nogil=True)
def gain_baseline(
    x: np.ndarray, prefix: bool, n_pre: int, pre: np.ndarray, min_samples: int,
    n_first: int, fill: float, code_scale: float, code_offset: float, code_single: bool,
    need_mad: bool, counts: np.ndarray, vals: np.ndarray, pos: np.ndarray, buf: np.ndarray,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Baseline level and MAD of one gain's row ``x`` (see :func:`merge_rows`).

    The baseline samples are the valid ones among the first ``n_pre`` (``prefix``)
    or at the indices ``pre[:n_pre]``; with fewer than ``min_samples``, the valid
    ones among the first ``n_first``.  Where the MAD is not needed (``need_mad``
    False: the noise comes from signal quality) and a prefix's valid samples
    lie within ``_WITHIN`` of the first, one pass gives the level
    (:func:`~idexdask.analysis.selection.prefix_sum_near_first`; the MAD returned is
    NaN).  Else a prefix of codes (``code_scale`` finite)
    is read once (:func:`~idexdask.analysis.selection.code_prefix_stats`: the
    histogram of its codes and its sum), and once more only where the clip
    leaves samples out; any other set is gathered into ``vals``/``pos`` for
    :func:`clipped_baseline`.  ``counts`` is the all-zero int32 histogram of
    :data:`~idexdask.analysis.selection.CODE_COUNTS` counters (left all zero),
    ``vals``, ``pos`` and ``buf`` scratch of the row's length.
    """
    n = x.shape[0]
    if prefix and not need_mad:
        k, within, total = prefix_sum_near_first(x, n_pre, _WITHIN, fill)
        # every valid sample within any clip: the mean without the median
        if k >= min_samples and within and abs(total / k) <= _FINITE_SUM:
            return total / k, np.nan
    if prefix and np.isfinite(code_scale):
        found = code_prefix_stats(x, n_pre, fill == fill, fill, code_scale, code_offset,
                                  code_single, counts)
        if found.ok and found.count >= min_samples:
            med, mad = found.median, found.mad
            lim = 4.0 * max(MAD_TO_SIGMA * mad, 0.5)  # clipped_mean's clip
            # the values rise with the codes and each rounding of |v - med| is
            # monotonic in v: the clip keeps every valid sample iff it keeps
            # the two extremes, and its sum is then the pass's
            if abs(found.low - med) <= lim and abs(found.high - med) <= lim:
                mean = found.total / found.count
                return (mean if np.isfinite(mean) else med), mad
            return clipped_prefix_mean(x, n_pre, n, med, mad, fill), mad
    k = 0
    for i in range(n_pre):
        j = i if prefix else pre[i]
        v = sample_value(x, j, fill)
        if np.isfinite(v):
            vals[k] = v
            pos[k] = j
            k += 1
    if k < min_samples:
        k = 0
        for j in range(min(n_first, n)):
            v = sample_value(x, j, fill)
            if np.isfinite(v):
                vals[k] = v
                pos[k] = j
                k += 1
    return clipped_baseline(vals, pos, k, n, buf, np.zeros(n))


@numba.njit(cache=True, nogil=True)
def gain_saturation(
    x: np.ndarray, t: np.ndarray, fill: float, vmin: float, vmax: float, flagged: bool,
    t0: float, t1: float, first: int, stop: int, guard: int, raw: np.ndarray, sat: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Saturated samples of one gain's row into ``sat``; whether there are any.

    At or beyond a rail (``>= vmax``, ``<= vmin``; NaN: none), or, when
    ``flagged``, inside the saturation interval: the samples ``[first, stop)``
    where ``first`` is not -1 (located on a rising formula axis), else those
    at a time ``t`` within ``[t0, t1]``; grown by ``guard`` samples.  Without
    rails that is one interval, written directly; ``raw`` is scratch of the
    row's length.
    """
    n = x.shape[0]
    grow = max(guard, 0)
    rails = vmin == vmin or vmax == vmax
    if not rails and (not flagged or first >= 0):
        sat[:] = False
        if flagged and stop > first:
            sat[max(first - grow, 0) : min(stop + grow, n)] = True
            return True
        return False
    any_sat = False
    if rails:
        for j in range(n):  # branch-free (bitwise tests)
            v = sample_value(x, j, fill)
            s = (v >= vmax) | (v <= vmin)
            raw[j] = s
            any_sat |= s
    else:
        raw[:] = False
    if flagged and first >= 0:
        raw[first:stop] = True
        any_sat |= stop > first
    elif flagged:
        for j in range(n):
            s = (t[j] >= t0) & (t[j] <= t1)
            raw[j] |= s
            any_sat |= s
    if grow > 0 and any_sat:
        sat[:] = False
        for j in range(n):
            if raw[j]:
                sat[max(j - grow, 0) : min(j + grow + 1, n)] = True
    else:
        sat[:] = raw
    return any_sat


@numba.njit(cache=True, nogil=True)
def first_gain_row(
    x: np.ndarray, fill: float, base: float, pol: float, thresh: float, hits: np.ndarray,
    out: np.ndarray, single: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """:func:`merged_row` of a row whose first gain has no saturated sample, as
    long as every one of its samples is finite: its positive-going signal
    ``pol * (x - base)`` into ``out`` (every sample's source is then the first
    gain: the caller writes no source row), and rounded to float32 into
    ``single`` unless that is empty (the value ``out.astype(numpy.float32)``
    gives, formed while in a register: the row is not read back for it);
    returns whether every value was finite (else the row is
    :func:`merged_row`'s to write, lower gains filling in, and ``out`` is
    overwritten there).  The same
    pass marks in ``hits`` each :data:`_SCAN_BLOCK` samples where the signal
    exceeds ``thresh`` (the overlap with the next gain is searched only
    there: :func:`overlap_samples`), so that the row is read once and the
    lower gains not at all."""
    n = x.shape[0]
    both = single.size > 0
    bad = 0  # integer reductions and a loop per kind of fill and output: they vectorise best
    for start in range(0, n, _SCAN_BLOCK):
        stop = min(start + _SCAN_BLOCK, n)
        # views, indexed from 0: contiguous vector loads and stores (an index
        # start + j that might be negative is wrapped per value: a gather)
        xb = x[start:stop]
        ob = out[start:stop]
        sb = single[start:stop] if both else single
        hit = 0
        if both and fill == fill:
            for j in range(stop - start):
                v = pol * (sample_value(xb, j, fill) - base)
                ob[j] = v
                sb[j] = np.float32(v)
                bad |= np.int32(not v - v == 0.0)
                hit |= np.int32(v > thresh)
        elif both:
            for j in range(stop - start):
                v = pol * (np.float64(xb[j]) - base)
                ob[j] = v
                sb[j] = np.float32(v)
                bad |= np.int32(not v - v == 0.0)
                hit |= np.int32(v > thresh)
        elif fill == fill:
            for j in range(stop - start):
                v = pol * (sample_value(xb, j, fill) - base)
                ob[j] = v
                bad |= np.int32(not v - v == 0.0)
                hit |= np.int32(v > thresh)
        else:
            for j in range(stop - start):
                v = pol * (np.float64(xb[j]) - base)
                ob[j] = v
                bad |= np.int32(not v - v == 0.0)
                hit |= np.int32(v > thresh)
        hits[start // _SCAN_BLOCK] = hit != 0
    return bad == 0


@numba.njit(cache=True, nogil=True)
def merged_row(
    x0: np.ndarray, x1: np.ndarray, x2: np.ndarray, n_gains: int, fill: np.ndarray,
    base: np.ndarray, pol: np.ndarray, sat: np.ndarray, factor: np.ndarray,
    out: np.ndarray, src: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """One merged row: each gain's positive-going signal ``pol * (x - base)``; per
    sample the first gain (of ``n_gains``, highest first) where it is finite and
    unsaturated, times ``factor`` (1 for the first) into ``out`` and the gain's
    index into ``src``; NaN and -1 where none.  One branch-free pass (it
    vectorises).  Returns whether any sample came from a lower gain (else the
    row's noise is the first gain's at every sample: :func:`merge_rows` writes
    no per-sample noise)."""
    f0, f1, f2 = fill[0], fill[1], fill[2]
    b0, b1, b2 = base[0], base[1], base[2]
    p0, p1, p2 = pol[0], pol[1], pol[2]
    k1, k2 = factor[1], factor[2]
    on1 = n_gains > 1
    on2 = n_gains > 2
    s0, s1, s2 = sat[0], sat[1], sat[2]
    lower = False
    for j in range(x0.shape[0]):
        v = p0 * (sample_value(x0, j, f0) - b0)
        use = ~s0[j] & (v - v == 0.0)
        value = v if use else np.nan
        code = np.int8(0) if use else np.int8(-1)
        v = p1 * (sample_value(x1, j, f1) - b1)
        put = on1 & (code < 0) & ~s1[j] & (v - v == 0.0)
        value = v * k1 if put else value
        code = np.int8(1) if put else code
        lower |= put
        v = p2 * (sample_value(x2, j, f2) - b2)
        put = on2 & (code < 0) & ~s2[j] & (v - v == 0.0)
        value = v * k2 if put else value
        code = np.int8(2) if put else code
        lower |= put
        out[j] = value
        src[j] = code
    return lower


@numba.njit(cache=True, nogil=True, error_model="numpy")
def merge_rows(
    x0: np.ndarray,
    x1: np.ndarray,
    x2: np.ndarray,
    n_gains: int,
    t: np.ndarray,
    t_row: np.ndarray,
    pre_count: np.ndarray,
    stop_us: float,
    min_samples: int,
    n_first: int,
    pol: np.ndarray,
    fill: np.ndarray,
    vmin: np.ndarray,
    vmax: np.ndarray,
    flag: np.ndarray,
    t0: np.ndarray,
    t1: np.ndarray,
    sat_first: np.ndarray,
    sat_stop: np.ndarray,
    guard: int,
    qsig: np.ndarray,
    k_sigma: float,
    nominal: np.ndarray,
    min_overlap: int,
    signal: np.ndarray,
    source: np.ndarray,
    single: np.ndarray,
    floor: np.ndarray,
    code_scale: np.ndarray,
    code_offset: np.ndarray,
    code_single: np.ndarray,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """:func:`~idexdask.analysis.tof.merge_gains` of every event, one row at a time (see there).

    Per gain ``g`` (``x0``, ``x1``, ``x2``, the first ``n_gains`` used; samples
    equal to ``fill[g]`` are missing, a NaN ``fill[g]``: none): the
    :func:`~idexdask.analysis.robust.baseline_sigma` level and sigma (sigma
    replaced by ``qsig`` where that is finite and positive, else never below
    ``floor[g]``, the quantisation noise), the positive-going
    signal ``pol * (x - level)``, its saturated samples (``>= vmax``, ``<= vmin``
    (NaN: none), the quality interval ``[t0, t1]`` where ``flag`` -- the
    samples ``[sat_first, sat_stop)`` where ``sat_first`` is not -1 --, grown
    by ``guard`` samples), the ratio to the next higher gain (``nominal[g]`` when not
    measured) and the merged spectrum.  Every value is computed with the
    operations of the array version, so the results are the same.

    Row ``r``'s times are ``t[t_row[r]]``, read only where ``pre_count[r]`` is
    -1 or a gain's ``flag[g, r]`` is set with ``sat_first[g, r]`` -1
    (``t_row[r]`` may be -1 elsewhere: a formula axis gives the kernel only the
    rows it reads).  The baseline
    samples of row ``r`` are those whose time is below ``stop_us``: the first
    ``pre_count[r]`` where that is not -1 (a rising axis, located without
    reading its times).  Where gain ``g``'s samples are codes
    (``code_scale[g]`` finite: value = ``code * code_scale + code_offset``,
    rounded to float32 where ``code_single``), such a prefix's median and MAD
    come from a histogram of the codes
    (:func:`~idexdask.analysis.selection.code_prefix_stats`, the same values).

    Fills ``signal`` and ``source`` (rows, n; allocated by the caller:
    NumPy maps large arrays on huge pages, which makes them much cheaper to
    write), and ``single`` with ``signal`` rounded to float32 unless it has
    no columns (formed in the pass that writes ``signal``), and returns per
    gain and row ``ratio``, ``status``, ``overlap`` and ``noise``, and per
    row whether any sample came from a lower gain (the
    per-sample noise is then ``noise[source] * ratio[source]``, else the first
    gain's ``noise`` at every sample; no per-sample noise is written here),
    and per row whether every sample came from the first gain (no unusable
    sample: its ``source`` row is left unwritten, all 0).
    """
    rows, n = x0.shape
    ratio = np.ones((n_gains, rows))
    status = np.zeros((n_gains, rows), dtype=np.int8)
    overlap = np.zeros((n_gains, rows), dtype=np.int32)
    noise = np.empty((n_gains, rows))
    base = np.zeros(3)
    factor = np.ones(3)
    lower = np.zeros(rows, dtype=np.bool_)
    first_only = np.zeros(rows, dtype=np.bool_)
    thresholds = np.full(3, np.nan)  # per gain, of its overlap with the next higher one
    # saturated samples of each gain's row; a row without any leaves them all False
    sat = np.zeros((3, n), dtype=np.bool_)
    dirty = np.zeros(3, dtype=np.bool_)
    raw_sat = np.empty(n, dtype=np.bool_)
    pre = np.empty(n, dtype=np.int64)
    vals = np.empty(n)
    pos = np.empty(n, dtype=np.int64)
    buf = np.empty(2 * n)
    counts = np.zeros(CODE_COUNTS, dtype=np.int32)  # kept all zero between rows
    hits = np.empty((n + _SCAN_BLOCK - 1) // _SCAN_BLOCK, dtype=np.bool_)
    own_test = hits[:0]  # overlap_samples tests each block itself
    idx = np.empty(n, dtype=np.int64)
    hv = np.empty(n)
    lv = np.empty(n)
    hl = np.empty(n)
    hh = np.empty(n)
    resid = np.empty(n)
    for r in range(rows):
        # the pre-trigger samples: the first pre_count[r] (a rising formula
        # axis), else those whose time is below stop_us
        prefix = pre_count[r] >= 0
        n_pre = pre_count[r] if prefix else 0
        tr = t[max(t_row[r], 0)]
        if not prefix:
            for j in range(n):
                if tr[j] < stop_us:
                    pre[n_pre] = j
                    n_pre += 1
        for g in range(n_gains):
            q = qsig[g, r]
            need_mad = not (np.isfinite(q) and q > 0)  # else the noise is q
            # the gains' arrays may differ in type: one call per array
            if g == 0:
                level, mad = gain_baseline(x0[r], prefix, n_pre, pre, min_samples, n_first,
                                           fill[0], code_scale[0], code_offset[0],
                                           code_single[0], need_mad, counts, vals, pos,
                                           buf)
            elif g == 1:
                level, mad = gain_baseline(x1[r], prefix, n_pre, pre, min_samples, n_first,
                                           fill[1], code_scale[1], code_offset[1],
                                           code_single[1], need_mad, counts, vals, pos,
                                           buf)
            else:
                level, mad = gain_baseline(x2[r], prefix, n_pre, pre, min_samples, n_first,
                                           fill[2], code_scale[2], code_offset[2],
                                           code_single[2], need_mad, counts, vals, pos,
                                           buf)
            base[g] = level
            noise[g, r] = q if (np.isfinite(q) and q > 0) else max(MAD_TO_SIGMA * mad, floor[g])
            if np.isfinite(vmax[g]) or np.isfinite(vmin[g]) or flag[g, r]:
                if g == 0:
                    dirty[g] = gain_saturation(x0[r], tr, fill[0], vmin[0], vmax[0], flag[0, r],
                                               t0[0, r], t1[0, r], sat_first[0, r],
                                               sat_stop[0, r], guard, raw_sat, sat[0])
                elif g == 1:
                    dirty[g] = gain_saturation(x1[r], tr, fill[1], vmin[1], vmax[1], flag[1, r],
                                               t0[1, r], t1[1, r], sat_first[1, r],
                                               sat_stop[1, r], guard, raw_sat, sat[1])
                else:
                    dirty[g] = gain_saturation(x2[r], tr, fill[2], vmin[2], vmax[2], flag[2, r],
                                               t0[2, r], t1[2, r], sat_first[2, r],
                                               sat_stop[2, r], guard, raw_sat, sat[2])
            elif dirty[g]:
                sat[g, :] = False
                dirty[g] = False
        # the first gain without saturated samples: the merged row is its
        # signal where that is finite everywhere (the lower gains unread),
        # formed in the pass that marks where the overlap with the next lies
        fast = not dirty[0]
        written = False
        for g in range(1, n_gains):
            a = k_sigma * noise[g - 1, r]
            b = k_sigma * noise[g, r] * nominal[g]
            thresholds[g] = np.nan if (np.isnan(a) or np.isnan(b)) else max(a, b)
        if fast:
            written = first_gain_row(x0[r], fill[0], base[0], pol[0], thresholds[1], hits,
                                     signal[r], single[r])
            first_only[r] = written
        # ratios to the next higher gain, from the overlap
        for g in range(1, n_gains):
            thresh = thresholds[g]
            if g == 1:
                m = overlap_samples(x0[r], x1[r], fill[0], fill[1], base[0], base[1], pol[0],
                                    pol[1], sat[0], sat[1], thresh, idx, hv, lv,
                                    hits if fast else own_test)
            else:
                m = overlap_samples(x1[r], x2[r], fill[1], fill[2], base[1], base[2], pol[1],
                                    pol[2], sat[1], sat[2], thresh, idx, hv, lv, own_test)
            slope, c = overlap_ratio(idx, hv, lv, m, n, noise[g, r], hl, hh, resid, buf)
            rr = 1.0 / slope
            good = c >= min_overlap and np.isfinite(rr) and rr > 0
            st = np.int8(0) if good else np.int8(1)
            ratio[g, r] = ratio[g - 1, r] * (rr if good else nominal[g])
            status[g, r] = max(st, status[g - 1, r]) if g > 1 else st
            overlap[g, r] = c
            factor[g] = ratio[g, r]
        # the merged row: highest unsaturated gain, scaled to the first
        if not written:
            lower[r] = merged_row(x0[r], x1[r], x2[r], n_gains, fill, base, pol, sat, factor,
                                  signal[r], source[r])
            if single.shape[1]:
                row, row32 = signal[r], single[r]
                for j in range(n):
                    row32[j] = np.float32(row[j])
    return ratio, status, overlap, noise, lower, first_only
