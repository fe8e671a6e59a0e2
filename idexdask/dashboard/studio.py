"""The lines studio's edit session: override rows, refit through ``analyze``, save.

A :class:`StudioSession` holds one event's pending edits as override records
(the rows of :mod:`idexdask.analysis.overrides`).  :meth:`StudioSession.refit`
runs ``analyze`` on that one event with the store's saved overrides plus the
pending ones; :meth:`StudioSession.save` writes them into the store's override
table (which ``idexdask submit`` reapplies), taking the store's lock.  The
dashboard computes no science itself: refits are ``analyze``, the manual
calibration is :meth:`TOFMassCal.fit` of the lines the user assigned.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from idexdask.analysis.analyze import analyze
from idexdask.analysis.overrides import ACTIONS, make_overrides
from idexdask.dashboard.data import StoreData, lines_frame
from idexdask.errors import StoreError

__all__ = ["RefitResult", "StudioSession", "decoded_event", "overrides_backend"]

logger = logging.getLogger(__name__)


def overrides_backend():
    """The store override-table module (``idexdask.pipeline.overrides_store``) or None."""
    try:
        return importlib.import_module("idexdask.pipeline.overrides_store")
    except ImportError:
        return None


def decoded_event(row: xr.Dataset) -> xr.Dataset:
    """The event's decoded variables without the stored per-line products.

    ``analyze`` replaces every product it computes; the stored ``peak_slot``
    layout is dropped so that the refit's ragged ``peak`` lines stand alone.
    """
    keep = [name for name, variable in row.variables.items()
            if "peak_slot" not in variable.dims
            and name not in ("peak_count", "peak_overflow")]
    return row[keep]


@dataclass
class RefitResult:
    """One refit of the studio's event.

    Attributes
    ----------
    dataset : xarray.Dataset
        ``analyze`` output for the event (ragged ``peak`` dimension).
    lines : pandas.DataFrame
        Its line table.
    elapsed_s : float
        Wall time of the ``analyze`` call, s.
    """

    dataset: xr.Dataset
    lines: pd.DataFrame
    elapsed_s: float


@dataclass
class StudioSession:
    """Pending edits of one event (override records) and their refit.

    Parameters
    ----------
    data : StoreData
        The store.
    index : int
        Row of the event.
    config : dict
        Configuration of ``analyze``.
    """

    data: StoreData
    index: int
    config: dict
    pending: list[dict[str, Any]] = field(default_factory=list)
    last: RefitResult | None = None

    @property
    def epoch(self) -> int:
        """TT2000 epoch of the event (the key of its override rows)."""
        return int(self.data.event(self.index).event["epoch"].values)

    # ------------------------------------------------------------------ edits

    def add_line(self, start_us: float, stop_us: float, center_us: float | None = None) -> dict:
        """A line fitted in ``[start_us, stop_us]`` (centre: the span's maximum)."""
        if not (math.isfinite(start_us) and math.isfinite(stop_us)) or stop_us <= start_us:
            raise StoreError(f"add a line: the span [{start_us}, {stop_us}] µs is empty")
        if center_us is None:
            center_us = self._span_maximum(start_us, stop_us)
        return self._push({"action": "add", "center_us": center_us,
                           "window_start_us": start_us, "window_stop_us": stop_us})

    def remove_line(self, center_us: float) -> dict:
        """Drop the detected line at ``center_us``."""
        return self._push({"action": "remove", "center_us": float(center_us)})

    def edit_window(self, center_us: float, start_us: float, stop_us: float) -> dict:
        """Refit the line at ``center_us`` in ``[start_us, stop_us]``."""
        if not stop_us > start_us:
            raise StoreError(f"fit window: stop {stop_us} must be above start {start_us} µs")
        return self._push({"action": "edit", "center_us": float(center_us),
                           "window_start_us": float(start_us), "window_stop_us": float(stop_us)})

    def supports(self, action: str) -> bool:
        """Whether the override table knows ``action`` (shape, species: newer tables)."""
        return action in ACTIONS

    def extra_edit(self, action: str, **fields: Any) -> dict:
        """An edit of a kind the override table may add (line shape, species, calibration)."""
        if not self.supports(action):
            raise StoreError(f"the override table of this version has no {action!r} edit")
        return self._push({"action": action, **fields})

    def undo(self) -> dict | None:
        """Drop the last pending edit."""
        return self.pending.pop() if self.pending else None

    def reset(self) -> None:
        """Forget every pending edit and the refit."""
        self.pending.clear()
        self.last = None

    def _push(self, record: dict) -> dict:
        record = {"epoch": self.epoch, "target": "tof", **record}
        make_overrides([record])  # validated now, not at refit time
        self.pending.append(record)
        return record

    def _span_maximum(self, start_us: float, stop_us: float) -> float:
        event = self.data.event(self.index).event
        name = "tof_combined" if "tof_combined" in event else "TOF_High"
        time_name = "time_high_sample_rate"
        t = np.asarray(event[time_name].values, dtype=float)
        y = np.asarray(event[name].values, dtype=float)
        inside = (t >= start_us) & (t <= stop_us) & np.isfinite(y)
        if not inside.any():
            raise StoreError(f"no sample of the spectrum in [{start_us}, {stop_us}] µs")
        return float(t[inside][np.argmax(y[inside])])

    # ------------------------------------------------------------------ table

    def saved_records(self) -> list[dict[str, Any]]:
        """The store's saved override rows of this event."""
        backend = overrides_backend()
        if backend is None:
            return []
        table = backend.read_store_overrides(self.data.path)
        if table is None or table.sizes.get("override", 0) == 0:
            return []
        return [r for r in _records(table) if int(r["epoch"]) == self.epoch]

    def table(self) -> xr.Dataset:
        """Saved rows of this event plus the pending ones."""
        return make_overrides([*self.saved_records(), *self.pending])

    # ------------------------------------------------------------------ refit, save

    def refit(self) -> RefitResult:
        """``analyze`` of this one event with the saved and pending edits."""
        row = decoded_event(self.data.event(self.index).dataset)
        started = time.perf_counter()
        result = analyze(row, self.config, overrides=self.table())
        elapsed = time.perf_counter() - started
        event = result.isel(epoch=0) if "epoch" in result.dims else result
        count = int(result.sizes.get("peak", 0))
        lines = lines_frame(event, count)
        self.last = RefitResult(dataset=result, lines=lines, elapsed_s=elapsed)
        logger.info("refit of event %d with %d edits: %d lines in %.3f s", self.index,
                    len(self.pending), count, elapsed)
        return self.last

    def save(self, *, read_only: bool) -> int:
        """Write the pending edits into the store's override table; rows written.

        Raises
        ------
        StoreError
            Read-only server, no override table in this version, or nothing to save.
        """
        if read_only:
            raise StoreError("this server is read-only (--read-only): edits cannot be saved")
        backend = overrides_backend()
        if backend is None:
            raise StoreError("this version of idexdask has no store override table "
                             "(idexdask.pipeline.overrides_store)")
        if not self.pending:
            raise StoreError("nothing to save: no pending edit")
        current = backend.read_store_overrides(self.data.path)
        rows = _records(current) if current is not None else []
        rows.extend(self.pending)
        backend.write_store_overrides(self.data.path, make_overrides(rows),
                                      purpose=f"dashboard: edits of event {self.index}")
        saved = len(self.pending)
        self.pending.clear()
        return saved


def _records(table: xr.Dataset) -> list[dict[str, Any]]:
    """Rows of an override table as records (NaN floats as None)."""
    records = []
    for i in range(table.sizes.get("override", 0)):
        record: dict[str, Any] = {}
        for name, variable in table.data_vars.items():
            if variable.dims != ("override",):
                continue
            value = variable.values[i]
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[str(name)] = value
        records.append(record)
    return records
