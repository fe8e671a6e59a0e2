"""Lazy, cached read access to one campaign store for the review server.

The server never loads all waveforms: the campaign page reads a fixed set of
per-event scalar variables (one 1-D Zarr array each) once per change of the
manifest, and every other page reads one event row on demand.  Only rows of
units the manifest records as done are shown, so a page never shows a
half-written unit of a store that ``idexdask submit`` is still filling.

The :class:`StoreData` object is created once per server and shared by all
browser sessions; its caches are bounded (the scalar table is a few columns by
the store's events, the event cache holds a few rows).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from idexdask.analysis.instrument_table import load_instrument_table
from idexdask.errors import StoreError
from idexdask.packets.quality import QualityFlag
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.manifest import MANIFEST_NAME, pipeline_dir
from idexdask.pipeline.runner import RunSummary, done_units, store_status
from idexdask.pipeline.store import read_store_meta

__all__ = [
    "BLOCK_CACHE_BYTES",
    "EVENT_CACHE_SIZE",
    "LINE_COLUMNS",
    "SCALAR_VARIABLES",
    "EventRow",
    "RowBlock",
    "StoreData",
    "instrument_scalar_names",
    "as_text",
    "decode_flags",
    "flag_names",
    "lines_frame",
    "shown",
    "tt2000_to_utc",
]

logger = logging.getLogger(__name__)

#: Per-event scalars of the campaign page (those present in the store are read).
SCALAR_VARIABLES = (
    "target_high_impact_charge", "target_low_impact_charge", "ion_grid_impact_charge",
    "impact_velocity", "dust_mass",
    "tof_high_snr", "tof_mid_snr", "tof_low_snr", "target_high_snr", "target_low_snr",
    "ion_grid_snr", "qd_1_snr", "qd_2_snr",
    "tof_line_count", "mg_number", "fo_number", "kappa", "quality_flags",
    "composition_status", "mass_calibration_status", "best_mineral", "input_index",
)

def instrument_scalar_names() -> tuple[str, ...]:
    """Per-event instrument-state variables the campaign page can plot (issue 22).

    The housekeeping quantities of ``configs/instrument_state.yaml`` in engineering
    units, each gain's trigger threshold and mode number, the trigger-origin bits,
    the dead time and the state flags: the numeric variables of
    :func:`idexdask.analysis.instrument.instrument_state_variables`.
    """
    table = load_instrument_table(None)
    names = [q.name for q in table.housekeeping]
    for gain in table.trigger_gains:
        names += [f"trigger_level_{gain.gain}", f"trigger_mode_{gain.gain}_code"]
    names += ["trigger_origin_bits", "dead_time", "instrument_state_flags"]
    return tuple(names)


#: Line-table columns (``peak_<name>`` in the store), in display order.
LINE_COLUMNS = (
    "species", "mass", "center", "center_err", "sigma", "gamma", "area", "area_err",
    "height", "status", "manual", "window_start", "window_stop", "element",
)

#: Prefix of the raw telemetry header fields (read only for a refit or the browser).
HEADER_PREFIX = "idx__"
#: The header fields the event page shows (the instrument's event number).
HEADER_SHOWN = ("idx__txhdrevtnum",)

#: Per-channel products (noise, SNR, saturation, pulse and transit details) start
#: with these; no page draws them from an event row except the ones below.
CHANNEL_PREFIXES = ("tof_high_", "tof_mid_", "tof_low_", "target_high_", "target_low_",
                    "ion_grid_", "qd_1_", "qd_2_", "qd1_", "qd2_")
#: The per-channel products the pages do draw: impact fits and charges.
CHANNEL_SHOWN_SUFFIXES = ("_fit_parameters", "_impact_charge")


def shown(name: str) -> bool:
    """Whether the pages' event rows read variable ``name``.

    A row leaves out the ~150 raw ``idx__`` header fields (but the event number)
    and the per-channel diagnostics no view draws: each variable read is one Zarr
    read, so a display row of ~100 variables reads in about half the time of all
    ~250.  A refit reads every variable (``full``).
    """
    if name.startswith(HEADER_PREFIX):
        return name in HEADER_SHOWN
    if name.startswith(CHANNEL_PREFIXES):
        return name.endswith(CHANNEL_SHOWN_SUFFIXES)
    return True


#: Event rows kept in memory (views of the row blocks below).
EVENT_CACHE_SIZE = 4
#: Bytes of chunk-sized row blocks kept in memory: one flight block of 512 events
#: is ~150 MB with its waveforms decoded to float, a lab block of 8 impacts ~100 MB.
BLOCK_CACHE_BYTES = 320 * 2**20


def as_text(values: np.ndarray) -> np.ndarray:
    """Fixed-width text of a string array (NumPy's StringDType casts only via object)."""
    return np.asarray(values).astype(object).astype(str)


def decode_flags(value: int) -> list[str]:
    """Names of the :class:`~idexdask.packets.quality.QualityFlag` bits set in ``value``."""
    return [flag.name for flag in QualityFlag if int(value) & int(flag)]


def flag_names(values: np.ndarray) -> np.ndarray:
    """Comma-joined flag names (``ok`` for none) of every value of ``values``.

    Decoded once per distinct value: a campaign has a handful of flag combinations,
    and decoding 100,000 values one by one cost ~4 s.
    """
    unique, inverse = np.unique(np.asarray(values).astype(np.int64), return_inverse=True)
    text = np.array([",".join(decode_flags(v)) or "ok" for v in unique], dtype=object)
    return text[inverse.reshape(-1)]


@dataclass(frozen=True)
class RowBlock:
    """The rows of one Zarr chunk along ``epoch``, in memory.

    Attributes
    ----------
    start : int
        First row of the block.
    dataset : xarray.Dataset
        The rows (raw values), ``epoch`` from ``start``.
    """

    start: int
    dataset: xr.Dataset


@dataclass(frozen=True)
class EventRow:
    """One event read from the store (all its variables, waveforms included).

    Attributes
    ----------
    index : int
        Row along ``epoch``.
    dataset : xarray.Dataset
        The row as a one-event dataset (``epoch`` of length 1), raw values.
    """

    index: int
    dataset: xr.Dataset

    @functools.cached_property
    def event(self) -> xr.Dataset:
        """The row without its ``epoch`` dimension.

        Cached: ``isel`` over the row's few hundred variables costs ~20–100 ms, and
        every view of an event page asks for it (the header, the lines, each channel).
        """
        return self.dataset.isel(epoch=0)


class StoreData:
    """Read access to a campaign store, shared by the sessions of one server.

    Parameters
    ----------
    store : path
        A store written by ``idexdask submit``.

    Raises
    ------
    StoreError
        If ``store`` is not a campaign store (missing, another tool's Zarr store,
        no plan).
    """

    def __init__(self, store: str | os.PathLike) -> None:
        self.path = Path(store).resolve()
        if not self.path.exists():
            raise StoreError(f"{self.path} does not exist")
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is not a campaign store (not a directory)")
        meta = read_store_meta(self.path)
        if meta is None:
            raise StoreError(f"{self.path} is not a campaign store (no Zarr group; run "
                             "`idexdask submit -o STORE`)")
        self.meta = meta
        # the plan must exist too; done_units raises the StoreError otherwise
        done_units(self.path)
        self._lock = threading.RLock()
        self._version: tuple[int, int] | None = None
        self._dataset: xr.Dataset | None = None
        self._done: np.ndarray | None = None
        self._scalars: pd.DataFrame | None = None
        self._events: OrderedDict[tuple, EventRow] = OrderedDict()
        self._blocks: OrderedDict[tuple, RowBlock] = OrderedDict()

    # ------------------------------------------------------------------ versioning

    def version(self) -> tuple[int, int]:
        """(size, mtime) of the manifest: changes whenever a unit is recorded."""
        path = pipeline_dir(self.path) / MANIFEST_NAME
        try:
            stat = path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (stat.st_size, stat.st_mtime_ns)

    def _refresh(self) -> None:
        version = self.version()
        if version == self._version and self._dataset is not None:
            return
        dataset = open_campaign(self.path, dask=False)
        _, units = done_units(self.path)
        done = np.zeros(dataset.sizes.get("epoch", 0), dtype=bool)
        for unit in units:
            start, stop = unit["region"]
            done[start:stop] = True
        self._dataset, self._done, self._version = dataset, done, version
        self._scalars = None
        self._events.clear()
        self._blocks.clear()

    @property
    def dataset(self) -> xr.Dataset:
        """The store opened lazily (xarray's lazy arrays: nothing read until indexed)."""
        with self._lock:
            self._refresh()
            assert self._dataset is not None
            return self._dataset

    @property
    def done(self) -> np.ndarray:
        """Boolean mask of the rows of done units (the rows pages may show)."""
        with self._lock:
            self._refresh()
            assert self._done is not None
            return self._done

    @property
    def n_events(self) -> int:
        """Rows of the store (planned events)."""
        return int(self.dataset.sizes.get("epoch", 0))

    def status(self) -> RunSummary:
        """Progress of the store from its plan and manifest."""
        return store_status(self.path)

    def manifest_units(self) -> pd.DataFrame:
        """Planned units with their latest manifest record (status, error, hash)."""
        plan = json.loads((pipeline_dir(self.path) / "plan.json").read_text())
        from idexdask.pipeline.manifest import Manifest

        latest = Manifest(self.path).latest_units()
        rows = []
        for unit in plan["units"]:
            record = latest.get(unit["uid"], {})
            rows.append({
                "input": Path(unit["input"]).name,
                "rows": f"{unit['region'][0]}-{unit['region'][1]}",
                "events": unit["n_events"],
                "status": record.get("status", "pending"),
                "error": record.get("reason", ""),
                "input_hash": unit["input_hash"],
                "worker": record.get("worker", ""),
                "elapsed_s": record.get("elapsed_s", np.nan),
            })
        for failure in plan.get("plan_failures", []):
            rows.append({"input": Path(failure["path"]).name, "rows": "", "events": 0,
                         "status": "failed", "error": failure["reason"], "input_hash": "",
                         "worker": "", "elapsed_s": np.nan})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ scalars

    def scalars(self) -> pd.DataFrame:
        """Per-event scalars of the done rows (index: the row along ``epoch``).

        Read once per manifest change: one 1-D array per variable, never a waveform.
        """
        with self._lock:
            self._refresh()
            if self._scalars is None:
                self._scalars = self._read_scalars()
            return self._scalars

    def _read_scalars(self) -> pd.DataFrame:
        dataset, done = self._dataset, self._done
        assert dataset is not None and done is not None
        rows = np.flatnonzero(done)
        columns: dict[str, Any] = {"event": rows}
        names = [name for name in ("epoch", *SCALAR_VARIABLES, *instrument_scalar_names())
                 if name in dataset.variables and dataset[name].dims == ("epoch",)]
        arrays = {name: np.asarray(dataset[name].values) for name in names}
        # every row done (a finished store): the frame shares the arrays read
        # (xarray keeps them too) instead of holding a second copy of each column
        take = slice(None) if rows.size == done.size else rows
        if "epoch" in arrays:
            epoch = arrays.pop("epoch")[take]
            columns["epoch"] = epoch
            columns["time"] = tt2000_to_utc(epoch)
        for name, values in arrays.items():
            values = values[take]
            if values.dtype.kind in "OUT" or values.dtype.kind not in "biuf":
                values = as_text(values)
            columns[name] = values
        frame = pd.DataFrame(columns, copy=False)
        if "quality_flags" in frame:
            frame["quality"] = flag_names(frame["quality_flags"].to_numpy())
        return frame

    def units(self) -> dict[str, str]:
        """Unit of every per-event scalar column that has one (the store's ``units``)."""
        dataset = self.dataset
        names = (*SCALAR_VARIABLES, *instrument_scalar_names())
        return {name: str(dataset[name].attrs["units"]) for name in names
                if name in dataset.variables and dataset[name].attrs.get("units")
                and str(dataset[name].attrs["units"]) not in ("1", "")}

    # ------------------------------------------------------------------ events

    def check_event(self, index: Any) -> int:
        """Validate an event index (the row along ``epoch``) and return it.

        Raises
        ------
        StoreError
            Not an integer, out of range, or a row of a unit that is not done.
        """
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise StoreError(f"event must be an integer row index, not {index!r}") from None
        n = self.n_events
        if not 0 <= index < n:
            raise StoreError(f"event {index} is out of range: the store has {n} events "
                             f"(0 to {n - 1})")
        if not self.done[index]:
            raise StoreError(f"event {index} is not in the store yet (its unit is not done)")
        return index

    def event(self, index: Any, *, full: bool = False) -> EventRow:
        """One event's row (cached, a few rows at most).

        Parameters
        ----------
        index : int
            Row along ``epoch``.
        full : bool
            Every variable (what a refit needs); default: the variables the pages
            draw (:func:`shown`).
        """
        index = self.check_event(index)
        with self._lock:
            key = (self.version(), index, full)
            row = self._events.get(key)
            if row is not None:
                self._events.move_to_end(key)
                return row
            block = self._block(index, full)
            offset = index - block.start
            row = EventRow(index=index, dataset=block.dataset.isel(
                epoch=slice(offset, offset + 1)))
            self._events[key] = row
            while len(self._events) > EVENT_CACHE_SIZE:
                self._events.popitem(last=False)
            return row

    def clear_cache(self) -> None:
        """Forget the rows read so far (the next event read goes to the store)."""
        with self._lock:
            self._events.clear()
            self._blocks.clear()

    def _block(self, index: int, full: bool) -> RowBlock:
        """The rows of the Zarr chunk holding row ``index``, read once and kept.

        Reading one row costs one Zarr read per variable (~150 of them, each
        decompressing its whole chunk), so reading the chunk's rows costs about the
        same as reading one: the neighbouring events (previous/next) are then
        in memory.  Blocks are kept while they total under
        :data:`BLOCK_CACHE_BYTES` (the last one read is always kept).
        """
        dataset = self.dataset
        size = self._chunk_rows(dataset)
        start = index - index % size
        key = (self.version(), start, full)
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
            return block
        if not full:
            dataset = dataset.drop_vars([n for n in dataset.data_vars if not shown(str(n))])
        stop = min(start + size, self.n_events)
        block = RowBlock(start, dataset.isel(epoch=slice(start, stop)).load())
        self._blocks[key] = block
        while (len(self._blocks) > 1
               and sum(b.dataset.nbytes for b in self._blocks.values()) > BLOCK_CACHE_BYTES):
            self._blocks.popitem(last=False)
        return block

    @staticmethod
    def _chunk_rows(dataset: xr.Dataset) -> int:
        """Rows per Zarr chunk along ``epoch`` (that of the first epoch variable)."""
        for variable in dataset.data_vars.values():
            chunks = variable.encoding.get("chunks") or variable.encoding.get("preferred_chunks")
            if variable.dims and variable.dims[0] == "epoch" and chunks:
                first = chunks[0] if not isinstance(chunks, dict) else chunks.get("epoch")
                if first:
                    return max(1, int(first))
        return 1

    def lines(self, index: Any) -> pd.DataFrame:
        """The event's stored TOF lines (one row per line, time order)."""
        event = self.event(index).event
        if "peak_count" not in event:
            return pd.DataFrame(columns=list(LINE_COLUMNS))
        count = int(event["peak_count"].values)
        return lines_frame(event, count)

    def waveform_names(self) -> list[str]:
        """The waveform variables of the store (2-D on epoch and a sample dimension)."""
        dataset = self.dataset
        names = []
        for name in dataset.data_vars:
            variable = dataset[name]
            if (variable.ndim == 2 and variable.dims[0] == "epoch"
                    and str(variable.dims[1]).startswith("time_")
                    and not str(name).startswith("time_") and name != "tof_combined"):
                names.append(str(name))
        order = {"TOF_High": 0, "TOF_Mid": 1, "TOF_Low": 2, "Target_High": 3,
                 "Target_Low": 4, "Ion_Grid": 5}
        return sorted(names, key=lambda n: (order.get(n, 10), n))

    def input_name(self, input_index: int) -> str:
        """File name of the store's input ``input_index``."""
        inputs = self.meta.get("inputs", [])
        if 0 <= input_index < len(inputs):
            return str(inputs[input_index])
        return "?"


def lines_frame(event: xr.Dataset, count: int) -> pd.DataFrame:
    """Line table of one event from its (peak_slot) or (peak) variables.

    Parameters
    ----------
    event : xarray.Dataset
        One event (no ``epoch`` dimension) with ``peak_*`` on ``peak_slot``, or an
        ``analyze`` result for one event with ``peak_*`` on ``peak``.
    count : int
        Lines to take (``peak_count``).
    """
    columns: dict[str, Any] = {}
    for name in LINE_COLUMNS:
        variable = event.get(f"peak_{name}")
        if variable is None:
            continue
        values = np.asarray(variable.values)[:count]
        if values.dtype.kind not in "biuf":
            values = as_text(values)
        columns[name] = values
    frame = pd.DataFrame(columns)
    if "species" in frame and "mass" in frame:
        frame.insert(0, "label", [
            f"{s}@{m:.1f}" if s and np.isfinite(m) else f"{c:.3f} µs"
            for s, m, c in zip(frame["species"], frame["mass"], frame["center"], strict=True)
        ])
    return frame


def tt2000_to_utc(epoch: np.ndarray) -> np.ndarray:
    """UTC ``datetime64[ns]`` of TT2000 times (ns), leap seconds removed (cdflib)."""
    import cdflib

    epoch = np.atleast_1d(np.asarray(epoch, dtype=np.int64))
    if epoch.size == 0:
        return np.zeros(0, dtype="datetime64[ns]")
    return np.asarray(cdflib.cdfepoch.to_datetime(epoch), dtype="datetime64[ns]")
