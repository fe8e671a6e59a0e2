"""``idexdask time2mass``: time-of-flight to mass calibration of one event.

Loads one event from an input any source reads (an L0 packet file, an official
L1a CDF, a LeCroy ``.trc`` capture or a directory of captures) or from a Zarr
store written by ``idexdask decode`` / ``submit``; finds its TOF lines and
calibrates them (:mod:`idexdask.calibration.single_event`), blind or from the lines
``--lines`` names; prints the calibration and a residual table per line; and
writes a plot (spectrum against mass with the identified lines labelled, and
the residuals).

An event that cannot be calibrated prints its status and reason and the command
returns 1; no mass axis is ever made up.

Exit codes: 0 calibrated, 1 not calibrated, 2 usage or input error (raised as
:class:`~idexdask.errors.IdexDaskError` and reported by the CLI).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.calibration.single_event import (
    Time2MassResult,
    calibrate_lines,
    calibration_settings,
    event_lines,
    has_stored_lines,
    parse_lines,
    time2mass_figure,
)
from idexdask.cli.output import echo
from idexdask.errors import IdexDaskError
from idexdask.sources.defaults import resolve_preset

__all__ = ["add_time2mass_parser", "run_time2mass", "select_event"]


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
        "skips the blind comb alignment",
    )
    p.add_argument("--config", help="YAML file overriding configs/default.yaml")
    p.add_argument("--plot", help="write the spectrum/residual plot to this PNG")
    p.set_defaults(func=run_time2mass)
    return p


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


def select_event(ds: xr.Dataset, event: int | None, epoch: int | None) -> int:
    """Position of the event ``--event`` (index, negative from the end) or ``--epoch`` names."""
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


def _report(result: Time2MassResult, preset: str, header: str) -> None:
    echo(header)
    echo(f"preset             : {preset}")
    echo(f"method             : {result.method}")
    echo(f"status             : {result.status} ({result.reason})")
    if result.message:
        echo(f"detail             : {result.message}")
    if not result.calibrated or result.calibration is None:
        if math.isfinite(result.stretch):
            echo(
                f"best alignment     : stretch {result.stretch:.5f} us/sqrt(u), "
                f"shift {result.shift:+.5f} us (rejected; no mass axis)"
            )
        echo("no mass calibration: the event has no mass axis")
        return
    cal = result.calibration
    echo(f"order              : {cal.order} ({cal.status.value})")
    coef = ", ".join(f"{c:+.6e}" for c in cal.coefficients)
    echo(f"coefficients       : [{coef}]  (t = c0 + sum_k c_k sqrt(m)^k, us)")
    echo(f"t0 (c0)            : {cal.t0:+.5f} us")
    echo(f"stretch, shift     : {result.stretch:.5f} us/sqrt(u), {result.shift:+.5f} us (linear)")
    echo(f"rms residual       : {cal.rms_residual_u:.4f} u")
    echo("")
    echo(f"{'time (us)':>10} {'mass (u)':>9} {'species':<8} {'resid (u)':>10} {'resid (ppm)':>12}")
    order = np.argsort(cal.line_masses_u)
    for j in order:
        label = result.line_label[j] if j < len(result.line_label) else ""
        echo(
            f"{cal.line_times_us[j]:10.4f} {cal.line_masses_u[j]:9.3f} {label:<8} "
            f"{cal.residual_u[j]:+10.4f} {cal.residual_ppm[j]:+12.0f}"
        )


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
    index = select_event(ds, getattr(args, "event", None), getattr(args, "epoch", None))
    base_cfg, analysis = load_analysis_settings(getattr(args, "config", None))
    # --preset, else the configuration's preset (auto: the source kind's default)
    preset = args.preset or resolve_preset(base_cfg.get("calibration"), ds.attrs, ds.variables)
    cfg: dict[str, Any] = {**base_cfg, "calibration": {**(base_cfg.get("calibration") or {}),
                                                        "preset": preset}}
    settings = calibration_settings(preset, cfg)
    if has_stored_lines(ds):
        lines = event_lines(ds, index)
    else:  # a decoded dataset: analyse the event
        from idexdask.workflow import analyze

        lines = event_lines(analyze(ds.isel(epoch=[index]).load(), cfg), 0, source="analyze")
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
        figure = time2mass_figure(lines, result,
                                  title=f"{Path(args.source).name} event {index} ({preset})")
        figure.savefig(args.plot, dpi=80)
        echo(f"\nplot               : {args.plot}")
    return 0
