"""Impact charge signals of Target_High, Target_Low and Ion_Grid, fitted for all events at once.

Model (per channel, raw signal units)::

    Q(t) = C0 + H(t - t0) * A * (1 - exp(-(t - t0)/tau_r)) * exp(-(t - t0)/tau_d)

with ``t0`` the time of impact (µs), ``C0`` the baseline (DN), ``A`` the
amplitude (DN; the charge the preamplifier would hold without discharge),
``tau_r`` the rise time and ``tau_d`` the discharge (decay) time (µs).

The Heaviside kink
    ``Q`` is continuous in ``t0`` (the pulse starts from zero) but its slope
    jumps from 0 to ``A/tau_r`` at ``t0``.  The model is used as it is, not
    smoothed: the chi-square is continuously differentiable in ``t0`` except
    when ``t0`` coincides with a sample time (a set of measure zero), and the
    analytic Jacobian below is the exact one-sided derivative everywhere else.
    Levenberg–Marquardt steps never rely on second derivatives, so the kink
    costs nothing in practice (the fits converge in ~10 iterations); smoothing
    ``H`` would instead bias ``t0`` and ``tau_r`` by the smoothing width.

Onset detection (starting ``t0``)
    The polarity-corrected, baseline-subtracted trace is smoothed (boxcar of
    ``smooth_us``) and differentiated; the threshold is ``onset_sigma`` x
    1.4826 x MAD of that derivative over the baseline window.  The onset is
    the first sample of the run of above-threshold derivative that ends at the
    steepest rise before the pulse maximum.

Samples saturated on the channel (rail runs, clipped tops) are left out of the
fit (weight 0); the fit then extrapolates the amplitude, and the status says so.
All events of one channel are fitted in a single :func:`fit_batch` call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter1d

from idexdask._logging import get_logger
from idexdask.analysis import xp as _xp
from idexdask.analysis.fitting import KERNEL_IMPACT, BatchModel, FitStatus, fit_batch_on
from idexdask.analysis.robust import (
    baseline_sigma,
    nanmedian_rows,
    quiet_nan_warnings,
    robust_sigma,
)

__all__ = [
    "FIT_PARAMETERS",
    "IMPACT_CHANNELS",
    "ImpactFit",
    "ImpactStatus",
    "fit_impacts",
    "impact_model",
    "impact_signal",
    "rise_time_10_90",
]

_log = get_logger(__name__)

IMPACT_CHANNELS = ("Target_High", "Target_Low", "Ion_Grid")
FIT_PARAMETERS = ("time_of_impact", "constant_offset", "amplitude", "rise_time", "decay_time")
"""Order of the parameters in ``<channel>_fit_parameters``: µs, DN, DN, µs, µs."""


class ImpactStatus(IntEnum):
    """Outcome of one channel's impact fit; 0-4 are the fitter's :class:`FitStatus`."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    HIT_BOUND = 2
    FAILED_NONFINITE = 3
    INVALID_INPUT = 4
    """Too few valid samples, flat trace, NaN/fill only: not fitted."""
    NO_SIGNAL = 5
    """No excursion above ``min_snr`` baseline sigmas: not fitted (NaN)."""
    SATURATED = 6
    """Fitted on the unsaturated samples only: amplitude extrapolated."""
    NOT_PRESENT = 7
    """The channel is not in the dataset."""


def impact_signal(xp: ModuleType, dt: Any, amp: Any, tau_r: Any, tau_d: Any) -> Any:
    """``A (1 - exp(-dt/tau_r)) exp(-dt/tau_d)`` for ``dt > 0``, else 0.

    Parameters
    ----------
    xp : module
        Array namespace.
    dt : array
        Time since impact, µs.
    amp : array
        Amplitude ``A``, DN.
    tau_r, tau_d : array
        Rise and decay times, µs.

    Returns
    -------
    array
        Signal above the baseline, DN.
    """
    d = xp.maximum(dt, 0.0)
    return amp * (1.0 - xp.exp(-d / tau_r)) * xp.exp(-d / tau_d)


