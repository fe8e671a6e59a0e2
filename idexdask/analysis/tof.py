"""Time-of-flight spectra: the three gains merged into one, then its lines fitted.

Merging (:func:`merge_gains`)
    IDEX records the same TOF current at three gains (TOF_High, TOF_Mid,
    TOF_Low, nominally 1 : 0.1 : 0.01).  Each is baseline-subtracted and turned
    positive-going (``polarity * (x - baseline)``).  The combined spectrum, in
    units of the highest gain present, is that gain wherever it is not
    saturated; where it is, the next gain scaled by its measured ratio is used,
    and so on; samples saturated in every gain are NaN (left out of the fits).

    The gain ratios are measured per event from the overlap: samples where both
    gains are unsaturated and the higher gain lies more than ``overlap_sigma``
    of its noise above the baseline (and high enough that the lower gain is
    expected above ``overlap_sigma`` of *its* noise).  The lower gain is
    regressed on the higher one through the origin (the higher gain is the
    precise regressor, so noise in the lower gain does not bias the slope),
    with one 4-sigma clipping pass; the ratio is the inverse slope.  The
    baselines are clipped means of the pre-trigger samples (a median of integer
    samples is quantised, and half a DN of offset is a few per cent of a
    low-gain signal).  With fewer
    than ``min_overlap_samples`` samples the nominal ratio of the settings is
    used (status NOMINAL).  TOF_High/TOF_Low is the product of the two
    neighbouring ratios when TOF_Mid is present (the high and low gains almost
    never overlap: 100x apart on a 10-bit ADC).

Saturated samples
    A sample is saturated if it lies within ``saturation_guard`` samples of a
    rail value (``VALIDMAX``/``VALIDMIN`` or ``2**adc_bits - 1``/0 in the
    signal's direction) or inside the saturated interval found by
    :func:`idexdask.analysis.signal_quality.signal_quality` (rail runs and
    clipped flat tops).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.peaks import (
    MAD_TO_SIGMA,
    LineFits,
    PeakCandidates,
    _median_inplace,
    _pairwise_sum,
    baseline_sigma,
    detect_peaks,
    fit_lines,
)

__all__ = [
    "GainRatioStatus",
    "MergedSpectrum",
    "TOF_CHANNELS",
    "channel_polarity",
    "channel_time",
    "merge_gains",
    "saturation_mask",
    "tof_lines",
]

_log = get_logger(__name__)

TOF_CHANNELS = ("TOF_High", "TOF_Mid", "TOF_Low")
"""TOF gains, highest first."""


class GainRatioStatus(IntEnum):
    """How a gain ratio was obtained."""

    MEASURED = 0
    """Regressed on the overlap of unsaturated samples of this event."""
    NOMINAL = 1
    """Too few overlapping samples: the nominal ratio of the settings."""
    ABSENT = 2
    """One of the two gains is not in the dataset."""


def channel_polarity(ds: xr.Dataset, name: str, settings: Mapping[str, Any]) -> int:
    """Signal direction of a waveform: +1 positive-going, -1 negative-going, 0 either.

    From ``settings["polarity"][name]``, else the ``signal_polarity`` attribute,
    else +1 (IDEX DN data).
    """
    pol = (settings.get("polarity") or {}).get(name)
    if pol is None:
        pol = ds[name].attrs.get("signal_polarity", 1)
    return int(np.sign(int(pol)))


def channel_time(ds: xr.Dataset, name: str) -> np.ndarray:
    """Time axis of waveform ``name``, (n_events, n_samples), µs from the trigger.

    The variable named by its ``time_variable`` attribute, else the one implied
    by its sample dimension; else sample index / ``sample_rate_msps`` (or the
    plain index, 1 µs per sample, when even that is missing).
    """
    from idexdask.analysis.signal_quality import find_time_variable

    var = ds[name]
    n_events, n = var.shape
    tname = find_time_variable(ds, name)
    t = None
    if tname is not None:
        t = np.asarray(ds[tname].values, dtype=float)
        if t.ndim == 1 and t.shape[0] == n:
            t = np.broadcast_to(t, (n_events, n))
        elif t.shape != (n_events, n):
            t = None
    if t is None:
        rate = float(var.attrs.get("sample_rate_msps", 1.0))
        t = np.broadcast_to(np.arange(n) / rate, (n_events, n))
        _log.info("%s: no time axis; using sample index / %g MSPS", name, rate)
    return t


def _rails(var: xr.DataArray) -> tuple[float | None, float | None]:
    attrs = var.attrs
    vmin, vmax = attrs.get("VALIDMIN"), attrs.get("VALIDMAX")
    if vmax is None and "adc_bits" in attrs:
        vmin, vmax = 0, 2 ** int(attrs["adc_bits"]) - 1
    if vmax is None and var.dtype.kind == "u" and var.dtype.itemsize == 2:
        vmin, vmax = 0, 65534  # no documented ADC: only the top of the type
    return (None if vmin is None else float(vmin)), (None if vmax is None else float(vmax))


def saturation_mask(
    ds: xr.Dataset,
    name: str,
    x: np.ndarray,
    t: np.ndarray,
    quality: xr.Dataset | None,
    polarity: int,
    guard: int,
) -> np.ndarray:
    """Saturated samples of waveform ``name`` (see module docstring), (n_events, n)."""
    vmin, vmax = _rails(ds[name])
    sat = np.zeros(x.shape, bool)
    with np.errstate(invalid="ignore"):
        if vmax is not None and polarity >= 0:
            sat |= x >= vmax
        if vmin is not None and polarity <= 0:
            sat |= x <= vmin
    low = name.lower()
    if quality is not None and f"{low}_saturation_start" in quality:
        t0 = np.asarray(quality[f"{low}_saturation_start"].values, dtype=float)[:, None]
        t1 = np.asarray(quality[f"{low}_saturation_stop"].values, dtype=float)[:, None]
        flag = np.asarray(quality[f"{low}_saturated"].values, dtype=bool)
        rows = np.nonzero(flag)[0]  # only flagged events have a saturation interval
        if rows.size:
            tr = t[rows] if np.ndim(t) == 2 else np.asarray(t)[None, :]
            with np.errstate(invalid="ignore"):
                sat[rows] |= (tr >= t0[rows]) & (tr <= t1[rows])
    if guard > 0 and sat.any():
        grown = sat.copy()
        for k in range(1, guard + 1):
            grown[:, k:] |= sat[:, :-k]
            grown[:, :-k] |= sat[:, k:]
        sat = grown
    return sat


@dataclass
class MergedSpectrum:
    """Combined TOF spectrum of every event.

    Attributes
    ----------
    signal : numpy.ndarray
        Baseline-subtracted, positive-going spectrum in units of the reference
        (highest present) gain (n_events, n_samples); NaN where unusable.
    sigma : numpy.ndarray
        Noise sigma of each sample (n_events, n_samples), same unit.
    time : numpy.ndarray
        Sample times (n_events, n_samples), µs.
    source : numpy.ndarray
        Index into ``channels`` of the gain used per sample, -1 for none, int8.
    channels : tuple of str
        Gains present, highest first.
    ratios : dict
        ``name -> (n_events,)`` reference-gain / ``name`` ratio (1 for the reference).
    ratio_status : dict
        ``name -> (n_events,)`` :class:`GainRatioStatus`.
    overlap : dict
        ``name -> (n_events,)`` samples used to measure the ratio to the next
        higher gain.
    noise : numpy.ndarray
        Baseline noise of the reference gain per event (n_events,).
    """

    signal: np.ndarray
    sigma: np.ndarray
    time: np.ndarray
    source: np.ndarray
    channels: tuple[str, ...]
    ratios: dict[str, np.ndarray]
    ratio_status: dict[str, np.ndarray]
    overlap: dict[str, np.ndarray]
    noise: np.ndarray


def _ratio(
    h: np.ndarray,
    lo: np.ndarray,
    ok: np.ndarray,
    sig_h: np.ndarray,
    sig_l: np.ndarray,
    nominal: float,
    settings: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Higher/lower gain ratio per event from the overlap (see module docstring)."""
    k = float(settings["overlap_sigma"])
    thresh = np.maximum(k * sig_h, k * sig_l * nominal)
    with np.errstate(all="ignore"):
        slope, n = _ratio_rows(
            np.asarray(h, dtype=float), np.asarray(lo, dtype=float), np.asarray(ok, dtype=bool),
            np.asarray(thresh, dtype=float), np.asarray(sig_l, dtype=float),
        )
        ratio = 1.0 / slope
    good = (n >= int(settings["min_overlap_samples"])) & np.isfinite(ratio) & (ratio > 0)
    status = np.where(good, GainRatioStatus.MEASURED, GainRatioStatus.NOMINAL).astype(np.int8)
    return np.where(good, ratio, nominal), status, n.astype(np.int32)


