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

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.line_fits import LineFits, fit_lines
from idexdask.analysis.line_status import SIGMA_MIN_SAMPLES
from idexdask.analysis.peaks import PeakCandidates, detect_peaks, sample_step
from idexdask.analysis.robust import MAD_TO_SIGMA, median_inplace
from idexdask.analysis.selection import median_and_mad
from idexdask.analysis.signal_quality import fill_value, quantisation_step
from idexdask.numerics import pairwise_sum_sparse, pairwise_sum_zero_tail

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

_BASELINE_MIN_SAMPLES = 16  # baseline_sigma's min_samples: else the first 10 % of the trace

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
        pol = ds.variables[name].attrs.get("signal_polarity", 1)
    return int(np.sign(int(pol)))


def channel_time(ds: xr.Dataset, name: str) -> np.ndarray:
    """Time axis of waveform ``name``, (n_events, n_samples), µs from the trigger.

    The variable named by its ``time_variable`` attribute, else the one implied
    by its sample dimension; else sample index / ``sample_rate_msps`` (or the
    plain index, 1 µs per sample, when even that is missing).
    """
    from idexdask.analysis.signal_quality import find_time_variable

    var = ds.variables[name]
    n_events, n = var.shape
    tname = find_time_variable(ds, name)
    t = None
    if tname is not None:
        t = np.asarray(ds.variables[tname].values, dtype=float)
        if t.ndim == 1 and t.shape[0] == n:
            t = np.broadcast_to(t, (n_events, n))
        elif t.shape != (n_events, n):
            t = None
    if t is None:
        rate = float(var.attrs.get("sample_rate_msps", 1.0))
        t = np.broadcast_to(np.arange(n) / rate, (n_events, n))
        _log.info("%s: no time axis; using sample index / %g MSPS", name, rate)
    return t


def _rails(var: xr.Variable | xr.DataArray) -> tuple[float | None, float | None]:
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
    quality: Mapping[str, Any] | None,
    polarity: int,
    guard: int,
) -> np.ndarray:
    """Saturated samples of waveform ``name`` (see module docstring), (n_events, n)."""
    vmin, vmax = _rails(ds.variables[name])
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
    quantum : float
        Quantisation step of the reference gain, its unit (0 when unknown).
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
    quantum: float = 0.0


@numba.njit(cache=True, nogil=True)
def _RatioWork(n: int) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled  # noqa: N802
    """Scratch arrays of :func:`_ratio_row` for rows of ``n`` samples."""
    return (
        np.empty(n, dtype=np.int64),  # selected sample indices
        np.zeros(n + 1, dtype=np.int64),  # selected samples before each index
        np.empty(n),  # residuals of the selected samples
        np.empty(2 * n),  # median scratch
        np.zeros(n),  # h * lo, all-zero between calls
        np.zeros(n),  # h * h, all-zero between calls
    )


@numba.njit(cache=True, nogil=True)
def _ratio_row(
    h: np.ndarray,
    lo: np.ndarray,
    ok: np.ndarray,
    thresh: float,
    sig_l: float,
    work: tuple[np.ndarray, ...],
) -> tuple[float, int]:  # pragma: no cover - compiled
    """Origin slope of ``lo`` on ``h`` over one row's overlap, refit without outliers.

    ``work`` comes from :func:`_RatioWork`.

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
    b = _divide(pairwise_sum_sparse(hl, n, cnt), pairwise_sum_sparse(hh, n, cnt))
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
    slope = _divide(pairwise_sum_sparse(hl, n, cnt), pairwise_sum_sparse(hh, n, cnt))
    for i in range(m):
        j = idx[i]
        hl[j] = 0.0
        hh[j] = 0.0
    return slope, c


@numba.njit(cache=True, nogil=True)
def _divide(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``a / b`` for ``b >= 0`` (a sum of squares), IEEE results at ``b == 0`` as numpy."""
    if b == 0.0:
        if a == 0.0 or np.isnan(a):
            return np.nan
        return np.inf if a > 0 else -np.inf
    return a / b


