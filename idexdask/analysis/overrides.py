"""Manual overrides of the automatic analysis, stored as data and reapplied.

An override table is an :class:`xarray.Dataset` with dimension ``override`` and
the variables below (one row per edit); it can be written to and read from JSON
(:func:`write_overrides`, :func:`read_overrides`) or built from records
(:func:`make_overrides`), and is applied by
``idexdask.analyze(ds, config, overrides=table)`` every time the events are
(re)processed.  Rows are keyed by the event ``epoch`` (ns TT2000, exactly as in
the event dataset), so they survive re-decoding and re-ordering.

=================  =======  ==========================================================
variable           type     meaning
=================  =======  ==========================================================
``epoch``          int64    event the row applies to
``target``         str      ``"tof"`` (a mass line) or an impact channel
                            (``"Target_High"``, ``"Target_Low"``, ``"Ion_Grid"``)
``action``         str      ``add``, ``remove``, ``edit`` (tof) or ``window`` (impact)
``center_us``      float    tof: centre of the line to add, or of the detected line
                            to remove/edit (nearest within ``tolerance_us``), µs
``window_start_us`` float   fit window start, µs (NaN: automatic)
``window_stop_us``  float   fit window stop, µs (NaN: automatic)
``tolerance_us``   float    matching tolerance for remove/edit, µs (NaN: 0.05)
=================  =======  ==========================================================

``add`` creates a line at ``center_us`` (fitted in the given window, else the
automatic window around it); ``edit`` replaces the window (and starting centre)
of the matched detected line; ``remove`` drops it; ``window`` restricts an impact
channel's fit to ``[window_start_us, window_stop_us]``.  Added and edited lines
carry ``peak_manual = True`` in the products.  Rows whose epoch is not in the
dataset, or whose line is not found, are ignored with a log message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.peaks import PeakCandidates
from idexdask.errors import AnalysisError

__all__ = [
    "ACTIONS",
    "apply_tof_overrides",
    "empty_overrides",
    "impact_windows",
    "make_overrides",
    "read_overrides",
    "write_overrides",
]

_log = get_logger(__name__)

ACTIONS = ("add", "remove", "edit", "window")
_FLOATS = ("center_us", "window_start_us", "window_stop_us", "tolerance_us")
_DEFAULT_TOL = 0.05


def make_overrides(records: Iterable[Mapping[str, Any]]) -> xr.Dataset:
    """Build an override table from records (dicts with the table's keys).

    Raises
    ------
    AnalysisError
        On an unknown action, a missing epoch, or a tof row without ``center_us``.
    """
    rows = list(records)
    for i, r in enumerate(rows):
        if r.get("action") not in ACTIONS:
            raise AnalysisError(
                f"override {i}: action must be one of {ACTIONS}, got {r.get('action')!r}"
            )
        if "epoch" not in r:
            raise AnalysisError(f"override {i}: no epoch")
        target = str(r.get("target", "tof"))
        if target == "tof" and r["action"] == "window":
            raise AnalysisError(f"override {i}: 'window' applies to impact channels, not tof")
        if target != "tof" and r["action"] != "window":
            raise AnalysisError(f"override {i}: impact channels take only 'window'")
        if target == "tof" and not math.isfinite(float(r.get("center_us", math.nan))):
            raise AnalysisError(f"override {i}: tof rows need center_us")
    data: dict[str, Any] = {
        "epoch": ("override", np.array([int(r["epoch"]) for r in rows], dtype=np.int64)),
        "target": ("override", np.array([str(r.get("target", "tof")) for r in rows], dtype=str)),
        "action": ("override", np.array([str(r["action"]) for r in rows], dtype=str)),
    }
    for key in _FLOATS:
        vals = [r.get(key) for r in rows]
        data[key] = ("override", np.array([math.nan if v is None else float(v) for v in vals]))
    return xr.Dataset(data, attrs={"schema": "idexdask.overrides/1"})


def empty_overrides() -> xr.Dataset:
    """A table with no rows."""
    return make_overrides([])


def write_overrides(table: xr.Dataset, path: str | Path) -> None:
    """Write a table as JSON (a list of records; NaN written as null)."""
    records = []
    for i in range(table.sizes.get("override", 0)):
        rec: dict[str, Any] = {
            "epoch": int(table["epoch"].values[i]),
            "target": str(table["target"].values[i]),
            "action": str(table["action"].values[i]),
        }
        for key in _FLOATS:
            v = float(table[key].values[i])
            rec[key] = v if math.isfinite(v) else None
        records.append(rec)
    Path(path).write_text(
        json.dumps({"schema": "idexdask.overrides/1", "overrides": records}, indent=1)
    )


def read_overrides(path: str | Path) -> xr.Dataset:
    """Read a table written by :func:`write_overrides`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read overrides {path}: {exc}") from exc
    return make_overrides(doc.get("overrides", []) if isinstance(doc, dict) else doc)


def as_table(overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None) -> xr.Dataset:
    """Normalise the ``overrides`` argument of ``analyze`` to a table."""
    if overrides is None:
        return empty_overrides()
    if isinstance(overrides, xr.Dataset):
        return overrides
    if isinstance(overrides, str | Path):
        return read_overrides(overrides)
    return make_overrides(overrides)


def _event_index(table: xr.Dataset, epochs: np.ndarray) -> np.ndarray:
    """Row -> event index (-1 where the epoch is not in the dataset)."""
    lookup = {int(e): i for i, e in enumerate(np.asarray(epochs, dtype=np.int64))}
    return np.array([lookup.get(int(e), -1) for e in table["epoch"].values], dtype=np.int64)


def apply_tof_overrides(
    cand: PeakCandidates, table: xr.Dataset, epochs: np.ndarray, t: np.ndarray
) -> PeakCandidates:
    """Add, remove and edit detected lines as the table says (rows applied in order).

    Parameters
    ----------
    cand : PeakCandidates
        Detected peaks.
    table : xarray.Dataset
        Override table.
    epochs : numpy.ndarray
        Event epochs of the dataset (index of ``cand.event``).
    t : numpy.ndarray
        Merged-spectrum times (n_events, n_samples), µs.

    Returns
    -------
    PeakCandidates
        Edited list, sorted by event and time; added and edited rows have
        ``manual = True``.
    """
    rows = np.nonzero(table["target"].values == "tof")[0] if table.sizes.get("override", 0) else []
    if len(rows) == 0:
        return cand
    ev_of = _event_index(table, epochs)
    keep = np.ones(cand.size, bool)
    cand = cand.take(np.arange(cand.size))  # a copy we may edit
    added = []
    for r in rows:
        ev = int(ev_of[r])
        action = str(table["action"].values[r])
        c = float(table["center_us"].values[r])
        w0 = float(table["window_start_us"].values[r])
        w1 = float(table["window_stop_us"].values[r])
        tol = float(table["tolerance_us"].values[r])
        tol = tol if math.isfinite(tol) else _DEFAULT_TOL
        if ev < 0:
            _log.info(
                "override %d: epoch %d not in the dataset; ignored",
                r,
                int(table["epoch"].values[r]),
            )
            continue
        tt = t[ev]
        if action == "add":
            idx = int(np.nanargmin(np.abs(tt - c)))
            added.append(
                PeakCandidates(
                    np.array([ev]),
                    np.array([idx]),
                    np.array([np.nan]),
                    np.array([True]),
                    np.array([w0]),
                    np.array([w1]),
                    np.array([c]),
                )
            )
            continue
        mine = np.nonzero((cand.event == ev) & keep)[0]
        if mine.size == 0:
            _log.info("override %d: no detected line in event %d; ignored", r, ev)
            continue
        dist = np.abs(tt[cand.index[mine]] - c)
        j = mine[int(np.argmin(dist))]
        if dist.min() > tol:
            _log.info("override %d: no line within %g µs of %g µs; ignored", r, tol, c)
            continue
        if action == "remove":
            keep[j] = False
        else:  # edit
            cand.manual[j] = True
            cand.window_start[j] = w0
            cand.window_stop[j] = w1
            cand.center_guess[j] = c
            if math.isfinite(w0) and math.isfinite(w1):
                inside = (tt >= w0) & (tt <= w1)
                if inside.any():
                    cand.index[j] = int(np.nonzero(inside)[0][len(np.nonzero(inside)[0]) // 2])
    return PeakCandidates.concatenate([cand.take(keep), *added])


def impact_windows(
    table: xr.Dataset, epochs: np.ndarray, channel: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-event fit windows (µs; NaN = whole trace) of ``channel``, or None if none."""
    n = len(epochs)
    if table.sizes.get("override", 0) == 0:
        return None
    rows = np.nonzero((table["target"].values == channel) & (table["action"].values == "window"))[0]
    if rows.size == 0:
        return None
    ev_of = _event_index(table, epochs)
    w0 = np.full(n, np.nan)
    w1 = np.full(n, np.nan)
    for r in rows:
        if ev_of[r] >= 0:
            w0[ev_of[r]] = table["window_start_us"].values[r]
            w1[ev_of[r]] = table["window_stop_us"].values[r]
    return w0, w1


def manual_impact(table: xr.Dataset, epochs: np.ndarray, channel: str) -> np.ndarray:
    """Events whose ``channel`` fit window was set by an override (bool, n_events)."""
    w = impact_windows(table, epochs, channel)
    if w is None:
        return np.zeros(len(epochs), bool)
    return np.isfinite(w[0]) | np.isfinite(w[1])
