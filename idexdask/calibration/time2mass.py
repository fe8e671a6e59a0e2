"""``idexdask time2mass``: time-of-flight to mass calibration of one event.

Loads one event from an L0 packet file, a Zarr store written by ``idexdask
decode`` / ``submit``, a LeCroy ``.trc`` capture or a directory of captures;
finds its TOF lines (:func:`idexdask.analyze` on that event, or
the stored ``peak_*`` products when the store holds them); calibrates it, either
blind (:func:`~idexdask.calibration.comb.comb_calibration`) or from
lines the user names (``--lines "t1:Na,t2:K"`` -> :meth:`TOFMassCal.fit`); prints
the calibration and a residual table per line; and writes a plot (spectrum
against mass with the identified lines labelled, and the residuals).

An event that cannot be calibrated prints its status and reason and the command
returns 1; no mass axis is ever made up.

Exit codes: 0 calibrated, 1 not calibrated, 2 usage or input error (raised as
:class:`~idexdask.errors.IdexDaskError` and reported by the CLI).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.calibration.comb import CombResult, comb_calibration
from idexdask.calibration.ions import ion_label, ion_mass
from idexdask.calibration.settings import CalibrationSettings, load_calibration_settings
from idexdask.calibration.tofmass import TOFMassCal
from idexdask.errors import CalibrationError, ConfigError, IdexDaskError
from idexdask.sources.defaults import resolve_preset

__all__ = ["EventLines", "Time2MassResult", "add_time2mass_parser", "parse_lines", "run_time2mass"]

_log = get_logger(__name__)

_PEAK_VARS = ("peak_event", "peak_center", "peak_area")


def _echo(text: str = "") -> None:
    """Terminal output of the command (the user interface, not logging)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- parser


def add_time2mass_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``time2mass`` on the ``idexdask`` sub-command parsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser (its ``func`` default is :func:`run_time2mass`).
    """
    p = subparsers.add_parser(
        "time2mass",
        help="calibrate the TOF spectrum of one event: masses, lines, residuals, plot",
        description="Time-of-flight -> mass calibration of one event.  Exit codes: 0 "
        "calibrated, 1 not calibrated (status printed), 2 usage or input error.",
    )
    p.add_argument(
        "source",
        help="L0 packet file, Zarr store (decode/submit), LeCroy .trc file or a "
        "directory of captures",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--event", type=int, help="event index along epoch (default 0)")
    which.add_argument("--epoch", type=int, help="event epoch, TT2000 ns")
    p.add_argument(
        "--preset",
        help="calibration preset of configs/calibration.yaml (flight, lab, lab_peridot, ...; "
        "default: the configuration's calibration.preset; auto = lab for scope captures, "
        "flight for IDEX data)",
    )
    p.add_argument(
        "--lines",
        help='assigned lines "t1:Na,t2:K,..." or "t1:22.99,..." (t in µs, mass in u); '
        "skips the blind bootstrap",
    )
    p.add_argument("--config", help="YAML file overriding configs/default.yaml")
    p.add_argument("--plot", help="write the spectrum/residual plot to this PNG")
    p.set_defaults(func=run_time2mass)
    return p


# --------------------------------------------------------------------------- inputs


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


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("zarr.json", ".zgroup", ".zmetadata")
    )


def _load_source(source: str) -> tuple[xr.Dataset, str]:
    """The event dataset of SOURCE and its kind (``zarr``, or the input's source kind)."""
    from idexdask.sources import sources

    path = Path(source)
    if not path.exists():
        raise IdexDaskError(f"time2mass: {path} not found")
    if _is_zarr(path) or path.suffix == ".zarr":
        try:
            from idexdask.timeaxis import expand_axes  # campaign stores: axes by formula

            return expand_axes(xr.open_zarr(path, consolidated=False)), "zarr"
        except (OSError, ValueError, KeyError) as exc:
            raise IdexDaskError(f"time2mass: {path} is not a readable Zarr store: {exc}") from exc
    reader = sources.source_for(path)
    return reader.read(path), reader.kind


def _select_event(ds: xr.Dataset, event: int | None, epoch: int | None) -> int:
    n = int(ds.sizes.get("epoch", 0))
    if n == 0:
        raise IdexDaskError("time2mass: the source holds no event")
    if epoch is not None:
        hits = np.nonzero(np.asarray(ds["epoch"].values).astype(np.int64) == int(epoch))[0]
        if hits.size == 0:
            raise IdexDaskError(f"time2mass: no event with epoch {epoch} ns")
        return int(hits[0])
    index = 0 if event is None else int(event)
    if not -n <= index < n:
        raise IdexDaskError(f"time2mass: event {index} out of range (source has {n} events)")
    return index % n


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


def _event_lines(ds: xr.Dataset, index: int, config: Mapping[str, Any]) -> EventLines:
    """Lines of event ``index``: stored ``peak_*`` products, else ``analyze`` on it."""
    if all(v in ds and ds[v].dims == ("peak",) for v in _PEAK_VARS):
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
            "stored",
            (np.asarray(ds["peak_center_at_mode"].values)[sel]
             if "peak_center_at_mode" in ds else None),
        )
    from idexdask.workflow import analyze

    one = ds.isel(epoch=[index]).load()
    out = analyze(one, config)
    if "peak_center" not in out:
        return EventLines(np.empty(0), np.empty(0), np.empty(0, dtype=int), source="analyze")
    spec = out["tof_combined"]
    return EventLines(
        np.asarray(out["peak_center"].values, dtype=float),
        np.asarray(out["peak_area"].values, dtype=float),
        np.asarray(out["peak_status"].values, dtype=int),
        _time_of(out, "tof_combined")[0] if _time_of(out, "tof_combined") is not None else None,
        np.asarray(spec.values[0], dtype=float),
        str(spec.attrs.get("units", "")),
        "analyze",
        (np.asarray(out["peak_center_at_mode"].values)
         if "peak_center_at_mode" in out else None),
    )


