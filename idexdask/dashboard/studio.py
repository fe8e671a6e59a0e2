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

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from idexdask.analysis.overrides import make_overrides
from idexdask.dashboard.data import StoreData, lines_frame
from idexdask.errors import AnalysisError, StoreError
from idexdask.pipeline.overrides_store import (
    add_override_rows,
    event_override_rows,
    read_store_overrides,
    undo_override,
)
from idexdask.workflow import analyze

__all__ = ["RefitResult", "StudioSession", "decoded_event", "warm_refit"]

logger = logging.getLogger(__name__)


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

    def set_shape(self, center_us: float, shape: str) -> dict:
        """Refit the line at ``center_us`` with ``shape`` (:mod:`idexdask.analysis.lineshapes`)."""
        return self._push({"action": "shape", "center_us": float(center_us), "shape": shape})

    def assign_species(self, center_us: float, species: str) -> dict:
        """Assign ``species`` (an ion label, or ``"none"``) to the line at ``center_us``."""
        return self._push({"action": "species", "center_us": float(center_us),
                           "species": species.strip()})

    def calibrate(self) -> dict:
        """Calibrate the event from its lines with a hand-assigned species."""
        return self._push({"action": "calibrate"})

    def undo(self) -> dict | None:
        """Drop the last pending edit."""
        return self.pending.pop() if self.pending else None

    def reset(self) -> None:
        """Forget every pending edit and the refit."""
        self.pending.clear()
        self.last = None

    def _push(self, record: dict) -> dict:
        record = {"epoch": self.epoch, "target": "tof", **record}
        try:
            make_overrides([record])  # validated now, not at refit time
        except AnalysisError as exc:
            raise StoreError(str(exc)) from None
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
        """The store's saved override rows of this event that are in force."""
        return event_override_rows(read_store_overrides(self.data.path), self.epoch)

    def table(self) -> xr.Dataset:
        """Saved rows of this event plus the pending ones."""
        return make_overrides([*self.saved_records(), *self.pending])

    def undo_saved(self, row_id: str, *, read_only: bool) -> dict[str, Any]:
        """Undo a saved row (it stays in the table's history, marked undone)."""
        if read_only:
            raise StoreError("this server is read-only (--read-only): edits cannot be undone")
        return undo_override(self.data.path, row_id, purpose=origin_purpose(self.index))

    # ------------------------------------------------------------------ refit, save

    def refit(self) -> RefitResult:
        """``analyze`` of this one event with the saved and pending edits."""
        row = decoded_event(self.data.event(self.index, full=True).dataset)
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
        """Append the pending edits to the store's override table; rows written.

        The write takes the store's lock (a running ``submit`` holds it: the save
        is then refused with its message and the edits stay pending).

        Raises
        ------
        StoreError
            Read-only server, nothing to save, the store locked, a row refused.
        """
        if read_only:
            raise StoreError("this server is read-only (--read-only): edits cannot be saved")
        if not self.pending:
            raise StoreError("nothing to save: no pending edit")
        ids = add_override_rows(self.data.path, self.pending, origin="dashboard",
                                purpose=origin_purpose(self.index))
        self.pending.clear()
        return len(ids)


def origin_purpose(index: int) -> str:
    """What the dashboard says it is doing when it takes the store's lock."""
    return f"dashboard: edits of event {index}"


def warm_refit(data: StoreData, config: dict) -> None:
    """Refit one done event once, so that a session's first refit is not the compile's.

    Run in a background thread when the server starts: ``analyze``'s first call
    in a process loads and compiles its kernels (~1 s), later ones take tens of ms.
    """
    done = np.flatnonzero(data.done)
    if not done.size:
        return
    try:
        StudioSession(data, int(done[0]), config).refit()
    except Exception:  # a warm-up must never stop the server; the session will report it
        logger.exception("warm-up refit failed")