@numba.njit(cache=True, nogil=True)
def _ratio_rows(
    h: np.ndarray, lo: np.ndarray, ok: np.ndarray, thresh: np.ndarray, sig_l: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row: origin slope of ``lo`` on ``h`` over the overlap, refit without outliers.

    Overlap: ``ok`` and ``h > thresh``; outliers: residual beyond 4 x
    max(robust residual sigma, ``sig_l``).  Returns the slopes and sample counts.
    """
    rows, n = h.shape
    slope = np.empty(rows)
    count = np.zeros(rows, dtype=np.int64)
    sel = np.empty(n, dtype=np.bool_)
    resid = np.empty(n)
    buf = np.empty(2 * n)
    hl = np.empty(n)
    hh = np.empty(n)
    for r in range(rows):
        # products with zeros outside the selection, summed as numpy does (same rounding)
        for j in range(n):
            s = ok[r, j] and h[r, j] > thresh[r]
            sel[j] = s
            hj = h[r, j] if s else 0.0
            hl[j] = hj * (lo[r, j] if s else 0.0)
            hh[j] = hj * hj
        b = _divide(_pairwise_sum(hl, 0, n, n), _pairwise_sum(hh, 0, n, n))
        k = 0
        for j in range(n):
            v = lo[r, j] - b * h[r, j]
            resid[j] = v
            if sel[j] and not np.isnan(v):
                buf[k] = v
                k += 1
        spread = np.nan
        if k:
            m = _median_inplace(buf, k)
            kk = 0
            for j in range(n):
                if sel[j] and not np.isnan(resid[j]):
                    buf[kk] = abs(resid[j] - m)
                    kk += 1
            spread = MAD_TO_SIGMA * _median_inplace(buf, kk)
        lim = np.nan if (np.isnan(spread) or np.isnan(sig_l[r])) else 4.0 * max(spread, sig_l[r])
        c = 0
        for j in range(n):
            s = sel[j] and abs(resid[j]) <= lim
            hj = h[r, j] if s else 0.0
            hl[j] = hj * (lo[r, j] if s else 0.0)
            hh[j] = hj * hj
            c += s
        slope[r] = _divide(_pairwise_sum(hl, 0, n, n), _pairwise_sum(hh, 0, n, n))
        count[r] = c
    return slope, count


@numba.njit(cache=True, nogil=True)
def _divide(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``a / b`` for ``b >= 0`` (a sum of squares), IEEE results at ``b == 0`` as numpy."""
    if b == 0.0:
        if a == 0.0 or np.isnan(a):
            return np.nan
        return np.inf if a > 0 else -np.inf
    return a / b


def merge_gains(
    ds: xr.Dataset, quality: xr.Dataset | None, settings: Mapping[str, Any]
) -> MergedSpectrum | None:
    """Merge the TOF gains of every event into one spectrum (see module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        Events with any subset of TOF_High, TOF_Mid, TOF_Low.
    quality : xarray.Dataset or None
        Output of ``signal_quality(ds)`` (baseline, noise, saturation interval).
    settings : mapping
        The ``tof`` section of the analysis settings.

    Returns
    -------
    MergedSpectrum or None
        None when the dataset holds no TOF channel.
    """
    from idexdask.analysis.signal_quality import channel_arrays

    present = [c for c in TOF_CHANNELS if c in ds.data_vars and ds[c].ndim == 2]
    if not present:
        return None
    ref_shape = ds[present[0]].shape
    dropped = [c for c in present if ds[c].shape != ref_shape]
    if dropped:
        _log.warning("TOF gains %s sampled differently from %s: not merged", dropped, present[0])
        present = [c for c in present if c not in dropped]
    n_events = ref_shape[0]
    nominal = settings["nominal_gain"]
    t = channel_time(ds, present[0])
    ys, sats, sigs = [], [], []
    for name in present:
        x, _, _ = channel_arrays(ds, name)
        x = np.asarray(x, dtype=float)
        pol = channel_polarity(ds, name, settings) or 1
        low = name.lower()
        base, sig = baseline_sigma(x, t, float(settings["baseline_stop_us"]))
        qsig = _quality_values(quality, f"{low}_noise", n_events)
        sig = np.where(np.isfinite(qsig) & (qsig > 0), qsig, sig)
        sats.append(
            saturation_mask(ds, name, x, t, quality, pol, int(settings["saturation_guard"]))
        )
        ys.append(pol * (x - base[:, None]))
        sigs.append(sig)
    signal = ys[0].copy()
    sigma = np.broadcast_to(sigs[0][:, None], signal.shape).copy()
    source = np.where(np.isfinite(signal) & ~sats[0], np.int8(0), np.int8(-1))
    signal[source < 0] = np.nan
    ratios = {present[0]: np.ones(n_events)}
    status = {present[0]: np.full(n_events, GainRatioStatus.MEASURED, np.int8)}
    overlap = {present[0]: np.zeros(n_events, np.int32)}
    for j in range(1, len(present)):
        hi_name, lo_name = present[j - 1], present[j]
        nom = float(nominal[lo_name]) / float(nominal[hi_name])
        ok = ~sats[j - 1] & ~sats[j] & np.isfinite(ys[j - 1]) & np.isfinite(ys[j])
        r, st, n_ov = _ratio(ys[j - 1], ys[j], ok, sigs[j - 1], sigs[j], nom, settings)
        ratios[lo_name] = ratios[hi_name] * r
        status[lo_name] = np.maximum(st, status[hi_name] if j > 1 else st).astype(np.int8)
        overlap[lo_name] = n_ov
        fill = (source < 0) & ~sats[j] & np.isfinite(ys[j])
        # in place, only where filled (signal, sigma and source are owned copies)
        np.multiply(ys[j], ratios[lo_name][:, None], out=signal, where=fill)
        np.copyto(sigma, (sigs[j] * ratios[lo_name])[:, None], where=fill)
        source[fill] = j
    for name in TOF_CHANNELS:
        if name not in ratios:
            ratios[name] = np.full(n_events, np.nan)
            status[name] = np.full(n_events, GainRatioStatus.ABSENT, np.int8)
            overlap[name] = np.zeros(n_events, np.int32)
    return MergedSpectrum(
        signal=signal,
        sigma=sigma,
        time=np.asarray(t, dtype=float),
        source=source,
        channels=tuple(present),
        ratios=ratios,
        ratio_status=status,
        overlap=overlap,
        noise=np.asarray(sigs[0], dtype=float),
    )


def _quality_values(quality: xr.Dataset | None, key: str, n: int) -> np.ndarray:
    if quality is None or key not in quality:
        return np.full(n, np.nan)
    return np.asarray(quality[key].values, dtype=float)


def tof_lines(
    merged: MergedSpectrum,
    settings: Mapping[str, Any],
    edit: Any = None,
) -> tuple[PeakCandidates, LineFits, np.ndarray]:
    """Detect and fit the lines of every merged spectrum.

    Parameters
    ----------
    merged : MergedSpectrum
        From :func:`merge_gains`.
    settings : mapping
        The ``peaks`` section of the analysis settings.
    edit : callable, optional
        ``edit(candidates, merged) -> candidates``: applies manual overrides
        between detection and fitting (see :mod:`idexdask.analysis.overrides`).

    Returns
    -------
    candidates : PeakCandidates
    fits : LineFits
    zsigma : numpy.ndarray
        Smoothed-baseline sigma per event used for the prominence scale.
    """
    with np.errstate(all="ignore"):
        scale = merged.sigma / merged.noise[:, None]
    cand, zsig = detect_peaks(merged.signal, merged.time, merged.noise, settings, scale)
    if edit is not None:
        cand = edit(cand, merged)
    fits = fit_lines(merged.signal, merged.time, merged.sigma, cand, settings)
    return cand, fits, zsig
