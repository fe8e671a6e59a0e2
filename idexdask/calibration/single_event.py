"""Time-of-flight to mass calibration of one event: its lines, the calibration, a figure.

The science of ``idexdask time2mass`` (:mod:`idexdask.cli.time2mass`): the
lines of one event (:func:`event_lines`: the stored ``peak_*`` products of a
campaign store or of :func:`idexdask.workflow.analyze` run on that event);
its calibration (:func:`calibrate_lines`), either blind
(:func:`~idexdask.calibration.comb.comb_calibration`) or from lines
a user names (:func:`parse_lines`: ``"t1:Na,t2:K"`` -> :meth:`TOFMassCal.fit`);
and a figure of the spectrum against mass with the identified lines and their
residuals (:func:`time2mass_figure`).  An event that cannot be calibrated gets
a result saying why; no mass axis is ever made up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from idexdask.calibration.comb import CombResult, comb_calibration
from idexdask.calibration.ions import ion_label, ion_mass
from idexdask.calibration.settings import CalibrationSettings, load_calibration_settings
from idexdask.calibration.tofmass import TOFMassCal
from idexdask.errors import CalibrationError, ConfigError, IdexDaskError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EventLines", "Time2MassResult", "calibrate_lines", "calibration_settings", "event_lines",
    "has_stored_lines",
    "parse_lines", "time2mass_figure",
]

_PEAK_VARS = ("peak_event", "peak_center", "peak_area")


def parse_lines(text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse ``--lines``: ``"t1:Na,t2:K"`` or ``"t1:22.99,t2:38.96"``.

    Parameters
    ----------
    text : str
        Comma-separated ``time:species`` or ``time:mass`` pairs; times in µs,
        species a formula understood by :func:`~idexdask.calibration.ions.ion_mass`
        (``Na``, ``54Fe``, ``SiO``), masses in u.

    Returns
    -------
    times_us, masses_u : numpy.ndarray
    labels : list of str
        Ion labels (``Na+``) or ``"22.990 u"`` for bare masses.

    Raises
    ------
    ConfigError
        On an empty list, a malformed pair, a non-finite time or mass.
    """
    times, masses, labels = [], [], []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        t_txt, sep, what = item.partition(":")
        if not sep or not what.strip():
            raise ConfigError(f"--lines: expected TIME:SPECIES or TIME:MASS, got {item!r}")
        try:
            t = float(t_txt)
        except ValueError as exc:
            raise ConfigError(f"--lines: time {t_txt!r} is not a number") from exc
        what = what.strip()
        try:
            m = float(what)
            label = f"{m:.3f} u"
        except ValueError:
            try:
                m = ion_mass(what)
            except IdexDaskError as exc:
                raise ConfigError(f"--lines: unknown species {what!r}: {exc}") from exc
            label = ion_label(what)
        if not (math.isfinite(t) and math.isfinite(m) and m > 0):
            raise ConfigError(f"--lines: {item!r} needs a finite time and a positive mass")
        times.append(t)
        masses.append(m)
        labels.append(label)
    if not times:
        raise ConfigError("--lines: no lines given")
    return np.asarray(times), np.asarray(masses), labels


@dataclass
class EventLines:
    """The lines of one event and its merged TOF spectrum.

    Attributes
    ----------
    center_us, area, status : numpy.ndarray
        Line centres (µs), areas (spectrum units x µs), fit statuses.
    time_us, spectrum : numpy.ndarray or None
        Time axis (µs) and positive-going merged TOF spectrum (None if absent).
    units : str
        Units of ``spectrum``.
    source : str
        ``"analyze"`` or ``"stored"``.
    mode_centred : numpy.ndarray or None
        ``peak_center_at_mode``: lines whose centre is their mode are not
        calibrated on, as in ``analyze``.
    """

    center_us: np.ndarray
    area: np.ndarray
    status: np.ndarray
    time_us: np.ndarray | None = None
    spectrum: np.ndarray | None = None
    units: str = ""
    source: str = "analyze"
    mode_centred: np.ndarray | None = None


def _time_of(ds: xr.Dataset, var: str) -> np.ndarray | None:
    name = ds[var].attrs.get("time_variable")
    if name not in ds:
        name = "time_high_sample_rate" if "time_high_sample_rate" in ds else None
    return None if name is None else np.asarray(ds[name].values, dtype=float)


