"""Manual overrides of the automatic analysis, stored as data and reapplied.

An override table is an :class:`xarray.Dataset` with dimension ``override``
(one row per edit, its index the row ``id``); it is kept inside a campaign
store (:mod:`idexdask.pipeline.overrides_store`, reapplied by ``idexdask
submit``), written to and read from JSON (:func:`write_overrides`,
:func:`read_overrides`) or built from records (:func:`make_overrides`), and is
applied by ``idexdask.analyze(ds, config, overrides=table)`` every time the
events are (re)processed.  Rows are keyed by the event ``epoch`` (ns TT2000,
exactly as in the event dataset), so they survive re-decoding and re-ordering.

=================== ======= ==========================================================
column              type    meaning
=================== ======= ==========================================================
``id`` (index)      str     row identifier (12 hex digits), unique in the table
``epoch``           int64   event the row applies to
``target``          str     ``"tof"`` (a mass line, or the event's mass calibration)
                            or an impact channel (``"Target_High"``, ``"Target_Low"``,
                            ``"Ion_Grid"``)
``action``          str     one of :data:`ACTIONS` (below)
``center_us``       float   tof: centre of the line to add, or of the line the row
                            refers to (nearest within ``tolerance_us``), µs
``window_start_us`` float   fit window start, µs (NaN: automatic)
``window_stop_us``  float   fit window stop, µs (NaN: automatic)
``tolerance_us``    float   matching tolerance, µs (NaN: 0.05)
``shape``           str     ``shape`` rows: a line shape of :data:`LINE_SHAPES`
``species``         str     ``species`` rows: an ion label of the species library
                            (``"24Mg"``, ``"Na"``, ``"SiO"``) or ``"none"``
``created``         str     when the row was made (UTC, ISO 8601)
``author``          str     who made it (user name)
``origin``          str     what made it (``dashboard``, ``api``, ``cli``, ...)
``note``            str     free text: why
``undone``          str     when the row was undone (UTC, ISO 8601); ``""``: in force
``undone_by``       str     who undid it
=================== ======= ==========================================================

Actions (rows in force are applied in table order):

``add``
    a line at ``center_us``, fitted in the given window, else the automatic
    window around it.
``remove``
    drops the detected line nearest ``center_us`` (matched on the time of its
    highest sample).
``edit``
    replaces the window (and starting centre) of that detected line.
``window``
    restricts an impact channel's fit to ``[window_start_us, window_stop_us]``.
``shape``
    refits the line whose fitted EMG centre is nearest ``center_us`` with the
    line shape ``shape`` (:mod:`idexdask.analysis.lineshapes`), in the same window.
``species``
    assigns the species ``species`` to the line whose fitted EMG centre is
    nearest ``center_us``; the composition uses it instead of the automatic
    assignment (``"none"``: the line is assigned to nothing).
``calibrate``
    the event's mass calibration is fitted to its lines with a hand-assigned
    species (their centres and ion masses, as ``idexdask time2mass --lines``)
    instead of the automatic comb alignment.

Added, edited and reshaped lines carry ``peak_manual = True`` in the products,
hand-assigned species ``peak_species_manual = True``, a calibration from
assigned lines ``mass_calibration_method = "manual"`` (its status stays
``calibrated`` or ``uncalibrated``: whether the event has a mass axis, as for
every other method; docs/products.md).  Rows whose epoch is not
in the dataset, or whose line is not found, are ignored with a log message.

Undo: a row is never deleted; undoing it sets ``undone`` and the analysis
leaves it out (:func:`active_overrides`), so the table is the readable history
of every edit.  :func:`override_digest` is the digest of the rows in force for
a set of events: ``idexdask submit`` records it per unit and reprocesses a unit
when it changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
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
    "LINE_ACTIONS",
    "LINE_SHAPES",
    "SCHEMA",
    "active_overrides",
    "apply_tof_overrides",
    "as_table",
    "empty_overrides",
    "impact_windows",
    "make_overrides",
    "new_override_id",
    "override_digest",
    "override_records",
    "overrides_for",
    "read_overrides",
    "write_overrides",
]

_log = get_logger(__name__)

SCHEMA = "idexdask.overrides/2"
ACTIONS = ("add", "remove", "edit", "window", "shape", "species", "calibrate")
#: Actions that refer to a fitted line (matched on its EMG centre, after the fit).
LINE_ACTIONS = ("shape", "species")
#: Line shapes a ``shape`` row may choose (the shapes of :mod:`idexdask.analysis.lineshapes`).
#: (``peak_shape`` is the index in this tuple: 0 is the automatic EMG)
LINE_SHAPES = ("emg", "gaussian", "double_emg", "hyper_emg", "voigt")
#: The species of a ``species`` row that assigns a line to nothing.
NO_SPECIES = "none"
_FLOATS = ("center_us", "window_start_us", "window_stop_us", "tolerance_us")
_STRINGS = ("shape", "species", "created", "author", "origin", "note", "undone", "undone_by")
#: Columns that change the products (the digest's); the others describe the row.
_EFFECT = ("epoch", "target", "action", *_FLOATS, "shape", "species")
_DEFAULT_TOL = 0.05
_IMPACT_TARGETS = ("Target_High", "Target_Low", "Ion_Grid")
# an ion label: optional mass number, element symbols with counts, optional charge
_ION_LABEL = re.compile(r"^(\d*[A-Z][a-z]?\d*)+\+*$")


def new_override_id() -> str:
    """A fresh row identifier (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def _float(value: Any, what: str) -> float:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"{what} must be a number, got {value!r}") from exc


