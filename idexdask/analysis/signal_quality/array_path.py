"""Signal quality of one channel in the array namespace of its samples (NumPy or CuPy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from idexdask.analysis.signal_quality.dataset import channel_arrays, quantisation_step
from idexdask.analysis.signal_quality.statistics import (
    baseline_mask,
    baseline_noise,
    detect_quantum,
    first_last,
    long_runs,
    whole_trace_stats,
)
from idexdask.analysis.signal_quality.status import (
    ChannelQuality,
    QualityStatus,
    finish,
    floor_constant,
    status_codes,
)
from idexdask.analysis.xp import errstate, get_namespace

__all__ = ["channel_quality_xp"]


class _Detect:
    """Marker: the quantisation step is to be detected on the samples."""


_DETECT = _Detect()


def channel_quality_xp(
    ds: xr.Dataset,
    name: str,
    cfg: Mapping[str, Any],
    window: tuple[float, float],
    polarity: int,
    rails: tuple[float | None, float | None],
    clipped: np.ndarray | None,
    *,
    step: float | None | _Detect = _DETECT,
) -> ChannelQuality:
    """:func:`channel_quality` in the array namespace of the samples (NumPy or CuPy).

    ``step``: the quantisation step, when known (events redone for the compiled
    path use the step detected on all events); by default 1 for integer samples,
    else detected on the baseline samples.
    """
    var = ds.variables[name]
    x, valid, t = channel_arrays(ds, name)
    xp = get_namespace(x)
    n_events, n = x.shape
    vmin, vmax = rails
    quantum = quantisation_step(var)

    n_valid = valid.sum(axis=1)
    bmask, covered = baseline_mask(
        t,
        valid,
        window,
        fallback_fraction=cfg["baseline_fallback_fraction"],
        min_samples=cfg["min_baseline_samples"],
    )
    # restrict the median to the columns any event uses (the window is narrow)
    cols = xp.nonzero(bmask.any(axis=0))[0]
    if cols.size:
        lo, hi = int(cols[0]), int(cols[-1]) + 1
    else:
        lo, hi = 0, 0
    xb = xp.where(bmask[:, lo:hi], x[:, lo:hi], xp.nan)
    # quantisation step: 1 DN for integers, else detected on the baseline samples
    if isinstance(step, _Detect):
        step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if hi > lo else None
    if step is not None:
        quantum = step
    floor = quantum / math.sqrt(12.0)
    baseline, noise = baseline_noise(xp, xb, step, n_events)
    # no valid sample in the window nor in the fallback head: whole trace
    lost = xp.isnan(baseline) & (n_valid > 0)
    if bool(lost.any()):
        baseline[lost], noise[lost] = whole_trace_stats(xp, x[lost])
    noise_eff = xp.maximum(noise, floor)

    # excursion in the signal's polarity (0: either direction)
    dirs = (1, -1) if polarity == 0 else (polarity,)
    dev = x - baseline[:, None]
    best_exc = xp.full(n_events, -xp.inf)
    best_idx = xp.zeros(n_events, dtype=xp.int64)
    flat_top = xp.zeros((n_events, n), dtype=bool)
    best_dir = xp.ones(n_events)
    for d in dirs:  # at most two directions, each vectorised over events
        s = xp.where(valid, d * dev, -xp.inf)
        idx = xp.argmax(s, axis=1) if n else xp.zeros(n_events, dtype=xp.int64)
        exc = xp.take_along_axis(s, idx[:, None], axis=1)[:, 0] if n else xp.full(n_events, -xp.inf)
        with errstate(xp, invalid="ignore"):
            far = exc > cfg["flat_top_sigma"] * noise_eff
        at_top = (s == exc[:, None]) & valid & far[:, None]
        flat_top |= long_runs(at_top, cfg["flat_top_min_run"])
        better = exc > best_exc
        best_exc = xp.where(better, exc, best_exc)
        best_idx = xp.where(better, idx, best_idx)
        best_dir = xp.where(better, float(d), best_dir)
    with errstate(xp, divide="ignore", invalid="ignore"):
        snr = best_exc / noise_eff

    # ADC rails
    at_rail = xp.zeros((n_events, n), dtype=bool)
    if vmax is not None:
        at_rail |= valid & (xp.nan_to_num(x, nan=-xp.inf) >= vmax)
    if vmin is not None:
        at_rail |= valid & (xp.nan_to_num(x, nan=xp.inf) <= vmin)
    sat = long_runs(at_rail, cfg["saturation_min_run"]) | flat_top

    # scope clipping flag: the run(s) at the extreme of the larger excursion
    clipped_x = xp.zeros(n_events, dtype=bool)
    if clipped is not None:
        clipped_x = xp.asarray(clipped)
        s = xp.where(valid, best_dir[:, None] * dev, -xp.inf)
        at_ext = (s == best_exc[:, None]) & valid & clipped_x[:, None]
        sat |= at_ext

    # status
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vmax_obs = (
            xp.nanmax(xp.where(valid, x, -xp.inf), axis=1) if n else xp.full(n_events, -xp.inf)
        )
        vmin_obs = xp.nanmin(xp.where(valid, x, xp.inf), axis=1) if n else xp.full(n_events, xp.inf)
    all_rail = (
        (at_rail.sum(axis=1) == n_valid) & (n_valid > 0)
        if (vmax is not None or vmin is not None)
        else xp.zeros(n_events, dtype=bool)
    )
    status = status_codes(
        xp, covered, n_valid, n, vmax_obs, vmin_obs, all_rail, cfg["min_valid_samples"]
    )

    unusable = status >= int(QualityStatus.FLAT)
    saturated_override = status == int(QualityStatus.ALL_SATURATED)
    sat = xp.where((unusable & ~saturated_override)[:, None], False, sat)
    sat = xp.where(saturated_override[:, None], valid, sat)
    sat_any = sat.any(axis=1) | (clipped_x & ~unusable)
    n_sat = sat.sum(axis=1)
    first, last, anyv = (
        first_last(sat)
        if n
        else (xp.zeros(n_events, dtype=xp.int64),) * 2 + (xp.zeros(n_events, dtype=bool),)
    )
    return floor_constant(floor, finish(
        xp,
        t=t,
        status=status,
        baseline=baseline,
        noise=noise_eff,
        snr=snr,
        best_exc=best_exc,
        best_idx=best_idx,
        sat_any=sat_any,
        n_sat=n_sat,
        first=first,
        last=last,
        n_valid=n_valid,
        vmax_obs=vmax_obs,
        vmin_obs=vmin_obs,
        rows_x=lambda rows: x[rows],
        quantum=quantum,
    ))
