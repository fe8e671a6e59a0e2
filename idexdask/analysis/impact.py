"""Impact charge signals of Target_High, Target_Low and Ion_Grid, fitted for all events at once.

The model, ``Q(t) = C0 + H(t - t0) A (1 - exp(-(t - t0)/tau_r)) exp(-(t - t0)/tau_d)``,
its Jacobian and rise time are in :mod:`idexdask.analysis.impact_model`.

Onset detection (starting ``t0``)
    The polarity-corrected, baseline-subtracted trace is smoothed (boxcar of
    ``smooth_us``) and differentiated; the threshold is ``onset_sigma`` x
    1.4826 x MAD of that derivative over the baseline window.  The onset is
    the first sample of the run of above-threshold derivative that ends at the
    steepest rise before the pulse maximum.

Samples saturated on the channel (rail runs, clipped tops) are left out of the
fit (weight 0); the fit then extrapolates the amplitude, and the status says so.
All events of one channel are fitted in a single
:func:`~idexdask.analysis.fitting.fit_batch` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter1d

from idexdask._logging import get_logger
from idexdask.analysis.fitting import BatchFitResult, FitStatus, fit_batch_on
from idexdask.analysis.impact_model import impact_model, rise_time_10_90
from idexdask.analysis.robust import (
    baseline_sigma,
    nanmedian_rows,
    quiet_nan_warnings,
    robust_sigma,
)

__all__ = [
    "IMPACT_CHANNELS",
    "ImpactFit",
    "ImpactStatus",
    "fit_impacts",
    "status_meanings",
]

_log = get_logger(__name__)

IMPACT_CHANNELS = ("Target_High", "Target_Low", "Ion_Grid")


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


@dataclass
class ImpactFit:
    """Fit results of one channel, one row per event.

    Attributes
    ----------
    params, stderr : numpy.ndarray
        (n_events, 5) in the order of
        :data:`~idexdask.analysis.impact_model.FIT_PARAMETERS` (µs, DN, DN, µs, µs),
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


@dataclass(frozen=True)
class _Onset:
    """Where each event's pulse starts and peaks (sample indices), found on the smoothed trace."""

    onset: np.ndarray  #: first sample of the steepest rise's above-threshold run
    peak: np.ndarray  #: the smoothed trace's maximum after the baseline window
    smooth: np.ndarray  #: the smoothed trace (n_events, n_samples)

    @property
    def excursion(self) -> np.ndarray:
        """The smoothed trace at its peak, per event."""
        return self.smooth[np.arange(self.smooth.shape[0]), self.peak]


def _onset(
    y: np.ndarray, t: np.ndarray, base_mask: np.ndarray, settings: Mapping[str, Any]
) -> _Onset:
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
    return _Onset(onset=onset, peak=peak, smooth=s)


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
    from idexdask.analysis.signal_quality import channel_arrays

    x, _, _ = channel_arrays(ds, name)
    x = np.asarray(x, dtype=float)
    n_events, n = x.shape
    if n_events == 0 or n < 2:  # nothing to fit: every event INVALID_INPUT
        return _not_fitted(n_events)
    signal = _pulse_signal(ds, name, x, quality, settings, windows)
    onset = _onset(
        np.where(signal.saturated, np.nanmax(signal.y, axis=1, initial=0.0)[:, None], signal.y),
        signal.t,
        signal.base_mask,
        settings,
    )
    excursion = onset.excursion
    with np.errstate(invalid="ignore"):
        snr = excursion / signal.noise
    valid_n = np.sum(np.isfinite(signal.y_fit), axis=1)
    no_signal = ~(snr >= float(settings["min_snr"]))
    invalid = (
        (valid_n < int(settings["min_valid_samples"]))
        | ~np.isfinite(signal.noise)
        | ~np.isfinite(signal.base)
    )
    start = _start_values(signal, onset, settings)

    fit_rows = np.nonzero(~no_signal & ~invalid)[0]
    results = _FitArrays.empty(n_events)
    status = np.where(invalid, ImpactStatus.INVALID_INPUT, ImpactStatus.NO_SIGNAL).astype(np.int8)
    if fit_rows.size:
        status[fit_rows] = _fit_rows(signal, start, fit_rows, results, settings)
    # back to the raw signal: Q_raw = base + pol*(C0' + A' g)
    params = results.params
    out = params.copy()
    out[:, 1] = signal.base + signal.polarity * params[:, 1]
    out[:, 2] = signal.polarity * params[:, 2]
    rise = rise_time_10_90(params[:, 3], params[:, 4])
    if _log.isEnabledFor(10):
        _log.debug("%s impact fits: %s", name, np.bincount(status, minlength=len(ImpactStatus)))
    return ImpactFit(
        params=out,
        stderr=results.stderr,
        polarity=signal.polarity.astype(np.int8),
        rise_10_90=rise,
        chisq=results.chisq,
        redchi=results.redchi,
        status=status,
        onset=start.onset_time,
    )


