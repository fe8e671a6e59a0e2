"""The analysis-only product steps of :func:`idexdask.analyze`, one per stage.

Each step reads an event dataset (``epoch`` dimension) and adds bare
:class:`xarray.Variable` products to a dict (no coordinates, so no alignment
when the caller assembles them):

* :func:`quality_products`: signal quality per channel
  (:mod:`~idexdask.analysis.signal_quality`);
* :func:`tof_products`: TOF gain merge (:func:`~idexdask.analysis.tof.merge_gains`),
  line detection and one batched EMG fit of every line
  (:mod:`~idexdask.analysis.peaks`), manual overrides applied between detection
  and fit; returns the fitted lines (:class:`TofLines`) that the mass
  calibration reads;
* :func:`impact_products`: impact-charge fits of Target_High, Target_Low and
  Ion_Grid (:mod:`~idexdask.analysis.impact`), impact speed and dust mass
  (:mod:`~idexdask.analysis.velocity`).

The calibration and composition steps, and the orchestration of all of them,
live in the layers above (:mod:`idexdask.calibration.products`,
:mod:`idexdask.workflow.analyze`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.impact import (
    IMPACT_CHANNELS,
    ImpactFit,
    ImpactStatus,
    fit_impacts,
    status_meanings,
)
from idexdask.analysis.impact_model import FIT_PARAMETERS
from idexdask.analysis.line_edits import LineEdits, apply_line_edits
from idexdask.analysis.line_fits import LineFits
from idexdask.analysis.line_status import LineStatus, fit_status_meanings
from idexdask.analysis.overrides import (
    LINE_SHAPES,
    apply_tof_overrides,
    impact_windows,
    manual_impact,
)
from idexdask.analysis.peaks import PeakCandidates
from idexdask.analysis.tof import (
    TOF_CHANNELS,
    GainRatioStatus,
    MergeBuffers,
    MergedSpectrum,
    merge_gains,
    tof_lines,
)
from idexdask.analysis.velocity import (
    PowerLawCurve,
    VelocityStatus,
    dust_mass,
    invert_rise_time,
)
from idexdask.config import load_settings
from idexdask.errors import ConfigError, IdexDaskError
from idexdask.schema import Settings

__all__ = [
    "TofLines",
    "add_with_coordinate",
    "epoch_variable",
    "impact_products",
    "load_analysis_settings",
    "quality_products",
    "settings_with_fitting",
    "tof_products",
]

_log = get_logger(__name__)


@dataclass(frozen=True)
class TofLines:
    """The fitted TOF lines of a batch of events, sorted by event (one row per line).

    Attributes
    ----------
    event : numpy.ndarray
        Index into ``epoch`` of the event holding the line (int).
    center : numpy.ndarray
        EMG Gaussian centre, µs from the trigger.
    area : numpy.ndarray
        Line area above the local baseline, signal units x µs.
    status : numpy.ndarray
        :class:`~idexdask.analysis.line_status.LineStatus` of the fit (int8).
    mode_centred : numpy.ndarray
        True where a Gaussian was fitted at the line's mode (EMG failed): the
        centre is not an EMG centre and is not calibrated on.
    species_manual : numpy.ndarray
        Species assigned by hand (str; '' where none).
    """

    event: np.ndarray
    center: np.ndarray
    area: np.ndarray
    status: np.ndarray
    mode_centred: np.ndarray
    species_manual: np.ndarray


def load_analysis_settings(
    config: Mapping[str, Any] | str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The full configuration and its analysis section.

    Parameters
    ----------
    config : mapping, path or None
        Anything :func:`idexdask.config.load_config` accepts; its ``analysis``
        mapping overrides the ``analysis:`` section of ``configs/default.yaml``
        (any subset of its keys).  A complete configuration already validated
        and frozen (:class:`idexdask.schema.Settings`, as
        :func:`idexdask.config.load_settings` gives) is taken as it is.

    Returns
    -------
    config, settings : idexdask.schema.Settings
        Validated, frozen configuration and its ``analysis`` section.

    Raises
    ------
    ConfigError
        On unknown keys or invalid values.
    """
    if isinstance(config, Settings) and "analysis" in config:
        return config, config["analysis"]  # validated when it was frozen
    cfg = load_settings(config if config is not None else {})
    return cfg, cfg["analysis"]


