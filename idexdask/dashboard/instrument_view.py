"""The instrument state of one event as an HTML table, for the event page.

A reviewer reads the state next to the waveforms to trust an event (was the
reflectron at its nominal voltage? which gain triggered?).  The housekeeping
quantities come from :func:`idexdask.analysis.instrument.event_readings`; a
value outside its valid range is marked (row class ``idx-out-of-range``, a
red background and a "⚠ out of range" cell), so it stands out without reading
the ranges.  Sources without an IDEX event header (lab captures) have no state:
the view says so instead of failing.
"""

from __future__ import annotations

import html
import math

import numpy as np
import xarray as xr

from idexdask.analysis.instrument import InstrumentStateFlag, event_readings

__all__ = ["instrument_state_html"]

_TRIGGER_PREFIXES = ("trigger_mode_", "trigger_level_")
_OUT_OF_RANGE_STYLE = "background:#fde0dc;color:#a50f15;font-weight:bold"


def _format(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.5g}"


def _trigger_rows(row: xr.Dataset) -> list[tuple[str, str, str]]:
    """(name, value, units) of the trigger settings, origin, dead time and state flags."""
    names = sorted(n for n in row.variables
                   if str(n).startswith(_TRIGGER_PREFIXES) and not str(n).endswith("_code"))
    names += [n for n in ("trigger_origin", "dead_time", "instrument_state_flags")
              if n in row.variables]
    rows = []
    for name in names:
        var = row.variables[name]
        value = np.asarray(var.values).reshape(-1)[0]
        if name == "instrument_state_flags":
            bits = [f.name.lower() for f in InstrumentStateFlag if int(value) & int(f)]
            text = ", ".join(bits) or "none (complete and in range)"
        elif isinstance(value, (str, np.str_)):
            text = str(value) or "—"
        else:
            text = _format(float(value))
        units = str(var.attrs.get("units", ""))
        rows.append((str(name), text, "" if units == "1" else units))  # "1": dimensionless
    return rows


def instrument_state_html(row: xr.Dataset) -> str:
    """HTML tables of one event's instrument state (housekeeping, then trigger).

    Parameters
    ----------
    row : xarray.Dataset
        One event as a dataset with an ``epoch`` dimension of length 1 (the
        dashboard's :class:`~idexdask.dashboard.data.EventRow` ``dataset``).

    Returns
    -------
    str
        A ``<div class='idx-instrument-state'>`` holding the tables, or a short
        note when the row has no instrument state (lab captures, a store
        analysed without it).
    """
    if "reflectron_voltage" not in row.variables:
        return ("<div class='idx-instrument-state idx-no-state'><i>no instrument state for "
                "this event (lab captures carry no IDEX event header)</i></div>")
    readings = event_readings(row, 0)
    cells = []
    for r in readings:
        style = f" style='{_OUT_OF_RANGE_STYLE}'" if r.out_of_range else ""
        css = " class='idx-out-of-range'" if r.out_of_range else ""
        mark = "⚠ out of range" if r.out_of_range else ""
        cells.append(
            f"<tr{css}{style}><td title='{html.escape(r.long_name)}'>{html.escape(r.name)}</td>"
            f"<td style='text-align:right'>{_format(r.value)}</td><td>{html.escape(r.units)}</td>"
            f"<td style='color:#666;white-space:nowrap'>{_format(r.valid_min)} … "
            f"{_format(r.valid_max)}</td>"
            f"<td>{mark}</td></tr>"
        )
    n_out = sum(r.out_of_range for r in readings)
    head = ("<tr><th align='left'>quantity</th><th>value</th><th>units</th>"
            "<th>valid range</th><th></th></tr>")
    trigger = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(u)}</td></tr>"
        for n, v, u in _trigger_rows(row)
    )
    summary = (f"<b style='color:#a50f15'>{n_out} quantities out of range</b>" if n_out
               else "all quantities within their valid ranges")
    return (
        "<div class='idx-instrument-state'>"
        f"<h4 style='margin:4px 0'>Instrument state</h4><p style='margin:2px 0'>{summary}</p>"
        "<div style='display:flex;gap:24px;align-items:flex-start'>"
        f"<table class='idx-housekeeping'>{head}{''.join(cells)}</table>"
        f"<table class='idx-trigger'>{trigger}</table></div></div>"
    )