def _check_row(i: int, r: Mapping[str, Any]) -> dict[str, Any]:
    """One record validated and completed with every column."""
    action = r.get("action")
    if action not in ACTIONS:
        raise AnalysisError(f"override {i}: action must be one of {ACTIONS}, got {action!r}")
    if r.get("epoch") is None:
        raise AnalysisError(f"override {i}: no epoch")
    try:
        epoch = int(r["epoch"])
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"override {i}: epoch must be an integer (ns TT2000)") from exc
    target = str(r.get("target") or "tof")
    row: dict[str, Any] = {"id": str(r.get("id") or new_override_id()), "epoch": epoch,
                           "target": target, "action": str(action)}
    for key in _FLOATS:
        row[key] = _float(r.get(key), f"override {i}: {key}")
    for key in _STRINGS:
        value = r.get(key)
        row[key] = "" if value is None else str(value)
    if action == "window":
        if target not in _IMPACT_TARGETS:
            raise AnalysisError(
                f"override {i}: 'window' applies to the impact channels {_IMPACT_TARGETS}, "
                f"not {target!r}"
            )
        w0, w1 = row["window_start_us"], row["window_stop_us"]
        if math.isfinite(w0) and math.isfinite(w1) and not w0 < w1:
            raise AnalysisError(f"override {i}: window start {w0} µs is not before stop {w1} µs")
        return row
    if target != "tof":
        raise AnalysisError(f"override {i}: impact channels take only 'window'")
    if action != "calibrate" and not math.isfinite(row["center_us"]):
        raise AnalysisError(f"override {i}: tof rows need center_us")
    if action in ("add", "edit"):
        w0, w1 = row["window_start_us"], row["window_stop_us"]
        if math.isfinite(w0) and math.isfinite(w1) and not w0 < w1:
            raise AnalysisError(f"override {i}: window start {w0} µs is not before stop {w1} µs")
    tol = row["tolerance_us"]
    if math.isfinite(tol) and tol <= 0:
        raise AnalysisError(f"override {i}: tolerance_us must be > 0, got {tol}")
    if action == "shape" and row["shape"] not in LINE_SHAPES:
        raise AnalysisError(
            f"override {i}: shape must be one of {LINE_SHAPES}, got {row['shape']!r}"
        )
    if action == "species":
        species = row["species"].strip()
        if species != NO_SPECIES and not _ION_LABEL.match(species):
            raise AnalysisError(
                f"override {i}: species must be an ion label ('24Mg', 'Na', 'SiO') or "
                f"'{NO_SPECIES}', got {row['species']!r}"
            )
        row["species"] = species
    return row


def make_overrides(records: Iterable[Mapping[str, Any]]) -> xr.Dataset:
    """Build an override table from records (dicts with the table's columns).

    Only ``epoch`` and ``action`` are required; a missing ``id`` is generated,
    other missing columns are NaN or ``""``.

    Raises
    ------
    AnalysisError
        On an unknown action, a missing epoch, a tof row without ``center_us``,
        an unknown line shape, a malformed species, a reversed window or a
        repeated ``id``.
    """
    rows = [_check_row(i, r) for i, r in enumerate(records)]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(x for x in ids if x in seen or seen.add(x))  # type: ignore[func-returns-value]
        raise AnalysisError(f"override id {dup!r} appears twice")
    dim = "override"
    data: dict[str, Any] = {
        "epoch": (dim, np.array([r["epoch"] for r in rows], dtype=np.int64)),
        "target": (dim, np.array([r["target"] for r in rows], dtype=str)),
        "action": (dim, np.array([r["action"] for r in rows], dtype=str)),
    }
    for key in _FLOATS:
        data[key] = (dim, np.array([r[key] for r in rows], dtype=float))
    for key in _STRINGS:
        data[key] = (dim, np.array([r[key] for r in rows], dtype=str))
    return xr.Dataset(
        data, coords={dim: np.array(ids, dtype=str)}, attrs={"schema": SCHEMA}
    )