# --------------------------------------------------------------------------- calibration


@dataclass
class Time2MassResult:
    """Outcome of the calibration of one event.

    Attributes
    ----------
    calibrated : bool
    status, reason, message : str
        Bootstrap (or direct-fit) status, why uncalibrated, detail.
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


def _calibration_settings(preset: str, config: Mapping[str, Any]) -> CalibrationSettings:
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
    """Calibrate one event from its lines (bootstrap) or from user-assigned lines.

    Parameters
    ----------
    lines : EventLines
    settings : CalibrationSettings
    max_fit_status : int
        Lines with a worse ``FitStatus`` are left out of the bootstrap.
    user_lines : (times_us, masses_u, labels), optional
        Direct fit of these lines instead of the bootstrap.

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


def _report(result: Time2MassResult, preset: str, header: str) -> None:
    _echo(header)
    _echo(f"preset             : {preset}")
    _echo(f"method             : {result.method}")
    _echo(f"status             : {result.status} ({result.reason})")
    if result.message:
        _echo(f"detail             : {result.message}")
    if not result.calibrated or result.calibration is None:
        if math.isfinite(result.stretch):
            _echo(
                f"best alignment     : stretch {result.stretch:.5f} us/sqrt(u), "
                f"shift {result.shift:+.5f} us (rejected; no mass axis)"
            )
        _echo("no mass calibration: the event has no mass axis")
        return
    cal = result.calibration
    _echo(f"order              : {cal.order} ({cal.status.value})")
    coef = ", ".join(f"{c:+.6e}" for c in cal.coefficients)
    _echo(f"coefficients       : [{coef}]  (t = c0 + sum_k c_k sqrt(m)^k, us)")
    _echo(f"t0 (c0)            : {cal.t0:+.5f} us")
    _echo(f"stretch, shift     : {result.stretch:.5f} us/sqrt(u), {result.shift:+.5f} us (linear)")
    _echo(f"rms residual       : {cal.rms_residual_u:.4f} u")
    _echo("")
    _echo(f"{'time (us)':>10} {'mass (u)':>9} {'species':<8} {'resid (u)':>10} {'resid (ppm)':>12}")
    order = np.argsort(cal.line_masses_u)
    for j in order:
        label = result.line_label[j] if j < len(result.line_label) else ""
        _echo(
            f"{cal.line_times_us[j]:10.4f} {cal.line_masses_u[j]:9.3f} {label:<8} "
            f"{cal.residual_u[j]:+10.4f} {cal.residual_ppm[j]:+12.0f}"
        )


def plot_time2mass(
    lines: EventLines, result: Time2MassResult, path: str | Path, title: str = ""
) -> Path:
    """Spectrum against mass with the identified lines, and the residual panel.

    Parameters
    ----------
    lines : EventLines
        Needs ``time_us`` and ``spectrum``; else only the line markers are drawn.
    result : Time2MassResult
        A calibrated result.
    path : str or Path
        PNG to write.
    title : str

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    CalibrationError
        If ``result`` holds no usable calibration.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = result.calibration
    if cal is None or not cal.usable:
        raise CalibrationError("no calibration to plot")
    path = Path(path)
    fig, (ax, axr) = plt.subplots(
        2, 1, figsize=(9, 6), gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
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
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- command


def run_time2mass(args: argparse.Namespace) -> int:
    """Run ``idexdask time2mass`` (see the module docstring).

    Parameters
    ----------
    args : argparse.Namespace
        ``source``, ``event``, ``epoch``, ``preset``, ``lines``, ``config``, ``plot``.

    Returns
    -------
    int
        0 calibrated, 1 not calibrated.

    Raises
    ------
    IdexDaskError
        Unreadable source, event out of range, bad ``--lines`` or configuration.
    """
    from idexdask.analysis.products import load_analysis_settings

    user_lines = parse_lines(args.lines) if getattr(args, "lines", None) else None
    ds, kind = _load_source(args.source)
    index = _select_event(ds, getattr(args, "event", None), getattr(args, "epoch", None))
    base_cfg, analysis = load_analysis_settings(getattr(args, "config", None))
    # --preset, else the configuration's preset (auto: the source kind's default)
    preset = args.preset or resolve_preset(base_cfg.get("calibration"), ds.attrs, ds.variables)
    cfg: dict[str, Any] = {**base_cfg, "calibration": {**(base_cfg.get("calibration") or {}),
                                                        "preset": preset}}
    settings = _calibration_settings(preset, cfg)
    lines = _event_lines(ds, index, cfg)
    epoch = int(np.asarray(ds["epoch"].values)[index])
    header = (f"event              : {index} (epoch {epoch} ns) of {args.source} [{kind}]\n"
              f"lines              : {lines.center_us.size} found ({lines.source})")
    result = calibrate_lines(
        lines, settings, max_fit_status=int(analysis["calibration"]["max_fit_status"]),
        user_lines=user_lines,
    )
    _report(result, preset, header)
    if not result.calibrated:
        return 1
    if getattr(args, "plot", None):
        out = plot_time2mass(lines, result, args.plot,
                             title=f"{Path(args.source).name} event {index} ({preset})")
        _echo(f"\nplot               : {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m idexdask.calibration.time2mass``)."""
    parser = argparse.ArgumentParser(prog="idexdask")
    add_time2mass_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["time2mass", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_time2mass(args)
    except IdexDaskError as exc:
        _echo(f"error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
