"""Settings of the pickup analysis: calibration placeholders, status codes, the
lab-setup file and the detection settings converted from µs to samples."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.errors import AnalysisError

__all__ = [
    "DEFAULT_TUBE_LENGTH_M",
    "KM_S_PER_M_US",
    "PLACEHOLDER_VOLTS_PER_COULOMB",
    "STATUS_MEANINGS",
    "PickupSettings",
    "load_scope_config",
    "pickup_settings",
]

PLACEHOLDER_VOLTS_PER_COULOMB = 1.0e12
"""1 mV/fC: a PLACEHOLDER of plausible order, not a calibration (see
:mod:`idexdask.analysis.pickup`)."""

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

KM_S_PER_M_US = 1e3
"""Speed unit conversion: (m / µs) -> km/s."""


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


@dataclass(frozen=True)
class PickupSettings:
    """The detection settings of
    :func:`~idexdask.analysis.pickup.pickup_charge_speed`, converted to samples."""

    polarity: int  #: ±1
    dt: float  #: sampling interval, µs
    w: int  #: derivative half-kernel, samples
    threshold_sigma: float  #: edge and plateau threshold, noise sigmas
    min_transit: int  #: samples
    max_transit: int  #: samples
    edge_half: int  #: half-width of the edge window, samples
    baseline: int  #: samples
    plateau_guard: float  #: fraction of the transit trimmed at each plateau end


def pickup_settings(
    interval_us: np.ndarray, n: int, *, polarity: int, smooth_us: float,
    threshold_sigma: float, min_transit_us: float, max_transit_us: float,
    edge_window_us: float, baseline_us: float, plateau_guard: float,
) -> PickupSettings:
    """Check the sampling and convert the settings from µs to samples.

    Parameters
    ----------
    interval_us : numpy.ndarray, (events,)
        Sampling interval of each record, µs.
    n : int
        Samples per record.
    polarity : {-1, 1}
        Sign of the pulse.
    smooth_us, min_transit_us, max_transit_us, edge_window_us, baseline_us : float
        As :func:`~idexdask.analysis.pickup.pickup_charge_speed`, µs.
    threshold_sigma, plateau_guard : float
        As :func:`~idexdask.analysis.pickup.pickup_charge_speed` (noise sigmas;
        fraction of the transit time).

    Returns
    -------
    PickupSettings

    Raises
    ------
    AnalysisError
        Too few samples, a polarity other than ±1, a non-positive sampling
        interval or a derivative kernel longer than the record.
    """
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
    return PickupSettings(
        polarity=polarity, dt=dt, w=w, threshold_sigma=float(threshold_sigma),
        min_transit=int(np.ceil(min_transit_us / dt)),
        max_transit=int(np.floor(max_transit_us / dt)),
        edge_half=max(2 * w, int(round(edge_window_us / dt))),
        baseline=int(round(baseline_us / dt)), plateau_guard=float(plateau_guard),
    )
