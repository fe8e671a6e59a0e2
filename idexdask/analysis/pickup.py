"""Grain speed and charge from the dust accelerator's charge pickup detectors.

A charge pickup detector (QD) is a conducting tube on the beam line read by a
charge-sensitive amplifier.  While a grain of charge *q* is inside, the tube carries
the induced charge *q*: the amplifier output is a near-rectangular pulse (edges as
long as the fringing field takes to cross, about one tube radius) of height
``q * volts_per_coulomb`` above the pre-signal baseline, lasting ``L / v`` for a tube
of length *L*.  Two tubes a distance *D* apart see the grain ``D / v`` apart.

Method (vectorised over events; one function per step)
------------------------------------------------------
1. Polarity: the signal is multiplied (in step 2's pass) by ``polarity`` (±1; the
   lab amplifiers give negative-going QD pulses, so the default is -1) so that the
   pulse is positive.
2. Edges: a smoothed derivative, the difference of the means of ``w`` samples after
   and before each sample (``w`` = ``smooth_us``; from cumulative sums, O(n)).  Its
   noise is the MAD-scaled spread over the whole record.  The entry edge is its
   maximum, which must exceed ``threshold_sigma`` noise sigmas; the exit edge is its
   minimum between ``min_transit_us`` and ``max_transit_us`` after the entry, with
   the same threshold.  Each edge time is the centroid of the derivative peak above
   half its height (inside ``edge_window_us``): the 50 % point of the edge, with
   sub-sample resolution.
3. Transit time = exit - entry; speed = ``tube_length_m`` / transit.
4. Pulse height = median over the central part of the plateau (``plateau_guard``
   of the transit trimmed at each end) minus the median of the baseline window of
   ``baseline_us`` before the entry edge (guarded likewise).  Charge = height /
   ``volts_per_coulomb``.
5. Uncertainties (approximate 1 sigma): height from the scatter of ``w``-sample
   means in the plateau and baseline windows; edge times from the derivative noise
   over the peak height times the peak half-width; propagated to speed and charge
   (the calibration factor and tube length are taken as exact).

Calibration
-----------
``volts_per_coulomb`` MUST come from the lab's amplifier calibration (a known test
charge injected through a capacitor into each QD input).  The default
:data:`PLACEHOLDER_VOLTS_PER_COULOMB` = 1e12 V/C (1 mV/fC) is a round-number
placeholder of the right order for accelerator charge amplifiers, not a
measurement; charges computed with it are labelled ``calibration="placeholder"``.
Likewise the default tube length (0.20 m) is a placeholder, see ``configs/scope.yaml``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.analysis.selection import median_and_mad
from idexdask.errors import AnalysisError

__all__ = [
    "PLACEHOLDER_VOLTS_PER_COULOMB",
    "STATUS_MEANINGS",
    "combine_detectors",
    "load_scope_config",
    "pickup_charge_speed",
    "pickup_from_dataset",
    "pickup_two_detectors",
    "pickup_uniform",
]

_log = get_logger(__name__)

PLACEHOLDER_VOLTS_PER_COULOMB = 1.0e12
"""1 mV/fC: a PLACEHOLDER of plausible order, not a calibration (see module docs)."""

DEFAULT_TUBE_LENGTH_M = 0.20
"""PLACEHOLDER tube length, m (task brief); replace with the lab drawing's value."""

STATUS_MEANINGS = (
    "ok",
    "no_signal",          # 1: event has no finite samples (channel missing)
    "no_pulse",           # 2: no entry edge above threshold
    "no_exit_edge",       # 3: entry found, no exit edge above threshold in range
    "truncated",          # 4: pulse too close to the record start (no baseline)
    "weak_plateau",       # 5: plateau height below threshold_sigma * its error
)
"""``status`` value -> meaning (CF ``flag_values``/``flag_meanings``)."""

_KM_S_PER_M_US = 1e3  # (m / µs) -> km/s


def load_scope_config(path: str | Path | None = None) -> dict[str, Any]:
    """Lab-setup defaults (``configs/scope.yaml`` unless ``path`` is given).

    Returns
    -------
    dict
        The parsed YAML (``pickup``, ``channels`` sections).
    """
    from idexdask.config import file_key

    # parsed once per file version (every pack of a campaign asks); a copy each call
    return copy.deepcopy(_scope_config(*file_key(path if path is not None else "scope.yaml")))


@functools.lru_cache(maxsize=4)
def _scope_config(path: str, mtime_ns: int) -> dict[str, Any]:
    from idexdask.config import load_yaml

    return load_yaml(path) or {}


def _as_2d(a: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AnalysisError(f"{name} must be 1-D or 2-D (events, samples), got {arr.shape}")
    return arr


def _mad(a: np.ndarray) -> float:
    """MAD-scaled spread (1.4826 x median absolute deviation) of the finite values."""
    a = a[np.isfinite(a)]
    if a.size == 0:
        return np.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(a - np.median(a))))


