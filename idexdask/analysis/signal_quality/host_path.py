"""Signal quality of one channel of NumPy samples by compiled passes (:mod:`.kernels`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from idexdask.adccodes import CodeScale, code_scale, recorded_codes
from idexdask.analysis.signal_quality.array_path import channel_quality_xp
from idexdask.analysis.signal_quality.dataset import (
    FormulaTimes,
    fill_value,
    host_time_axis,
    quantisation_step,
)
from idexdask.analysis.signal_quality.kernels import (
    array_window,
    baseline_bounds,
    formula_window,
    ordered_extremes,
    ordered_extremes16,
    ordered_extremes32,
    trace_rows,
    window_rows,
)
from idexdask.analysis.signal_quality.statistics import (
    baseline_noise_host,
    detect_quantum,
    whole_trace_stats,
)
from idexdask.analysis.signal_quality.status import (
    ChannelQuality,
    QualityStatus,
    finish,
    floor_constant,
    status_codes,
)

__all__ = ["BaselineColumns", "RowExtremes", "TraceStats", "baseline_columns",
           "channel_quality_host", "code_row_extremes", "host_codes", "row_extremes"]


@dataclass
class BaselineColumns:
    """Where each event's baseline samples are (see :func:`baseline_columns`)."""

    covered: np.ndarray  # the window is covered (else the head of the trace is used)
    first: np.ndarray  # first and last baseline sample, -1 for none
    last: np.ndarray
    times: np.ndarray  # (events or 1, m) times of columns times_lo : times_lo + m
    times_lo: int
    a: np.ndarray  # the window's columns [a, b) per event
    b: np.ndarray


def baseline_columns(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    axis: FormulaTimes | np.ndarray | None,
    window: tuple[float, float],
    min_samples: int,
    head: int,
    code_scale: CodeScale | None = None,
) -> BaselineColumns:
    """The baseline window of each event located on its time axis (by bisection on a
    formula axis), and the samples it keeps: those in the window when it is covered
    (see the module's definitions), else the valid ones of the head of the trace.

    ``code_scale``: ``raw`` holds the int16 codes of float32 volts of that scale
    (read as their volts, see :mod:`.kernels`)."""
    n_events, n = raw.shape
    w0, w1 = window
    if axis is None:
        tmin = np.full(n_events, np.inf)
        tmax = np.full(n_events, -np.inf)
        a = b = np.zeros(n_events, dtype=np.int64)
    elif isinstance(axis, FormulaTimes):
        tmin, tmax, a, b = formula_window(axis.start, axis.step, axis.count, axis.scale, n,
                                           w0, w1)
    else:
        t = np.ascontiguousarray(axis if axis.ndim == 2 else axis[None, :])
        tmin, tmax, a, b = (np.broadcast_to(v, (n_events,)) for v in array_window(t, w0, w1))
    span = b > a
    lo, hi = (int(a[span].min()), int(b[span].max())) if span.any() else (0, 0)
    if isinstance(axis, FormulaTimes):
        times = axis.columns(lo, hi)
    elif axis is not None:
        times = np.ascontiguousarray((axis if axis.ndim == 2 else axis[None, :])[:, lo:hi])
    else:
        times = np.zeros((1, 0))
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    n_win, wf, wl, hf, hl = baseline_bounds(raw, has_fill, fill, *_decoding(code_scale), times,
                                            lo, a, b, w0, w1, head)
    covered = (tmin <= w0) & (tmax >= w1) & (n_win >= min_samples)
    if axis is None:
        covered = np.zeros(n_events, dtype=bool)
    return BaselineColumns(
        covered=covered,
        first=np.where(covered, wf, hf),
        last=np.where(covered, wl, hl),
        times=times,
        times_lo=lo,
        a=a,
        b=b,
    )


@dataclass
class TraceStats:
    """What :func:`trace_rows` returns per event (see there)."""

    n_valid: np.ndarray
    vmax_obs: np.ndarray
    vmin_obs: np.ndarray
    n_rail: np.ndarray
    first_valid: np.ndarray
    last_valid: np.ndarray
    best_exc: np.ndarray
    best_idx: np.ndarray
    n_sat: np.ndarray
    first: np.ndarray
    last: np.ndarray
    unsettled: np.ndarray

    def update(self, rows: np.ndarray, other: TraceStats) -> None:
        """Take ``other``'s values (computed for ``rows``) at ``rows``."""
        for key, values in vars(other).items():
            getattr(self, key)[rows] = values


def _decoding(scale: CodeScale | None) -> tuple[bool, float, float]:
    """The kernels' ``coded, scale, offset`` arguments: samples read as they are
    (None), or int16 codes of ``scale`` read as their float32 volts."""
    if scale is None:
        return False, 1.0, 0.0
    return True, scale.scale, scale.offset


