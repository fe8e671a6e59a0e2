"""The event page's header: identity, quality, calibration and the grain's speed, charge, mass.

Flight events carry the target's impact charge and a speed from its rise time;
lab captures (LeCroy .trc) carry no target channel but measure the grain before
impact with the pickup tubes (QD): its speed from their transit times and its
charge from their pulse heights (``idexdask.analysis.pickup_products``).  The
header shows what the event has and says why a quantity is missing instead of
printing ``nan``.
"""

from __future__ import annotations

import html
import math

import numpy as np
import xarray as xr

from idexdask.analysis.velocity import VelocityStatus
from idexdask.dashboard.data import StoreData, decode_flags, tt2000_to_utc

__all__ = ["accelerator_mass_per_megavolt", "calibration_text", "event_header", "fmt"]

#: What ``mass_calibration_method`` values mean (docs/products.md).
CALIBRATION_METHODS = {
    "manual": "manual: fitted to hand-assigned lines",
    "campaign": "campaign: the group's shared shape, the event's own shift",
    "event": "event: its own bootstrap",
    "bootstrap": "event: its own bootstrap",
}
#: One femtocoulomb (C): pickup charges are stored in fC.
FEMTOCOULOMB = 1e-15


def value(event: xr.Dataset, name: str, default=None):
    """The scalar ``name`` of ``event`` (``default`` when absent)."""
    if name not in event:
        return default
    raw = event[name].values
    return raw.item() if hasattr(raw, "item") else raw


def fmt(number, unit: str = "", *, missing: str = "not measured") -> str:
    """Four significant digits (an exponent for tiny or huge values), or ``missing``."""
    try:
        number = float(number)
    except (TypeError, ValueError):
        return missing if number is None else str(number)
    if not math.isfinite(number):
        return missing
    text = f"{number:.4g}"
    return f"{text} {unit}".rstrip()


def _with_error(event: xr.Dataset, name: str, unit: str) -> str | None:
    number = value(event, name)
    if number is None or not np.isfinite(float(number)):
        return None
    error = value(event, f"{name}_err")
    if error is not None and np.isfinite(float(error)):
        return f"{float(number):.4g} ± {float(error):.2g} {unit}"
    return fmt(number, unit)


def calibration_text(event: xr.Dataset) -> str:
    """Status, how the calibration was made and, when uncalibrated, why."""
    status = str(value(event, "mass_calibration_status", "—"))
    reason = str(value(event, "mass_calibration_reason", ""))
    method = str(value(event, "mass_calibration_method", "") or "")
    parts = [status]
    if method and method != "none":
        parts.append(CALIBRATION_METHODS.get(method, method))
    if reason and reason != "none":
        parts.append(f"reason: {reason}")
    return " — ".join(parts)


def accelerator_mass_per_megavolt(charge_fc: float, speed_kms: float) -> float:
    """Grain mass (kg) per MV of accelerating voltage: ``m = 2 q U / v²`` with U = 1 MV.

    An electrostatic dust accelerator gives a grain of charge ``q`` the kinetic
    energy ``q U``; with the speed ``v`` and charge measured by the pickup tubes
    the mass follows once the accelerating voltage ``U`` is known.  NaN when
    either is missing.
    """
    with np.errstate(all="ignore"):
        return float(2.0 * abs(charge_fc) * FEMTOCOULOMB * 1e6 / (speed_kms * 1e3) ** 2)


def _speed_reason(event: xr.Dataset) -> str:
    """Why the rise-time speed is missing, from ``impact_velocity_status``."""
    code = value(event, "impact_velocity_status")
    try:
        status = VelocityStatus(int(code))
    except (TypeError, ValueError):
        return "no usable target rise time"
    return {
        VelocityStatus.NO_RISE_TIME: "no usable target fit or rise time",
        VelocityStatus.OUT_OF_RANGE: "rise time outside the calibration curve's range",
    }.get(status, status.name.lower().replace("_", " "))


def _grain_rows(event: xr.Dataset) -> list[tuple[str, str]]:
    """Speed, charge and mass rows: the target's for flight, the pickup tubes' for lab."""
    lab = "qd_speed" in event
    rows = []
    speed = value(event, "impact_velocity")
    if speed is not None and np.isfinite(float(speed)):
        rows.append(("impact speed (target rise time)", fmt(speed, "km/s")))
    elif not lab:
        rows.append(("impact speed", f"not measured ({_speed_reason(event)})"))
    if lab:
        qd_speed = _with_error(event, "qd_speed", "km/s")
        rows.append(("grain speed (pickup tubes)",
                     qd_speed or "not measured (no transit in the QD pulses)"))
        qd_charge = _with_error(event, "qd_charge", "fC")
        detector = str(value(event, "qd_charge_detector", "") or "")
        rows.append(("grain charge (pickup)",
                     f"{qd_charge} ({detector}; amplifier gain: placeholder)" if qd_charge
                     else "not measured (no usable QD plateau)"))
    charge = value(event, "target_low_impact_charge")
    if charge is not None:
        rows.append(("target impact charge", fmt(charge, "pC",
                                                 missing="not measured (no target fit)")))
    elif lab:
        rows.append(("target impact charge", "— (lab captures have no target channel)"))
    mass = value(event, "dust_mass")
    if mass is not None and np.isfinite(float(mass)):
        source = str(value(event, "dust_mass_velocity_source", "") or "")
        rows.append(("dust mass", fmt(mass, "kg") + (f" (speed: {source})" if source else "")))
    elif lab:
        q, v = value(event, "qd_charge"), value(event, "qd_speed")
        per_mv = (accelerator_mass_per_megavolt(float(q), float(v))
                  if q is not None and v is not None else math.nan)
        rows.append(("dust mass", (
            f"{per_mv:.3g} kg × U/MV (m = 2qU/v² from the pickup charge and speed; the "
            "accelerating voltage U is not recorded with the captures)")
            if np.isfinite(per_mv) else "not measured (no pickup charge and speed)"))
    else:
        rows.append(("dust mass", "not measured (needs the impact charge and speed)"))
    return rows


def event_header(data: StoreData, index: int) -> str:
    """HTML table of the event's identity, quality, calibration and grain."""
    event = data.event(index).event
    utc = str(tt2000_to_utc(np.asarray([value(event, "epoch", 0)]))[0])[:23]
    if "source_file" in event:
        source = ", ".join(sorted({str(s) for s in np.ravel(event["source_file"].values) if s}))
    else:
        source = data.input_name(int(value(event, "input_index", -1)))
    number = value(event, "idx__txhdrevtnum", value(event, "impact_number", "—"))
    flags = decode_flags(int(value(event, "quality_flags", 0))) or ["none"]
    rows = [
        ("event (row)", index), ("UTC", utc), ("epoch (TT2000 ns)", value(event, "epoch", "—")),
        ("source", source), ("event number", number), ("quality flags", ", ".join(flags)),
        ("calibration", calibration_text(event)), ("lines", value(event, "peak_count", "—")),
        *_grain_rows(event),
    ]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th>"
                    f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='idx-event-header'>{cells}</table>"
