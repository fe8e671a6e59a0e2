"""Robust statistics of signal quality: baseline level and noise, runs, quantum.

Array-namespace functions (NumPy or CuPy) and the compiled per-row selections
that the host path uses for the baseline window's median and MAD.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numba
import numpy as np

from idexdask.analysis.robust import MAD_TO_SIGMA, gather_finite, median_inplace, nanmedian_rows
from idexdask.analysis.signal_quality.dataset import FormulaTimes
from idexdask.analysis.xp import errstate, get_namespace, to_numpy

__all__ = [
    "baseline_mask",
    "baseline_noise",
    "baseline_noise_host",
    "detect_quantum",
    "first_last",
    "interpolated_mad",
    "long_runs",
    "nan_median",
    "times_at",
    "whole_trace_stats",
]


def long_runs(mask: Any, k: int) -> Any:
    """Samples that belong to a run of at least ``k`` consecutive True values.

    Vectorised along the last axis with two cumulative sums (O(n), no loop).

    Parameters
    ----------
    mask : array of bool, (..., n)
        Condition per sample.
    k : int
        Minimum run length, >= 1.

    Returns
    -------
    array of bool, (..., n)
        True where the sample lies in such a run.
    """
    xp = get_namespace(mask)
    mask = xp.asarray(mask, dtype=bool)
    n = mask.shape[-1]
    if k <= 1:
        return mask.copy()
    if n < k:
        return xp.zeros(mask.shape, dtype=bool)
    if xp is np:  # compiled run-length scan on the host (one pass, no int64 temporaries)
        flat = np.ascontiguousarray(mask).reshape(-1, n)
        return _long_runs_rows(flat, int(k)).reshape(mask.shape)
    lead = mask.shape[:-1]
    zeros = xp.zeros((*lead, 1), dtype=xp.int64)
    cs = xp.concatenate([zeros, xp.cumsum(mask, axis=-1, dtype=xp.int64)], axis=-1)
    full = (cs[..., k:] - cs[..., :-k]) == k  # (..., n-k+1): window from i is all True
    cf = xp.concatenate([zeros, xp.cumsum(full, axis=-1, dtype=xp.int64)], axis=-1)
    j = xp.arange(n)
    hi = xp.minimum(j, n - k) + 1
    lo = xp.maximum(j - k + 1, 0)
    return (cf[..., hi] - cf[..., lo]) > 0


@numba.njit(cache=True, nogil=True)
def _long_runs_rows(mask: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`long_runs` of each row of a 2-D C-contiguous bool array."""
    rows, n = mask.shape
    out = np.zeros((rows, n), dtype=np.bool_)
    for r in range(rows):
        start = 0
        run = 0
        for j in range(n):
            if mask[r, j]:
                if run == 0:
                    start = j
                run += 1
            else:
                if run >= k:
                    out[r, start:j] = True
                run = 0
        if run >= k:
            out[r, start:n] = True
    return out


def interpolated_mad(dev: Any, step: float = 1.0) -> Any:
    """Median of absolute deviations on a lattice, interpolated within its cell.

    The plain median of integer data moves in whole (or half) steps, so
    ``1.4826 * MAD`` of a 10-bit baseline can only be 0.74, 1.48, 2.22, ... DN.  The
    grouped-data median treats each lattice value ``c`` as the cell
    ``[c - step/2, c + step/2)`` (``[0, step/2)`` for ``c = 0``: the deviations are
    folded at zero) holding its ``n_c`` samples spread uniformly, and returns
    ``lower + width * (n/2 - n_below) / n_c``.  Rows whose middle falls in an
    empty cell keep the plain median.

    Parameters
    ----------
    dev : array, (n_events, m)
        Absolute deviations from the (plain) median, same units as ``step``; NaN
        for samples to ignore.  Their lattice offset (0 or ``step/2``) is taken per
        row from the smallest deviation.
    step : float
        Quantisation step (1 DN).

    Returns
    -------
    array, (n_events,)
        Interpolated median absolute deviation.
    """
    xp = get_namespace(dev)
    plain = nan_median(xp, dev, axis=1)
    if dev.shape[-1] == 0:
        return plain
    ok = ~xp.isnan(dev)
    n = ok.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        offset = xp.mod(xp.nanmin(xp.where(ok, dev, xp.inf), axis=1), step)
    with errstate(xp, invalid="ignore"):
        offset = xp.where(xp.isfinite(offset), offset, 0.0)
        centre = offset + step * xp.floor((plain - offset) / step + 0.5)
        lower = xp.maximum(centre - step / 2.0, 0.0)
        upper = centre + step / 2.0
        d = xp.where(ok, dev, xp.inf)
        below = (d < lower[:, None] - step * 1e-6).sum(axis=1)
        inside = (xp.abs(d - centre[:, None]) < step / 4.0).sum(axis=1)
        interp = lower + (upper - lower) * (n / 2.0 - below) / xp.maximum(inside, 1)
    good = (inside > 0) & (n > 0) & xp.isfinite(plain)
    return xp.where(good, interp, plain)


