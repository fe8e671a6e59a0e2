"""Quality status codes and the per-event products of one channel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from idexdask.analysis.signal_quality.statistics import nan_median, times_at
from idexdask.analysis.xp import to_numpy

__all__ = [
    "STATUS_MEANINGS",
    "ChannelQuality",
    "QualityStatus",
    "finish",
    "floor_constant",
    "status_codes",
]


class QualityStatus(IntEnum):
    """Condition of one channel of one event; higher values are worse.

    When several apply, the highest value is reported.
    """

    OK = 0
    """Usable waveform, baseline from the configured window."""
    BASELINE_FALLBACK = 1
    """The record does not cover the baseline window; first part of the trace used."""
    MISSING_SAMPLES = 2
    """Some samples are NaN or fill (``FILLVAL``); the rest were analysed."""
    FLAT = 3
    """All valid samples are equal (not zero, not at a rail): no signal, no noise."""
    ALL_SATURATED = 4
    """All valid samples sit at an ADC rail."""
    ALL_ZERO = 5
    """All valid samples are zero (dead channel or packing error, not saturation)."""
    TOO_SHORT = 6
    """Fewer than ``min_valid_samples`` valid samples."""
    NO_DATA = 7
    """No valid sample at all (every sample NaN or fill)."""


STATUS_MEANINGS = " ".join(s.name.lower() for s in QualityStatus)


@dataclass
class ChannelQuality:
    """The per-event quality products of one channel and the settings they used."""

    products: dict[str, np.ndarray]
    """Host arrays of length n_events, keyed by product (``baseline``, ``snr``, ...)."""
    quantum: float
    """Quantisation step used for the noise floor (units of the samples)."""
    window: tuple[float, float] = (math.nan, math.nan)
    """Baseline window, µs."""
    polarity: int = 1
    """Signal polarity of the excursion (+1, -1, 0 for either)."""
    rails: tuple[float | None, float | None] = (None, None)
    """ADC rails (low, high) of the samples; None where there is none."""


def floor_constant(floor: float, stats: ChannelQuality) -> ChannelQuality:
    """``stats`` with the zero noise of constant (FLAT) traces raised to ``floor``.

    A constant quantised trace is consistent with any noise below half a step;
    its quantisation noise ``q / sqrt(12)`` is the honest figure, and a noise
    of 0 would make any excursion infinitely significant downstream.
    """
    if floor > 0:
        noise = stats.products["noise"]
        stats.products["noise"] = np.where(noise == 0, floor, noise)
    return stats


def status_codes(
    xp: Any,
    covered: Any,
    n_valid: Any,
    n: int,
    vmax_obs: Any,
    vmin_obs: Any,
    all_rail: Any,
    min_valid: int,
) -> Any:
    """:class:`QualityStatus` per event: the highest condition that applies."""
    status = xp.full(n_valid.shape[0], int(QualityStatus.OK), dtype=xp.int8)
    conds = [
        (~covered, QualityStatus.BASELINE_FALLBACK),
        (n_valid < n, QualityStatus.MISSING_SAMPLES),
        (vmax_obs == vmin_obs, QualityStatus.FLAT),
        (all_rail, QualityStatus.ALL_SATURATED),
        ((vmax_obs == 0) & (vmin_obs == 0), QualityStatus.ALL_ZERO),
        (n_valid < min_valid, QualityStatus.TOO_SHORT),
        (n_valid == 0, QualityStatus.NO_DATA),
    ]
    for cond, code in conds:  # fixed, short list of conditions, each over all events
        status = xp.where(cond, xp.int8(int(code)), status)
    return status


def finish(
    xp: Any,
    *,
    t: Any | None,
    status: Any,
    baseline: Any,
    noise: Any,
    snr: Any,
    best_exc: Any,
    best_idx: Any,
    sat_any: Any,
    n_sat: Any,
    first: Any,
    last: Any,
    n_valid: Any,
    vmax_obs: Any,
    vmin_obs: Any,
    rows_x: Any,
    quantum: float,
) -> ChannelQuality:
    """The per-event products from the statistics (``rows_x(rows)``: float rows, NaN missing)."""
    unusable = status >= int(QualityStatus.FLAT)
    no_stats = status >= int(QualityStatus.TOO_SHORT)
    t_start = times_at(t, first, sat_any)
    t_stop = times_at(t, last, sat_any)
    peak_time = times_at(t, best_idx, xp.isfinite(best_exc) & ~unusable)

    nan = xp.nan
    snr = xp.where(unusable, nan, snr)
    excursion = xp.where(unusable, nan, best_exc)
    baseline = xp.where(no_stats, nan, baseline)
    noise = xp.where(no_stats, nan, noise)
    # flat / zero / all-saturated channels: level is the constant, no noise
    const = unusable & ~no_stats
    use_const = const & (n_valid > 0)
    if bool(use_const.any()):  # median of the whole trace only where it is needed
        rows = xp.nonzero(use_const)[0]
        baseline[rows] = nan_median(xp, rows_x(rows), axis=1)
    noise = xp.where(const & (vmax_obs == vmin_obs), 0.0, noise)

    return ChannelQuality(products={
        "baseline": to_numpy(baseline),
        "noise": to_numpy(noise),
        "snr": to_numpy(snr),
        "excursion": to_numpy(excursion),
        "peak_time": to_numpy(peak_time),
        "saturated": to_numpy(sat_any),
        "saturated_samples": to_numpy(n_sat).astype(np.int32),
        "saturation_start": to_numpy(t_start),
        "saturation_stop": to_numpy(t_stop),
        "quality_status": to_numpy(status).astype(np.int8),
    }, quantum=quantum)