@dataclass(frozen=True)
class _PulseSignal:
    """One channel's traces prepared for the fit (n_events, n_samples).

    Attributes
    ----------
    t : numpy.ndarray
        Sample times, µs.
    y : numpy.ndarray
        Polarity-corrected, baseline-subtracted trace, DN (the pulse is positive).
    y_fit : numpy.ndarray
        ``y`` with NaN where the fit must not look: saturated samples and samples
        outside the override window.
    saturated : numpy.ndarray of bool
        Saturated samples.
    base_mask : numpy.ndarray of bool
        Samples of the baseline window (the first 10 % without a pre-trigger part).
    base, noise : numpy.ndarray
        Baseline level and noise sigma per event, DN (noise NaN where unusable).
    polarity : numpy.ndarray
        Sign of the pulse per event (+1/-1).
    """

    t: np.ndarray
    y: np.ndarray
    y_fit: np.ndarray
    saturated: np.ndarray
    base_mask: np.ndarray
    base: np.ndarray
    noise: np.ndarray
    polarity: np.ndarray


@dataclass(frozen=True)
class _StartValues:
    """Start values and bounds of the fit, in the order of ``FIT_PARAMETERS``.

    Attributes
    ----------
    p0, lower, upper : numpy.ndarray
        (n_events, 5).
    amplitude : numpy.ndarray
        The start amplitude, DN (n_events,).
    onset_time : numpy.ndarray
        The detected onset, the start of ``t0``, µs (n_events,).
    """

    p0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    amplitude: np.ndarray
    onset_time: np.ndarray


@dataclass(frozen=True)
class _FitArrays:
    """Fit results of every event, NaN until fitted (filled in place)."""

    params: np.ndarray
    stderr: np.ndarray
    chisq: np.ndarray
    redchi: np.ndarray

    @classmethod
    def empty(cls, n_events: int) -> _FitArrays:
        """Results of ``n_events`` events not fitted."""
        return cls(
            params=np.full((n_events, 5), np.nan),
            stderr=np.full((n_events, 5), np.nan),
            chisq=np.full(n_events, np.nan),
            redchi=np.full(n_events, np.nan),
        )

    def store(self, rows: np.ndarray, result: BatchFitResult, which: Any = slice(None)) -> None:
        """Write ``result``'s fits ``which`` to the events ``rows``."""
        self.params[rows] = result.params[which]
        self.stderr[rows] = result.stderr[which]
        self.chisq[rows] = result.chisq[which]
        self.redchi[rows] = result.redchi[which]


def _not_fitted(n_events: int) -> ImpactFit:
    """The fit of a channel with no event or fewer than 2 samples: all ``INVALID_INPUT``."""
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


def _pulse_signal(
    ds: xr.Dataset,
    name: str,
    x: np.ndarray,
    quality: Mapping[str, Any] | None,
    settings: Mapping[str, Any],
    windows: tuple[np.ndarray, np.ndarray] | None,
) -> _PulseSignal:
    """Baseline, noise and polarity of channel ``name``'s traces ``x``, and what the fit sees."""
    from idexdask.analysis.signal_quality import quantisation_step
    from idexdask.analysis.tof import channel_polarity, channel_time, saturation_mask

    n_events, n = x.shape
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
    return _PulseSignal(
        t=t,
        y=y,
        y_fit=y_fit,
        saturated=sat,
        base_mask=base_mask,
        base=base,
        noise=noise,
        polarity=pol,
    )


def _start_values(
    signal: _PulseSignal, onset: _Onset, settings: Mapping[str, Any]
) -> _StartValues:
    """Start values from the onset, the peak and the tail's level; bounds from the settings."""
    t, y = signal.t, signal.y
    excursion = onset.excursion
    n_events, n = t.shape
    rows = np.arange(n_events)
    t_on = t[rows, onset.onset]
    t_pk = t[rows, onset.peak]
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
    return _StartValues(p0=p0, lower=lower, upper=upper, amplitude=amp0, onset_time=t_on)


