"""Grain speed and charge from the dust accelerator's charge pickup detectors.

A charge pickup detector (QD) is a conducting tube on the beam line read by a
charge-sensitive amplifier.  While a grain of charge *q* is inside, the tube carries
the induced charge *q*: the amplifier output is a near-rectangular pulse (edges as
long as the fringing field takes to cross, about one tube radius) of height
``q * volts_per_coulomb`` above the pre-signal baseline, lasting ``L / v`` for a tube
of length *L*.  Two tubes a distance *D* apart see the grain ``D / v`` apart.

Method (all steps vectorised over events)
-----------------------------------------
1. Polarity: the signal is multiplied by ``polarity`` (±1; the lab amplifiers give
   negative-going QD pulses, so the default is -1) so that the pulse is positive.
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

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.errors import AnalysisError

__all__ = [
    "PLACEHOLDER_VOLTS_PER_COULOMB",
    "STATUS_MEANINGS",
    "load_scope_config",
    "pickup_charge_speed",
    "pickup_from_dataset",
    "pickup_two_detectors",
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
    from idexdask.config import load_yaml

    return load_yaml(path if path is not None else "scope.yaml")


def _as_2d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AnalysisError(f"{name} must be 1-D or 2-D (events, samples), got {arr.shape}")
    return arr


def _window_stats(
    y: np.ndarray, s: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``y[e, lo:hi]`` and its error.

    The error is the MAD-scaled scatter of the ``w``-sample means ``s`` that lie
    inside the window, over the square root of the number of such independent
    means (this follows noise correlated over less than ``w`` samples).  Windows
    shorter than ``2 w`` use the scatter of ``y`` itself, with one independent
    sample per ``w`` (conservative).
    """
    idx = np.arange(y.shape[1])[None, :]
    mask = (idx >= lo[:, None]) & (idx < hi[:, None])
    mask_s = (idx >= lo[:, None]) & (idx <= hi[:, None] - w)
    n = mask.sum(axis=1)
    n_s = mask_s.sum(axis=1)

    def mad(a: np.ndarray) -> np.ndarray:
        return 1.4826 * np.nanmedian(np.abs(a - np.nanmedian(a, axis=1)[:, None]), axis=1)

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows of empty windows
        level = np.nanmedian(np.where(mask, y, np.nan), axis=1)
        err_s = mad(np.where(mask_s, s, np.nan)) / np.sqrt(np.maximum(n_s / w, 1.0))
        err_y = mad(np.where(mask, y, np.nan))
    err = np.where(n_s >= w, err_s, err_y)
    level = np.where(n > 0, level, np.nan)
    err = np.where(n > 0, err, np.nan)
    return level, err


