"""The mass-calibration products of a batch of events, as bare xarray Variables.

One place builds them for :func:`idexdask.analyze` (per call) and for the
campaign step of ``idexdask submit`` (per group of events, after the joint
calibration), so both write the same variables with the same attributes:
:func:`calibration_variables`.  The calibration steps of :func:`idexdask.analyze`
are here too: :func:`mass_calibration_products` (automatic, from the fitted TOF
lines) and :func:`manual_calibration_products` (events with a ``calibrate``
override, from their hand-assigned lines).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.hv_settings import split_groups_by_high_voltage
from idexdask.analysis.products import TofLines, add_with_coordinate, epoch_variable
from idexdask.calibration.campaign import CampaignSettings, calibrate_groups
from idexdask.calibration.comb import comb_calibrations
from idexdask.calibration.manual import manual_calibrations
from idexdask.calibration.mass_axes import line_masses
from idexdask.calibration.settings import load_calibration_settings
from idexdask.sources.defaults import resolve_preset

__all__ = [
    "CAL_ORDER",
    "calibration_variables",
    "manual_calibration_products",
    "mass_calibration_products",
    "peak_masses",
]

_log = get_logger(__name__)

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
    tolerance_us: float,
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
    tolerance_us : float
        The preset's match tolerance (``bootstrap.tolerance_us``), µs: its
        span in u at each line is ``peak_mass_tolerance``, the window within
        which the composition stage may name the line.

    Returns
    -------
    dict of str to xarray.Variable
        ``calibration_coefficient`` (index), ``mass_calibration``,
        ``mass_calibration_status``, ``mass_calibration_reason``,
        ``mass_calibration_method``, ``peak_calibration_residual``, ``peak_mass``,
        ``peak_mass_tolerance``.
    """
    coefficients = np.asarray(coefficients, dtype=float)
    peak_event = np.asarray(peak_event, dtype=np.int64)
    peak_center = np.asarray(peak_center, dtype=float)
    pm, ptol = peak_masses(coefficients, peak_event, peak_center, tolerance_us)
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
            attrs={"units": "u", "long_name": "line mass from the event's calibration "
                   "(NaN: uncalibrated, before the impact or beyond the calibrated range)"},
        ),
        "peak_mass_tolerance": xr.Variable(
            ("peak",), ptol,
            attrs={"units": "u", "tolerance_us": float(tolerance_us),
                   "long_name": "mass window of the calibration's match tolerance at the "
                   "line: a species further than this from peak_mass is not assigned"},
        ),
    }