def _evaluate_jac(xp: ModuleType, x: Any, p: Any) -> tuple[Any, Any]:
    t0, c0, a, tr, td = (p[:, j : j + 1] for j in range(5))
    dt = x - t0
    on = dt > 0.0
    d = xp.where(on, dt, 0.0)
    with _xp.errstate(xp, under="ignore"):
        er = xp.exp(-d / tr)
        ed = xp.exp(-d / td)
    rise = 1.0 - er
    g = rise * ed
    f = c0 + a * g
    jac = xp.empty((x.shape[0], 5, x.shape[1]), dtype=xp.float64)
    # d/dt0 = -dQ/dt (one-sided at the kink; 0 before the impact)
    jac[:, 0, :] = xp.where(on, -a * ed * (er / tr - rise / td), 0.0)
    jac[:, 1, :] = 1.0
    jac[:, 2, :] = g
    jac[:, 3, :] = -a * ed * er * d / (tr * tr)
    jac[:, 4, :] = a * g * d / (td * td)
    return f, jac


def _evaluate(xp: ModuleType, x: Any, p: Any) -> Any:
    t0, c0, a, tr, td = (p[:, j : j + 1] for j in range(5))
    return c0 + impact_signal(xp, x - t0, a, tr, td)


def impact_model() -> BatchModel:
    """:class:`BatchModel` of the impact charge signal with its analytic Jacobian.

    Parameters are :data:`FIT_PARAMETERS`; default bounds: rise and decay times
    positive, the rest free.
    """
    inf = math.inf
    return BatchModel(
        name="impact_charge",
        param_names=FIT_PARAMETERS,
        lower=(-inf, -inf, -inf, 1e-6, 1e-6),
        upper=(inf, inf, inf, inf, inf),
        evaluate=_evaluate,
        evaluate_with_jacobian=_evaluate_jac,
        kernel=KERNEL_IMPACT,
    )


def rise_time_10_90(tau_r: np.ndarray, tau_d: np.ndarray, iterations: int = 60) -> np.ndarray:
    """10-90 % rise time of the fitted pulse, µs (vectorised bisection).

    The pulse ``(1 - exp(-u/tau_r)) exp(-u/tau_d)`` peaks at
    ``u_max = tau_r ln(1 + tau_d/tau_r)``; the times where it first reaches 10 %
    and 90 % of that maximum are found by bisection on ``[0, u_max]``.

    Parameters
    ----------
    tau_r, tau_d : numpy.ndarray
        Rise and decay times, µs.
    iterations : int
        Bisection steps (60 reach double precision).

    Returns
    -------
    numpy.ndarray
        ``t90 - t10``, µs; NaN where the inputs are not finite and positive.
    """
    tr = np.asarray(tau_r, dtype=float)
    td = np.asarray(tau_d, dtype=float)
    ok = np.isfinite(tr) & np.isfinite(td) & (tr > 0) & (td > 0)
    tr = np.where(ok, tr, 1.0)
    td = np.where(ok, td, 1.0)
    umax = tr * np.log1p(td / tr)

    def shape(u: np.ndarray) -> np.ndarray:
        return -np.expm1(-u / tr) * np.exp(-u / td)

    gmax = shape(umax)
    # both levels in one bisection (rows 0 and 1): half the array operations
    lo = np.zeros((2, *umax.shape))
    hi = np.stack([umax, umax])
    target = np.array([0.1, 0.9]).reshape((2,) + (1,) * umax.ndim) * gmax
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = shape(mid) < target
        np.copyto(lo, mid, where=below)
        np.copyto(hi, mid, where=~below)
    out = 0.5 * (lo + hi)
    return np.where(ok, out[1] - out[0], np.nan)


@dataclass
class ImpactFit:
    """Fit results of one channel, one row per event.

    Attributes
    ----------
    params, stderr : numpy.ndarray
        (n_events, 5) in the order of :data:`FIT_PARAMETERS` (µs, DN, DN, µs, µs),
        in the raw signal's units and sign.
    polarity : numpy.ndarray
        Sign of the pulse used for the fit (+1/-1) per event.
    rise_10_90 : numpy.ndarray
        10-90 % rise time, µs.
    chisq, redchi : numpy.ndarray
        Noise-weighted chi-square and reduced chi-square.
    status : numpy.ndarray
        :class:`ImpactStatus` codes, int8.
    onset : numpy.ndarray
        Detected onset time (the fit's start value for ``t0``), µs.
    """

    params: np.ndarray
    stderr: np.ndarray
    polarity: np.ndarray
    rise_10_90: np.ndarray
    chisq: np.ndarray
    redchi: np.ndarray
    status: np.ndarray
    onset: np.ndarray