def merge_gains(
    ds: xr.Dataset, quality: Mapping[str, Any] | None, settings: Mapping[str, Any]
) -> MergedSpectrum | None:
    """Merge the TOF gains of every event into one spectrum (see module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        Events with any subset of TOF_High, TOF_Mid, TOF_Low.
    quality : xarray.Dataset, mapping or None
        Output of ``signal_quality(ds)`` (baseline, noise, saturation interval),
        or its variables (:func:`~idexdask.analysis.signal_quality.quality_variables`).
    settings : mapping
        The ``tof`` section of the analysis settings.

    Returns
    -------
    MergedSpectrum or None
        None when the dataset holds no TOF channel.
    """
    present = [c for c in TOF_CHANNELS if c in ds.data_vars and ds.variables[c].ndim == 2]
    if not present:
        return None
    ref_shape = ds.variables[present[0]].shape
    dropped = [c for c in present if ds.variables[c].shape != ref_shape]
    if dropped:
        _log.warning("TOF gains %s sampled differently from %s: not merged", dropped, present[0])
        present = [c for c in present if c not in dropped]
    n_events = ref_shape[0]
    nominal = settings["nominal_gain"]
    t = channel_time(ds, present[0])
    pre_count = _pre_trigger_counts(ds, present[0], ref_shape, float(settings["baseline_stop_us"]))
    n_gains = len(present)
    raws, pols, has_fill, fills, vmins, vmaxs = [], [], [], [], [], []
    flags, t0s, t1s, qsigs, noms, quanta = [], [], [], [], [], []
    for j, name in enumerate(present):
        var = ds.variables[name]
        quanta.append(quantisation_step(var))
        raws.append(np.ascontiguousarray(var.values))
        pol = channel_polarity(ds, name, settings) or 1
        pols.append(float(pol))
        fill = fill_value(var.attrs)
        has_fill.append(math.isfinite(fill))
        fills.append(fill)
        vmin, vmax = _rails(var)
        vmaxs.append(vmax if vmax is not None and pol >= 0 else math.nan)
        vmins.append(vmin if vmin is not None and pol <= 0 else math.nan)
        low = name.lower()
        if quality is not None and f"{low}_saturation_start" in quality:
            flags.append(np.asarray(quality[f"{low}_saturated"].values, dtype=bool))
            t0s.append(np.asarray(quality[f"{low}_saturation_start"].values, dtype=float))
            t1s.append(np.asarray(quality[f"{low}_saturation_stop"].values, dtype=float))
        else:
            flags.append(np.zeros(n_events, bool))
            t0s.append(np.full(n_events, np.nan))
            t1s.append(np.full(n_events, np.nan))
        qsigs.append(_quality_values(quality, f"{low}_noise", n_events))
        noms.append(float(nominal[name]) / float(nominal[present[j - 1]]) if j else 1.0)
    while len(raws) < 3:  # unused slots of the compiled kernel
        raws.append(raws[0])
    with np.errstate(all="ignore"):
        signal = np.empty(ref_shape)
        sigma = np.empty(ref_shape)
        source = np.empty(ref_shape, dtype=np.int8)
        ratio, st, ov, noise = _merge_rows(
            raws[0], raws[1], raws[2], n_gains, t, pre_count, float(settings["baseline_stop_us"]),
            _BASELINE_MIN_SAMPLES, max(int(0.1 * ref_shape[1]), 1),
            np.array(pols), np.array(has_fill), np.array(fills), np.array(vmins),
            np.array(vmaxs), np.stack(flags), np.stack(t0s), np.stack(t1s),
            int(settings["saturation_guard"]), np.stack(qsigs), float(settings["overlap_sigma"]),
            np.array(noms), int(settings["min_overlap_samples"]), signal, sigma, source,
            np.array(quanta) / math.sqrt(12.0),
        )  # fmt: skip
    ratios = {name: ratio[j] for j, name in enumerate(present)}
    status = {name: st[j] for j, name in enumerate(present)}
    overlap = {name: ov[j] for j, name in enumerate(present)}
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
        noise=noise[0],
        quantum=float(quanta[0]),
    )


