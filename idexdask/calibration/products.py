"""The mass-calibration products of a batch of events, as bare xarray Variables.

One place builds them for :func:`idexdask.analyze` (per call) and for the
campaign step of ``idexdask submit`` (per group of events, after the joint
calibration), so both write the same variables with the same attributes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from idexdask.calibration.tofmass import mass_axis

__all__ = ["CAL_ORDER", "calibration_variables"]

CAL_ORDER = 3
"""Columns of ``mass_calibration`` beyond t0: up to third order in sqrt(m)."""


def calibration_variables(
    coefficients: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
    method: np.ndarray,
    residual_us: np.ndarray,
    peak_event: np.ndarray,
    peak_center: np.ndarray,
    preset: str,
    groups: Mapping[str, Any],
) -> dict[str, xr.Variable]:
    """Calibration products of E events and their N lines.

    Parameters
    ----------
    coefficients : numpy.ndarray, shape (E, 4)
        ``[t0, a1, a2, a3]`` per event (µs, µs/u**(k/2)); NaN rows uncalibrated.
    status, reason, method : numpy.ndarray of str, shape (E,)
    residual_us : numpy.ndarray, shape (N,)
        Residual of each line in its group's joint fit, µs (NaN: not used).
    peak_event, peak_center : numpy.ndarray, shape (N,)
        Event index and centre (µs) of each line.
    preset : str
        Calibration preset used.
    groups : mapping
        Per group: the campaign summary (JSON-ready).

    Returns
    -------
    dict of str to xarray.Variable
        ``calibration_coefficient`` (index), ``mass_calibration``,
        ``mass_calibration_status``, ``mass_calibration_reason``,
        ``mass_calibration_method``, ``peak_calibration_residual``, ``peak_mass``.
    """
    coefficients = np.asarray(coefficients, dtype=float)
    peak_event = np.asarray(peak_event, dtype=np.int64)
    peak_center = np.asarray(peak_center, dtype=float)
    pm = np.full(peak_event.size, np.nan)
    if pm.size:
        rows = coefficients[peak_event]
        fin = np.all(np.isfinite(rows), axis=1) & np.isfinite(peak_center)
        if fin.any():
            pm[fin] = mass_axis(rows[fin], peak_center[fin][:, None])[:, 0]
    return {
        "calibration_coefficient": xr.Variable(
            ("calibration_coefficient",), np.arange(CAL_ORDER + 1)
        ),
        "mass_calibration": xr.Variable(
            ("epoch", "calibration_coefficient"),
            coefficients,
            attrs={
                "units": "us, us/u**(k/2)",
                "long_name": "t = c0 + sum_k c_k sqrt(m)**k (NaN: uncalibrated)",
                "preset": preset,
                # per group (input): shared shape, events, anchors, rms residual
                "campaign_calibration": json.dumps(dict(groups), sort_keys=True),
            },
        ),
        "mass_calibration_status": xr.Variable(
            ("epoch",), np.asarray(status).astype(str),
            attrs={"long_name": "mass calibration status"},
        ),
        "mass_calibration_reason": xr.Variable(
            ("epoch",), np.asarray(reason).astype(str),
            attrs={"long_name": "why uncalibrated ('none' if calibrated)"},
        ),
        "mass_calibration_method": xr.Variable(
            ("epoch",), np.asarray(method).astype(str),
            attrs={"long_name": "campaign (shared shape, own shift), event (own "
                   "bootstrap) or none"},
        ),
        "peak_calibration_residual": xr.Variable(
            ("peak",), np.asarray(residual_us, dtype=float),
            attrs={"units": "us", "long_name": "residual of the line in its group's joint "
                   "calibration fit (NaN: not used)"},
        ),
        "peak_mass": xr.Variable(
            ("peak",), pm,
            attrs={"units": "u", "long_name": "line mass from the event's calibration"},
        ),
    }