def settings_with_fitting(settings: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A section of the settings plus the fit device and engine (``analysis.fitting``)."""
    fitting = settings["fitting"]
    return {
        **settings[section],
        "fit_device": str(fitting["device"]),
        "fit_engine": str(fitting["engine"]),
    }


def quality_products(ds: xr.Dataset, settings: Mapping[str, Any]) -> dict[str, xr.Variable] | None:
    """Signal-quality variables (:func:`~idexdask.analysis.signal_quality.quality_variables`).

    Their channel dimension is ``quality_channel``; None when the quality stage fails.
    """
    try:
        from idexdask.analysis.signal_quality import load_quality_config, quality_variables
    except ImportError:  # pragma: no cover - module being written concurrently
        _log.warning("signal_quality unavailable: no quality products")
        return None
    try:
        cfg = load_quality_config(settings.get("quality") or None)
        return quality_variables(ds, cfg, channel_dim="quality_channel")
    except ConfigError:
        raise
    except IdexDaskError as exc:
        _log.warning("signal quality failed (%s): no quality products", exc)
        return None


def epoch_variable(
    values: np.ndarray, attrs: Mapping[str, Any], dims: tuple[str, ...] = ("epoch",)
) -> xr.Variable:
    """A product variable (a bare Variable: no coordinates, so no alignment on assembly)."""
    return xr.Variable(dims, values, attrs=dict(attrs))


def add_with_coordinate(
    out: dict[str, xr.Variable], dim: str, values: Any, name: str, variable: xr.Variable
) -> None:
    """Add ``variable`` to ``out`` after the index coordinate ``dim`` (added once, first)."""
    if dim not in out:
        out[dim] = xr.Variable((dim,), values)
    out[name] = variable


def tof_products(
    ds: xr.Dataset,
    quality: Mapping[str, xr.Variable] | None,
    settings: Mapping[str, Any],
    table: xr.Dataset,
    out: dict[str, xr.Variable],
    buffers: MergeBuffers | None = None,
) -> TofLines | None:
    """TOF gain merge, line search and fits, with the manual line edits applied.

    Adds the ``peak_*``, ``tof_gain_ratio_*``, ``tof_combined`` and
    ``tof_line_count`` products to ``out``; returns the fitted lines the
    calibration step reads, or None when ``ds`` has no TOF channel.
    ``buffers``: the caller's memory for the merged spectrum
    (:class:`~idexdask.analysis.tof.MergeBuffers`; no product keeps it).
    """
    merged = merge_gains(ds, quality, {**settings["tof"]}, single=True, buffers=buffers)
    if merged is None:
        _log.info("no TOF channel: no line products")
        return None
    epochs = np.asarray(ds.variables["epoch"].values)

    def edit(cand: Any, m: Any) -> Any:
        return apply_tof_overrides(cand, table, epochs, m.time)

    cand, fits, _ = tof_lines(merged, settings_with_fitting(settings, "peaks"), edit=edit)
    # line shapes and species chosen by hand (override rows `shape`, `species`)
    edits = apply_line_edits(cand, fits, merged.signal, merged.time, merged.sigma, table,
                             epochs, settings_with_fitting(settings, "peaks"))
    fits = edits.fits
    unit = str(ds.variables[merged.channels[0]].attrs.get("units", "DN"))
    n_events = ds.sizes["epoch"]
    _peak_variables(cand, fits, edits, unit, out)
    _gain_ratio_variables(merged, out)
    ref = ds.variables[merged.channels[0]]
    out["tof_combined"] = xr.Variable(
        ref.dims,
        merged.single,  # signal.astype(numpy.float32), formed by the merge's pass
        attrs={
            "units": unit,
            "long_name": "merged TOF spectrum: baseline removed, positive-going, in units of "
            f"{merged.channels[0]}; NaN where saturated in every gain",
            "gains": list(merged.channels),
        },
    )
    out["tof_line_count"] = epoch_variable(
        np.bincount(cand.event, minlength=n_events).astype(np.int32),
        {"units": "1", "long_name": "TOF lines per event"},
    )
    return TofLines(
        event=cand.event,
        center=fits.center,
        area=fits.area,
        status=fits.status,
        mode_centred=fits.mode_centred,
        species_manual=edits.species,
    )


def _peak_variables(
    cand: PeakCandidates, fits: LineFits, edits: LineEdits, unit: str, out: dict[str, xr.Variable]
) -> None:
    """The ``peak_*`` products of the fitted lines (one row per line), in ``unit``."""
    peaks = {
        "peak_event": (
            cand.event.astype(np.int64),
            "1",
            "index into epoch of the event holding the line",
        ),
        "peak_center": (fits.center, "us", "EMG Gaussian centre, time from the trigger"),
        "peak_center_err": (fits.center_err, "us", "1-sigma uncertainty of peak_center"),
        "peak_sigma": (fits.sigma, "us", "EMG Gaussian width"),
        "peak_gamma": (fits.gamma, "1/us", "EMG exponential tail rate (NaN: Gaussian line)"),
        "peak_area": (
            fits.area,
            f"{unit} us",
            "line area above the fitted local baseline, merged spectrum (high-gain units)",
        ),
        "peak_area_err": (fits.area_err, f"{unit} us", "1-sigma uncertainty of peak_area"),
        "peak_height": (fits.height, unit, "maximum of the fitted line above its baseline"),
        "peak_offset": (
            fits.offset,
            unit,
            "fitted local constant baseline (residual after baseline subtraction)",
        ),
        "peak_chisq": (fits.chisq, "1", "noise-weighted chi-square of the line fit"),
        "peak_redchi": (fits.redchi, "1", "chi-square per degree of freedom"),
        "peak_status": (fits.status, "1", "LineStatus of the line fit"),
        "peak_manual": (edits.manual, "1", "line added, edited or reshaped by a manual override"),
        "peak_shape": (
            edits.shape, "1", "line shape of the fit (idexdask.analysis.lineshapes; the "
            "automatic fit: emg, or gaussian where the EMG's tail collapsed or it failed)",
        ),
        "peak_center_at_mode": (
            fits.mode_centred, "1", "Gaussian fitted where the EMG did not converge: "
            "peak_center is the line's mode, not an EMG centre (not calibrated on)",
        ),
        "peak_shape_parameters": (
            edits.shape_parameters,
            "",
            "JSON of a reshaped line's parameters beyond amplitude, center, sigma "
            "('' for the automatic EMG)",
        ),
        "peak_species_manual": (
            edits.species != "",
            "1",
            "peak_species assigned by hand ('' there: assigned to no species)",
        ),
        "peak_prominence": (
            cand.prominence,
            "1",
            "detection prominence in smoothed-baseline sigmas (NaN for manual lines)",
        ),
        "peak_window_start": (fits.window_start, "us", "fit window start"),
        "peak_window_stop": (fits.window_stop, "us", "fit window stop"),
    }
    for name, (values, units, long_name) in peaks.items():
        attrs = {"units": units, "long_name": long_name}
        if name == "peak_status":
            attrs.update(
                flag_values=np.arange(len(LineStatus), dtype=np.int8),
                flag_meanings=fit_status_meanings(),
            )
        if name == "peak_shape":
            attrs.update(flag_values=np.arange(len(LINE_SHAPES), dtype=np.int8),
                         flag_meanings=" ".join(LINE_SHAPES))
        out[name] = xr.Variable(("peak",), values, attrs=attrs)


def _gain_ratio_variables(merged: MergedSpectrum, out: dict[str, xr.Variable]) -> None:
    """The ``tof_gain_ratio_*`` products: each gain's ratio to TOF_High and how it was found."""
    for name in TOF_CHANNELS:
        low = name.lower().removeprefix("tof_")
        out[f"tof_gain_ratio_{low}"] = epoch_variable(
            merged.ratios[name],
            {"units": "1", "long_name": f"TOF_High / {name} gain ratio (NaN if absent)"},
        )
        out[f"tof_gain_ratio_{low}_status"] = epoch_variable(
            merged.ratio_status[name],
            {
                "units": "1",
                "long_name": f"how the {name} gain ratio was obtained",
                "flag_values": np.arange(len(GainRatioStatus), dtype=np.int8),
                "flag_meanings": " ".join(s.name.lower() for s in GainRatioStatus),
            },
        )
        out[f"tof_gain_ratio_{low}_overlap"] = epoch_variable(
            merged.overlap[name],
            {"units": "1", "long_name": f"overlap samples used for the {name} ratio"},
        )


def impact_products(
    ds: xr.Dataset,
    quality: Mapping[str, xr.Variable] | None,
    settings: Mapping[str, Any],
    table: xr.Dataset,
    out: dict[str, xr.Variable],
    pickup_speed: np.ndarray | None = None,
) -> dict[str, ImpactFit]:
    """Impact-charge fits of Target_High, Target_Low and Ion_Grid, impact speed and dust mass.

    Adds each channel's fit products, ``impact_velocity``, ``dust_mass`` and
    their status and source variables to ``out``; ``pickup_speed`` (km/s, per
    event, NaN where not measured) replaces the rise-time speed in the mass.
    Returns the fits by channel name.
    """
    epochs = np.asarray(ds.variables["epoch"].values)
    fits: dict[str, ImpactFit] = {}
    for name in IMPACT_CHANNELS:
        if name not in ds.data_vars or ds.variables[name].ndim != 2:
            continue
        windows = impact_windows(table, epochs, name)
        fit = fit_impacts(ds, name, quality, settings_with_fitting(settings, "impact"), windows)
        fits[name] = fit
        _channel_fit_products(ds, name, fit, settings, table, out)
    _velocity_and_mass(fits, ds.sizes["epoch"], settings, out, pickup_speed)
    return fits


def _channel_fit_products(
    ds: xr.Dataset,
    name: str,
    fit: ImpactFit,
    settings: Mapping[str, Any],
    table: xr.Dataset,
    out: dict[str, xr.Variable],
) -> None:
    """The impact-fit products of channel ``name`` (parameters, charge, rise time, status)."""
    low = name.lower()
    epochs = np.asarray(ds.variables["epoch"].values)
    factors = settings["impact"]["dn_to_pc"]
    unit = str(ds.variables[name].attrs.get("units", "DN"))
    add_with_coordinate(
        out,
        "fit_parameter",
        np.array(FIT_PARAMETERS),
        f"{low}_fit_parameters",
        xr.Variable(
            ("epoch", "fit_parameter"),
            fit.params,
            attrs={
                "units": f"us, {unit}, {unit}, us, us",
                "long_name": f"{name}: fitted impact-charge model "
                "Q(t) = C0 + H(t-t0) A (1-exp(-(t-t0)/tau_r)) exp(-(t-t0)/tau_d)",
            },
        ),
    )
    out[f"{low}_fit_parameter_errors"] = xr.Variable(
        ("epoch", "fit_parameter"),
        fit.stderr,
        attrs={
            "units": f"us, {unit}, {unit}, us, us",
            "long_name": f"{name}: 1-sigma fit uncertainties",
        },
    )
    k = float(factors.get(name, math.nan))
    with np.errstate(invalid="ignore"):
        charge = np.abs(fit.params[:, 2]) * k
    out[f"{low}_impact_charge"] = epoch_variable(
        charge, {"units": "pC", "long_name": f"{name}: |amplitude| x {k} pC/DN", "dn_to_pc": k}
    )
    out[f"{low}_impact_charge_err"] = epoch_variable(
        fit.stderr[:, 2] * k, {"units": "pC", "long_name": f"{name}: 1-sigma"}
    )
    out[f"{low}_rise_time_10_90"] = epoch_variable(
        fit.rise_10_90,
        {"units": "us", "long_name": f"{name}: 10-90 % rise time of the fitted pulse"},
    )
    out[f"{low}_chi_squared"] = epoch_variable(
        fit.chisq, {"units": "1", "long_name": f"{name}: noise-weighted chi-square"}
    )
    out[f"{low}_reduced_chi_squared"] = epoch_variable(
        fit.redchi, {"units": "1", "long_name": f"{name}: chi-square per degree of freedom"}
    )
    out[f"{low}_fit_status"] = epoch_variable(
        fit.status,
        {
            "units": "1",
            "long_name": f"{name}: ImpactStatus",
            "flag_values": np.arange(len(ImpactStatus), dtype=np.int8),
            "flag_meanings": status_meanings(),
        },
    )
    out[f"{low}_signal_polarity"] = epoch_variable(
        fit.polarity, {"units": "1", "long_name": f"{name}: pulse sign used"}
    )
    out[f"{low}_fit_manual"] = epoch_variable(
        manual_impact(table, epochs, name), {"long_name": f"{name}: fit window set manually"}
    )


def _velocity_and_mass(
    fits: Mapping[str, ImpactFit],
    n: int,
    settings: Mapping[str, Any],
    out: dict[str, xr.Variable],
    pickup_speed: np.ndarray | None,
) -> None:
    """Impact speed and dust mass from the first usable target channel's fit.

    ``pickup_speed`` (km/s, NaN where not measured) replaces the rise-time speed
    in the mass where the pickup tubes measured it.
    """
    factors = settings["impact"]["dn_to_pc"]
    vcfg = settings["velocity"]
    rise_curve = PowerLawCurve.from_config(vcfg["rise_time_curve"])
    yield_curve = PowerLawCurve.from_config(vcfg["yield_curve"])
    tau = np.full(n, np.nan)
    q = np.full(n, np.nan)
    src = np.full(n, "", dtype=object)
    for name in vcfg["channels"]:
        if name not in fits:
            continue
        f = fits[name]
        use = np.isnan(tau) & (f.status <= ImpactStatus.HIT_BOUND) & np.isfinite(f.params[:, 3])
        tau = np.where(use, f.params[:, 3], tau)
        q = np.where(use, np.abs(f.params[:, 2]) * float(factors.get(name, math.nan)), q)
        src = np.where(use, name, src)
    v, vstat = invert_rise_time(tau, rise_curve)
    mass = dust_mass(q, v, yield_curve)
    vstat = np.where(
        (vstat == VelocityStatus.OK) & ~np.isfinite(mass), VelocityStatus.NO_CHARGE, vstat
    ).astype(np.int8)
    # a measured grain speed (lab captures: the pickup tubes) replaces the rise-time
    # estimate in the mass
    mass_source = np.where(np.isfinite(mass), "rise_time", "").astype(object)
    if pickup_speed is not None:
        measured = np.isfinite(pickup_speed)
        mass = np.where(measured, dust_mass(q, pickup_speed, yield_curve), mass)
        mass_source = np.where(measured & np.isfinite(mass), "pickup", mass_source)
    rise_prov = vcfg["rise_time_curve"].get("provenance", "")
    prov = f"rise time: {rise_prov}; yield: {vcfg['yield_curve'].get('provenance', '')}"
    out["impact_velocity"] = epoch_variable(
        v,
        {
            "units": "km/s",
            "long_name": "impact speed from the target rise time",
            "calibration": prov,
        },
    )
    out["dust_mass"] = epoch_variable(
        mass, {"units": "kg", "long_name": "dust mass = |Q| / charge yield(v)", "calibration": prov}
    )
    out["dust_mass_velocity_source"] = epoch_variable(
        mass_source.astype(str),
        {"long_name": "speed used for dust_mass: pickup (QD), rise_time, '' (no mass)"},
    )
    out["impact_velocity_status"] = epoch_variable(
        vstat,
        {
            "units": "1",
            "flag_values": np.arange(len(VelocityStatus), dtype=np.int8),
            "flag_meanings": " ".join(s.name.lower() for s in VelocityStatus),
        },
    )
    out["impact_velocity_channel"] = epoch_variable(
        src.astype(str), {"long_name": "target channel giving rise time and charge"}
    )