def _pre_trigger_counts(
    ds: xr.Dataset, name: str, shape: tuple[int, ...], stop_us: float
) -> np.ndarray:
    """Per event: the samples before ``stop_us`` when they are the first ones of a
    rising time axis given by formula (found by bisection on it), else -1 (the
    kernel scans the materialised times)."""
    from idexdask.analysis.signal_quality.dataset import FormulaTimes, host_time_axis
    from idexdask.analysis.signal_quality.kernels import formula_count_below

    axis = host_time_axis(ds, name, shape)
    if not isinstance(axis, FormulaTimes):
        return np.full(shape[0], -1, dtype=np.int64)
    return formula_count_below(axis.start, axis.step, axis.count, axis.scale, shape[1],
                               stop_us)


@numba.njit(cache=True, nogil=True)
def _baseline_level(
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
    lim = 4.0 * max(MAD_TO_SIGMA * d, 0.5)
    count = 0
    for j in range(k):
        if abs(vals[j] - m) <= lim:
            row[pos[j]] = vals[j]
            count += 1
    mean = pairwise_sum_zero_tail(row, 0, n, pos[k - 1] + 1) / count if count else np.nan
    for j in range(k):
        row[pos[j]] = 0.0
    return (mean if np.isfinite(mean) else m), d


@numba.njit(cache=True, nogil=True, inline="always")
def _load_row(raw, r, has_fill, fill, out):  # pragma: no cover - compiled
    """Row ``r`` of ``raw`` as float64 into ``out``, NaN where missing (NaN or fill)."""
    for j in range(raw.shape[1]):
        v = np.float64(raw[r, j])
        out[j] = np.nan if (v != v or (has_fill and v == fill)) else v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _merge_rows(
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
    """:func:`merge_gains` of every event, one row at a time (see there).

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
    work = _RatioWork(n)
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
                _load_row(x0, r, has_fill[0], fill[0], xf[0])
            elif g == 1:
                _load_row(x1, r, has_fill[1], fill[1], xf[1])
            else:
                _load_row(x2, r, has_fill[2], fill[2], xf[2])
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
            base, mad = _baseline_level(vals, pos, k, n, buf, zero_row)
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
            slope, c = _ratio_row(h, lo, ok, thresh, noise[g, r], work)
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


def _quality_values(quality: Mapping[str, Any] | None, key: str, n: int) -> np.ndarray:
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
    # relative noise sigma / noise, formed row by row inside the detection
    step = sample_step(np.broadcast_to(merged.time, merged.signal.shape))  # for both
    cand, zsig = detect_peaks(
        merged.signal, merged.time, merged.noise, settings, merged.sigma, scale_den=merged.noise,
        step=step, quantum=merged.quantum,
    )
    if edit is not None:
        cand = edit(cand, merged)
    fits = fit_lines(merged.signal, merged.time, merged.sigma, cand, settings, step=step)
    if settings["joint_blends"]:
        fits = joint_blend_fits(merged, cand, fits, settings, step)
    fits = classify_ringing(merged, cand, fits, settings, step)
    return cand, fits, zsig


def classify_ringing(
    merged: MergedSpectrum,
    cand: PeakCandidates,
    fits: LineFits,
    settings: Mapping[str, Any],
    step: np.ndarray,
) -> LineFits:
    """Give status ``ringing`` to detections that are one lobe of an oscillation.

    Ion current is unipolar: the merged spectrum is positive-going, and noise
    never reaches ``ringing_sigma`` (10) sigmas below the baseline.  A detection
    with such a negative excursion within ``window_left_us`` of its peak sample
    that is at least half its own height is the positive lobe of electrical
    ringing (the 2023-04-12 ground-test captures: +-30 DN oscillations; the
    scope's undershoot after a strong line), not an ion line: it is kept, with
    status ``ringing``, and not calibrated on.  Lines stronger than twice the
    trough are never ringing (a strong line's own undershoot does not make it
    one).
    """
    from idexdask.analysis.line_status import LineStatus

    threshold = float(settings["ringing_sigma"])
    if cand.size == 0 or not threshold > 0:
        return fits
    reach = np.rint(float(settings["window_left_us"]) / step[cand.event]).astype(np.int64)
    n = merged.signal.shape[1]
    offsets = np.arange(-int(reach.max()), int(reach.max()) + 1)
    cols = cand.index[:, None] + offsets[None, :]
    inside = (np.abs(offsets)[None, :] <= reach[:, None]) & (cols >= 0) & (cols < n)
    cols = np.clip(cols, 0, n - 1)
    rows = cand.event[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = merged.signal[rows, cols] / merged.sigma[rows, cols]
        trough = np.nanmin(np.where(inside & np.isfinite(z), z, np.inf), axis=1)
        peak = merged.signal[cand.event, cand.index] / merged.sigma[cand.event, cand.index]
        ringing = (trough <= -threshold) & (-trough >= 0.5 * peak)
    ringing &= ~cand.manual
    if not ringing.any():
        return fits
    status = fits.status.copy()
    status[ringing] = LineStatus.RINGING
    _log.info("%d detections are ringing (a lobe of an oscillation), not lines", ringing.sum())
    return dataclasses.replace(fits, status=status)


def joint_blend_fits(
    merged: MergedSpectrum,
    cand: PeakCandidates,
    fits: LineFits,
    settings: Mapping[str, Any],
    step: np.ndarray,
) -> LineFits:
    """Replace the single-line fits of each blend whose joint fit converged.

    See :mod:`idexdask.analysis.blends`.  The joint parameters, the blend's
    window, chi-square and constant go to every member; heights and the
    spike / not-significant classification are recomputed from them.
    """
    from idexdask.analysis.blends import refit_blends
    from idexdask.analysis.line_fits import classify_lines, line_heights
    from idexdask.analysis.line_status import LineShape

    t = np.broadcast_to(merged.time, merged.signal.shape)
    bf = refit_blends(merged.signal, t, merged.sigma, cand.event, cand.index, fits, settings,
                      step, fixed=cand.manual)  # fmt: skip
    take = np.flatnonzero(bf.converged)
    if take.size == 0:
        return fits
    cols = {name: getattr(fits, name).copy() for name in LineFits.__dataclass_fields__}
    for name in ("center", "center_err", "sigma", "gamma", "area", "area_err", "offset",
                 "chisq", "redchi", "window_start", "window_stop", "shape", "mode_centred"):
        cols[name][take] = getattr(bf, name)[take]
    h = line_heights(bf.area[take], bf.center[take], bf.sigma[take], bf.gamma[take])
    with np.errstate(invalid="ignore", divide="ignore"):
        gauss = bf.shape[take] == LineShape.GAUSSIAN
        h = np.where(gauss, bf.area[take] / (bf.sigma[take] * math.sqrt(2.0 * math.pi)), h)
    cols["height"][take] = h
    status = np.zeros(take.size, np.int8)
    ev = cand.event[take]
    xw = t[ev]
    sig = np.broadcast_to(merged.sigma, merged.signal.shape)[ev]
    classify_lines(status, h, bf.sigma[take], SIGMA_MIN_SAMPLES * step[ev], sig, xw,
                   bf.center[take], settings)
    cols["status"][take] = status
    _log.info("joint blend fits: %d lines in converged blends", take.size)
    return LineFits(**cols)
