"""The compiled targeted search: every event's targets in one call.

:func:`idexdask.composition.targeted.targeted_search` runs the method of
:mod:`idexdask.composition.targeted` (its steps 2-6, the target times being
computed by the caller) through :func:`search_events`.  Done with NumPy per
event and target, each of the ~10 targets of an event cost a few dozen small
array operations (medians, masks, searchsorted, one line profile per
neighbour): ~0.1 ms of interpreter work per target, most of the search's time
on flight campaigns of thousands of events.  The kernel does the same steps
with the same expressions in the same order:

* the filter width: the median of the same lines' sigmas (sorted, the middle
  value or the mean of the two middle values);
* the neighbour profiles: each neighbour line's EMG (or Gaussian) profile once
  over the stretches of the targets it reaches, with the expressions of
  :func:`~idexdask.analysis.lineshapes.emg` and
  :func:`~idexdask.analysis.lineshapes.gaussian` (through
  :func:`~idexdask.analysis.fitting.emg_kernels.emg_profile` and SciPy's C
  ``erfcx``), subtracted from the spectrum line by line in the same order;
* the null centres as :func:`numpy.linspace` places them, the matched filter
  (:func:`~idexdask.composition.matched_filter.filter_areas_kernel`) and the
  robust spread of the null areas.

Its values therefore differ from the NumPy code's
(:func:`~idexdask.composition.targeted.targeted_search_reference`) only where
libm's ``exp`` and NumPy's CPU-specific SIMD ``exp`` round a last bit apart in
a profile or a filter weight (``tests/unit/composition/test_targeted_kernel.py``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from idexdask.analysis.fitting.emg_kernels import emg_profile
from idexdask.composition.matched_filter import filter_areas_kernel
from idexdask.sorted_search import count_below

__all__ = ["search_events"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_MAD_TO_SIGMA = 1.4826


@numba.njit(cache=True, nogil=True)
def _median(values, n):  # pragma: no cover - compiled
    """``targeted._median`` of ``values[:n]`` (n >= 1): the middle value(s), sorted."""
    ordered = np.sort(values[:n])
    lo = (n - 1) // 2
    hi = n // 2
    if lo == hi:
        return ordered[lo] / 1.0
    return (ordered[lo] + ordered[hi]) / 2.0


@numba.njit(cache=True, nogil=True)
def _first_above(x, value):  # pragma: no cover - compiled
    """``numpy.searchsorted(x, value, side="right")`` for increasing ``x`` (NaN last)."""
    lo, hi = 0, x.size
    while lo < hi:
        mid = (lo + hi) // 2
        if x[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _line_value(scipy_erfcx, xj, area, center, sigma, gamma):  # pragma: no cover - compiled
    """``targeted._line_profile`` at one time: EMG, Gaussian (``gamma`` NaN), 0 if not finite."""
    u = (xj - center) / sigma
    if math.isfinite(gamma):
        _, h = emg_profile(scipy_erfcx, u, gamma * sigma)
        value = 0.5 * area * gamma * h
    else:
        value = area / (_SQRT_2PI * sigma) * math.exp(-0.5 * u * u)
    return value if math.isfinite(value) else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def search_events(scipy_erfcx, time, signal, sigma, target_time, lines, bounds, line_center,
                  line_sigma, line_gamma, line_area, good, width_reach, null_reach,
                  null_positions, out_width, out_area, out_err, out_white
                  ):  # pragma: no cover - compiled
    """The targeted search of every event with target times (steps 2-6 of the method).

    Parameters
    ----------
    scipy_erfcx : int
        Address of SciPy's C ``erfcx`` (0: the package's compiled one).
    time : numpy.ndarray, shape (1 or E, S)
        Sample times, µs, increasing along each row (NaN after a short record).
    signal : numpy.ndarray, shape (E, S)
        Merged spectra (float32 or float64).
    sigma : numpy.ndarray, shape (E, S) or (E, 1)
        Per-sample noise sigma, or one per event.
    target_time : numpy.ndarray, shape (E, M)
        Calibrated time of each target, µs; NaN where not searched.
    lines, bounds : numpy.ndarray
        Indices of the lines of event ``e`` (ascending) in
        ``lines[bounds[e]:bounds[e + 1]]``.
    line_center, line_sigma, line_gamma, line_area : numpy.ndarray
        The fitted lines (float64): centre and sigma µs, tail rate 1/µs (NaN: Gaussian), area.
    good : numpy.ndarray of bool
        Converged lines with a finite centre and sigma.
    width_reach, null_reach : float
        µs.
    null_positions : int
    out_width, out_area, out_err, out_white : numpy.ndarray, shape (E, M)
        Filled where a target is searched (NaN on entry): filter width, area,
        measured and white-noise uncertainty.
    """
    n_targets = target_time.shape[1]
    per_event_noise = sigma.shape[1] == 1
    centres = np.empty(null_positions + 1)
    areas = np.empty(null_positions + 1)
    errs = np.empty(null_positions + 1)
    null = np.empty(null_positions)
    for e in range(target_time.shape[0]):
        x = time[e if time.shape[0] > 1 else 0]
        y = signal[e]
        a, b = bounds[e], bounds[e + 1]
        mine = lines[a:b]
        n_mine = mine.size
        # step 2: the widths; step 3: each target's stretch and neighbour lines
        widths_all = np.empty(n_mine)
        n_all = 0
        for i in mine:
            if good[i]:
                widths_all[n_all] = line_sigma[i]
                n_all += 1
        near = np.empty(n_mine)
        t_width = np.full(n_targets, np.nan)
        t_lo = np.zeros(n_targets, np.int64)
        t_hi = np.zeros(n_targets, np.int64)
        t_sub = np.zeros((n_targets, max(n_mine, 1)), np.bool_)
        searched = 0
        for j in range(n_targets):
            t_m = target_time[e, j]
            if not math.isfinite(t_m):
                continue
            n_near = 0
            for i in mine:
                if good[i] and abs(line_center[i] - t_m) <= width_reach:
                    near[n_near] = line_sigma[i]
                    n_near += 1
            if n_near:
                width = _median(near, n_near)
            elif n_all:
                width = _median(widths_all, n_all)
            else:
                continue
            if not (math.isfinite(width) and width > 0):
                continue
            reach = null_reach + 4.0 * width
            lo = count_below(x, x.size, t_m - reach)
            hi = _first_above(x, t_m + reach)
            first = x[lo] if hi > lo else math.nan
            last = x[hi - 1] if hi > lo else math.nan
            for k in range(n_mine):
                i = mine[k]
                # neighbours out, a line at t_m itself stays: it is the signal looked for
                use = math.isfinite(line_area[i]) and abs(line_center[i] - t_m) > 3.0 * width
                if use and hi > lo:
                    # a line ending 30 (sigma + tail) before the stretch or starting
                    # 30 sigma after it adds less than exp(-30) of its height there
                    tail = 1.0 / line_gamma[i] if math.isfinite(line_gamma[i]) else 0.0
                    extent = 30.0 * (line_sigma[i] + tail)
                    use = (line_center[i] > first - extent
                           and line_center[i] < last + 30.0 * line_sigma[i])
                t_sub[j, k] = use
            t_width[j], t_lo[j], t_hi[j] = width, lo, hi
            searched += 1
        if searched == 0:
            continue
        # each neighbour's profile once, over the stretches of the targets it reaches
        p_lo = np.full(max(n_mine, 1), x.size, np.int64)
        p_hi = np.zeros(max(n_mine, 1), np.int64)
        for j in range(n_targets):
            if not math.isfinite(t_width[j]):
                continue
            for k in range(n_mine):
                if t_sub[j, k]:
                    p_lo[k] = min(p_lo[k], t_lo[j])
                    p_hi[k] = max(p_hi[k], t_hi[j])
        p_start = np.zeros(max(n_mine, 1) + 1, np.int64)
        for k in range(n_mine):
            p_start[k + 1] = p_start[k] + max(p_hi[k] - p_lo[k], 0)
        profile = np.empty(p_start[n_mine])
        for k in range(n_mine):
            i = mine[k]
            # views indexed from 0: contiguous loads and stores (an index
            # ``start + q`` is wrapped per value and compiles to gathers)
            if p_hi[k] <= p_lo[k]:
                continue
            xk = x[p_lo[k]:p_hi[k]]
            pk = profile[p_start[k]:p_start[k + 1]]
            for q in range(xk.size):
                pk[q] = _line_value(
                    scipy_erfcx, xk[q], line_area[i], line_center[i], line_sigma[i],
                    line_gamma[i])
        # steps 4-6 per target
        for j in range(n_targets):
            width = t_width[j]
            if not math.isfinite(width):
                continue
            t_m = target_time[e, j]
            lo, hi = t_lo[j], t_hi[j]
            out_width[e, j] = width
            if hi <= lo:  # nothing recorded around t_m: no estimate
                continue
            n = hi - lo
            xs = np.empty(n)
            resid = np.empty(n)
            ws = np.empty(n)
            x_j = x[lo:hi]  # views indexed from 0: contiguous loads
            y_j = y[lo:hi]
            s_j = sigma[e, 0:1] if per_event_noise else sigma[e, lo:hi]
            for q in range(n):
                xs[q] = x_j[q]
                ws[q] = 1.0 / s_j[0 if per_event_noise else q]
                resid[q] = 0.0
            for k in range(n_mine):
                if t_sub[j, k]:
                    off = p_start[k] + lo - p_lo[k]
                    prof = profile[off:off + n]
                    for q in range(n):
                        resid[q] += prof[q]
            for q in range(n):
                resid[q] = y_j[q] - resid[q]
            # the null: the same filter away from t_m and from every fitted line
            centres[0] = t_m
            m = 1
            start = t_m - null_reach
            stop = t_m + null_reach
            step = (stop - start) / max(null_positions - 1, 1)
            for p in range(null_positions):
                # numpy.linspace: start + p * step, the last one ``stop`` itself
                c = p * step + start if p == 0 or p < null_positions - 1 else stop
                keep = abs(c - t_m) > 6.0 * width
                for i in mine:
                    if abs(c - line_center[i]) <= 6.0 * width:
                        keep = False
                if keep:
                    centres[m] = c
                    m += 1
            areas[:m] = np.nan
            errs[:m] = np.nan
            filter_areas_kernel(xs, resid, ws, centres[:m], width, areas[:m], errs[:m])
            area, err_white = areas[0], errs[0]
            n_null = 0
            for p in range(1, m):
                if math.isfinite(areas[p]):
                    null[n_null] = areas[p]
                    n_null += 1
            err = math.nan
            if n_null >= 10:
                centre = _median(null, n_null)
                for p in range(n_null):
                    null[p] = abs(null[p] - centre)
                err = _MAD_TO_SIGMA * _median(null, n_null)
                if err_white > err:
                    err = err_white
            out_area[e, j] = area
            out_err[e, j] = err
            out_white[e, j] = err_white