@dataclass
class _Channel:
    """One channel's samples as the compiled passes read them.

    Where the reader kept the int16 codes the float32 volts were decoded from
    (:func:`idexdask.adccodes.recorded_codes`), ``raw`` is those codes and
    ``code_scale`` their scale: every pass reads a code as the volts sample it
    decodes to, so the volts are never decoded (a pipeline read leaves the QD
    channels' volts undecoded)."""

    raw: np.ndarray  #: (events, samples), native dtype (or int16 codes), C-contiguous
    fill: float  #: missing-sample value (NaN: none)
    cfg: Mapping[str, Any]
    dirs: np.ndarray  #: excursion directions
    rails: tuple[float, float]  #: (low, high), NaN for none
    clipped: np.ndarray  #: the scope's clipping flag per event
    #: the scale of ``raw`` when it holds codes (None: ``raw`` holds the samples)
    code_scale: CodeScale | None = None

    @property
    def has_fill(self) -> bool:
        return math.isfinite(self.fill)

    @property
    def decoding(self) -> tuple[bool, float, float]:
        """The kernels' ``coded, scale, offset`` arguments."""
        return _decoding(self.code_scale)

    def rows_x(self, rows: np.ndarray) -> np.ndarray:
        """Rows as float64, NaN where missing (as :func:`channel_arrays`)."""
        if self.code_scale is not None:  # the volts of these rows' codes (NaN at the fill)
            return self.code_scale.decode(self.raw[rows]).astype(np.float64)
        x = self.raw[rows].astype(np.float64)
        miss = np.isnan(x)
        if self.has_fill:
            miss |= x == self.fill
        x[miss] = np.nan
        return x

    def trace(self, baseline: np.ndarray, threshold: np.ndarray,
              rows: np.ndarray | None = None) -> TraceStats:
        """:func:`trace_rows` of all events, or of ``rows`` (their own baselines)."""
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])
        cfg = self.cfg
        raw = self.raw if rows is None else self.raw[rows]
        known = self.known_extremes(raw)
        return TraceStats(*trace_rows(
            raw, self.has_fill, self.fill, *self.decoding,
            pick(baseline), pick(threshold), self.dirs, self.rails[0], self.rails[1],
            int(cfg["saturation_min_run"]), int(cfg["flat_top_min_run"]), pick(self.clipped),
            known.high, known.low, known.block_high, known.block_low,
        ))

    def known_extremes(self, raw: np.ndarray) -> RowExtremes:
        """Each row's largest and smallest sample as float64 where :func:`trace_rows`
        may take them instead of its first pass (NaN elsewhere), and those of its
        blocks of ``EXTREME_BLOCK`` samples.

        One vectorised pass for all (:func:`row_extremes`), several times
        faster than the compiled pass that must skip missing samples one by one.
        They are used where they equal that pass's extremes: no fill value, every
        sample finite (a NaN or an infinity ends up a non-finite extreme, so a
        finite maximum and minimum mean there is none), and both extremes nonzero
        (of ``-0.0`` and ``0.0`` the pass keeps the first; the reduction need
        not).  Converting to float64 is exact and monotonic, so it commutes with
        the extremes.
        """
        rows = raw.shape[0]
        unknown = np.full(rows, np.nan)
        none = RowExtremes(unknown, unknown, np.full((rows, 1), np.nan),
                           np.full((rows, 1), np.nan))
        if self.has_fill or raw.ndim != 2 or raw.shape[1] == 0 or raw.dtype.kind not in "iuf":
            return none
        if self.code_scale is not None:
            found = code_row_extremes(np.ascontiguousarray(raw), self.code_scale)
        else:
            found = row_extremes(np.ascontiguousarray(raw))
        if found is None:
            return none
        with np.errstate(invalid="ignore"):
            usable = (np.isfinite(found.high) & np.isfinite(found.low) & (found.high != 0)
                      & (found.low != 0))
        return RowExtremes(np.where(usable, found.high, np.nan),
                           np.where(usable, found.low, np.nan),
                           found.block_high, found.block_low)


@dataclass
class RowExtremes:
    """Largest and smallest sample of each row (rows,) and of each block of
    ``EXTREME_BLOCK`` samples (rows, blocks), float64."""

    high: np.ndarray
    low: np.ndarray
    block_high: np.ndarray
    block_low: np.ndarray