def _edge_centroid(
    d: np.ndarray, peak_idx: np.ndarray, half: int, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (fractional sample index) of the part of a peak above half height,
    and the peak's half-width in samples."""
    n = d.shape[1]
    offs = np.arange(-half, half + 1)
    win = np.clip(peak_idx[:, None] + offs[None, :], 0, n - 1)
    vals = sign * np.take_along_axis(d, win, axis=1)
    peak = sign * np.take_along_axis(d, peak_idx[:, None], axis=1)
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
    tube_length_m, volts_per_coulomb = float(tube_length_m), float(volts_per_coulomb)
    n_ev, n = y.shape
    if t.shape[1] != n or t.shape[0] not in (1, n_ev):
        raise AnalysisError(f"time_us {t.shape} does not match signal_v {y.shape}")
    if n < 16:
        raise AnalysisError(f"too few samples ({n}) for pulse detection")
    if polarity not in (-1, 1):
        raise AnalysisError(f"polarity must be -1 or +1, not {polarity}")
    t = np.broadcast_to(t, y.shape)
    dt_ev = t[:, 1] - t[:, 0]
    dt = float(np.nanmedian(dt_ev)) if np.isfinite(dt_ev).any() else np.nan
    if not np.isfinite(dt) or dt <= 0:
        raise AnalysisError("time_us must increase uniformly")
    w = max(1, int(round(smooth_us / dt)))
    if 2 * w + 2 > n:
        raise AnalysisError(f"smooth_us={smooth_us} too long for {n} samples of {dt} µs")

    status = np.zeros(n_ev, np.int8)
    finite = np.isfinite(y)
    n_fin = finite.sum(axis=1)
    status[n_fin < 4 * w] = 1
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN events
        fill = np.nanmedian(np.where(finite, y, np.nan), axis=1)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    y = polarity * np.where(finite, y, fill[:, None])

    # w-sample running means and the smoothed derivative, from cumulative sums
    cs = np.zeros((n_ev, n + 1))
    np.cumsum(y, axis=1, out=cs[:, 1:])
    mean_fwd = np.full((n_ev, n), np.nan)  # mean of y[i : i+w]
    mean_fwd[:, : n - w + 1] = (cs[:, w:] - cs[:, : n - w + 1]) / w
    d = np.zeros((n_ev, n))
    d[:, w : n - w + 1] = mean_fwd[:, w : n - w + 1] - mean_fwd[:, : n - 2 * w + 1]
    core = d[:, w : n - w + 1]
    sigma_d = 1.4826 * np.median(np.abs(core - np.median(core, axis=1)[:, None]), axis=1)
    # a quiet quantised trace can have a zero MAD: its derivative's standard
    # deviation then (zero only for a constant trace, which has no pulse)
    sigma_d = np.where(sigma_d > 0, sigma_d, np.std(core, axis=1))
    sigma_d = np.where(sigma_d > 0, sigma_d, np.finfo(float).tiny)

    rows = np.arange(n_ev)
    i_in = np.argmax(d, axis=1)
    peak_in = d[rows, i_in]
    status[(status == 0) & (peak_in < threshold_sigma * sigma_d)] = 2

    idx = np.arange(n)[None, :]
    lo_ex = i_in + int(np.ceil(min_transit_us / dt))
    hi_ex = i_in + int(np.floor(max_transit_us / dt))
    d_ex = np.where((idx >= lo_ex[:, None]) & (idx <= hi_ex[:, None]), d, np.inf)
    i_out = np.argmin(d_ex, axis=1)
    peak_out = -d[rows, i_out]
    status[(status == 0) & ~(peak_out >= threshold_sigma * sigma_d)] = 3

    half = max(2 * w, int(round(edge_window_us / dt)))
    c_in, hw_in = _edge_centroid(d, i_in, half, +1.0)
    c_out, hw_out = _edge_centroid(d, i_out, half, -1.0)
    # d[i] compares [i, i+w) with [i-w, i): its sample i sits at t[i] - dt/2
    t0 = t[:, 0]
    t_entry = t0 + (c_in - 0.5) * dt_ev
    t_exit = t0 + (c_out - 0.5) * dt_ev
    transit = t_exit - t_entry

    # plateau and baseline windows (sample indices)
    c_in_f, c_out_f = np.nan_to_num(c_in), np.nan_to_num(c_out)  # failed events: 0
    guard = plateau_guard * (c_out_f - c_in_f)
    p_lo = np.ceil(c_in_f + guard).astype(np.int64)
    p_hi = np.floor(c_out_f - guard).astype(np.int64) + 1
    b_hi = np.floor(c_in_f - np.maximum(guard, hw_in)).astype(np.int64)
    b_lo = b_hi - int(round(baseline_us / dt))
    status[(status == 0) & ((b_hi - np.maximum(b_lo, 0) < 2 * w) | (p_hi - p_lo < 4))] = 4
    b_lo = np.maximum(b_lo, 0)
    baseline, baseline_err = _window_stats(y, mean_fwd, b_lo, b_hi, w)
    plateau, plateau_err = _window_stats(y, mean_fwd, p_lo, p_hi, w)
    height = plateau - baseline
    height_err = np.hypot(plateau_err, baseline_err)
    with np.errstate(all="ignore"):
        snr = height / height_err
    status[(status == 0) & ~(snr >= threshold_sigma)] = 5

    # edge timing: derivative noise over peak height times the peak half-width
    with np.errstate(all="ignore"):
        e_in = sigma_d / np.abs(peak_in) * hw_in * dt_ev
        e_out = sigma_d / np.abs(peak_out) * hw_out * dt_ev
        transit_err = np.hypot(e_in, e_out)
        speed = tube_length_m / transit * _KM_S_PER_M_US
        speed_err = speed * transit_err / transit
    flight = impact_time_us - 0.5 * (t_entry + t_exit)
    with np.errstate(all="ignore"):
        flight_ratio = flight / transit
        dist = np.nan if target_distance_m is None else float(target_distance_m)
        speed_target = dist / flight * _KM_S_PER_M_US
        speed_target_err = speed_target * 0.5 * transit_err / flight
    charge = height / volts_per_coulomb * 1e15
    charge_err = height_err / volts_per_coulomb * 1e15

    bad = status != 0
    edges_bad = np.isin(status, (1, 2, 3))

    def nan_where(a: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.where(m, np.nan, a)

    out = xr.Dataset(
        {
            "entry_time": ("event", nan_where(t_entry, edges_bad), {"units": "us"}),
            "exit_time": ("event", nan_where(t_exit, edges_bad), {"units": "us"}),
            "center_time": ("event", nan_where(0.5 * (t_entry + t_exit), edges_bad),
                            {"units": "us"}),
            "transit_time": ("event", nan_where(transit, edges_bad), {"units": "us"}),
            "transit_time_err": ("event", nan_where(transit_err, edges_bad), {"units": "us"}),
            "speed": ("event", nan_where(speed, edges_bad), {
                "units": "km/s", "tube_length_m": tube_length_m}),
            "speed_err": ("event", nan_where(speed_err, edges_bad), {"units": "km/s"}),
            "baseline": ("event", nan_where(polarity * baseline, bad), {"units": "V"}),
            "pulse_height": ("event", nan_where(height, bad), {
                "units": "V", "long_name": "plateau minus baseline along the pulse polarity"}),
            "pulse_height_err": ("event", nan_where(height_err, bad), {"units": "V"}),
            "charge": ("event", nan_where(charge, bad), {
                "units": "fC", "volts_per_coulomb": volts_per_coulomb,
                "calibration": calibration}),
            "charge_err": ("event", nan_where(charge_err, bad), {"units": "fC"}),
            "snr": ("event", nan_where(snr, bad), {"units": "1"}),
            "flight_to_impact": ("event", nan_where(flight, edges_bad), {"units": "us"}),
            "flight_over_transit": ("event", nan_where(flight_ratio, edges_bad), {
                "units": "1", "long_name": "target distance over tube length"}),
            "speed_to_target": ("event", nan_where(speed_target, edges_bad), {
                "units": "km/s", "target_distance_m": dist}),
            "speed_to_target_err": ("event", nan_where(speed_target_err, edges_bad),
                                    {"units": "km/s"}),
            "status": ("event", status, {
                "flag_values": list(range(len(STATUS_MEANINGS))),
                "flag_meanings": " ".join(STATUS_MEANINGS)}),
        },
        attrs={
            "method": "smoothed-derivative edges (50% points), median plateau over baseline",
            "smooth_us": smooth_us, "threshold_sigma": threshold_sigma, "polarity": polarity,
            "calibration": calibration,
        },
    )
    n_bad = int(bad.sum())
    if n_bad:
        _log.info("pickup: %d of %d events flagged: %s", n_bad, n_ev,
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
    out = xr.merge([r1.rename({v: f"qd1_{v}" for v in r1.data_vars}),
                    r2.rename({v: f"qd2_{v}" for v in r2.data_vars})], combine_attrs="override")
    with np.errstate(all="ignore"):
        delay = out.qd2_center_time - out.qd1_center_time
        delay_err = 0.5 * np.hypot(out.qd1_transit_time_err, out.qd2_transit_time_err)
        v1, v2 = out.qd1_speed, out.qd2_speed
        e1, e2 = out.qd1_speed_err, out.qd2_speed_err
        wt1, wt2 = 1 / e1**2, 1 / e2**2
        both = np.isfinite(v1) & np.isfinite(v2)
        v_tr = xr.where(both, (wt1 * v1 + wt2 * v2) / (wt1 + wt2), v1.fillna(v2))
        v_tr_err = xr.where(both, 1 / np.sqrt(wt1 + wt2), e1.fillna(e2))
        sep = np.nan if separation_m is None else float(separation_m)
        v_tof = sep / delay * _KM_S_PER_M_US
        v_tof_err = np.abs(v_tof) * delay_err / np.abs(delay)
        ratio = v_tof / v_tr
        ratio_err = np.abs(ratio) * np.hypot(v_tof_err / v_tof, v_tr_err / v_tr)
        agree = np.abs(ratio - 1) <= agreement_tolerance + 2 * ratio_err
        mean_transit = 0.5 * (out.qd1_transit_time + out.qd2_transit_time)
    out["delay"] = delay.assign_attrs(units="us", long_name="centre time, detector 2 - 1")
    out["delay_err"] = delay_err.assign_attrs(units="us")
    out["entry_delay"] = (out.qd2_entry_time - out.qd1_entry_time).assign_attrs(units="us")
    out["exit_delay"] = (out.qd2_exit_time - out.qd1_exit_time).assign_attrs(units="us")
    out["speed_transit"] = v_tr.assign_attrs(units="km/s")
    out["speed_transit_err"] = v_tr_err.assign_attrs(units="km/s")
    out["speed_tof"] = v_tof.assign_attrs(units="km/s", separation_m=sep)
    out["speed_tof_err"] = v_tof_err.assign_attrs(units="km/s")
    out["speed_ratio"] = ratio.assign_attrs(units="1", long_name="speed_tof / speed_transit")
    out["speeds_agree"] = agree & np.isfinite(ratio)
    out["implied_separation"] = (v_tr * delay / _KM_S_PER_M_US).assign_attrs(
        units="m", long_name="separation for which speed_tof equals speed_transit")
    out["delay_to_transit"] = (delay / mean_transit).assign_attrs(
        units="1", long_name="delay over mean transit time (= D/L for equal tubes)")
    return out


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
