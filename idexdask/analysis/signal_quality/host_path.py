"""Signal quality of one channel of NumPy samples by compiled passes (:mod:`.kernels`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

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

__all__ = ["BaselineColumns", "baseline_columns", "channel_quality_host"]


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
) -> BaselineColumns:
    """The baseline window of each event located on its time axis (by bisection on a
    formula axis), and the samples it keeps: those in the window when it is covered
    (see the module's definitions), else the valid ones of the head of the trace."""
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
    n_win, wf, wl, hf, hl = baseline_bounds(raw, has_fill, fill, times, lo, a, b, w0, w1, head)
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
    raw = np.ascontiguousarray(var.data)
    n_events, n = raw.shape
    vmin, vmax = rails
    quantum = quantisation_step(var)
    fill = fill_value(var.attrs)
    has_fill = math.isfinite(fill)
    head = max(1, int(math.ceil(cfg["baseline_fallback_fraction"] * n)))
    w0, w1 = (float(v) for v in window)
    axis = host_time_axis(ds, name, raw.shape)
    cols = baseline_columns(raw, has_fill, fill, axis, (w0, w1),
                             int(cfg["min_baseline_samples"]), head)
    covered = cols.covered
    used = cols.first >= 0
    lo, hi = (int(cols.first[used].min()), int(cols.last[used].max()) + 1) if used.any() else (0, 0)
    xb = window_rows(raw, has_fill, fill, cols.times, cols.times_lo, cols.a, cols.b, covered,
                      w0, w1, head, lo, hi)
    step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if hi > lo else None
    if step is not None:
        quantum = step
    floor = quantum / math.sqrt(12.0)
    baseline, noise = baseline_noise_host(xb, step, n_events)
    dirs = np.array([1.0, -1.0] if polarity == 0 else [float(polarity)])
    flags = np.zeros(n_events, dtype=np.bool_) if clipped is None else clipped.astype(np.bool_)
    vmin_f = math.nan if vmin is None else vmin
    vmax_f = math.nan if vmax is None else vmax

    def trace(rows: np.ndarray | None) -> tuple[np.ndarray, ...]:
        sub = raw if rows is None else raw[rows]
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])
        with np.errstate(invalid="ignore"):
            threshold = cfg["flat_top_sigma"] * np.maximum(pick(noise), floor)
        return trace_rows(
            sub, has_fill, fill, pick(baseline), threshold, dirs, vmin_f, vmax_f,
            int(cfg["saturation_min_run"]), int(cfg["flat_top_min_run"]), pick(flags),
        )  # fmt: skip

    stats = list(trace(None))
    n_valid = stats[0]
    lost = np.isnan(baseline) & (n_valid > 0)
    if lost.any():
        rows = np.nonzero(lost)[0]
        x = raw[rows].astype(np.float64)
        x[np.isnan(x) | ((x == fill) if has_fill else False)] = np.nan
        baseline[rows], noise[rows] = whole_trace_stats(np, x)
        for k, values in enumerate(trace(rows)):
            stats[k][rows] = values
    (n_valid, vmax_obs, vmin_obs, n_rail, fvalid, lvalid, best_exc, best_idx, n_sat,
     first, last, unsettled) = stats
    noise_eff = np.maximum(noise, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = best_exc / noise_eff
    all_rail = (
        (n_rail == n_valid) & (n_valid > 0)
        if (vmax is not None or vmin is not None)
        else np.zeros(n_events, dtype=bool)
    )
    status = status_codes(
        np, covered, n_valid, n, vmax_obs, vmin_obs, all_rail, cfg["min_valid_samples"]
    )
    # unusable channels have no saturated sample, except all-saturated ones: all valid
    unusable = status >= int(QualityStatus.FLAT)
    override = status == int(QualityStatus.ALL_SATURATED)
    n_sat = np.where(override, n_valid, np.where(unusable, 0, n_sat))
    first = np.where(override, fvalid, first)
    last = np.where(override, lvalid, last)
    sat_any = (n_sat > 0) | (flags & ~unusable)

    def rows_x(rows: np.ndarray) -> np.ndarray:
        x = raw[rows].astype(np.float64)
        miss = np.isnan(x)
        if has_fill:
            miss |= x == fill
        x[miss] = np.nan
        return x

    result = floor_constant(floor, finish(
        np,
        t=axis,
        status=status,
        baseline=baseline,
        noise=noise_eff,
        snr=snr,
        best_exc=best_exc,
        best_idx=best_idx,
        sat_any=sat_any,
        n_sat=n_sat,
        first=np.maximum(first, 0),
        last=np.maximum(last, 0),
        n_valid=n_valid,
        vmax_obs=vmax_obs,
        vmin_obs=vmin_obs,
        rows_x=rows_x,
        quantum=quantum,
    ))
    redo = np.nonzero(unsettled)[0]
    if redo.size:
        redone = channel_quality_xp(ds.isel(epoch=redo), name, cfg, window, polarity, rails,
                                     None if clipped is None else clipped[redo], step=step)
        for key, values in redone.products.items():
            result.products[key][redo] = values
    return result