def has_stored_lines(ds: xr.Dataset) -> bool:
    """Whether ``ds`` carries the ragged ``peak_*`` line products (a store, ``analyze`` output)."""
    return all(v in ds and ds[v].dims == ("peak",) for v in _PEAK_VARS)


def event_lines(ds: xr.Dataset, index: int, source: str = "stored") -> EventLines:
    """Lines of event ``index`` of ``ds`` read from its ``peak_*`` products.

    The analysis that makes those products sits above this layer
    (:func:`idexdask.workflow.analyze`): a caller holding only decoded
    waveforms analyses the event first and passes the result with
    ``source="analyze"``.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset with the line products (:func:`has_stored_lines`).
    index : int
        Event position along ``epoch``.
    source : str
        Where the lines come from, reported with them: ``"stored"`` or ``"analyze"``.

    Returns
    -------
    EventLines
        Empty (no centres) when ``ds`` has no line products.
    """
    if not has_stored_lines(ds):
        return EventLines(np.empty(0), np.empty(0), np.empty(0, dtype=int), source=source)
    sel = np.asarray(ds["peak_event"].values) == index
    status = (
        np.asarray(ds["peak_status"].values)[sel]
        if "peak_status" in ds
        else np.zeros(int(sel.sum()), dtype=int)
    )
    ev = ds.isel(epoch=index)
    spec = ev["tof_combined"] if "tof_combined" in ev else None
    t = _time_of(ds, "tof_combined")[index] if spec is not None else None
    return EventLines(
        np.asarray(ds["peak_center"].values, dtype=float)[sel],
        np.asarray(ds["peak_area"].values, dtype=float)[sel],
        status,
        t,
        None if spec is None else np.asarray(spec.values, dtype=float),
        str(spec.attrs.get("units", "")) if spec is not None else "",
        source,
        (np.asarray(ds["peak_center_at_mode"].values)[sel]
         if "peak_center_at_mode" in ds else None),
    )


# --------------------------------------------------------------------------- calibration


@dataclass
class Time2MassResult:
    """Outcome of the calibration of one event.

    Attributes
    ----------
    calibrated : bool
    status, reason, message : str
        Comb-alignment (or direct-fit) status, why uncalibrated, detail.
    calibration : TOFMassCal or None
    stretch, shift : float
        Linear stretch (µs/sqrt(u)) and shift (µs); NaN when unknown.
    line_time_us, line_mass_u : numpy.ndarray
        Lines of the calibration.
    line_label : list of str
    method : str
        ``"bootstrap"`` or ``"lines"``.
    """

    calibrated: bool
    status: str
    reason: str
    message: str = ""
    calibration: TOFMassCal | None = None
    stretch: float = math.nan
    shift: float = math.nan
    line_time_us: np.ndarray = field(default_factory=lambda: np.empty(0))
    line_mass_u: np.ndarray = field(default_factory=lambda: np.empty(0))
    line_label: list[str] = field(default_factory=list)
    method: str = "bootstrap"


def calibration_settings(preset: str, config: Mapping[str, Any]) -> CalibrationSettings:
    """The settings of ``preset``, from the configuration's ``calibration.settings_file``."""
    settings_file = str((config.get("calibration") or {}).get("settings_file") or "")
    if settings_file and settings_file != "calibration.yaml":
        return load_calibration_settings(preset, path=settings_file)
    return load_calibration_settings(preset)