def peak_masses(
    coefficients: np.ndarray, peak_event: np.ndarray, peak_center: np.ndarray,
    tolerance_us: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mass of every line and the span of ``tolerance_us`` there, u (NaN: no mass).

    See :func:`idexdask.calibration.mass_axes.line_masses`; lines of
    uncalibrated events get NaN.
    """
    pm = np.full(peak_event.size, np.nan)
    ptol = np.full(peak_event.size, np.nan)
    if pm.size:
        rows = coefficients[peak_event]
        fin = np.all(np.isfinite(rows), axis=1) & np.isfinite(peak_center)
        if fin.any():
            lm = line_masses(rows[fin], peak_center[fin], tolerance_us)
            pm[fin], ptol[fin] = lm.mass, lm.tolerance
    return pm, ptol


def mass_calibration_products(
    lines: TofLines,
    n_events: int,
    cfg: Mapping[str, Any],
    settings: Mapping[str, Any],
    out: dict[str, xr.Variable],
    attrs: Mapping[str, Any],
    variables: Mapping[str, Any] | tuple[()] = (),
    instrument: Mapping[str, xr.Variable] | None = None,
) -> np.ndarray:
    """The automatic mass calibration of every event from its fitted TOF lines.

    Each event's comb alignment and fit (:func:`comb_calibrations`), then
    one shape per group of events (input file or lab run, split where the high
    voltage changes) with a shift per event (:func:`calibrate_groups`).  Adds
    the :func:`calibration_variables` to ``out``.

    Parameters
    ----------
    lines : TofLines
        The fitted lines of the batch.
    n_events : int
        Events in the batch.
    cfg, settings : mapping
        The full configuration and its ``analysis`` section.
    out : dict of str to xarray.Variable
        Products, added to in place.
    attrs, variables : mapping
        The event dataset's attributes and variables (source kind, ``input_index``).
    instrument : mapping or None
        Instrument-state products (high voltages) of the batch.

    Returns
    -------
    numpy.ndarray
        True for each calibrated event (bool, n_events).
    """
    section = cfg.get("calibration") or {}
    # explicit preset, else the one of the data's source kind (flight / lab)
    preset = resolve_preset(section, attrs, variables)
    # the configured settings file, not only its default: validated once per call
    calibration_settings = load_calibration_settings(
        preset, path=section.get("settings_file") or None
    )
    good = (lines.status <= int(settings["calibration"]["max_fit_status"])) & np.isfinite(
        lines.center
    )
    good &= np.isfinite(lines.area) & (lines.area > 0)
    # a Gaussian fitted where the EMG failed is centred on the line's mode, not
    # on the EMG centre the comb times refer to
    good &= ~lines.mode_centred
    # lines are sorted by event: the good ones of event e are one slice
    offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(np.bincount(lines.event[good], minlength=n_events), out=offsets[1:])
    batch = comb_calibrations(
        lines.center[good], lines.area[good], offsets, settings=calibration_settings
    )
    for e in np.nonzero(batch.reason_code < 0)[0]:
        _log.info("event %d: calibration failed: non-finite peak times or amplitudes", e)
    # campaign level: one shape per group of events (input file / lab run),
    # a shift per event; an event's own calibration where it is better supported
    group = (
        np.asarray(variables["input_index"].values)
        if "input_index" in variables and variables["input_index"].dims == ("epoch",)
        else np.zeros(n_events, np.int64)
    )
    if instrument:
        state = xr.Dataset(
            {name: var for name, var in instrument.items() if var.dims == ("epoch",)})
        group = split_groups_by_high_voltage(group, state)
    else:
        group = np.asarray(group).astype(str)
    own = batch.stacked(order=CAL_ORDER)
    grouped = calibrate_groups(
        lines.event, lines.center, lines.area, good, group, calibration_settings,
        CampaignSettings.from_config(settings["calibration"].get("campaign")),
        own, batch.n_matched,
    )
    coeffs = grouped.coefficients
    calibrated = np.all(np.isfinite(coeffs[:, :2]), axis=1)
    status = np.where(calibrated, "calibrated", batch.status)
    reason = np.where(calibrated, "none", batch.reason)
    variables = calibration_variables(
        coeffs, status, reason, grouped.method, grouped.residual_us, lines.event,
        lines.center, preset, grouped.groups, calibration_settings.bootstrap.tolerance_us,
    )
    for name, variable in variables.items():
        if name == "calibration_coefficient":
            continue
        if name == "mass_calibration":
            add_with_coordinate(
                out, "calibration_coefficient", np.arange(CAL_ORDER + 1), name, variable
            )
        else:
            out[name] = variable
    return calibrated


def manual_calibration_products(
    lines: TofLines,
    table: xr.Dataset,
    l1a: xr.Dataset,
    cfg: Mapping[str, Any],
    out: dict[str, xr.Variable],
    calibrated: np.ndarray,
) -> np.ndarray:
    """Events with a ``calibrate`` override: calibrated from their hand-assigned lines.

    Replaces their row of ``mass_calibration``, status, reason and line masses
    (:mod:`idexdask.calibration.manual`); adds ``mass_calibration_method``.
    Returns the updated ``calibrated`` mask.
    """
    n_events = calibrated.size
    method = (  # how the automatic calibration was made, where it says so
        out["mass_calibration_method"].values.astype(object)
        if "mass_calibration_method" in out
        else np.full(n_events, "bootstrap", dtype=object)
    )
    events: list[int] = []
    if table.sizes.get("override", 0):
        rows = np.nonzero(table["action"].values == "calibrate")[0]
        index = {int(e): i for i, e in enumerate(np.asarray(l1a.variables["epoch"].values))}
        events = sorted({index[int(e)] for e in table["epoch"].values[rows] if int(e) in index})
    if events:
        section = cfg.get("calibration") or {}
        # the preset the automatic calibration used (the configured one, resolved)
        preset = out["mass_calibration"].attrs.get("preset", section.get("preset", "flight"))
        cal = manual_calibrations(
            lines.event, lines.center, lines.species_manual, events,
            load_calibration_settings(str(preset), path=section.get("settings_file") or None),
            order=CAL_ORDER,
        )
        coeffs = out["mass_calibration"].values.copy()
        status = out["mass_calibration_status"].values.astype(object)
        reason = out["mass_calibration_reason"].values.astype(object)
        coeffs[cal.events] = cal.coefficients
        status[cal.events] = np.where(cal.calibrated, "calibrated", "uncalibrated")
        reason[cal.events] = cal.reason
        method[cal.events] = "manual"
        calibrated = calibrated.copy()
        calibrated[cal.events] = cal.calibrated
        out["mass_calibration"] = out["mass_calibration"].copy(data=coeffs)
        out["mass_calibration_status"] = out["mass_calibration_status"].copy(
            data=status.astype(str))
        out["mass_calibration_reason"] = out["mass_calibration_reason"].copy(
            data=reason.astype(str))
        mine = np.isin(lines.event, cal.events)
        pm = out["peak_mass"].values.copy()
        ptol = out["peak_mass_tolerance"].values.copy()
        tol_us = float(out["peak_mass_tolerance"].attrs["tolerance_us"])
        pm[mine], ptol[mine] = peak_masses(coeffs, lines.event[mine], lines.center[mine], tol_us)
        out["peak_mass"] = out["peak_mass"].copy(data=pm)
        out["peak_mass_tolerance"] = out["peak_mass_tolerance"].copy(data=ptol)
        if "peak_calibration_residual" in out:  # the manual fit's own residuals there
            res = out["peak_calibration_residual"].values.copy()
            res[mine] = np.nan
            for used, fit in zip(cal.lines, cal.calibrations, strict=True):
                if fit is not None and fit.usable:
                    res[used] = fit.residual_us
            out["peak_calibration_residual"] = out["peak_calibration_residual"].copy(data=res)
    attrs = (dict(out["mass_calibration_method"].attrs) if "mass_calibration_method" in out
             else {"long_name": "how the mass calibration was made"})
    attrs["long_name"] = f"{attrs['long_name']}; manual: fitted to hand-assigned lines"
    out["mass_calibration_method"] = epoch_variable(method.astype(str), attrs)
    return calibrated