def code_row_extremes(codes: np.ndarray, scale: CodeScale) -> RowExtremes | None:
    """:func:`row_extremes` of the float32 volts of int16 ``codes`` of ``scale``
    (NaN at its fill code), read from the codes alone; None where decoding does
    not rise with the code or the fill code is not the largest int16."""
    if scale.scale > 0 and scale.fill == np.iinfo(np.int16).max and codes.dtype == np.int16:
        return _block_extremes(*(scale.decode(v).astype(np.float64)
                                 for v in ordered_extremes16(codes)))
    return None


def row_extremes(raw: np.ndarray, codes: np.ndarray | None = None,
                 scale: CodeScale | None = None) -> RowExtremes | None:
    """``raw.max(axis=1)``, ``raw.min(axis=1)`` and the same per block as float64
    (NaN or an infinity where a row or block holds NaN), in one compiled pass
    (:func:`ordered_extremes`); None for a dtype it does not read.

    ``codes``: the int16 codes the reader decoded ``raw`` from with ``scale``
    (:class:`~idexdask.adccodes.RecordedCodes`: ``raw`` is exactly their
    decoded values, NaN at the fill code).  Decoding rises with the code (a
    positive scale) and the fill code is the largest int16, so the decoded
    extremes of the codes' blocks are the extremes of ``raw``'s blocks, found
    reading half the bytes (:func:`ordered_extremes16`)."""
    if (codes is not None and scale is not None and codes.shape == raw.shape
            and raw.dtype == np.float32):
        found_codes = code_row_extremes(np.ascontiguousarray(codes), scale)
        if found_codes is not None:
            return found_codes
    if raw.dtype.kind == "f" and raw.dtype.itemsize in (4, 8):
        bits = np.dtype(f"i{raw.dtype.itemsize}")
        flip = 2 ** (8 * raw.dtype.itemsize - 1) - 1
        found = (ordered_extremes32(raw.view(bits)) if raw.dtype.itemsize == 4
                 else ordered_extremes(raw.view(bits), flip))
        high, low = (v.view(raw.dtype).astype(np.float64) for v in found)
    elif raw.dtype.kind == "i" or (raw.dtype.kind == "u" and raw.dtype.itemsize < 8):
        high, low = (v.astype(np.float64) for v in ordered_extremes(raw, 0))
    else:
        return None
    return _block_extremes(high, low)


def _block_extremes(high: np.ndarray, low: np.ndarray) -> RowExtremes:
    """The rows' extremes from their blocks' (max and min are exact in any order;
    a NaN block extreme makes its row's non-finite, as a NaN makes NumPy's)."""
    with np.errstate(invalid="ignore"):
        return RowExtremes(high.max(axis=1), low.min(axis=1), high, low)


def host_codes(var: xr.Variable) -> np.ndarray | None:
    """The int16 codes the compiled passes read instead of ``var``'s float32
    volts: those the reader kept (:func:`idexdask.adccodes.recorded_codes`,
    without decoding a lazy waveform), where their scale rises with the code
    and marks a missing sample with the largest int16 (so that the codes'
    block extremes are the volts'); else None."""
    scale = code_scale(var.encoding)
    if scale is None or var.dtype != np.float32 or var.ndim != 2 or not (
            scale.scale > 0 and scale.fill == np.iinfo(np.int16).max):
        return None
    codes = recorded_codes(var, scale)
    return codes if codes is not None and codes.dtype == np.int16 else None