def calibrate_lines(
    lines: EventLines,
    settings: CalibrationSettings,
    *,
    max_fit_status: int = 2,
    user_lines: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
) -> Time2MassResult:
    """Calibrate one event from its lines (comb alignment) or from user-assigned lines.

    Parameters
    ----------
    lines : EventLines
    settings : CalibrationSettings
    max_fit_status : int
        Lines with a worse ``FitStatus`` are left out of the comb alignment.
    user_lines : (times_us, masses_u, labels), optional
        Direct fit of these lines instead of the comb alignment.

    Returns
    -------
    Time2MassResult
    """
    fit = settings.fit
    if user_lines is not None:
        t, m, labels = user_lines
        try:
            cal = TOFMassCal.fit(
                t, m, np.full(t.size, 1.0 / fit.timing_sigma_us**2),
                mass_range=fit.mass_range_u, max_order=fit.max_order,
                min_lines_for_order=fit.min_lines_for_order,
            )
        except CalibrationError as exc:
            return Time2MassResult(False, "uncalibrated", "bad_lines", str(exc), method="lines")
        if not cal.usable:
            return Time2MassResult(
                False, "uncalibrated", cal.status.value,
                f"direct fit of {t.size} lines: {cal.status.value}", method="lines",
            )
        a_lin = np.polyfit(np.sqrt(m), t, 1) if np.unique(m).size >= 2 else [math.nan] * 2
        return Time2MassResult(
            True, "calibrated", "none", f"{t.size} lines, order {cal.order}", cal,
            float(a_lin[0]), float(a_lin[1]), t, m, labels, "lines",
        )
    good = (lines.status <= max_fit_status) & np.isfinite(lines.center_us)
    good &= np.isfinite(lines.area) & (lines.area > 0)
    if lines.mode_centred is not None:  # Gaussian fallbacks centred on the mode
        good &= ~np.asarray(lines.mode_centred, dtype=bool)
    res: CombResult = comb_calibration(
        lines.center_us[good], lines.area[good], settings=settings
    )
    if not res.calibrated or res.calibration is None:
        return Time2MassResult(
            False, str(res.status), str(res.reason), res.message,
            stretch=res.stretch, shift=res.shift,
        )
    return Time2MassResult(
        True, str(res.status), str(res.reason), res.message, res.calibration,
        res.stretch, res.shift,
        np.array([a.time_us for a in res.assignments]),
        np.array([a.mass_u for a in res.assignments]),
        [a.label for a in res.assignments],
    )


# --------------------------------------------------------------------------- output


def time2mass_figure(lines: EventLines, result: Time2MassResult, title: str = "") -> Figure:
    """Spectrum against mass with the identified lines, and the residual panel.

    The figure is not attached to any pyplot backend: the caller saves it
    (``figure.savefig(path)``) or shows it.

    Parameters
    ----------
    lines : EventLines
        Needs ``time_us`` and ``spectrum``; else only the line markers are drawn.
    result : Time2MassResult
        A calibrated result.
    title : str

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    CalibrationError
        If ``result`` holds no usable calibration.
    """
    from matplotlib.figure import Figure

    cal = result.calibration
    if cal is None or not cal.usable:
        raise CalibrationError("no calibration to plot")
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax, axr = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]})
    m_top = float(min(cal.mass_range[1], max(60.0, 1.3 * float(np.max(cal.line_masses_u)))))
    if lines.time_us is not None and lines.spectrum is not None:
        t = lines.time_us
        keep = np.isfinite(t) & (t >= cal.t0)
        mass = np.asarray(cal.mass(t[keep]))
        y = lines.spectrum[keep]
        inside = mass <= m_top
        ax.plot(mass[inside], y[inside], lw=0.6, color="0.2")
        ax.set_ylabel(f"TOF signal ({lines.units})" if lines.units else "TOF signal")
        y_at = np.interp(cal.line_masses_u, mass, np.nan_to_num(y), left=0.0, right=0.0)
    else:
        y_at = np.ones(cal.line_masses_u.size)
        ax.set_ylabel("line (no spectrum stored)")
        ax.vlines(cal.line_masses_u, 0, 1, color="0.2")
    for m, yy, lab in zip(cal.line_masses_u, y_at, result.line_label, strict=False):
        ax.annotate(lab, (m, yy), textcoords="offset points", xytext=(0, 4), ha="center",
                    fontsize=8, color="C3")
    ax.set_xlim(0, m_top)
    ax.set_xlabel("mass (u)")
    ax.set_title(title or "time2mass")
    axr.axhline(0, color="0.6", lw=0.8)
    axr.plot(cal.line_masses_u, cal.residual_ppm, "o", color="C3")
    for m, r, lab in zip(cal.line_masses_u, cal.residual_ppm, result.line_label, strict=False):
        axr.annotate(lab, (m, r), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axr.set_xlim(0, m_top)
    axr.set_xlabel("mass (u)")
    axr.set_ylabel("residual (ppm)")
    return fig