def _window_stats(
    rec: _Records, der: _Derivative, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Median of the record's ``y[e, lo:hi]`` and its error, per event.

    The error is the MAD-scaled scatter of the ``w``-sample means that lie
    inside the window, over the square root of the number of such independent
    means (this follows noise correlated over less than ``w`` samples).  Windows
    shorter than ``2 w`` use the scatter of ``y`` itself, with one independent
    sample per ``w`` (conservative).  One slice per event: the windows are a few
    per cent of a lab record, so statistics over slices, not full-length masks.
    """
    n_ev, n = rec.signal.shape
    w = der.w
    level = np.full(n_ev, np.nan)
    err = np.full(n_ev, np.nan)
    for e in range(n_ev):
        a, b = max(int(lo[e]), 0), min(int(hi[e]), n)
        if b <= a:
            continue
        window = rec.values(e, a, b)
        finite = window[np.isfinite(window)]
        level[e] = np.median(finite) if finite.size else np.nan
        b_s = min(int(hi[e]) - w + 1, n)  # means s[i] of y[i:i+w] inside the window
        n_s = max(b_s - a, 0)
        if n_s >= w:
            err[e] = _mad(der.means(e, a, b_s)) / np.sqrt(max(n_s / w, 1.0))
        else:
            err[e] = _mad(window)
    return level, err


def _edge_centroid(
    window: np.ndarray, peak_idx: np.ndarray, n: int, half: int, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (fractional sample index) of the part of a peak above half height,
    and the peak's half-width in samples.

    ``window[e]`` is the derivative at ``clip(peak_idx[e] - half ... + half, 0, n - 1)``.
    """
    offs = np.arange(-half, half + 1)
    win = np.clip(peak_idx[:, None] + offs[None, :], 0, n - 1)
    vals = sign * window
    peak = sign * window[:, half : half + 1]
    wts = np.clip(vals - 0.5 * peak, 0.0, None)
    # keep only the contiguous run around the peak
    centre, width_win = half, win.shape[1]
    above = wts > 0
    left_run = above[:, :centre][:, ::-1]  # positions centre-1, centre-2, ...
    j_left = np.where(~left_run, np.arange(centre)[None, :], centre).min(axis=1)
    left = centre - j_left  # first index of the run
    right_run = above[:, centre:]  # positions centre, centre+1, ...
    j_right = np.where(~right_run, np.arange(width_win - centre)[None, :],
                       width_win - centre).min(axis=1)
    right = centre + j_right  # one past the last index of the run
    pos = np.arange(width_win)[None, :]
    keep = (pos >= left[:, None]) & (pos < right[:, None])
    wts = np.where(keep, wts, 0.0)
    tot = wts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cen = (wts * win).sum(axis=1) / tot
    width = (right - left).astype(np.float64)
    return cen, width / 2.0


@dataclass(frozen=True)
class _PickupSettings:
    """The detection settings of :func:`pickup_charge_speed`, converted to samples."""

    polarity: int
    dt: float  #: sampling interval, µs
    w: int  #: derivative half-kernel, samples
    threshold_sigma: float
    min_transit: int  #: samples
    max_transit: int  #: samples
    edge_half: int  #: half-width of the edge window, samples
    baseline: int  #: samples
    plateau_guard: float


@dataclass(frozen=True)
class _Records:
    """The records as given, and how they read as pulses positive along the polarity."""

    signal: np.ndarray  #: (events, samples), V, as given (NaN: missing)
    polarity: float  #: ±1
    fill: np.ndarray  #: per event, the value of its non-finite samples (their median)
    t0: np.ndarray  #: time of each event's first sample, µs
    dt: np.ndarray  #: each event's sampling interval, µs
    status: np.ndarray  #: int8, 1 where too few finite samples

    def values(self, e: int, a: int, b: int) -> np.ndarray:
        """Samples ``a:b`` of event ``e`` along the polarity, non-finite ones filled."""
        y = np.array(self.signal[e, a:b], dtype=np.float64)
        y[~np.isfinite(y)] = self.fill[e]
        return self.polarity * y


@dataclass(frozen=True)
class _Derivative:
    """Running means and the smoothed derivative of the records, from their
    cumulative sums (the values are formed on demand, for the few windows read)."""

    cumsum: np.ndarray  #: (events, samples + 1): sums of the first i samples
    w: int  #: samples per running mean
    sigma: np.ndarray  #: MAD-scaled noise of the derivative per event
    i_in: np.ndarray  #: index of the derivative's maximum (the entry edge)
    i_out: np.ndarray  #: index of its minimum in the exit search range (0 if empty)
    window_in: np.ndarray  #: (events, 2 h + 1): derivative at ``clip(i_in - h ... i_in + h)``
    window_out: np.ndarray  #: the same around ``i_out``

    def means(self, e: int, a: int, b: int) -> np.ndarray:
        """Means of ``y[i : i + w]`` for ``i`` in ``a:b`` of event ``e`` (NaN past the end)."""
        n = self.cumsum.shape[1] - 1
        cs = self.cumsum[e]
        stop = max(min(b, n - self.w + 1), a)
        out = np.full(max(b - a, 0), np.nan)
        out[: stop - a] = (cs[a + self.w : stop + self.w] - cs[a:stop]) / self.w
        return out


@dataclass(frozen=True)
class _Edges:
    """Entry and exit edges: derivative peaks and their centroids (sample indices)."""

    peak_in: np.ndarray
    peak_out: np.ndarray
    c_in: np.ndarray  #: fractional sample index of the entry's 50 % point
    c_out: np.ndarray
    hw_in: np.ndarray  #: half-width of the derivative peaks, samples
    hw_out: np.ndarray


@dataclass(frozen=True)
class _Levels:
    """Baseline and plateau levels (along the polarity) and the pulse height."""

    baseline: np.ndarray
    height: np.ndarray
    height_err: np.ndarray
    snr: np.ndarray


def _pickup_settings(
    interval_us: np.ndarray, n: int, *, polarity: int, smooth_us: float,
    threshold_sigma: float, min_transit_us: float, max_transit_us: float,
    edge_window_us: float, baseline_us: float, plateau_guard: float,
) -> _PickupSettings:
    """Check the sampling and convert the settings from µs to samples."""
    if n < 16:
        raise AnalysisError(f"too few samples ({n}) for pulse detection")
    if polarity not in (-1, 1):
        raise AnalysisError(f"polarity must be -1 or +1, not {polarity}")
    dt = float(np.nanmedian(interval_us)) if np.isfinite(interval_us).any() else np.nan
    if not np.isfinite(dt) or dt <= 0:
        raise AnalysisError("time_us must increase uniformly")
    w = max(1, int(round(smooth_us / dt)))
    if 2 * w + 2 > n:
        raise AnalysisError(f"smooth_us={smooth_us} too long for {n} samples of {dt} µs")
    return _PickupSettings(
        polarity=polarity, dt=dt, w=w, threshold_sigma=float(threshold_sigma),
        min_transit=int(np.ceil(min_transit_us / dt)),
        max_transit=int(np.floor(max_transit_us / dt)),
        edge_half=max(2 * w, int(round(edge_window_us / dt))),
        baseline=int(round(baseline_us / dt)), plateau_guard=float(plateau_guard),
    )


def _records(
    start_us: np.ndarray, interval_us: np.ndarray, signal_v: np.ndarray, s: _PickupSettings
) -> _Records:
    """Step 1: the records as given; non-finite samples read as the event's median."""
    n_ev = signal_v.shape[0]
    status = np.zeros(n_ev, np.int8)
    fill = np.zeros(n_ev)
    finite = _finite_counts(signal_v)
    if bool((finite < signal_v.shape[1]).any()):
        status[finite < 4 * s.w] = 1
        for e in np.nonzero(finite < signal_v.shape[1])[0]:  # events with missing samples
            y = np.asarray(signal_v[e], dtype=np.float64)
            good = y[np.isfinite(y)]
            fill[e] = np.median(good) if good.size else 0.0
    return _Records(signal=signal_v, polarity=float(s.polarity), fill=fill,
                    t0=np.broadcast_to(start_us, (n_ev,)),
                    dt=np.broadcast_to(interval_us, (n_ev,)), status=status)


@numba.njit(cache=True, nogil=True)
def _finite_counts(y):  # pragma: no cover - compiled
    """Finite samples per row."""
    rows, n = y.shape
    out = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        c = 0
        for i in range(n):
            v = np.float64(y[r, i])
            c += v - v == 0.0
        out[r] = c
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _derivative_at(core, n, w, i):  # pragma: no cover - compiled
    """``d[i]``: ``core[i - w]`` on ``[w, n - w]``, else 0 (see :func:`_derivative_rows`)."""
    if w <= i <= n - w:
        return core[i - w]
    return 0.0


@numba.njit(cache=True, nogil=True)
def _first_extreme(core, n, w, lo, hi, sign):  # pragma: no cover - compiled
    """``lo + numpy.argmax(sign * d[lo:hi])`` for d of :func:`_derivative_at`: the
    first largest value, or the first NaN; d is 0 outside ``[w, n - w]``."""
    a = max(lo, w)
    b = max(min(hi, n - w + 1), a)
    best = -np.inf
    at = -1
    first_nan = -1
    for i in range(a, b):
        v = sign * core[i - w]
        if v > best:
            best = v
            at = i
        if v != v and first_nan < 0:
            first_nan = i
    if first_nan >= 0:
        return first_nan
    # the zeros before and after the core, at their first index
    if lo < a and (at < 0 or not (best > 0.0)):
        return lo
    if b < hi and (at < 0 or 0.0 > best):
        return b
    return at if at >= 0 else lo


@numba.njit(cache=True, nogil=True)
def _derivative_rows(
    y, polarity, fill, w, min_transit, max_transit, half, cs_out
):  # pragma: no cover - compiled
    """Per row: cumulative sums, the derivative's noise, its entry and exit edges.

    ``cs_out[r, i]`` is the sequential float64 sum of the first ``i`` samples
    ``polarity * y`` (non-finite samples read as ``fill[r]``), the sums
    ``numpy.cumsum`` forms; ``mean_fwd[i] = (cs[i + w] - cs[i]) / w`` and the
    derivative ``d[i] = mean_fwd[i] - mean_fwd[i - w]`` on ``[w, n - w]``, else 0,
    are the values of the array formulas.  Returns the median absolute deviation
    of ``d[w : n - w + 1]`` (exact, :func:`~idexdask.analysis.selection.median_and_mad`),
    the index of d's maximum and that of its minimum on
    ``[i_in + min_transit, i_in + max_transit]`` (first on ties, NaN first, as
    ``numpy.argmax``), and d on ``clip(i - half ... i + half)`` around each.
    """
    rows, n = y.shape
    m = n - 2 * w + 1
    mad = np.empty(rows)
    i_in = np.zeros(rows, dtype=np.int64)
    i_out = np.zeros(rows, dtype=np.int64)
    win_in = np.empty((rows, 2 * half + 1))
    win_out = np.empty((rows, 2 * half + 1))
    mean = np.empty(n - w + 1)
    core = np.empty(m)
    scratch = np.empty(m)
    for r in range(rows):
        cs = cs_out[r]
        total = 0.0
        cs[0] = 0.0
        for i in range(n):
            v = np.float64(y[r, i])
            if v - v != 0.0:  # NaN or infinite
                v = fill[r]
            total += polarity * v
            cs[i + 1] = total
        for i in range(n - w + 1):
            mean[i] = (cs[i + w] - cs[i]) / w
            if i >= w:
                core[i - w] = mean[i] - mean[i - w]
        at = _first_extreme(core, n, w, 0, n, 1.0)  # d's maximum over the row
        i_in[r] = at
        _, mad[r] = median_and_mad(core, m, scratch)
        lo = min(at + min_transit, n)
        hi = min(at + max_transit + 1, n)
        out = _first_extreme(core, n, w, lo, hi, -1.0) if hi > lo else 0
        i_out[r] = out
        for k in range(2 * half + 1):
            win_in[r, k] = _derivative_at(core, n, w, min(max(at + k - half, 0), n - 1))
            win_out[r, k] = _derivative_at(core, n, w, min(max(out + k - half, 0), n - 1))
    return mad, i_in, i_out, win_in, win_out


def _derivative(rec: _Records, s: _PickupSettings) -> _Derivative:
    """Step 2a: the running means' sums, the derivative's noise and its edge peaks.

    One compiled pass per record makes the sums; the derivative's values come
    from them as needed (its median and MAD, the edge searches and windows).
    """
    n_ev, n = rec.signal.shape
    w = s.w
    cumsum = np.empty((n_ev, n + 1))
    mad, i_in, i_out, window_in, window_out = _derivative_rows(
        rec.signal, rec.polarity, rec.fill, int(w), int(s.min_transit), int(s.max_transit),
        int(s.edge_half), cumsum)
    sigma = MAD_TO_SIGMA * mad
    if not np.all(sigma > 0):
        # a quiet quantised trace can have a zero MAD: its derivative's standard
        # deviation then (zero only for a constant trace, which has no pulse)
        for e in np.nonzero(~(sigma > 0))[0]:
            mean = (cumsum[e, w:] - cumsum[e, :-w]) / w  # mean_fwd[0 : n - w + 1]
            core = mean[w:] - mean[:-w]  # d[w : n - w + 1]
            sigma[e] = np.std(core) if core.size else np.nan
    sigma = np.where(sigma > 0, sigma, np.finfo(float).tiny)
    return _Derivative(cumsum=cumsum, w=w, sigma=sigma, i_in=i_in, i_out=i_out,
                       window_in=window_in, window_out=window_out)


def _edges(der: _Derivative, s: _PickupSettings, status: np.ndarray) -> _Edges:
    """Step 2b: entry = the derivative's maximum, exit = its minimum in the transit range."""
    half = s.edge_half
    peak_in = der.window_in[:, half]
    status[(status == 0) & (peak_in < s.threshold_sigma * der.sigma)] = 2
    peak_out = -der.window_out[:, half]
    status[(status == 0) & ~(peak_out >= s.threshold_sigma * der.sigma)] = 3
    n = der.cumsum.shape[1] - 1
    c_in, hw_in = _edge_centroid(der.window_in, der.i_in, n, half, +1.0)
    c_out, hw_out = _edge_centroid(der.window_out, der.i_out, n, half, -1.0)
    return _Edges(peak_in=peak_in, peak_out=peak_out, c_in=c_in, c_out=c_out,
                  hw_in=hw_in, hw_out=hw_out)


def _levels(rec: _Records, der: _Derivative, edges: _Edges, s: _PickupSettings) -> _Levels:
    """Step 4: plateau median over the baseline median, with their errors."""
    c_in, c_out = np.nan_to_num(edges.c_in), np.nan_to_num(edges.c_out)  # failed: 0
    guard = s.plateau_guard * (c_out - c_in)
    p_lo = np.ceil(c_in + guard).astype(np.int64)
    p_hi = np.floor(c_out - guard).astype(np.int64) + 1
    b_hi = np.floor(c_in - np.maximum(guard, edges.hw_in)).astype(np.int64)
    b_lo = b_hi - s.baseline
    short = (b_hi - np.maximum(b_lo, 0) < 2 * s.w) | (p_hi - p_lo < 4)
    rec.status[(rec.status == 0) & short] = 4
    b_lo = np.maximum(b_lo, 0)
    baseline, baseline_err = _window_stats(rec, der, b_lo, b_hi)
    plateau, plateau_err = _window_stats(rec, der, p_lo, p_hi)
    height = plateau - baseline
    height_err = np.hypot(plateau_err, baseline_err)
    with np.errstate(all="ignore"):
        snr = height / height_err
    rec.status[(rec.status == 0) & ~(snr >= s.threshold_sigma)] = 5
    return _Levels(baseline=baseline, height=height, height_err=height_err, snr=snr)


def pickup_charge_speed(
    time_us: Any,
    signal_v: Any,
    *,
    tube_length_m: float = DEFAULT_TUBE_LENGTH_M,
    volts_per_coulomb: float = PLACEHOLDER_VOLTS_PER_COULOMB,
    polarity: int = -1,
    smooth_us: float = 2.0,
    threshold_sigma: float = 6.0,
    min_transit_us: float = 0.5,
    max_transit_us: float = 400.0,
    edge_window_us: float = 15.0,
    baseline_us: float = 30.0,
    plateau_guard: float = 0.2,
    calibration: str = "placeholder",
    target_distance_m: float | None = None,
    impact_time_us: float = 0.0,
) -> xr.Dataset:
    """Speed and charge of grains from one charge-pickup tube, vectorised over events.

    Parameters
    ----------
    time_us : array_like, (n,) or (events, n)
        Sample times, µs, uniformly spaced.
    signal_v : array_like, (n,) or (events, n)
        Amplifier output, V.  NaN samples (missing channel, padding) are ignored.
    tube_length_m : float
        Length of the pickup tube, m (PLACEHOLDER default, see module docs).
    volts_per_coulomb : float
        Amplifier calibration, V per C of induced charge (PLACEHOLDER default).
    polarity : {-1, 1}
        Sign of the pulse (-1: negative-going, as in the lab captures).
    smooth_us : float
        Width of each half of the derivative kernel, µs; about the edge rise time.
    threshold_sigma : float
        Edge detection threshold, in MAD-scaled noise sigmas of the derivative.
    min_transit_us, max_transit_us : float
        Range searched for the exit edge after the entry edge, µs.
    edge_window_us : float
        Half-width of the window holding an edge's derivative peak, µs.
    baseline_us : float
        Length of the pre-pulse baseline window, µs.
    plateau_guard : float
        Fraction of the transit time excluded at each end of the plateau (and
        before the entry edge for the baseline).
    calibration : str
        Provenance of ``volts_per_coulomb`` stored in the output attributes.
    target_distance_m : float, optional
        Distance from the tube centre to the impact target, m.  With it,
        ``speed_to_target`` = distance / (``impact_time_us`` - centre time).
    impact_time_us : float
        Time of the impact on the trace, µs (0: the scope triggers on the impact).

    Returns
    -------
    xarray.Dataset
        On dimension ``event``: ``entry_time``, ``exit_time``, ``center_time``,
        ``transit_time``, ``transit_time_err`` (µs); ``speed``, ``speed_err``
        (km/s); ``baseline``, ``pulse_height``, ``pulse_height_err`` (V, pulse
        height positive along ``polarity``); ``charge``, ``charge_err`` (fC);
        ``snr`` (height / its error); ``flight_to_impact`` (impact time - centre
        time, µs); ``flight_over_transit`` (their ratio = target distance / tube
        length, the same for every grain: a geometry-free consistency check);
        ``speed_to_target`` (km/s, NaN without ``target_distance_m``);
        ``status`` (int8, see :data:`STATUS_MEANINGS`).  Quantities of events that
        fail are NaN.

    Raises
    ------
    AnalysisError
        Inconsistent shapes or too few samples.
    """
    y = _as_2d(signal_v, "signal_v")
    t = _as_2d(time_us, "time_us")
    if t.shape[1] != y.shape[1] or t.shape[0] not in (1, y.shape[0]):
        raise AnalysisError(f"time_us {t.shape} does not match signal_v {y.shape}")
    if y.shape[1] < 2:
        raise AnalysisError(f"too few samples ({y.shape[1]}) for pulse detection")
    return pickup_uniform(
        t[:, 0], t[:, 1] - t[:, 0], y, tube_length_m=tube_length_m,
        volts_per_coulomb=volts_per_coulomb, polarity=polarity, smooth_us=smooth_us,
        threshold_sigma=threshold_sigma, min_transit_us=min_transit_us,
        max_transit_us=max_transit_us, edge_window_us=edge_window_us,
        baseline_us=baseline_us, plateau_guard=plateau_guard, calibration=calibration,
        target_distance_m=target_distance_m, impact_time_us=impact_time_us,
    )


def pickup_uniform(
    start_us: Any,
    interval_us: Any,
    signal_v: Any,
    *,
    tube_length_m: float = DEFAULT_TUBE_LENGTH_M,
    volts_per_coulomb: float = PLACEHOLDER_VOLTS_PER_COULOMB,
    polarity: int = -1,
    smooth_us: float = 2.0,
    threshold_sigma: float = 6.0,
    min_transit_us: float = 0.5,
    max_transit_us: float = 400.0,
    edge_window_us: float = 15.0,
    baseline_us: float = 30.0,
    plateau_guard: float = 0.2,
    calibration: str = "placeholder",
    target_distance_m: float | None = None,
    impact_time_us: float = 0.0,
) -> xr.Dataset:
    """:func:`pickup_charge_speed` of records on uniform time axes given by formula.

    Parameters
    ----------
    start_us, interval_us : array_like, scalar or (events,)
        Time of each record's first sample and its sampling interval, µs: sample
        ``i`` lies at ``start_us + i * interval_us`` (no time array needed).
    signal_v : array_like, (n,) or (events, n)
        Amplifier output, V.
    **
        As :func:`pickup_charge_speed`.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_charge_speed`.
    """
    y = _as_2d(signal_v, "signal_v", dtype=None)  # as given: step 1 makes the float64 copy
    n_ev, n = y.shape
    t0 = np.broadcast_to(np.asarray(start_us, dtype=np.float64), (n_ev,))
    dt_ev = np.broadcast_to(np.asarray(interval_us, dtype=np.float64), (n_ev,))
    settings = _pickup_settings(
        dt_ev, n, polarity=polarity, smooth_us=smooth_us, threshold_sigma=threshold_sigma,
        min_transit_us=min_transit_us, max_transit_us=max_transit_us,
        edge_window_us=edge_window_us, baseline_us=baseline_us, plateau_guard=plateau_guard,
    )
    rec = _records(t0, dt_ev, y, settings)              # 1. NaN samples
    der = _derivative(rec, settings)                    # 2. smoothed derivative
    edges = _edges(der, settings, rec.status)           # 2. entry and exit edges
    levels = _levels(rec, der, edges, settings)         # 4. pulse height
    return _pickup_dataset(                             # 3, 5. speed, charge, errors
        rec, der, edges, levels,
        tube_length_m=float(tube_length_m), volts_per_coulomb=float(volts_per_coulomb),
        polarity=polarity, calibration=calibration, target_distance_m=target_distance_m,
        impact_time_us=impact_time_us,
        attrs={"smooth_us": smooth_us, "threshold_sigma": threshold_sigma},
    )


def _pickup_dataset(
    rec: _Records, der: _Derivative, edges: _Edges, levels: _Levels, *,
    tube_length_m: float, volts_per_coulomb: float, polarity: int, calibration: str,
    target_distance_m: float | None, impact_time_us: float, attrs: Mapping[str, Any],
) -> xr.Dataset:
    """Steps 3 and 5: edge times, speed, charge and their errors, as a Dataset."""
    status = rec.status
    # d[i] compares [i, i+w) with [i-w, i): its sample i sits at t[i] - dt/2
    t_entry = rec.t0 + (edges.c_in - 0.5) * rec.dt
    t_exit = rec.t0 + (edges.c_out - 0.5) * rec.dt
    transit = t_exit - t_entry
    # edge timing: derivative noise over peak height times the peak half-width
    with np.errstate(all="ignore"):
        e_in = der.sigma / np.abs(edges.peak_in) * edges.hw_in * rec.dt
        e_out = der.sigma / np.abs(edges.peak_out) * edges.hw_out * rec.dt
        transit_err = np.hypot(e_in, e_out)
        speed = tube_length_m / transit * _KM_S_PER_M_US
        speed_err = speed * transit_err / transit
    flight = impact_time_us - 0.5 * (t_entry + t_exit)
    dist = np.nan if target_distance_m is None else float(target_distance_m)
    with np.errstate(all="ignore"):
        flight_ratio = flight / transit
        speed_target = dist / flight * _KM_S_PER_M_US
        speed_target_err = speed_target * 0.5 * transit_err / flight
    charge = levels.height / volts_per_coulomb * 1e15
    charge_err = levels.height_err / volts_per_coulomb * 1e15

    bad = status != 0
    edges_bad = np.isin(status, (1, 2, 3))

    def per_event(values: np.ndarray, unusable: np.ndarray, **var_attrs: Any) -> tuple:
        return ("event", np.where(unusable, np.nan, values), var_attrs)

    out = xr.Dataset(
        {
            "entry_time": per_event(t_entry, edges_bad, units="us"),
            "exit_time": per_event(t_exit, edges_bad, units="us"),
            "center_time": per_event(0.5 * (t_entry + t_exit), edges_bad, units="us"),
            "transit_time": per_event(transit, edges_bad, units="us"),
            "transit_time_err": per_event(transit_err, edges_bad, units="us"),
            "speed": per_event(speed, edges_bad, units="km/s", tube_length_m=tube_length_m),
            "speed_err": per_event(speed_err, edges_bad, units="km/s"),
            "baseline": per_event(polarity * levels.baseline, bad, units="V"),
            "pulse_height": per_event(
                levels.height, bad, units="V",
                long_name="plateau minus baseline along the pulse polarity"),
            "pulse_height_err": per_event(levels.height_err, bad, units="V"),
            "charge": per_event(charge, bad, units="fC", volts_per_coulomb=volts_per_coulomb,
                                calibration=calibration),
            "charge_err": per_event(charge_err, bad, units="fC"),
            "snr": per_event(levels.snr, bad, units="1"),
            "flight_to_impact": per_event(flight, edges_bad, units="us"),
            "flight_over_transit": per_event(flight_ratio, edges_bad, units="1",
                                             long_name="target distance over tube length"),
            "speed_to_target": per_event(speed_target, edges_bad, units="km/s",
                                         target_distance_m=dist),
            "speed_to_target_err": per_event(speed_target_err, edges_bad, units="km/s"),
            "status": ("event", status, {
                "flag_values": list(range(len(STATUS_MEANINGS))),
                "flag_meanings": " ".join(STATUS_MEANINGS)}),
        },
        attrs={
            "method": "smoothed-derivative edges (50% points), median plateau over baseline",
            **attrs, "polarity": polarity, "calibration": calibration,
        },
    )
    n_bad = int(bad.sum())
    if n_bad:
        _log.info("pickup: %d of %d events flagged: %s", n_bad, status.size,
                  {STATUS_MEANINGS[k]: int((status == k).sum()) for k in set(status[bad])})
    return out


def _pair(value: Any) -> tuple[Any, Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise AnalysisError(f"expected a scalar or a pair, got {value!r}")
        return value[0], value[1]
    return value, value


def pickup_two_detectors(
    time_us: Any,
    signal1_v: Any,
    signal2_v: Any,
    *,
    separation_m: float | None = None,
    tube_length_m: float | Sequence[float] = DEFAULT_TUBE_LENGTH_M,
    volts_per_coulomb: float | Sequence[float] = PLACEHOLDER_VOLTS_PER_COULOMB,
    polarity: int | Sequence[int] = -1,
    agreement_tolerance: float = 0.05,
    time2_us: Any = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Speeds from two pickup tubes: transit times, and the flight time between them.

    Parameters
    ----------
    time_us : array_like
        Sample times of detector 1 (and of detector 2 unless ``time2_us``), µs.
    signal1_v, signal2_v : array_like
        Detector outputs, V; detector 2 downstream of detector 1.
    separation_m : float, optional
        Centre-to-centre distance of the tubes along the beam, m.  Without it the
        flight-time speed is NaN and only ``implied_separation`` is reported.
    tube_length_m, volts_per_coulomb, polarity : scalar or pair
        Per detector (see :func:`pickup_charge_speed`).
    agreement_tolerance : float
        Relative speed difference accepted on top of 2 combined sigmas.
    time2_us : array_like, optional
        Sample times of detector 2, µs, if they differ.
    **kwargs
        Passed to :func:`pickup_charge_speed`.

    Returns
    -------
    xarray.Dataset
        ``qd1_*`` and ``qd2_*`` (the single-tube results), ``delay`` and
        ``delay_err`` (centre time 2 - 1, µs), ``entry_delay``/``exit_delay`` (µs),
        ``speed_transit`` (error-weighted mean of both tubes, km/s),
        ``speed_tof`` (separation / delay, km/s), their errors, ``speed_ratio``
        (tof / transit), ``speeds_agree`` (bool), ``implied_separation``
        (speed_transit * delay, m) and ``delay_to_transit`` (delay over mean
        transit time: geometry ratio D/L, the same for every grain).
    """
    L1, L2 = _pair(tube_length_m)
    k1, k2 = _pair(volts_per_coulomb)
    p1, p2 = _pair(polarity)
    r1 = pickup_charge_speed(time_us, signal1_v, tube_length_m=L1, volts_per_coulomb=k1,
                             polarity=p1, **kwargs)
    r2 = pickup_charge_speed(time_us if time2_us is None else time2_us, signal2_v,
                             tube_length_m=L2, volts_per_coulomb=k2, polarity=p2, **kwargs)
    return combine_detectors(r1, r2, separation_m=separation_m,
                             agreement_tolerance=agreement_tolerance)


def combine_detectors(
    r1: xr.Dataset,
    r2: xr.Dataset,
    *,
    separation_m: float | None = None,
    agreement_tolerance: float = 0.05,
) -> xr.Dataset:
    """Combine the single-tube results of two detectors (see :func:`pickup_two_detectors`).

    Parameters
    ----------
    r1, r2 : xarray.Dataset
        :func:`pickup_charge_speed` (or :func:`pickup_uniform`) of detector 1 and
        of detector 2, downstream, on the same events.
    separation_m, agreement_tolerance
        As :func:`pickup_two_detectors`.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_two_detectors`.
    """
    # NumPy on the variables' values, one Dataset at the end: xarray's merge and
    # arithmetic on ~40 small variables cost more than the pulse analysis of an impact
    dims = r1["speed"].dims
    v: dict[str, np.ndarray] = {}
    variables: dict[str, tuple] = {}
    for prefix, single in (("qd1_", r1), ("qd2_", r2)):
        for name, variable in single.data_vars.items():
            variables[f"{prefix}{name}"] = (variable.dims, variable.values, variable.attrs)
            v[f"{prefix}{name}"] = variable.values
    with np.errstate(all="ignore"):
        delay = v["qd2_center_time"] - v["qd1_center_time"]
        delay_err = 0.5 * np.hypot(v["qd1_transit_time_err"], v["qd2_transit_time_err"])
        v1, v2 = v["qd1_speed"], v["qd2_speed"]
        e1, e2 = v["qd1_speed_err"], v["qd2_speed_err"]
        wt1, wt2 = 1 / e1**2, 1 / e2**2
        both = np.isfinite(v1) & np.isfinite(v2)
        v_tr = np.where(both, (wt1 * v1 + wt2 * v2) / (wt1 + wt2), np.where(np.isnan(v1), v2, v1))
        v_tr_err = np.where(both, 1 / np.sqrt(wt1 + wt2), np.where(np.isnan(e1), e2, e1))
        sep = np.nan if separation_m is None else float(separation_m)
        v_tof = sep / delay * _KM_S_PER_M_US
        v_tof_err = np.abs(v_tof) * delay_err / np.abs(delay)
        ratio = v_tof / v_tr
        ratio_err = np.abs(ratio) * np.hypot(v_tof_err / v_tof, v_tr_err / v_tr)
        agree = np.abs(ratio - 1) <= agreement_tolerance + 2 * ratio_err
        mean_transit = 0.5 * (v["qd1_transit_time"] + v["qd2_transit_time"])
        implied = v_tr * delay / _KM_S_PER_M_US
        delay_to_transit = delay / mean_transit
    variables.update({
        "delay": (dims, delay, {"units": "us", "long_name": "centre time, detector 2 - 1"}),
        "delay_err": (dims, delay_err, {"units": "us"}),
        "entry_delay": (dims, v["qd2_entry_time"] - v["qd1_entry_time"], {"units": "us"}),
        "exit_delay": (dims, v["qd2_exit_time"] - v["qd1_exit_time"], {"units": "us"}),
        "speed_transit": (dims, v_tr, {"units": "km/s"}),
        "speed_transit_err": (dims, v_tr_err, {"units": "km/s"}),
        "speed_tof": (dims, v_tof, {"units": "km/s", "separation_m": sep}),
        "speed_tof_err": (dims, v_tof_err, {"units": "km/s"}),
        "speed_ratio": (dims, ratio, {"units": "1", "long_name": "speed_tof / speed_transit"}),
        "speeds_agree": (dims, agree & np.isfinite(ratio)),
        "implied_separation": (dims, implied, {
            "units": "m", "long_name": "separation for which speed_tof equals speed_transit"}),
        "delay_to_transit": (dims, delay_to_transit, {
            "units": "1", "long_name": "delay over mean transit time (= D/L for equal tubes)"}),
    })
    return xr.Dataset(variables, coords=r1.coords, attrs=dict(r1.attrs))


def pickup_from_dataset(
    ds: xr.Dataset,
    *,
    config: Mapping[str, Any] | None = None,
    channels: tuple[str, str] = ("QD_1", "QD_2"),
) -> xr.Dataset:
    """Run the pickup analysis on an event dataset (e.g. from :func:`read_trc`).

    Parameters
    ----------
    ds : xarray.Dataset
        Dimension ``epoch``; QD waveforms whose ``time_variable`` attribute names
        their time axis (µs), and optionally ``signal_polarity``.
    config : mapping, optional
        The ``pickup`` section of ``configs/scope.yaml`` (default: that file).
    channels : pair of str
        QD variables; with only the first present, the single-tube analysis runs.

    Returns
    -------
    xarray.Dataset
        As :func:`pickup_two_detectors` (or :func:`pickup_charge_speed`) on
        dimension ``epoch``.

    Raises
    ------
    AnalysisError
        If no QD channel is in ``ds``.
    """
    cfg = dict(config if config is not None else load_scope_config().get("pickup", {}))
    present = [c for c in channels if c in ds]
    if not present:
        raise AnalysisError(f"no charge pickup channel {channels} in dataset")
    kw = {k: cfg[k] for k in ("smooth_us", "threshold_sigma", "min_transit_us",
                              "max_transit_us", "edge_window_us", "baseline_us",
                              "plateau_guard", "impact_time_us") if k in cfg}
    if cfg.get("target_distance_m") is not None:
        kw["target_distance_m"] = float(cfg["target_distance_m"])
    det = cfg.get("detectors", {})

    def per(c: str, key: str, default: Any) -> Any:
        return det.get(c, {}).get(key, cfg.get(key, default))

    def series(c: str) -> tuple[np.ndarray, np.ndarray, int]:
        tname = ds[c].attrs.get("time_variable")
        if tname is None or tname not in ds:
            raise AnalysisError(f"{c}: no time_variable attribute naming a time axis")
        pol = int(ds[c].attrs.get("signal_polarity", per(c, "polarity", -1)))
        return ds[tname].values, ds[c].values, pol

    calib = str(cfg.get("calibration", "placeholder"))
    if len(present) == 2:
        (t1, y1, p1), (t2, y2, p2) = series(present[0]), series(present[1])
        res = pickup_two_detectors(
            t1, y1, y2, time2_us=t2, polarity=(p1, p2),
            separation_m=cfg.get("separation_m"),
            tube_length_m=tuple(per(c, "tube_length_m", DEFAULT_TUBE_LENGTH_M)
                                for c in present),
            volts_per_coulomb=tuple(
                per(c, "volts_per_coulomb", PLACEHOLDER_VOLTS_PER_COULOMB) for c in present),
            agreement_tolerance=cfg.get("agreement_tolerance", 0.05),
            calibration=calib, **kw)
    else:
        c = present[0]
        t, y, p = series(c)
        res = pickup_charge_speed(
            t, y, polarity=p, tube_length_m=per(c, "tube_length_m", DEFAULT_TUBE_LENGTH_M),
            volts_per_coulomb=per(c, "volts_per_coulomb", PLACEHOLDER_VOLTS_PER_COULOMB),
            calibration=calib, **kw)
    res = res.rename({"event": "epoch"}).assign_coords(epoch=ds.epoch.values)
    if "impact_number" in ds:
        res["impact_number"] = ("epoch", ds.impact_number.values)
    return res
