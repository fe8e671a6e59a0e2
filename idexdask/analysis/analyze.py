"""``analyze``: the analysis products of a batch of IDEX events, all at once.

Input: any event dataset with waveforms on an ``epoch`` dimension and their
time axes -- :func:`idexdask.read_l0` output, the simulator's ``events``, LeCroy
captures from :func:`idexdask.read_trc` (a subset of the channels, 1 ns
sampling, negative-going signals flagged by ``signal_polarity``) -- with header
fields used when present.  Output: the input variables plus the products
documented in ``docs/analysis.md``.

Stages (each vectorised over events; the per-event loop is only the mass
calibration's bootstrap, ~5 ms per event):

1. signal quality (:func:`idexdask.analysis.signal_quality.signal_quality`);
2. TOF gain merge (:func:`~idexdask.analysis.tof.merge_gains`), line detection
   and one batched EMG fit of every line (:mod:`~idexdask.analysis.peaks`),
   with manual overrides applied between detection and fit;
3. mass calibration per event (:func:`idexdask.calibration.bootstrap_calibration`);
4. impact-charge fits of Target_High, Target_Low, Ion_Grid
   (:mod:`~idexdask.analysis.impact`);
5. lab captures: grain speed and charge from the pickup tubes
   (:mod:`~idexdask.analysis.pickup_products`); impact velocity and dust mass
   (:mod:`~idexdask.analysis.velocity`; the pickup speed, where measured, for the mass);
6. composition (:func:`_composition_products`).

Bad waveforms (flat, zero, saturated, NaN, fill, too short) give statuses,
never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.hv_settings import split_groups_by_high_voltage
from idexdask.analysis.impact import (
    FIT_PARAMETERS,
    IMPACT_CHANNELS,
    ImpactStatus,
    fit_impacts,
    status_meanings,
)
from idexdask.analysis.instrument import instrument_products
from idexdask.analysis.line_edits import apply_line_edits
from idexdask.analysis.overrides import (
    LINE_SHAPES,
    apply_tof_overrides,
    as_table,
    impact_windows,
    manual_impact,
)
from idexdask.analysis.peaks import (
    LineStatus,
    fit_status_meanings,
)
from idexdask.analysis.pickup_products import pickup_products
from idexdask.analysis.tof import TOF_CHANNELS, GainRatioStatus, merge_gains, tof_lines
from idexdask.analysis.velocity import (
    PowerLawCurve,
    VelocityStatus,
    dust_mass,
    invert_rise_time,
)
from idexdask.config import load_settings
from idexdask.errors import AnalysisError, ConfigError, IdexDaskError

__all__ = ["AnalysisProducts", "analysis_products", "analyze", "load_analysis_settings"]

_log = get_logger(__name__)

_CAL_ORDER = 3  # columns of mass_calibration: t0 + up to third order in sqrt(m)
# the peak variables the composition layer reads
_PEAK_INPUTS = ("peak_event", "peak_mass", "peak_area", "peak_area_err")


def load_analysis_settings(
    config: Mapping[str, Any] | str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The full configuration and its analysis section.

    Parameters
    ----------
    config : mapping, path or None
        Anything :func:`idexdask.config.load_config` accepts; its ``analysis``
        mapping overrides the ``analysis:`` section of ``configs/default.yaml``
        (any subset of its keys).

    Returns
    -------
    config, settings : idexdask.schema.Settings
        Validated, frozen configuration and its ``analysis`` section.

    Raises
    ------
    ConfigError
        On unknown keys or invalid values.
    """
    cfg = load_settings(config if config is not None else {})
    return cfg, cfg["analysis"]