def empty_overrides() -> xr.Dataset:
    """A table with no rows."""
    return make_overrides([])


def override_records(table: xr.Dataset) -> list[dict[str, Any]]:
    """The rows of a table as records (NaN as None), the inverse of :func:`make_overrides`."""
    n = table.sizes.get("override", 0)
    columns = {name: table[name].values for name in ("epoch", "target", "action",
                                                     *_FLOATS, *_STRINGS) if name in table}
    ids = table["override"].values if "override" in table.coords else [""] * n
    records = []
    for i in range(n):
        rec: dict[str, Any] = {"id": str(ids[i])}
        for name, values in columns.items():
            v = values[i]
            if name == "epoch":
                rec[name] = int(v)
            elif name in _FLOATS:
                rec[name] = float(v) if math.isfinite(float(v)) else None
            else:
                rec[name] = str(v)
        records.append(rec)
    return records


def write_overrides(table: xr.Dataset, path: str | Path) -> None:
    """Write a table as JSON (``{"schema", "overrides": [records]}``, NaN as null)."""
    Path(path).write_text(
        json.dumps({"schema": SCHEMA, "overrides": override_records(table)}, indent=1)
    )


def read_overrides(path: str | Path) -> xr.Dataset:
    """Read a table written by :func:`write_overrides` (schema 1 or 2).

    Raises
    ------
    AnalysisError
        If the file cannot be read or a row is invalid.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read overrides {path}: {exc}") from exc
    return make_overrides(doc.get("overrides", []) if isinstance(doc, dict) else doc)


def active_overrides(table: xr.Dataset) -> xr.Dataset:
    """The rows in force (not undone), in table order."""
    if table.sizes.get("override", 0) == 0 or "undone" not in table:
        return table
    keep = table["undone"].values == ""
    return table if keep.all() else table.isel(override=np.nonzero(keep)[0])


def as_table(overrides: xr.Dataset | str | Path | Iterable[Mapping[str, Any]] | None) -> xr.Dataset:
    """Normalise the ``overrides`` argument of ``analyze`` to the table of rows in force."""
    if overrides is None:
        return empty_overrides()
    if isinstance(overrides, xr.Dataset):
        table = overrides
        if table.sizes.get("override", 0) and table.attrs.get("schema") != SCHEMA:
            # a table not made by make_overrides is validated like one read from a file
            table = make_overrides(override_records(table))
    elif isinstance(overrides, str | Path):
        table = read_overrides(overrides)
    else:
        table = make_overrides(overrides)
    return active_overrides(table)


def overrides_for(table: xr.Dataset, epochs: Iterable[int]) -> xr.Dataset:
    """The rows of ``table`` whose epoch is one of ``epochs`` (in table order)."""
    if table.sizes.get("override", 0) == 0:
        return table
    mine = np.isin(table["epoch"].values, np.fromiter((int(e) for e in epochs), np.int64))
    return table if mine.all() else table.isel(override=np.nonzero(mine)[0])


def override_digest(table: xr.Dataset, epochs: Iterable[int]) -> str:
    """Digest of the rows in force that apply to ``epochs`` (``""`` when there are none).

    Only the columns that change the products count (not ``id``, ``created``,
    ``author``, ``origin``, ``note``), in table order (rows are applied in
    order).  ``idexdask submit`` records it per unit beside the input and
    configuration digests.

    Parameters
    ----------
    table : xarray.Dataset
        Override table (undone rows are left out here).
    epochs : iterable of int
        The events' epochs, ns TT2000.
    """
    table = active_overrides(table)
    if table.sizes.get("override", 0) == 0:
        return ""
    mine = np.isin(table["epoch"].values, np.fromiter((int(e) for e in epochs), np.int64))
    if not mine.any():
        return ""
    records = override_records(table.isel(override=np.nonzero(mine)[0]))
    text = json.dumps([[rec.get(k) for k in _EFFECT] for rec in records])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


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
    rows = (
        np.nonzero(np.isin(table["action"].values, ("add", "remove", "edit")))[0]
        if table.sizes.get("override", 0)
        else []
    )
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