def channel_quality_host(
    ds: xr.Dataset,
    name: str,
    cfg: Mapping[str, Any],
    window: tuple[float, float],
    polarity: int,
    rails: tuple[float | None, float | None],
    clipped: np.ndarray | None,
) -> ChannelQuality:
    """:func:`channel_quality_xp` for NumPy samples: one compiled pass over each trace.

    The samples stay in their native dtype (no float64 copy of the traces) and a
    time axis given by formula is never materialised: the baseline window's
    columns are found from the axis terms, only the window's columns of the
    samples are read before the baseline is known, and then one pass per trace
    (:func:`trace_rows`) gives every whole-trace statistic.  Each sample is
    converted as :func:`channel_arrays` would, and every statistic is computed
    with the same floating-point operations, so the results are the same.  The
    rare traces that pass cannot settle exactly (a run at an ADC rail, a
    baseline with no valid sample, a degenerate excursion) are redone by the
    array code.
    """
    var = ds.variables[name]
    n_events = var.shape[0]
    codes = host_codes(var) if math.isnan(fill_value(var.attrs)) else None
    scale = code_scale(var.encoding) if codes is not None else None
    channel = _Channel(
        raw=np.ascontiguousarray(var.data if codes is None else codes),
        fill=fill_value(var.attrs), cfg=cfg, code_scale=scale,
        dirs=np.array([1.0, -1.0] if polarity == 0 else [float(polarity)]),
        rails=tuple(math.nan if r is None else r for r in rails),
        clipped=(np.zeros(n_events, dtype=np.bool_) if clipped is None
                 else clipped.astype(np.bool_)),
    )
    axis = host_time_axis(ds, name, channel.raw.shape)
    # 1. the baseline window's samples, their level, noise and quantisation step
    covered, xb = _baseline_samples(channel, axis, window)
    step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if xb.shape[1] else None
    quantum = step if step is not None else quantisation_step(var)
    floor = quantum / math.sqrt(12.0)
    baseline, noise = baseline_noise_host(xb, step, n_events)
    # 2. one pass per trace; events with no baseline sample use the whole trace's
    stats = channel.trace(baseline, _threshold(cfg, noise, floor))
    lost = np.nonzero(np.isnan(baseline) & (stats.n_valid > 0))[0]
    if lost.size:
        baseline[lost], noise[lost] = whole_trace_stats(np, channel.rows_x(lost))
        stats.update(lost, channel.trace(baseline, _threshold(cfg, noise, floor), lost))
    # 3. the products; the events the pass could not settle by the array code
    result = floor_constant(floor, _finish_host(channel, stats, covered, baseline,
                                                np.maximum(noise, floor), axis, quantum))
    redo = np.nonzero(stats.unsettled)[0]
    if redo.size:
        redone = channel_quality_xp(ds.isel(epoch=redo), name, cfg, window, polarity, rails,
                                     None if clipped is None else clipped[redo], step=step)
        for key, values in redone.products.items():
            result.products[key][redo] = values
    return result


def _threshold(cfg: Mapping[str, Any], noise: np.ndarray, floor: float) -> np.ndarray:
    """Flat-top threshold per event: ``flat_top_sigma`` noise sigmas (floored)."""
    with np.errstate(invalid="ignore"):
        return cfg["flat_top_sigma"] * np.maximum(noise, floor)


def _baseline_samples(
    channel: _Channel, axis: FormulaTimes | np.ndarray | None, window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each event covers the window, and its baseline samples (NaN elsewhere)
    over the columns any event uses."""
    raw, cfg = channel.raw, channel.cfg
    head = max(1, int(math.ceil(cfg["baseline_fallback_fraction"] * raw.shape[1])))
    w0, w1 = (float(v) for v in window)
    cols = baseline_columns(raw, channel.has_fill, channel.fill, axis, (w0, w1),
                            int(cfg["min_baseline_samples"]), head, channel.code_scale)
    used = cols.first >= 0
    lo, hi = (int(cols.first[used].min()), int(cols.last[used].max()) + 1) if used.any() else (0, 0)
    xb = window_rows(raw, channel.has_fill, channel.fill, *channel.decoding, cols.times,
                     cols.times_lo, cols.a,
                     cols.b, cols.covered, w0, w1, head, lo, hi)
    return cols.covered, xb


def _finish_host(
    channel: _Channel,
    stats: TraceStats,
    covered: np.ndarray,
    baseline: np.ndarray,
    noise_eff: np.ndarray,
    axis: FormulaTimes | np.ndarray | None,
    quantum: float,
) -> ChannelQuality:
    """Status and products from the pass's statistics (as the array code's)."""
    n_events, n = channel.raw.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = stats.best_exc / noise_eff
    has_rails = any(math.isfinite(r) for r in channel.rails)
    all_rail = ((stats.n_rail == stats.n_valid) & (stats.n_valid > 0) if has_rails
                else np.zeros(n_events, dtype=bool))
    status = status_codes(np, covered, stats.n_valid, n, stats.vmax_obs, stats.vmin_obs,
                          all_rail, channel.cfg["min_valid_samples"])
    # unusable channels have no saturated sample, except all-saturated ones: all valid
    unusable = status >= int(QualityStatus.FLAT)
    override = status == int(QualityStatus.ALL_SATURATED)
    n_sat = np.where(override, stats.n_valid, np.where(unusable, 0, stats.n_sat))
    first = np.where(override, stats.first_valid, stats.first)
    last = np.where(override, stats.last_valid, stats.last)
    return finish(
        np,
        t=axis,
        status=status,
        baseline=baseline,
        noise=noise_eff,
        snr=snr,
        best_exc=stats.best_exc,
        best_idx=stats.best_idx,
        sat_any=(n_sat > 0) | (channel.clipped & ~unusable),
        n_sat=n_sat,
        first=np.maximum(first, 0),
        last=np.maximum(last, 0),
        n_valid=stats.n_valid,
        vmax_obs=stats.vmax_obs,
        vmin_obs=stats.vmin_obs,
        rows_x=channel.rows_x,
        quantum=quantum,
    )