def _onset(
    y: np.ndarray, t: np.ndarray, base_mask: np.ndarray, settings: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset index, index of the smoothed maximum and smoothed trace (see module doc)."""
    n = y.shape[1]
    dt = nanmedian_rows(np.diff(t, axis=1))
    w = int(np.clip(np.rint(settings["smooth_us"] / nanmedian_rows(dt)), 1, max(n // 8, 1)))
    filled = np.where(np.isfinite(y), y, 0.0)
    s = uniform_filter1d(filled, size=w, axis=1, mode="nearest")
    d = np.zeros_like(s)
    d[:, 1:] = np.diff(s, axis=1)
    d = uniform_filter1d(d, size=w, axis=1, mode="nearest")
    dsig = robust_sigma(np.where(base_mask, d, np.nan), axis=1)
    dsig = np.where(np.isfinite(dsig) & (dsig > 0), dsig, np.nanstd(d, axis=1))
    thr = float(settings["onset_sigma"]) * dsig
    after = ~base_mask  # the onset lies after the baseline window
    peak = np.argmax(np.where(after, s, -np.inf), axis=1)
    idx = np.arange(n)
    steep = np.argmax(np.where(after & (idx <= peak[:, None]), d, -np.inf), axis=1)
    quiet = (d <= thr[:, None]) & (idx < steep[:, None])
    last_quiet = np.max(np.where(quiet, idx, -1), axis=1)
    onset = np.clip(last_quiet + 1, 0, n - 1)
    return onset, peak, s


def fit_impacts(
    ds: xr.Dataset,
    name: str,
    quality: Mapping[str, Any] | None,
    settings: Mapping[str, Any],
    windows: tuple[np.ndarray, np.ndarray] | None = None,
) -> ImpactFit:
    """Fit the impact charge model to channel ``name`` of every event.

    Parameters
    ----------
    ds : xarray.Dataset
        Events holding waveform ``name`` (DN, fill 65535 or NaN ignored).
    name : str
        ``Target_High``, ``Target_Low``, ``Ion_Grid`` (any 2-D waveform works).
    quality : xarray.Dataset, mapping or None
        ``signal_quality`` output or its variables (saturation interval); None to skip.
    settings : mapping
        The ``impact`` section of the analysis settings.
    windows : (numpy.ndarray, numpy.ndarray), optional
        Per-event fit window start/stop, µs (NaN: whole trace) from overrides.

    Returns
    -------
    ImpactFit
        Never raises on bad waveforms; see :class:`ImpactStatus`.
    """
    from idexdask.analysis.signal_quality import channel_arrays, quantisation_step
    from idexdask.analysis.tof import channel_polarity, channel_time, saturation_mask

    x, _, _ = channel_arrays(ds, name)
    x = np.asarray(x, dtype=float)
    n_events, n = x.shape
    if n_events == 0 or n < 2:  # nothing to fit: every event INVALID_INPUT
        nan5 = np.full((n_events, 5), np.nan)
        nan1 = np.full(n_events, np.nan)
        return ImpactFit(
            nan5,
            nan5.copy(),
            np.ones(n_events, np.int8),
            nan1,
            nan1.copy(),
            nan1.copy(),
            np.full(n_events, ImpactStatus.INVALID_INPUT, np.int8),
            nan1.copy(),
        )
    t = np.asarray(channel_time(ds, name), dtype=float)
    pol_cfg = channel_polarity(ds, name, settings)
    base_stop = float(
        (settings.get("baseline_stop_us") or {}).get(name, settings["baseline_stop_default_us"])
    )
    base, noise = baseline_sigma(x, t, base_stop, quantum=quantisation_step(ds.variables[name]))
    base_mask = (t < base_stop) & np.isfinite(x)
    few = base_mask.sum(axis=1) < 4
    if np.any(few):  # no pre-trigger part: first 10 % of the trace
        first = np.zeros_like(base_mask)
        first[:, : max(n // 10, 1)] = True
        base_mask = np.where(few[:, None], first & np.isfinite(x), base_mask)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, np.nan)
    dev = x - base[:, None]
    with np.errstate(invalid="ignore"):
        if pol_cfg == 0:  # either direction: the larger excursion after the baseline window
            hi = np.nanmax(np.where(~base_mask, dev, np.nan), axis=1) if n else np.zeros(n_events)
            lo = np.nanmin(np.where(~base_mask, dev, np.nan), axis=1) if n else np.zeros(n_events)
            pol = np.where(np.abs(lo) > np.abs(hi), -1.0, 1.0)
        else:
            pol = np.full(n_events, float(pol_cfg))
    y = pol[:, None] * dev
    sat = saturation_mask(ds, name, x, t, quality, int(pol_cfg), int(settings["saturation_guard"]))
    y_fit = np.where(sat, np.nan, y)
    if windows is not None:
        w0, w1 = windows
        with np.errstate(invalid="ignore"):
            outside = (np.isfinite(w0)[:, None] & (t < w0[:, None])) | (
                np.isfinite(w1)[:, None] & (t > w1[:, None])
            )
        y_fit = np.where(outside, np.nan, y_fit)

    onset, peak, smooth = _onset(
        np.where(sat, np.nanmax(y, axis=1, initial=0.0)[:, None], y), t, base_mask, settings
    )
    rows = np.arange(n_events)
    with np.errstate(invalid="ignore"):
        excursion = smooth[rows, peak]
        snr = excursion / noise
    valid_n = np.sum(np.isfinite(y_fit), axis=1)
    no_signal = ~(snr >= float(settings["min_snr"]))
    invalid = (
        (valid_n < int(settings["min_valid_samples"])) | ~np.isfinite(noise) | ~np.isfinite(base)
    )

    # starting values
    t_on = t[rows, onset]
    t_pk = t[rows, peak]
    t_first = np.nanmin(t, axis=1)
    t_last = np.nanmax(t, axis=1)
    dt = nanmedian_rows(np.diff(t, axis=1)) if n > 1 else np.ones(n_events)
    amp0 = np.maximum(excursion, 1.0) * 1.05
    tr0 = np.clip((t_pk - t_on) / 3.0, dt, None)
    with quiet_nan_warnings():
        # compiled, the values of numpy.nanmedian (which goes through numpy.ma
        # row by row when NaN are present: ~0.2 ms per call whatever the batch)
        last_val = nanmedian_rows(np.where(t >= t_last[:, None] - 10 * dt[:, None], y, np.nan))
    with np.errstate(all="ignore"):
        ratio = np.where((last_val > 0) & (last_val < excursion), excursion / last_val, np.e**2)
        td0 = np.clip((t_last - t_pk) / np.log(ratio), 3.0 * tr0, 1e4)
    td0 = np.where(np.isfinite(td0), td0, 100.0 * tr0)
    p0 = np.stack([t_on, np.zeros(n_events), amp0, tr0, td0], axis=1)
    tau_min = float(settings["tau_min_us"])
    lower = np.stack(
        [
            t_first,
            np.full(n_events, -np.inf),
            np.zeros(n_events),
            np.full(n_events, tau_min),
            np.full(n_events, tau_min),
        ],
        axis=1,
    )
    upper = np.stack(
        [
            t_last,
            np.full(n_events, np.inf),
            np.full(n_events, np.inf),
            np.full(n_events, float(settings["tau_max_us"])),
            np.full(n_events, float(settings["decay_max_us"])),
        ],
        axis=1,
    )
    fit_rows = np.nonzero(~no_signal & ~invalid)[0]
    params = np.full((n_events, 5), np.nan)
    stderr = np.full((n_events, 5), np.nan)
    chisq = np.full(n_events, np.nan)
    redchi = np.full(n_events, np.nan)
    status = np.where(invalid, ImpactStatus.INVALID_INPUT, ImpactStatus.NO_SIGNAL).astype(np.int8)
    if fit_rows.size:
        sig = np.broadcast_to(noise[fit_rows, None], (fit_rows.size, n))
        p0[fit_rows] = np.clip(p0[fit_rows], lower[fit_rows], upper[fit_rows])
        res = fit_batch_on(
            str(settings.get("fit_device", "cpu")),
            t[fit_rows],
            y_fit[fit_rows],
            impact_model(),
            p0[fit_rows],
            lower=lower[fit_rows],
            upper=upper[fit_rows],
            sigma=sig,
            max_iter=int(settings["max_iterations"]),
            engine=str(settings.get("fit_engine", "compiled")),
        )
        params[fit_rows] = res.params
        stderr[fit_rows] = res.stderr
        chisq[fit_rows] = res.chisq
        redchi[fit_rows] = res.redchi
        st = np.asarray(res.status, dtype=np.int8)
        second = settings.get("second_start") or {}
        if second.get("enabled", False):
            st = _refit_from_trigger(
                t,
                y_fit,
                fit_rows,
                amp0,
                lower,
                upper,
                sig,
                settings,
                second,
                params,
                stderr,
                chisq,
                redchi,
                st,
            )
        had_sat = np.any(sat[fit_rows], axis=1) & (st <= FitStatus.HIT_BOUND)
        status[fit_rows] = np.where(had_sat, ImpactStatus.SATURATED, st)
    # back to the raw signal: Q_raw = base + pol*(C0' + A' g)
    out = params.copy()
    out[:, 1] = base + pol * params[:, 1]
    out[:, 2] = pol * params[:, 2]
    rise = rise_time_10_90(params[:, 3], params[:, 4])
    if _log.isEnabledFor(10):
        _log.debug("%s impact fits: %s", name, np.bincount(status, minlength=len(ImpactStatus)))
    return ImpactFit(
        params=out,
        stderr=stderr,
        polarity=pol.astype(np.int8),
        rise_10_90=rise,
        chisq=chisq,
        redchi=redchi,
        status=status,
        onset=t_on,
    )


def _refit_from_trigger(
    t: np.ndarray,
    y_fit: np.ndarray,
    fit_rows: np.ndarray,
    amp0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    sig: np.ndarray,
    settings: Mapping[str, Any],
    second: Mapping[str, Any],
    params: np.ndarray,
    stderr: np.ndarray,
    chisq: np.ndarray,
    redchi: np.ndarray,
    status: np.ndarray,
) -> np.ndarray:
    """Fit again from the trigger-time start; keep, per trace, the lower chi-square.

    The onset start finds the nearest minimum; a slow or two-stage rise can have
    a better one with the impact earlier (the official L2a starts there).  Traces
    are refitted when the first fit did not converge, or when its impact time lies
    more than two rise times from the trigger start (closer, both starts lead to
    the same minimum; this keeps the extra cost to the traces where it can
    matter).  A second fit that converges (status <= HIT_BOUND) replaces the first
    when its chi-square is lower or the first did not converge.  Updates the
    arrays in place and returns the statuses of ``fit_rows``.
    """
    t_start = float(second["time_us"])
    tr_start = float(second["rise_time_us"])
    with np.errstate(invalid="ignore"):
        far = np.abs(params[fit_rows, 0] - t_start) > 2.0 * np.fmax(params[fit_rows, 3], tr_start)
    retry = (status != FitStatus.CONVERGED) | far | ~np.isfinite(params[fit_rows, 0])
    if not np.any(retry):
        return status
    rows = fit_rows[retry]
    k = rows.size
    p0 = np.stack(
        [
            np.full(k, t_start),
            np.zeros(k),
            amp0[rows],
            np.full(k, tr_start),
            np.full(k, float(second["decay_time_us"])),
        ],
        axis=1,
    )
    p0 = np.clip(p0, lower[rows], upper[rows])
    res = fit_batch_on(
        str(settings.get("fit_device", "cpu")),
        t[rows],
        y_fit[rows],
        impact_model(),
        p0,
        lower=lower[rows],
        upper=upper[rows],
        sigma=sig[retry],
        max_iter=int(settings["max_iterations"]),
        engine=str(settings.get("fit_engine", "compiled")),
    )
    st2 = np.asarray(res.status, dtype=np.int8)
    first_ok = status[retry] <= FitStatus.HIT_BOUND
    with np.errstate(invalid="ignore"):
        better = (st2 <= FitStatus.HIT_BOUND) & (~first_ok | (res.chisq < chisq[rows]))
    take = rows[better]
    params[take] = res.params[better]
    stderr[take] = res.stderr[better]
    chisq[take] = res.chisq[better]
    redchi[take] = res.redchi[better]
    out = status.copy()
    out[np.flatnonzero(retry)[better]] = st2[better]
    return out


def status_meanings() -> str:
    """CF ``flag_meanings`` of :class:`ImpactStatus`."""
    return " ".join(s.name.lower() for s in ImpactStatus)