def detect_quantum(values: Any, *, tolerance: float = 0.05) -> float | None:
    """Quantisation step of digitised float data, or None if they look continuous.

    Scope captures in volts are ``gain * code - offset``; their distinct values sit
    on a lattice whose step may be a multiple of the nominal gain (a 12-bit ADC in
    16-bit words steps by 16 codes).  The step is the smallest gap between
    distinct values when every gap is within ``tolerance`` of an integer multiple
    of it.

    Parameters
    ----------
    values : array_like
        Samples (NaN ignored), any shape.
    tolerance : float
        Allowed deviation of gap / step from an integer.

    Returns
    -------
    float or None
        The step (units of ``values``), or None.
    """
    v = to_numpy(values).ravel()
    v = np.unique(v[np.isfinite(v)])
    if v.size < 3:
        return None
    gaps = np.diff(v)
    q = float(gaps.min())
    if not q > 0:
        return None
    ratio = gaps / q
    if np.any(np.abs(ratio - np.round(ratio)) > tolerance):
        return None
    return float(np.median(gaps / np.round(ratio)))


def first_last(mask: Any) -> tuple[Any, Any, Any]:
    """Index of the first and last True per row, and whether any."""
    xp = get_namespace(mask)
    n = mask.shape[-1]
    anyv = mask.any(axis=-1)
    first = xp.argmax(mask, axis=-1)
    last = n - 1 - xp.argmax(mask[..., ::-1], axis=-1)
    return first, last, anyv


def times_at(t: Any | None, idx: Any, ok: Any) -> Any:
    xp = get_namespace(idx)
    if t is None:
        return xp.full(idx.shape, xp.nan)
    if isinstance(t, FormulaTimes):
        return np.where(ok, t.at(idx), np.nan)
    if t.ndim == 1:
        vals = t[idx]
    else:
        vals = xp.take_along_axis(t, idx[:, None], axis=1)[:, 0]
    return xp.where(ok, vals, xp.nan)