def _fit_impact_batch(
    signal: _PulseSignal,
    rows: np.ndarray,
    p0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    sigma: np.ndarray,
    settings: Mapping[str, Any],
) -> BatchFitResult:
    """One batch fit of the impact model to the events ``rows``, on the configured device."""
    return fit_batch_on(
        str(settings.get("fit_device", "cpu")),
        signal.t[rows],
        signal.y_fit[rows],
        impact_model(),
        p0,
        lower=lower,
        upper=upper,
        sigma=sigma,
        max_iter=int(settings["max_iterations"]),
        engine=str(settings.get("fit_engine", "compiled")),
    )


def _fit_rows(
    signal: _PulseSignal,
    start: _StartValues,
    fit_rows: np.ndarray,
    results: _FitArrays,
    settings: Mapping[str, Any],
) -> np.ndarray:
    """Fit the events ``fit_rows`` (and refit from the trigger where configured).

    Writes the fits to ``results`` and returns the :class:`ImpactStatus` of
    ``fit_rows``: the fitter's status, or ``SATURATED`` for a good fit of a
    trace with saturated samples.
    """
    n = signal.t.shape[1]
    sig = np.broadcast_to(signal.noise[fit_rows, None], (fit_rows.size, n))
    p0 = start.p0.copy()
    p0[fit_rows] = np.clip(p0[fit_rows], start.lower[fit_rows], start.upper[fit_rows])
    res = _fit_impact_batch(
        signal, fit_rows, p0[fit_rows], start.lower[fit_rows], start.upper[fit_rows], sig,
        settings,
    )  # fmt: skip
    results.store(fit_rows, res)
    st = np.asarray(res.status, dtype=np.int8)
    second = settings.get("second_start") or {}
    if second.get("enabled", False):
        st = _refit_from_trigger(signal, start, fit_rows, sig, results, st, settings)
    had_sat = np.any(signal.saturated[fit_rows], axis=1) & (st <= FitStatus.HIT_BOUND)
    return np.where(had_sat, ImpactStatus.SATURATED, st)


def _refit_from_trigger(
    signal: _PulseSignal,
    start: _StartValues,
    fit_rows: np.ndarray,
    sig: np.ndarray,
    results: _FitArrays,
    status: np.ndarray,
    settings: Mapping[str, Any],
) -> np.ndarray:
    """Fit again from the trigger-time start; keep, per trace, the lower chi-square.

    The onset start finds the nearest minimum; a slow or two-stage rise can have
    a better one with the impact earlier (the official L2a starts there).  Traces
    are refitted when the first fit did not converge, or when its impact time lies
    more than two rise times from the trigger start (closer, both starts lead to
    the same minimum; this keeps the extra cost to the traces where it can
    matter).  A second fit that converges (status <= HIT_BOUND) replaces the first
    when its chi-square is lower or the first did not converge.  Updates
    ``results`` in place and returns the statuses of ``fit_rows``.
    """
    second = settings["second_start"]
    params = results.params
    t_start = float(second["time_us"])
    tr_start = float(second["rise_time_us"])
    with np.errstate(invalid="ignore"):
        far = np.abs(params[fit_rows, 0] - t_start) > 2.0 * np.fmax(params[fit_rows, 3], tr_start)
    retry = (status != FitStatus.CONVERGED) | far | ~np.isfinite(params[fit_rows, 0])
    if not np.any(retry):
        return status
    rows = fit_rows[retry]
    k = rows.size
    lower, upper = start.lower[rows], start.upper[rows]
    p0 = np.stack(
        [
            np.full(k, t_start),
            np.zeros(k),
            start.amplitude[rows],
            np.full(k, tr_start),
            np.full(k, float(second["decay_time_us"])),
        ],
        axis=1,
    )
    p0 = np.clip(p0, lower, upper)
    res = _fit_impact_batch(signal, rows, p0, lower, upper, sig[retry], settings)
    st2 = np.asarray(res.status, dtype=np.int8)
    first_ok = status[retry] <= FitStatus.HIT_BOUND
    with np.errstate(invalid="ignore"):
        better = (st2 <= FitStatus.HIT_BOUND) & (~first_ok | (res.chisq < results.chisq[rows]))
    results.store(rows[better], res, better)
    out = status.copy()
    out[np.flatnonzero(retry)[better]] = st2[better]
    return out


def status_meanings() -> str:
    """CF ``flag_meanings`` of :class:`ImpactStatus`."""
    return " ".join(s.name.lower() for s in ImpactStatus)
