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

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.adccodes import code_scale
from idexdask.analysis.gain_merge_kernels import merge_rows
from idexdask.analysis.line_fits import LineFits, fit_lines
from idexdask.analysis.line_status import SIGMA_MIN_SAMPLES
from idexdask.analysis.peaks import PeakCandidates, detect_peaks
from idexdask.analysis.residual_lines import add_residual_lines
from idexdask.analysis.signal_quality import fill_value, quantisation_step
from idexdask.analysis.signal_quality.dataset import FormulaTimes, host_time_axis
from idexdask.analysis.signal_quality.kernels import formula_count_below, formula_interval

__all__ = [
    "GainRatioStatus",
    "MergeBuffers",
    "MergeTimes",
    "MergedSpectrum",
    "TOF_CHANNELS",
    "channel_polarity",
    "channel_time",
    "merge_gains",
    "merge_times",
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
        Noise sigma of each sample (n_events, n_samples), same unit: the noise
        of the gain the sample came from.  Where no sample came from a lower
        gain (``sigma_varies`` False) a read-only view of ``noise`` along each
        row.
    time : numpy.ndarray or FormulaTimes
        Sample times (n_events, n_samples), µs: for an axis given by formula
        its terms, indexed like the materialised times and forming only the
        times indexed (exactly those values).
    source : numpy.ndarray
        Index into ``channels`` of the gain used per sample, -1 for none, int8;
        a read-only view of 0 where every sample of every event is the first
        gain's.
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
    sigma_varies : bool
        Whether ``sigma`` differs from ``noise`` anywhere (a sample from a
        lower gain); else the relative noise ``sigma / noise`` is 1 everywhere.
    single : numpy.ndarray or None
        ``signal.astype(numpy.float32)`` (the stored ``tof_combined``) where
        :func:`merge_gains` was asked for it (``single=True``), else None.
    """

    signal: np.ndarray
    sigma: np.ndarray
    time: np.ndarray | FormulaTimes
    source: np.ndarray
    channels: tuple[str, ...]
    ratios: dict[str, np.ndarray]
    ratio_status: dict[str, np.ndarray]
    overlap: dict[str, np.ndarray]
    noise: np.ndarray
    quantum: float = 0.0
    sigma_varies: bool = True
    single: np.ndarray | None = None


class MergeBuffers:
    """Memory a caller keeps between merges for :attr:`MergedSpectrum.signal`.

    A lab pack's merged spectrum is 64 MB of float64 (16 impacts x 500,002
    samples).  Allocated afresh, NumPy maps it anew on every merge and the
    kernel zeroes each page as the merge first writes it (~0.3-0.45 ms per
    impact).  A caller that merges pack after pack (a worker's thread) keeps
    one instance and passes it to every :func:`merge_gains`: each merge writes
    its signal into the same pages, faulted in once.

    The signal of a merge made with these buffers is a view of them, valid
    until the next merge made with them: for a caller that is done with it
    (the line search and fits read it; no product keeps it) before it merges
    again, one merge at a time (an instance is not shared between threads).
    """

    def __init__(self) -> None:
        self._signal = np.empty(0)

    def signal(self, shape: tuple[int, int]) -> np.ndarray:
        """A C-contiguous float64 array of ``shape`` on the kept pages (grown
        to the largest shape asked for; its values are left as they are)."""
        size = int(shape[0]) * int(shape[1])
        if self._signal.size < size:
            self._signal = np.empty(size)
        return self._signal[:size].reshape(shape)


def merge_gains(
    ds: xr.Dataset, quality: Mapping[str, Any] | None, settings: Mapping[str, Any],
    *, single: bool = False, buffers: MergeBuffers | None = None,
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
    single : bool
        Also give the merged spectrum rounded to float32
        (:attr:`MergedSpectrum.single`), formed in the pass that writes it:
        a caller that stores it reads the 8 bytes per sample back no more.
    buffers : MergeBuffers, optional
        Where to write the merged spectrum (:attr:`MergedSpectrum.signal` is
        then a view of them, valid until their next merge); else a new array.

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
    n_gains = len(present)
    raws, pols, fills, vmins, vmaxs = [], [], [], [], []
    flags, t0s, t1s, qsigs, noms, quanta = [], [], [], [], [], []
    codes = []
    for j, name in enumerate(present):
        var = ds.variables[name]
        quanta.append(quantisation_step(var))
        codes.append(_code_lattice(var))
        raws.append(np.ascontiguousarray(var.values))
        pol = channel_polarity(ds, name, settings) or 1
        pols.append(float(pol))
        fill = fill_value(var.attrs)
        fills.append(fill if math.isfinite(fill) else math.nan)  # NaN: no fill value
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
    times = merge_times(ds, present[0], ref_shape, float(settings["baseline_stop_us"]),
                        np.stack(flags), np.stack(t0s), np.stack(t1s))
    sat_first, sat_stop = list(times.saturated_first), list(times.saturated_stop)
    while len(raws) < 3:  # unused slots of the compiled kernel
        raws.append(raws[0])
        for values in (pols, fills, vmins, vmaxs, quanta, codes):
            values.append(values[0])
        for rows in (flags, t0s, t1s, qsigs, sat_first, sat_stop):
            rows.append(rows[0])
        noms.append(noms[0])
    with np.errstate(all="ignore"):
        signal = np.empty(ref_shape) if buffers is None else buffers.signal(ref_shape)
        source = np.empty(ref_shape, dtype=np.int8)
        single_out = np.empty(ref_shape if single else (n_events, 0), dtype=np.float32)
        ratio, st, ov, noise, lower, first_only = merge_rows(
            raws[0], raws[1], raws[2], n_gains, times.kernel, times.kernel_row, times.pre_count,
            float(settings["baseline_stop_us"]), _BASELINE_MIN_SAMPLES,
            max(int(0.1 * ref_shape[1]), 1), np.array(pols), np.array(fills), np.array(vmins),
            np.array(vmaxs), np.stack(flags), np.stack(t0s), np.stack(t1s),
            np.stack(sat_first), np.stack(sat_stop), int(settings["saturation_guard"]),
            np.stack(qsigs), float(settings["overlap_sigma"]),
            np.array(noms), int(settings["min_overlap_samples"]), signal, source, single_out,
            np.array(quanta) / math.sqrt(12.0), *(np.array(c) for c in zip(*codes, strict=True)),
        )  # fmt: skip
    if first_only.all():  # every sample the first gain's: the unwritten rows untouched
        source = np.broadcast_to(np.int8(0), ref_shape)
    else:
        source[first_only] = 0
    sigma = _sample_noise(noise, ratio, source, bool(lower.any()))
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
        time=times.time,
        source=source,
        channels=tuple(present),
        ratios=ratios,
        ratio_status=status,
        overlap=overlap,
        noise=noise[0],
        quantum=float(quanta[0]),
        sigma_varies=bool(lower.any()),
        single=single_out if single else None,
    )


def _sample_noise(noise: np.ndarray, ratio: np.ndarray, source: np.ndarray,
                  varies: bool) -> np.ndarray:
    """:attr:`MergedSpectrum.sigma` of a merge: the noise of the gain each sample
    came from in the first gain's unit, ``noise[g] * ratio[g]`` (the first
    gain's noise where none).  Where no sample came from a lower gain
    (``varies`` False: every lab capture whose high gain never saturates) it
    is one value per row, a read-only view of ``noise[0]`` (no per-sample
    array written: 8 bytes per sample, the merge's largest output)."""
    first = noise[0]
    if not varies:
        return np.broadcast_to(first[:, None], source.shape)
    sigma = np.empty(source.shape)
    sigma[...] = first[:, None]
    for g in range(1, noise.shape[0]):
        np.copyto(sigma, (noise[g] * ratio[g])[:, None], where=source == g)
    return sigma


def _code_lattice(var: xr.Variable) -> tuple[float, float, bool]:
    """``(scale, offset, single)``: the samples of ``var`` are the values
    ``code * scale + offset`` of integer codes (float64; rounded to float32 when
    ``single``), as a scope capture's float32 volts are of their ADC codes (the
    code scale of its ``encoding``, :mod:`idexdask.adccodes`) and integer samples
    are of themselves; NaN scale when neither.  The merge kernel checks every
    sample against it: a sample off the lattice sends the row to the selection."""
    scale = code_scale(var.encoding)
    if scale is not None and scale.scale > 0 and var.dtype in (np.float32, np.float64):
        return scale.scale, scale.offset, var.dtype == np.float32
    if var.dtype.kind in "iu":
        return 1.0, 0.0, False
    return math.nan, 0.0, False


@dataclass(frozen=True)
class MergeTimes:
    """The time axis of a merge: the merged spectrum's and what the kernel reads.

    Attributes
    ----------
    time : numpy.ndarray or FormulaTimes
        :attr:`MergedSpectrum.time`: the axis's terms when it is given by
        formula, else the materialised times (n_events, n_samples), µs.
    kernel : numpy.ndarray
        Times the merge kernel reads (rows, n_samples), µs: every row of a
        materialised axis; of a formula axis only the rows whose times do not
        rise (a pre-trigger count of -1).
    kernel_row : numpy.ndarray
        Per event, its row of ``kernel``; -1 where the kernel reads none.
    pre_count : numpy.ndarray
        Per event: the samples before the baseline stop when they are the
        first ones of a rising formula axis (found by bisection), else -1 (the
        kernel scans ``kernel``'s row).
    saturated_first, saturated_stop : numpy.ndarray
        Per gain and event (n_gains, n_events): the samples ``[first, stop)``
        inside the gain's saturation interval on a rising formula axis (found
        by bisection), else -1 (the kernel compares ``kernel``'s row with the
        interval).
    """

    time: np.ndarray | FormulaTimes
    kernel: np.ndarray
    kernel_row: np.ndarray
    pre_count: np.ndarray
    saturated_first: np.ndarray
    saturated_stop: np.ndarray


def merge_times(
    ds: xr.Dataset, name: str, shape: tuple[int, int], stop_us: float, flagged: np.ndarray,
    saturated_start: np.ndarray, saturated_stop: np.ndarray,
) -> MergeTimes:
    """The times of a merge of waveform ``name``'s events (see :class:`MergeTimes`).

    Parameters
    ----------
    ds : xarray.Dataset
        The events.
    name : str
        The reference gain.
    shape : (int, int)
        Its shape.
    stop_us : float
        End of the pre-trigger baseline, µs.
    flagged : numpy.ndarray of bool
        Events with a saturation interval, per gain (n_gains, n_events).
    saturated_start, saturated_stop : numpy.ndarray
        The saturation intervals, µs (n_gains, n_events).
    """
    axis = host_time_axis(ds, name, shape)
    unknown = np.full(flagged.shape, -1, dtype=np.int64)
    if not isinstance(axis, FormulaTimes):
        t = np.asarray(channel_time(ds, name), dtype=float)
        return MergeTimes(t, t, np.arange(shape[0]), np.full(shape[0], -1, dtype=np.int64),
                          unknown, unknown)
    pre_count = formula_count_below(axis.start, axis.step, axis.count, axis.scale, shape[1],
                                    stop_us)
    first, stop = unknown.copy(), unknown.copy()
    for g in range(flagged.shape[0]):
        rows = np.flatnonzero(flagged[g])
        if rows.size:
            first[g, rows], stop[g, rows] = formula_interval(
                axis.start[rows], axis.step[rows], axis.count[rows], axis.scale, shape[1],
                saturated_start[g, rows], saturated_stop[g, rows])
    # merge_rows reads an event's times only where they do not rise (pre_count
    # -1, and then no saturation interval is located by bisection either)
    read = np.flatnonzero(pre_count < 0)
    row = np.full(shape[0], -1, dtype=np.int64)
    row[read] = np.arange(read.size)
    kernel = axis[read] if read.size else np.empty((1, 0))
    return MergeTimes(axis, kernel, row, pre_count, first, stop)


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
    step = np.empty(merged.signal.shape[0])  # sample steps: found by the search, used by the fits
    # a relative noise of 1 everywhere searches as none (detect_peaks' rule)
    scale = merged.sigma if merged.sigma_varies else None
    cand, zsig = detect_peaks(
        merged.signal, merged.time, merged.noise, settings, scale, scale_den=merged.noise,
        quantum=merged.quantum, step_out=step,
    )
    if edit is not None:
        cand = edit(cand, merged)
    fits = fit_lines(merged.signal, merged.time, merged.sigma, cand, settings, step=step)
    if settings["joint_blends"]:
        fits = joint_blend_fits(merged, cand, fits, settings, step)
    cand, fits = add_residual_lines(merged.signal, merged.time, merged.sigma, cand, fits, zsig,
                                    settings, step)
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

    t = merged.time  # a formula axis forms only the times indexed
    if not isinstance(t, FormulaTimes):
        t = np.broadcast_to(t, merged.signal.shape)
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
    # the two samples either side of each centre (a time row increases; NaN past
    # a short record sorts last), not the whole 500,000-sample row of a lab
    # capture: classify_lines reads the noise at the sample nearest the centre
    sigma_rows = np.broadcast_to(merged.sigma, merged.signal.shape)
    pos = np.array([np.searchsorted(t[e], c) for e, c in zip(ev, bf.center[take], strict=True)],
                   dtype=np.int64).reshape(-1)
    pair = np.clip(pos[:, None] + np.array([-1, 0])[None, :], 0, t.shape[1] - 1)
    classify_lines(status, h, bf.sigma[take], SIGMA_MIN_SAMPLES * step[ev],
                   sigma_rows[ev[:, None], pair], t[ev[:, None], pair], bf.center[take],
                   settings)
    cols["status"][take] = status
    _log.info("joint blend fits: %d lines in converged blends", take.size)
    return LineFits(**cols)