def _with_fitting(settings: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A section of the settings plus the fit device and engine (``analysis.fitting``)."""
    fitting = settings["fitting"]
    return {
        **settings[section],
        "fit_device": str(fitting["device"]),
        "fit_engine": str(fitting["engine"]),
    }


def _quality(ds: xr.Dataset, settings: Mapping[str, Any]) -> dict[str, xr.Variable] | None:
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


def _epoch_da(
    values: np.ndarray, attrs: Mapping[str, Any], dims: tuple[str, ...] = ("epoch",)
) -> xr.Variable:
    """A product variable (a bare Variable: no coordinates, so no alignment on assembly)."""
    return xr.Variable(dims, values, attrs=dict(attrs))


def _with_coord(
    out: dict[str, xr.Variable], dim: str, values: Any, name: str, variable: xr.Variable
) -> None:
    """Add ``variable`` to ``out`` after the index coordinate ``dim`` (added once, first)."""
    if dim not in out:
        out[dim] = xr.Variable((dim,), values)
    out[name] = variable


def _tof_products(
    ds: xr.Dataset,
    quality: Mapping[str, xr.Variable] | None,
    settings: Mapping[str, Any],
    table: xr.Dataset,
    out: dict[str, xr.Variable],
) -> dict[str, np.ndarray] | None:
    merged = merge_gains(ds, quality, {**settings["tof"]})
    if merged is None:
        _log.info("no TOF channel: no line products")
        return None
    epochs = np.asarray(ds.variables["epoch"].values)

    def edit(cand: Any, m: Any) -> Any:
        return apply_tof_overrides(cand, table, epochs, m.time)

    cand, fits, zsig = tof_lines(merged, _with_fitting(settings, "peaks"), edit=edit)
    # line shapes and species chosen by hand (override rows `shape`, `species`)
    edits = apply_line_edits(cand, fits, merged.signal, merged.time, merged.sigma, table,
                             epochs, _with_fitting(settings, "peaks"))
    fits = edits.fits
    unit = str(ds.variables[merged.channels[0]].attrs.get("units", "DN"))
    n_events = ds.sizes["epoch"]
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
    for name in TOF_CHANNELS:
        low = name.lower().removeprefix("tof_")
        out[f"tof_gain_ratio_{low}"] = _epoch_da(
            merged.ratios[name],
            {"units": "1", "long_name": f"TOF_High / {name} gain ratio (NaN if absent)"},
        )
        out[f"tof_gain_ratio_{low}_status"] = _epoch_da(
            merged.ratio_status[name],
            {
                "units": "1",
                "long_name": f"how the {name} gain ratio was obtained",
                "flag_values": np.arange(len(GainRatioStatus), dtype=np.int8),
                "flag_meanings": " ".join(s.name.lower() for s in GainRatioStatus),
            },
        )
        out[f"tof_gain_ratio_{low}_overlap"] = _epoch_da(
            merged.overlap[name],
            {"units": "1", "long_name": f"overlap samples used for the {name} ratio"},
        )
    ref = ds.variables[merged.channels[0]]
    out["tof_combined"] = xr.Variable(
        ref.dims,
        merged.signal.astype(np.float32),
        attrs={
            "units": unit,
            "long_name": "merged TOF spectrum: baseline removed, positive-going, in units of "
            f"{merged.channels[0]}; NaN where saturated in every gain",
            "gains": list(merged.channels),
        },
    )
    out["tof_line_count"] = _epoch_da(
        np.bincount(cand.event, minlength=n_events).astype(np.int32),
        {"units": "1", "long_name": "TOF lines per event"},
    )
    return {
        "event": cand.event,
        "center": fits.center,
        "area": fits.area,
        "status": fits.status,
        "mode_centred": fits.mode_centred,
        "zsig": zsig,
        "species_manual": edits.species,
    }


def _mass_calibration(
    lines: dict[str, np.ndarray],
    n_events: int,
    cfg: Mapping[str, Any],
    settings: Mapping[str, Any],
    out: dict[str, xr.Variable],
    attrs: Mapping[str, Any],
    variables: Mapping[str, Any] | tuple[()] = (),
    instrument: Mapping[str, xr.Variable] | None = None,
) -> np.ndarray:
    from idexdask.calibration import (
        bootstrap_calibrations,
        load_calibration_settings,
    )
    from idexdask.sources.defaults import resolve_preset

    section = cfg.get("calibration") or {}
    # explicit preset, else the one of the data's source kind (flight / lab)
    preset = resolve_preset(section, attrs, variables)
    # the configured settings file, not only its default: validated once per call
    calibration_settings = load_calibration_settings(
        preset, path=section.get("settings_file") or None
    )
    good = (lines["status"] <= int(settings["calibration"]["max_fit_status"])) & np.isfinite(
        lines["center"]
    )
    good &= np.isfinite(lines["area"]) & (lines["area"] > 0)
    # a Gaussian fitted where the EMG failed is centred on the line's mode, not
    # on the EMG centre the comb times refer to
    good &= ~lines["mode_centred"]
    # lines are sorted by event: the good ones of event e are one slice
    offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(np.bincount(lines["event"][good], minlength=n_events), out=offsets[1:])
    batch = bootstrap_calibrations(
        lines["center"][good], lines["area"][good], offsets, settings=calibration_settings
    )
    for e in np.nonzero(batch.reason_code < 0)[0]:
        _log.info("event %d: calibration failed: non-finite peak times or amplitudes", e)
    # campaign level: one shape per group of events (input file / lab run),
    # a shift per event; an event's own calibration where it is better supported
    from idexdask.calibration.campaign import CampaignSettings, calibrate_groups
    from idexdask.calibration.products import calibration_variables

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
    own = batch.stacked(order=_CAL_ORDER)
    grouped = calibrate_groups(
        lines["event"], lines["center"], lines["area"], good, group, calibration_settings,
        CampaignSettings.from_config(settings["calibration"].get("campaign")),
        own, batch.n_matched,
    )
    coeffs = grouped.coefficients
    calibrated = np.all(np.isfinite(coeffs[:, :2]), axis=1)
    status = np.where(calibrated, "calibrated", batch.status)
    reason = np.where(calibrated, "none", batch.reason)
    variables = calibration_variables(
        coeffs, status, reason, grouped.method, grouped.residual_us, lines["event"],
        lines["center"], preset, grouped.groups,
    )
    for name, variable in variables.items():
        if name == "calibration_coefficient":
            continue
        if name == "mass_calibration":
            _with_coord(
                out, "calibration_coefficient", np.arange(_CAL_ORDER + 1), name, variable
            )
        else:
            out[name] = variable
    return calibrated


def _manual_calibration(
    lines: dict[str, np.ndarray],
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
    from idexdask.calibration import load_calibration_settings, mass_axis
    from idexdask.calibration.manual import manual_calibrations

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
            lines["event"], lines["center"], lines["species_manual"], events,
            load_calibration_settings(str(preset), path=section.get("settings_file") or None),
            order=_CAL_ORDER,
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
        mine = np.isin(lines["event"], cal.events)
        pm = out["peak_mass"].values.copy()
        pm[mine] = np.nan
        fin = mine & np.isfinite(lines["center"]) & calibrated[lines["event"]]
        if fin.any():
            pm[fin] = mass_axis(coeffs[lines["event"][fin]], lines["center"][fin][:, None])[:, 0]
        out["peak_mass"] = out["peak_mass"].copy(data=pm)
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
    out["mass_calibration_method"] = _epoch_da(method.astype(str), attrs)
    return calibrated


def _impact_products(
    ds: xr.Dataset,
    quality: Mapping[str, xr.Variable] | None,
    settings: Mapping[str, Any],
    table: xr.Dataset,
    out: dict[str, xr.Variable],
    pickup_speed: np.ndarray | None = None,
) -> dict[str, Any]:
    n = ds.sizes["epoch"]
    epochs = np.asarray(ds.variables["epoch"].values)
    factors = settings["impact"]["dn_to_pc"]
    fits: dict[str, Any] = {}
    for name in IMPACT_CHANNELS:
        low = name.lower()
        if name not in ds.data_vars or ds.variables[name].ndim != 2:
            continue
        windows = impact_windows(table, epochs, name)
        fit = fit_impacts(ds, name, quality, _with_fitting(settings, "impact"), windows)
        fits[name] = fit
        unit = str(ds.variables[name].attrs.get("units", "DN"))
        _with_coord(
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
        out[f"{low}_impact_charge"] = _epoch_da(
            charge, {"units": "pC", "long_name": f"{name}: |amplitude| x {k} pC/DN", "dn_to_pc": k}
        )
        out[f"{low}_impact_charge_err"] = _epoch_da(
            fit.stderr[:, 2] * k, {"units": "pC", "long_name": f"{name}: 1-sigma"}
        )
        out[f"{low}_rise_time_10_90"] = _epoch_da(
            fit.rise_10_90,
            {"units": "us", "long_name": f"{name}: 10-90 % rise time of the fitted pulse"},
        )
        out[f"{low}_chi_squared"] = _epoch_da(
            fit.chisq, {"units": "1", "long_name": f"{name}: noise-weighted chi-square"}
        )
        out[f"{low}_reduced_chi_squared"] = _epoch_da(
            fit.redchi, {"units": "1", "long_name": f"{name}: chi-square per degree of freedom"}
        )
        out[f"{low}_fit_status"] = _epoch_da(
            fit.status,
            {
                "units": "1",
                "long_name": f"{name}: ImpactStatus",
                "flag_values": np.arange(len(ImpactStatus), dtype=np.int8),
                "flag_meanings": status_meanings(),
            },
        )
        out[f"{low}_signal_polarity"] = _epoch_da(
            fit.polarity, {"units": "1", "long_name": f"{name}: pulse sign used"}
        )
        out[f"{low}_fit_manual"] = _epoch_da(
            manual_impact(table, epochs, name), {"long_name": f"{name}: fit window set manually"}
        )
    # velocity and mass from the first usable target channel
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
    out["impact_velocity"] = _epoch_da(
        v,
        {
            "units": "km/s",
            "long_name": "impact speed from the target rise time",
            "calibration": prov,
        },
    )
    out["dust_mass"] = _epoch_da(
        mass, {"units": "kg", "long_name": "dust mass = |Q| / charge yield(v)", "calibration": prov}
    )
    out["dust_mass_velocity_source"] = _epoch_da(
        mass_source.astype(str),
        {"long_name": "speed used for dust_mass: pickup (QD), rise_time, '' (no mass)"},
    )
    out["impact_velocity_status"] = _epoch_da(
        vstat,
        {
            "units": "1",
            "flag_values": np.arange(len(VelocityStatus), dtype=np.int8),
            "flag_meanings": " ".join(s.name.lower() for s in VelocityStatus),
        },
    )
    out["impact_velocity_channel"] = _epoch_da(
        src.astype(str), {"long_name": "target channel giving rise time and charge"}
    )
    return fits


def _composition_products(
    peaks: Mapping[str, xr.Variable],
    n_events: int,
    config: Mapping[str, Any],
    calibrated: np.ndarray | None,
) -> tuple[dict[str, xr.Variable], frozenset[str]] | None:
    """Composition products (``peak_species``, ``composition``, ``mg_number``, ``best_mineral``).

    Calls :func:`idexdask.composition.products.composition_variables` (the
    variables of :func:`idexdask.composition.composition_products`, without
    building their Dataset); returns None when the composition layer is
    unavailable or fails (the products are then omitted).

    Returns
    -------
    (variables, coordinate names) or None
    """
    try:
        from idexdask.composition.products import composition_variables
    except ImportError:
        return None
    func = composition_variables
    if "peak_mass" not in peaks:
        return None
    try:
        return func(peaks, n_events, config, calibrated=calibrated)
    except ConfigError:
        raise  # a configuration mistake stops the analysis: it never drops products
    except (AnalysisError, ValueError) as exc:
        _log.warning("composition products failed: %s", exc)
        return None


@dataclass(frozen=True)
class AnalysisProducts:
    """What :func:`analyze` adds to an event dataset, before it is assembled.

    Attributes
    ----------
    variables : dict of str to xarray.Variable
        The products, in order: each replaces the input variable of its name
        (keeping that variable's place) or is appended.
    coord_names : tuple of str
        Products that are non-index coordinates.
    attrs : dict
        Dataset attributes to set (which analysis, how many overrides).
    """

    variables: dict[str, xr.Variable]
    coord_names: tuple[str, ...]
    attrs: dict[str, Any]

    def merged_with(self, l1a: xr.Dataset) -> dict[str, xr.Variable]:
        """``l1a``'s variables updated with the products, in :func:`analyze`'s order."""
        variables = {str(k): v for k, v in l1a.variables.items()}
        variables.update(self.variables)
        return variables


def analysis_products(
    l1a: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None = None,
) -> AnalysisProducts:
    """The products :func:`analyze` adds to ``l1a``, not yet assembled into a Dataset.

    For callers that build their own Dataset of the result (the campaign
    pipeline): assembling ~270 variables costs ~15 ms per call, once is enough.
    Same parameters and errors as :func:`analyze`.
    """
    if "epoch" not in l1a.dims:
        raise AnalysisError("analyze needs an event dataset with an 'epoch' dimension")
    cfg, settings = load_analysis_settings(config)
    table = as_table(overrides)
    n_events = int(l1a.sizes["epoch"])
    products: dict[str, xr.Variable] = {}
    quality = _quality(l1a, settings)
    lines = _tof_products(l1a, quality, settings, table, products)
    calibrated = None
    instrument = instrument_products(l1a)  # header words -> engineering units
    if lines is not None and settings["calibration"]["enabled"] and cfg.get("calibration"):
        calibrated = _mass_calibration(
            lines, n_events, cfg, settings, products, l1a.attrs, l1a.variables, instrument
        )
        calibrated = _manual_calibration(lines, table, l1a, cfg, products, calibrated)
    pickup = pickup_products(l1a)  # lab captures: grain speed and charge (QD)
    if pickup is not None:
        products.update(pickup)
    _impact_products(l1a, quality, settings, table, products,
                     pickup_speed=None if pickup is None else pickup["qd_speed"].values)
    products.update(instrument)

    # Bare Variables (no coordinates to align), assembled by the caller in one
    # step: each merge or assign over the ~270 variables costs several ms.
    # Precedence and order are those of the former sequence
    #   l1a.merge(quality, compat="override").assign(products).merge(composition, ...)
    # : a variable already present keeps its place; ``merge`` keeps the existing
    # variable, ``assign`` replaces it.
    present = l1a.variables
    new: dict[str, xr.Variable] = {}
    if quality is not None:
        for name, var in quality.items():
            if name not in present:
                new[name] = var
    new.update(products)
    coord_names: list[str] = []
    if "peak_mass" in present or "peak_mass" in new:
        peak_inputs = {
            name: var
            for name, var in ((n, new.get(n, present.get(n))) for n in _PEAK_INPUTS)
            if var is not None
        }
        if lines is not None and (lines["species_manual"] != "").any():
            peak_inputs["peak_species_by_hand"] = xr.Variable(("peak",), lines["species_manual"])
        comp = _composition_products(
            peak_inputs,
            n_events,
            cfg,
            calibrated,
        )
        if comp is not None:
            variables, comp_coords = comp
            for name, var in variables.items():
                if name == "epoch" or name in present or name in new:
                    continue
                new[name] = var
                if name in comp_coords and name not in var.dims:
                    coord_names.append(name)  # a non-index coordinate (rsf)
    n_lines = int(new["peak_event"].size) if "peak_event" in new else 0
    _log.info("analyze: %d events, %d lines", n_events, n_lines)
    return AnalysisProducts(
        variables=new,
        coord_names=tuple(coord_names),
        attrs={
            "analysis": "idexdask.analyze",
            "analysis_overrides": int(table.sizes.get("override", 0)),
        },
    )


def analyze(
    l1a: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None = None,
) -> xr.Dataset:
    """Analysis products of every event of ``l1a``, vectorised across events.

    Parameters
    ----------
    l1a : xarray.Dataset
        Events (``epoch`` dimension) with any of the waveforms TOF_High,
        TOF_Mid, TOF_Low, Target_High, Target_Low, Ion_Grid (plus any others,
        which get quality products only) and their time axes (the
        ``time_variable`` attribute, else ``time_high_sample_rate`` /
        ``time_low_sample_rate`` by sample dimension).  Fill values
        (``FILLVAL``, 65535) and NaN samples are ignored.
    config : mapping, path or None
        Configuration (see :func:`load_analysis_settings`).
    overrides : xarray.Dataset, path, records or None
        Manual overrides (:mod:`idexdask.analysis.overrides`), reapplied here.

    Returns
    -------
    xarray.Dataset
        The input variables plus the products listed in ``docs/analysis.md``:
        the ``peak`` dimension (``peak_*``), per-event quality
        (``<channel>_snr``, ``_saturated``, ``_baseline``, ``_noise``, ...),
        TOF gain ratios, mass calibration, impact fits, velocity and dust mass,
        and composition when available.

    Raises
    ------
    ConfigError
        On an invalid configuration or override table.
    AnalysisError
        If ``l1a`` has no ``epoch`` dimension.
    """
    products = analysis_products(l1a, config, overrides=overrides)
    out = l1a.assign(products.variables)
    if products.coord_names:
        out = out.set_coords(list(products.coord_names))
    out.attrs.update(products.attrs)
    return out