def nan_median(xp: Any, a: Any, axis: int = -1) -> Any:
    if xp is np and getattr(a, "ndim", 0) == 2 and axis in (1, -1) and a.shape[1] > 0:
        # compiled selection per row: the same values as numpy.nanmedian, which
        # loops over rows in Python when NaN are present
        return nanmedian_rows(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xp.nanmedian(a, axis=axis)


def baseline_mask(
    t: Any | None,
    valid: Any,
    window_us: tuple[float, float],
    *,
    fallback_fraction: float = 0.1,
    min_samples: int = 4,
) -> tuple[Any, Any]:
    """Samples of the baseline window per event, with the first-N% fallback.

    Parameters
    ----------
    t : array, (n_events, n) or (n,), or None
        Sample times, µs from the trigger.  None: always the fallback.
    valid : array of bool, (n_events, n)
        Not-missing mask.
    window_us : (float, float)
        ``[start, stop)`` µs.
    fallback_fraction : float
        Fraction of the trace (from its start) used when the window is not covered.
    min_samples : int
        Fewest valid samples in the window for it to count as covered.

    Returns
    -------
    mask : array of bool, (n_events, n)
        Baseline samples (valid ones only).
    covered : array of bool, (n_events,)
        Whether the configured window was used.
    """
    xp = get_namespace(valid)
    n_events, n = valid.shape
    head = max(1, int(math.ceil(fallback_fraction * n)))
    fallback = xp.zeros((n_events, n), dtype=bool)
    fallback[:, :head] = True
    fallback &= valid
    if t is None or n == 0:
        return fallback, xp.zeros(n_events, dtype=bool)
    t2 = t if t.ndim == 2 else xp.broadcast_to(t[None, :], (n_events, n))
    w0, w1 = window_us
    with errstate(xp, invalid="ignore"):
        inwin = (t2 >= w0) & (t2 < w1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tmin = xp.nanmin(t2, axis=1) if n_events else xp.zeros(0)
        tmax = xp.nanmax(t2, axis=1) if n_events else xp.zeros(0)
    spans = (tmin <= w0) & (tmax >= w1)
    win = inwin & valid
    covered = spans & (win.sum(axis=1) >= min_samples)
    return xp.where(covered[:, None], win, fallback), covered


def baseline_noise(xp: Any, xb: Any, step: float | None, n_events: int) -> tuple[Any, Any]:
    """Median and noise (1.4826 x MAD, std where that is 0) over the window samples ``xb``."""
    if xb.shape[1] == 0:
        return xp.full(n_events, xp.nan), xp.full(n_events, xp.nan)
    baseline = nan_median(xp, xb, axis=1)
    with errstate(xp, invalid="ignore"):
        dev_b = xp.abs(xb - baseline[:, None])
        mad = interpolated_mad(dev_b, step) if step is not None else nan_median(xp, dev_b, axis=1)
        noise = MAD_TO_SIGMA * mad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            std = xp.nanstd(xb, axis=1)
        noise = xp.where(noise == 0, std, noise)
    return baseline, noise


def baseline_noise_host(xb: np.ndarray, step: float | None, n_events: int) -> tuple[Any, Any]:
    """:func:`baseline_noise` on NumPy window samples: the per-row selections compiled.

    The median, the median absolute deviation and the counts of
    :func:`interpolated_mad` come from :func:`_window_rows_stats`; the per-event
    arithmetic between them is the same NumPy code, and the standard deviation
    is taken only for the events whose MAD is 0 (the only ones that use it).
    """
    if xb.shape[1] == 0:
        return np.full(n_events, np.nan), np.full(n_events, np.nan)
    xb = np.ascontiguousarray(xb)
    baseline, plain, dmin, n = _window_rows_stats(xb)
    with np.errstate(invalid="ignore"):
        if step is None:
            mad = plain
        else:
            offset = np.mod(dmin, step)
            offset = np.where(np.isfinite(offset), offset, 0.0)
            centre = offset + step * np.floor((plain - offset) / step + 0.5)
            lower = np.maximum(centre - step / 2.0, 0.0)
            upper = centre + step / 2.0
            below, inside = _window_rows_counts(
                xb, baseline, lower - step * 1e-6, centre, step / 4.0
            )
            interp = lower + (upper - lower) * (n / 2.0 - below) / np.maximum(inside, 1)
            good = (inside > 0) & (n > 0) & np.isfinite(plain)
            mad = np.where(good, interp, plain)
        noise = MAD_TO_SIGMA * mad
        zero = np.nonzero(noise == 0)[0]
        if zero.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                noise[zero] = np.nanstd(xb[zero], axis=1)
    return baseline, noise


@numba.njit(cache=True, nogil=True)
def _window_rows_stats(
    xb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row of ``xb`` (NaN ignored): median, median of ``|x - median|`` (NaN
    ignored), smallest such deviation (inf for none) and the number of them."""
    rows, m = xb.shape
    med = np.empty(rows)
    mad = np.empty(rows)
    dmin = np.empty(rows)
    count = np.zeros(rows, dtype=np.int64)
    buf = np.empty(2 * m)
    for r in range(rows):
        k = gather_finite(xb, r, buf)
        b = median_inplace(buf, k) if k else np.nan
        med[r] = b
        kk = 0
        lo = np.inf
        for j in range(m):
            d = abs(xb[r, j] - b)
            if not np.isnan(d):
                buf[kk] = d
                kk += 1
                if d < lo:
                    lo = d
        mad[r] = median_inplace(buf, kk) if kk else np.nan
        dmin[r] = lo
        count[r] = kk
    return med, mad, dmin, count


@numba.njit(cache=True, nogil=True)
def _window_rows_counts(
    xb: np.ndarray, baseline: np.ndarray, below_lim: np.ndarray, centre: np.ndarray, half: float
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row, deviations ``|x - baseline|`` below ``below_lim`` and within ``half`` of
    ``centre`` (:func:`interpolated_mad`'s counts; NaN deviations count as +inf)."""
    rows, m = xb.shape
    below = np.zeros(rows, dtype=np.int64)
    inside = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        nb = 0
        ni = 0
        for j in range(m):
            d = abs(xb[r, j] - baseline[r])
            if np.isnan(d):
                d = np.inf
            nb += d < below_lim[r]
            ni += abs(d - centre[r]) < half
        below[r] = nb
        inside[r] = ni
    return below, inside


def whole_trace_stats(xp: Any, xl: Any) -> tuple[Any, Any]:
    """Median and 1.4826 x MAD of whole rows (events with no baseline sample)."""
    bl = nan_median(xp, xl, axis=1)
    with errstate(xp, invalid="ignore"):
        nl = MAD_TO_SIGMA * nan_median(xp, xp.abs(xl - bl[:, None]), axis=1)
    return bl, nl
