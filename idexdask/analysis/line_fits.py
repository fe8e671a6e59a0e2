"""Batched EMG line fits of the peaks found in time-of-flight spectra.

All events are handled together:

* **Windows.**  Each peak (:class:`~idexdask.analysis.peaks.PeakCandidates`)
  gets a fit window ``[t_peak - window_left_us, t_peak + window_right_us]`` cut
  at the midpoint to a neighbouring peak of the same event; windows are
  gathered into one ``(n_peaks, width)`` array padded with NaN (the fitter
  ignores NaN points).
* **Fit.**  One :func:`~idexdask.analysis.fitting.fit_batch` call fits an EMG
  plus constant to every window of every event, weighted by the event's noise,
  so ``chisq`` is a true chi-square (about the number of points for a good fit).
* **Classification.**  Each fit gets a :class:`~idexdask.analysis.line_status.LineStatus`
  and a :class:`~idexdask.analysis.line_status.LineShape`.

The EMG ``center`` is the centre of its Gaussian part (µs), ``amplitude`` its
area (signal units x µs), ``sigma`` the Gaussian width (µs) and ``gamma`` the
exponential tail rate (1/µs), as in :func:`idexdask.analysis.lineshapes.emg`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from idexdask._logging import get_logger
from idexdask.analysis.fitting import FitStatus, batch_model, fit_batch_on
from idexdask.analysis.fitting.emg_kernels import emg_profile
from idexdask.analysis.line_status import (
    SIGMA_MIN_SAMPLES,
    TAU_MIN_SAMPLES,
    LineShape,
    LineStatus,
)
from idexdask.analysis.lineshapes import GAMMA_MAX, emg, profiles_vanish
from idexdask.analysis.peaks import PeakCandidates
from idexdask.analysis.robust import quiet_nan_warnings
from idexdask.analysis.sample_step import sample_step
from idexdask.analysis.special import scipy_erfcx_address

__all__ = ["LineFits", "classify_lines", "fit_lines", "line_heights"]

_log = get_logger(__name__)

_HEIGHT_GRID = 64  # points of the fine grid on which the fitted line height is taken
_DEBLEND_BLOCK = 64  # refitted lines whose neighbours' profiles are evaluated at once


@dataclass
class LineFits:
    """Fitted EMG lines, one row per peak.

    Attributes
    ----------
    center, center_err : numpy.ndarray
        Gaussian centre, µs.
    sigma, gamma : numpy.ndarray
        Gaussian width (µs) and tail rate (1/µs).
    area, area_err : numpy.ndarray
        Line area above the fitted constant baseline, signal units x µs.
    height : numpy.ndarray
        Maximum of the fitted line (baseline excluded), signal units.
    offset : numpy.ndarray
        Fitted local constant baseline, signal units.
    chisq, redchi : numpy.ndarray
        Noise-weighted chi-square and chi-square per degree of freedom.
    status : numpy.ndarray
        :class:`LineStatus` codes, int8.
    window_start, window_stop : numpy.ndarray
        Fit window actually used, µs.
    shape : numpy.ndarray
        :class:`LineShape` codes, int8.
    mode_centred : numpy.ndarray
        Gaussian fallbacks of unconverged EMG fits: centre at the line's mode (bool).
    """

    center: np.ndarray
    center_err: np.ndarray
    sigma: np.ndarray
    gamma: np.ndarray
    area: np.ndarray
    area_err: np.ndarray
    height: np.ndarray
    offset: np.ndarray
    chisq: np.ndarray
    redchi: np.ndarray
    status: np.ndarray
    window_start: np.ndarray
    window_stop: np.ndarray
    shape: np.ndarray
    mode_centred: np.ndarray


def _windows(
    cand: PeakCandidates, t: np.ndarray, step: np.ndarray, settings: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """First and last sample index (inclusive) of every fit window.

    ``step`` is :func:`sample_step` of ``t`` (n_events,), µs.
    """
    n = t.shape[1]
    ev, ix = cand.event, cand.index
    dt = step[ev]
    left = np.rint(settings["window_left_us"] / dt).astype(np.int64)
    right = np.rint(settings["window_right_us"] / dt).astype(np.int64)
    start = ix - left
    stop = ix + right
    # cut at the midpoint to a neighbouring peak of the same event (automatic windows)
    same_next = np.zeros(ix.size, bool)
    same_next[:-1] = ev[1:] == ev[:-1]
    mid = (ix[:-1] + ix[1:]) // 2
    nxt = np.full(ix.size, n - 1)
    prv = np.zeros(ix.size, np.int64)
    nxt[:-1] = np.where(same_next[:-1], mid, n - 1)
    prv[1:] = np.where(same_next[:-1], mid + 1, 0)
    auto = ~cand.manual | ~np.isfinite(cand.window_start)
    stop = np.where(auto, np.minimum(stop, nxt), stop)
    start = np.where(auto, np.maximum(start, prv), start)
    # explicit windows (manual overrides), µs -> samples
    explicit = np.isfinite(cand.window_start) & np.isfinite(cand.window_stop)
    if np.any(explicit):
        e = np.nonzero(explicit)[0]
        te = t[ev[e]]
        start[e] = np.argmax(te >= cand.window_start[e, None], axis=1)
        stop[e] = n - 1 - np.argmax(te[:, ::-1] <= cand.window_stop[e, None], axis=1)
    return np.clip(start, 0, n - 1), np.clip(stop, 0, n - 1)


def fit_lines(
    y: np.ndarray,
    t: np.ndarray,
    noise: np.ndarray,
    cand: PeakCandidates,
    settings: Mapping[str, Any],
    *,
    step: np.ndarray | None = None,
) -> LineFits:
    """Fit an EMG plus constant to every peak window of every event in one batch.

    Parameters
    ----------
    y : numpy.ndarray
        Baseline-subtracted, positive-going spectra (n_events, n_samples), NaN
        where missing or saturated in every gain.
    t : numpy.ndarray
        Sample times (n_events, n_samples), µs.
    noise : numpy.ndarray
        Noise sigma of ``y``, signal units: per event (n_events,) or per sample
        (n_events, n_samples) (a merged spectrum is noisier where a lower gain
        was scaled in); the fit weights are ``1/noise``.
    cand : PeakCandidates
        Peaks to fit.
    settings : mapping
        The ``peaks`` section (``window_left_us``, ``window_right_us``,
        ``max_iterations``).
    step : numpy.ndarray, optional
        :func:`sample_step` of ``t`` (n_events,), µs; computed when not given.

    Returns
    -------
    LineFits
        One row per candidate; NaN parameters and a status for windows that could
        not be fitted (never raises on bad data).
    """
    m = cand.size
    if m == 0:
        z = np.zeros(0)
        return LineFits(
            *(z.copy() for _ in range(10)),
            np.zeros(0, np.int8),
            z.copy(),
            z.copy(),
            np.zeros(0, np.int8),
            np.zeros(0, bool),
        )
    if step is None:
        step = sample_step(t)  # once: a median of every event's time steps
    start, stop = _windows(cand, t, step, settings)
    fits = _fit_classes(y, t, step, noise, cand, start, stop, settings)
    return _deblend(y, t, step, noise, cand, start, stop, settings, fits)


def _deblend(
    y: np.ndarray,
    t: np.ndarray,
    step: np.ndarray,
    noise: np.ndarray,
    cand: PeakCandidates,
    start: np.ndarray,
    stop: np.ndarray,
    settings: Mapping[str, Any],
    fits: LineFits,
) -> LineFits:
    """Refit the unconverged lines with their neighbours' fitted profiles removed.

    A window is cut at the midpoint to a neighbouring line; a weak line on the
    tail of a strong one then sees that tail as data its constant baseline
    cannot follow, and its centre runs to the window's edge.  Each line that
    did not converge is fitted again on its window with the fitted profiles of
    the other lines of its event subtracted (same model, bounds and
    convergence criteria), and the refit is kept where it converged.  Only the
    event's own lines enter, so an event's result never depends on the others.
    """
    bad = np.flatnonzero(
        (fits.status == FitStatus.MAX_ITERATIONS) | (fits.status == FitStatus.HIT_BOUND)
    )
    if bad.size == 0:
        return fits
    ev = cand.event
    usable = (fits.status <= FitStatus.HIT_BOUND) | (fits.status >= LineStatus.SPIKE)
    usable &= np.isfinite(fits.area) & np.isfinite(fits.center) & np.isfinite(fits.sigma)
    # with the neighbours removed, the window may reach halfway further towards
    # them: a shoulder's centre lies before the midpoint its window was cut at
    n = y.shape[1]
    first = np.maximum(start[bad] - (cand.index[bad] - start[bad]) // 2, 0)
    last = np.minimum(stop[bad] + (stop[bad] - cand.index[bad]) // 2, n - 1)
    # each refitted line's window cut out of its event (one row per line, its
    # first sample at column 0), not the whole spectrum
    cols = np.minimum(first[:, None] + np.arange(int(np.max(last - first)) + 1), n - 1)
    rows_y = np.array(y[ev[bad][:, None], cols], dtype=float)
    rows_t = t[ev[bad][:, None], cols]
    noise = np.asarray(noise, dtype=float)
    rows_noise = noise[ev[bad][:, None], cols] if noise.ndim == 2 else noise[ev[bad]]
    any_removed = _remove_neighbours(rows_y, rows_t, last - first + 1, bad, ev, usable, fits)
    bad, first, last = bad[any_removed], first[any_removed], last[any_removed]
    if bad.size == 0:
        return fits
    sub = cand.take(bad)
    sub = PeakCandidates(
        event=np.arange(bad.size, dtype=np.int64),
        index=sub.index - first,
        prominence=sub.prominence,
        manual=sub.manual,
        window_start=sub.window_start,
        window_stop=sub.window_stop,
        center_guess=sub.center_guess,
    )
    refit = _fit_classes(
        rows_y[any_removed], rows_t[any_removed], step[ev[bad]],
        rows_noise[any_removed], sub, np.zeros(bad.size, np.int64), last - first, settings,
    )  # fmt: skip
    better = refit.status == FitStatus.CONVERGED
    if not better.any():
        return fits
    columns = {}
    for name in LineFits.__dataclass_fields__:
        column = getattr(fits, name).copy()
        column[bad[better]] = getattr(refit, name)[better]
        columns[name] = column
    _log.debug("deblend: %d of %d unconverged lines converged", better.sum(), bad.size)
    return LineFits(**columns)


def _remove_neighbours(
    rows_y: np.ndarray,
    rows_t: np.ndarray,
    length: np.ndarray,
    bad: np.ndarray,
    ev: np.ndarray,
    usable: np.ndarray,
    fits: LineFits,
) -> np.ndarray:
    """Subtract from each refitted line's window the fitted profiles of its event's other lines.

    ``rows_y`` (one row per line of ``bad``, its window's ``length`` first
    samples used; times ``rows_t``) is updated in place.  The profiles of all
    (line, neighbour) pairs of a block of lines are evaluated at once and added
    to each window's total neighbour by neighbour in event order: the sums of
    one loop per line, the same values; neighbours whose profiles are exactly
    +0 on a window (:func:`~idexdask.analysis.lineshapes.profiles_vanish`)
    add nothing to it and are left out.  Returns whether each line had a
    neighbour to remove (vanishing ones included).
    """
    from idexdask.analysis.lineshapes import gaussian

    others = [np.flatnonzero((ev == ev[k]) & usable & (np.arange(ev.size) != k)) for k in bad]
    count = np.array([o.size for o in others], dtype=np.int64)
    if count.sum():  # neighbours whose profiles are exactly 0 on a window add nothing to it
        pair_row = np.repeat(np.arange(bad.size), count)
        pair_line = np.concatenate(others)
        with np.errstate(invalid="ignore"), quiet_nan_warnings():
            used = np.where(np.arange(rows_t.shape[1])[None, :] < length[:, None], rows_t, np.nan)
            t_lo, t_hi = np.nanmin(used, axis=1), np.nanmax(used, axis=1)
        shown = np.where(fits.shape[pair_line] == LineShape.EMG, fits.gamma[pair_line], np.nan)
        vanish = profiles_vanish(t_lo[pair_row], t_hi[pair_row], fits.area[pair_line],
                                 fits.center[pair_line], fits.sigma[pair_line], shown)
        others = np.split(pair_line[~vanish], np.cumsum(np.bincount(
            pair_row[~vanish], minlength=bad.size))[:-1])  # fmt: skip
    near = np.array([o.size for o in others], dtype=np.int64)
    for r0 in range(0, bad.size, _DEBLEND_BLOCK):
        rows = np.arange(r0, min(r0 + _DEBLEND_BLOCK, bad.size))
        depth = int(near[rows].max())
        if depth == 0:
            continue
        idx = np.zeros((rows.size, depth), dtype=np.int64)
        for i, r in enumerate(rows):
            idx[i, : near[r]] = others[r]
        present = np.arange(depth)[None, :] < near[rows, None]
        width = int(length[rows].max())
        x = rows_t[rows, None, :width]
        area, center, sigma = (getattr(fits, f)[idx][:, :, None]
                               for f in ("area", "center", "sigma"))  # fmt: skip
        with np.errstate(all="ignore"):
            prof = np.where(
                (fits.shape[idx] == LineShape.EMG)[:, :, None],
                emg(x, area, center, sigma, fits.gamma[idx][:, :, None]),
                gaussian(x, area, center, sigma),
            )
            prof = np.where(np.isfinite(prof) & present[:, :, None], prof, 0.0)
        total = np.zeros((rows.size, width))
        for j in range(depth):  # neighbour by neighbour, as one loop per line adds them
            total += prof[:, j]
        inside = np.arange(width)[None, :] < length[rows, None]
        rows_y[rows, :width] -= np.where(inside, total, 0.0)
    return count > 0


def _fit_classes(
    y: np.ndarray,
    t: np.ndarray,
    step: np.ndarray,
    noise: np.ndarray,
    cand: PeakCandidates,
    start: np.ndarray,
    stop: np.ndarray,
    settings: Mapping[str, Any],
) -> LineFits:
    """:func:`_fit_windows` of every window, one batch per width class."""
    m = cand.size
    # A fit must not depend on the other windows of the batch: NaN padding to the
    # batch's widest window changes the arithmetic (and an ill-conditioned fit's
    # path), so windows are padded to their own length rounded up to 16 samples
    # and each width class is fitted as a batch of its own.
    width_class = (stop - start + 1 + 15) // 16 * 16
    classes = np.unique(width_class)
    if classes.size == 1:
        return _fit_windows(y, t, step, noise, cand, start, stop, int(classes[0]), settings)
    parts = []
    for width in classes:
        rows = np.flatnonzero(width_class == width)
        parts.append(
            (
                rows,
                _fit_windows(
                    y,
                    t,
                    step,
                    noise,
                    cand.take(rows),
                    start[rows],
                    stop[rows],
                    int(width),
                    settings,
                ),
            )
        )
    merged = {}
    for name in LineFits.__dataclass_fields__:
        first = getattr(parts[0][1], name)
        column = np.empty(m, dtype=first.dtype)
        for rows, fits in parts:
            column[rows] = getattr(fits, name)
        merged[name] = column
    return LineFits(**merged)


def line_heights(
    area: np.ndarray, center: np.ndarray, sigma: np.ndarray, gamma: np.ndarray
) -> np.ndarray:
    """Maximum of each fitted EMG line, DN (NaN where it is not finite).

    Taken on a fine grid spanning the Gaussian core and the tail: the mode lies
    within [-1, 4] sigma of the centre, or within 1.5/gamma for a line whose
    tail is narrower than its Gaussian core.  Compiled, with scipy's own
    ``erfcx`` and :func:`~idexdask.analysis.lineshapes.emg`'s expressions: the
    same values as ``emg`` on the grid within 8 ulp (tested), in a quarter
    of the time of its temporaries.
    """
    grid = np.linspace(-1.0, 4.0, _HEIGHT_GRID)
    args = [np.ascontiguousarray(v, dtype=np.float64) for v in (area, center, sigma, gamma)]
    address = scipy_erfcx_address()
    if address:
        out = np.empty(args[0].size)
        _line_heights_compiled(address, grid, *args, out)
        return out
    a, c, s, g = (v[:, None] for v in args)  # pragma: no cover - SciPy without C erfcx
    with np.errstate(all="ignore"):
        tg = np.concatenate([c + grid * s, c + (grid + 1.0) / (3.3 * g)], axis=1)
        prof = emg(tg, a, c, s, g)
        height = np.nanmax(np.where(np.isfinite(prof), prof, -np.inf), axis=1)
    return np.where(np.isfinite(height), height, np.nan)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _line_heights_compiled(address, grid, a, c, s, g, out):  # pragma: no cover - compiled
    """:func:`line_heights` per line: ``emg`` on both grids, the largest finite value."""
    for i in range(a.size):
        best = -np.inf
        gs = g[i] * s[i]
        for half in range(2):
            for j in range(grid.size):
                if half == 0:
                    t = c[i] + grid[j] * s[i]
                else:
                    t = c[i] + (grid[j] + 1.0) / (3.3 * g[i])
                u = (t - c[i]) / s[i]
                _, h = emg_profile(address, u, gs)
                v = 0.5 * a[i] * g[i] * h
                if math.isfinite(v) and v > best:
                    best = v
        out[i] = best if math.isfinite(best) else np.nan


def _fit_windows(
    y: np.ndarray,
    t: np.ndarray,
    step: np.ndarray,
    noise: np.ndarray,
    cand: PeakCandidates,
    start: np.ndarray,
    stop: np.ndarray,
    width: int,
    settings: Mapping[str, Any],
) -> LineFits:
    """Fit the windows ``[start, stop]`` (sample indices) padded to ``width`` samples.

    ``step`` is :func:`sample_step` of ``t`` (n_events,), µs.
    """
    m = cand.size
    ev = cand.event
    cols = start[:, None] + np.arange(width)
    inside = cols <= stop[:, None]
    cols = np.minimum(cols, t.shape[1] - 1)
    xw = np.where(inside, t[ev[:, None], cols], np.nan)
    yw = np.where(inside, y[ev[:, None], cols], np.nan)
    dt = step[ev]
    if np.all(stop >= start):  # the window's first and last times, read from its times
        t_lo = xw[:, 0].copy()
        t_hi = xw[np.arange(m), stop - start]
    else:
        t_lo = t[ev, start]
        t_hi = t[ev, stop]
    span = np.maximum(t_hi - t_lo, dt)

    # starting values from the moments of the line's core in the window
    ok = np.isfinite(yw)
    y0 = np.where(ok, yw, 0.0)
    peak_col = np.clip(cand.index - start, 0, width - 1)
    start_values = _moment_starts(xw, y0, ok, peak_col, dt, span)
    center0 = np.where(np.isfinite(cand.center_guess), cand.center_guess, start_values.center)
    center0 = np.clip(center0, t_lo, t_hi)
    with quiet_nan_warnings():
        c0 = np.nanmin(np.where(ok, yw, np.nan), axis=1)
    c0 = np.where(np.isfinite(c0), np.minimum(c0, 0.0), 0.0)

    model = batch_model("emg", "constant")
    sigma_lo = SIGMA_MIN_SAMPLES * dt
    sigma0 = np.clip(start_values.sigma, 1.5 * sigma_lo, 0.25 * span)
    gamma0 = np.clip(start_values.gamma, 4.0 / span, 0.5 * GAMMA_MAX)
    p0 = np.stack([start_values.area, center0, sigma0, gamma0, c0], axis=1)
    lower = np.stack([np.zeros(m), t_lo, sigma_lo, 2.0 / span, np.full(m, -np.inf)], axis=1)
    upper = np.stack(
        [np.full(m, np.inf), t_hi, 0.5 * span, np.full(m, GAMMA_MAX), np.full(m, np.inf)], axis=1
    )
    noise = np.asarray(noise, dtype=float)
    sig = (
        noise[ev[:, None], cols]
        if noise.ndim == 2
        else np.broadcast_to(noise[ev][:, None], yw.shape)
    )
    sig = np.where(np.isfinite(sig) & (sig > 0), sig, np.nan)
    device = str(settings.get("fit_device", "cpu"))
    res = fit_batch_on(
        device,
        xw,
        yw,
        model,
        p0,
        lower=lower,
        upper=upper,
        sigma=sig,
        max_iter=int(settings["max_iterations"]),
        engine=str(settings.get("fit_engine", "compiled")),
    )
    params = np.array(res.params, dtype=float)
    stderr = np.array(res.stderr, dtype=float)
    chisq = np.array(res.chisq, dtype=float)
    redchi = np.array(res.redchi, dtype=float)
    status = np.asarray(res.status, dtype=np.int8).copy()
    shape = np.full(m, LineShape.EMG, dtype=np.int8)
    mode_centred = np.zeros(m, dtype=bool)
    _gaussian_fallback(
        device, xw, yw, sig, params, stderr, chisq, redchi, status, shape, mode_centred,
        lower, upper, dt, settings,
    )  # fmt: skip
    a, c, s, g, off = (params[:, j] for j in range(5))
    gauss = shape != LineShape.EMG
    g = np.where(gauss, np.nan, g)
    # line maximum on a fine grid spanning the Gaussian core and the tail
    # (the mode lies within [-1, 4] sigma of the centre, or within 1.5/gamma for
    # a line whose tail is narrower than its Gaussian core)
    height = line_heights(a, c, s, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        height = np.where(gauss, a / (s * math.sqrt(2.0 * math.pi)), height)
    classify_lines(status, height, s, sigma_lo, sig, xw, c, settings)
    return LineFits(
        center=c,
        center_err=stderr[:, 1],
        sigma=s,
        gamma=g,
        area=a,
        area_err=stderr[:, 0],
        height=height,
        offset=off,
        chisq=chisq,
        redchi=redchi,
        status=status,
        window_start=t_lo,
        window_stop=t_hi,
        shape=shape,
        mode_centred=mode_centred,
    )


@dataclass
class _Starts:
    """Start values of the EMG fits (one per window): area, centre, sigma, gamma."""

    area: np.ndarray
    center: np.ndarray
    sigma: np.ndarray
    gamma: np.ndarray


def _moment_starts(
    xw: np.ndarray,
    y0: np.ndarray,
    ok: np.ndarray,
    peak_col: np.ndarray,
    dt: np.ndarray,
    span: np.ndarray,
) -> _Starts:
    """EMG start values from the moments of each line's core.

    The core is the run of samples around the peak sample that stay above 10 %
    of its height (the window's other lines and most of the noise left out).
    An EMG of centre mu, width sigma and tail tau = 1/gamma has mean mu + tau,
    variance sigma**2 + tau**2 and third central moment 2 tau**3; the tail is
    limited to what the core's skew supports.
    """
    m, width = y0.shape
    rows = np.arange(m)
    top = y0[rows, peak_col]
    top = np.where(top > 0, top, np.max(y0, axis=1))
    high = ok & (y0 >= 0.1 * top[:, None])
    col = np.arange(width)[None, :]
    # the run of `high` samples holding the peak column
    breaks = ~high
    left = np.max(np.where(breaks & (col < peak_col[:, None]), col, -1), axis=1) + 1
    right = np.min(np.where(breaks & (col > peak_col[:, None]), col, width), axis=1) - 1
    core = (col >= left[:, None]) & (col <= right[:, None]) & high
    w = np.where(core, y0, 0.0)
    total = np.sum(w, axis=1)
    safe = np.where(total > 0, total, 1.0)
    x = np.where(core, xw, 0.0)
    mean = np.sum(w * x, axis=1) / safe
    d = np.where(core, xw - mean[:, None], 0.0)
    var = np.sum(w * d * d, axis=1) / safe
    m3 = np.sum(w * d**3, axis=1) / safe
    tau = np.cbrt(np.clip(m3, 0.0, None) / 2.0)
    tau = np.minimum(tau, 0.8 * np.sqrt(np.maximum(var, 0.0)))
    sigma = np.sqrt(np.maximum(var - tau * tau, (0.5 * dt) ** 2))
    tau = np.maximum(tau, 0.5 * dt)
    fwhm = np.maximum(np.sum(ok & (y0 >= 0.5 * top[:, None]), axis=1), 1) * dt
    area = np.maximum(total * dt, top * fwhm)
    center = np.where(total > 0, mean - tau, xw[rows, peak_col])
    return _Starts(area=area, center=center, sigma=sigma, gamma=1.0 / np.minimum(tau, span))


def _gaussian_fallback(
    device: str,
    xw: np.ndarray,
    yw: np.ndarray,
    sig: np.ndarray,
    params: np.ndarray,
    stderr: np.ndarray,
    chisq: np.ndarray,
    redchi: np.ndarray,
    status: np.ndarray,
    shape: np.ndarray,
    mode_centred: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    dt: np.ndarray,
    settings: Mapping[str, Any],
) -> None:
    """Refit as Gaussians the lines whose EMG tail collapsed or that did not converge.

    The EMG's Gaussian limit (gamma -> infinity) lies outside its parameter
    domain, so a line without a resolved tail runs gamma to its upper bound.
    Such a line (tail shorter than ``TAU_MIN_SAMPLES`` samples) is refitted with
    a Gaussian plus constant, the same fitter, engine and convergence
    criteria; its result replaces the EMG's.  A line whose EMG fit did not converge for
    another reason (sigma and tail trade against each other on broad lines) is
    refitted too, and the Gaussian kept only where it converged: its centre is
    then the line's mode, later than an EMG centre by up to the tail time
    (``peak_shape``, ``mode_centred``).  Updates the arrays in place.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        collapsed = np.isfinite(params[:, 3]) & (1.0 / params[:, 3] < TAU_MIN_SAMPLES * dt)
    unconverged = (status == FitStatus.MAX_ITERATIONS) | (status == FitStatus.HIT_BOUND)
    rows = np.flatnonzero((collapsed & (status <= FitStatus.HIT_BOUND)) | unconverged)
    if rows.size == 0:
        return
    cols = [0, 1, 2, 4]  # amplitude, center, sigma, c
    p0 = np.clip(params[rows][:, cols], lower[rows][:, cols], upper[rows][:, cols])
    res = fit_batch_on(
        device,
        xw[rows],
        yw[rows],
        batch_model("gaussian", "constant"),
        p0,
        lower=lower[rows][:, cols],
        upper=upper[rows][:, cols],
        sigma=sig[rows],
        max_iter=int(settings["max_iterations"]),
        engine=str(settings.get("fit_engine", "compiled")),
    )
    st = np.asarray(res.status, dtype=np.int8)
    take = collapsed[rows] | (st == FitStatus.CONVERGED)
    take &= st <= FitStatus.HIT_BOUND
    r = rows[take]
    params[r] = np.nan
    params[np.ix_(r, cols)] = np.asarray(res.params)[take]
    stderr[r] = np.nan
    stderr[np.ix_(r, cols)] = np.asarray(res.stderr)[take]
    chisq[r] = np.asarray(res.chisq)[take]
    redchi[r] = np.asarray(res.redchi)[take]
    status[r] = st[take]
    shape[r] = LineShape.GAUSSIAN
    mode_centred[r] = ~collapsed[r]


def classify_lines(
    status: np.ndarray,
    height: np.ndarray,
    sigma: np.ndarray,
    sigma_lo: np.ndarray,
    sig: np.ndarray,
    xw: np.ndarray,
    center: np.ndarray,
    settings: Mapping[str, Any],
) -> None:
    """Mark spikes and insignificant lines among the fitted ones (in place).

    Parameters
    ----------
    status : numpy.ndarray
        :class:`~idexdask.analysis.line_status.LineStatus` codes (m,), updated in place.
    height, sigma, center : numpy.ndarray
        Fitted line height (signal units), Gaussian width and centre (µs), (m,).
    sigma_lo : numpy.ndarray
        The width bound of each fit, ``SIGMA_MIN_SAMPLES`` samples (µs), (m,).
    sig, xw : numpy.ndarray
        Noise sigma and times of each line's window (m, n_points).
    settings : mapping
        The ``peaks`` section (``min_line_snr``).

    Notes
    -----
    A fitted line (status CONVERGED, MAX_ITERATIONS or HIT_BOUND) lower than
    ``min_line_snr`` times the noise at its centre is NOT_SIGNIFICANT; one
    whose width ended at the sampling limit is a SPIKE.  Both are kept.
    """
    fitted = status <= FitStatus.HIT_BOUND
    m = status.size
    with np.errstate(invalid="ignore"):
        dist = np.abs(xw - center[:, None])
        near = (
            np.argmin(np.where(np.isfinite(dist), dist, np.inf), axis=1) if m else np.zeros(0, int)
        )
        noise_at = sig[np.arange(m), near] if m else np.zeros(0)
        weak = fitted & ~(height >= float(settings.get("min_line_snr", 3.0)) * noise_at)
        narrow = fitted & ~weak & (sigma <= sigma_lo * (1.0 + 1e-3))
    status[weak] = LineStatus.NOT_SIGNIFICANT
    status[narrow] = LineStatus.SPIKE
