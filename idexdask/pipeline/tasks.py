"""The tasks a campaign runs on the workers: process a pack, write it, or both.

A pack (consecutive units, :func:`~idexdask.pipeline.plan.pack_units`) is
processed (decoded and analysed: :func:`process_task`, no store access) and
its units' regions written (:func:`write_task`), either as two tasks (the
packs processed while a new store is laid out from the first one's schema,
:func:`schema_task`) or as one (:func:`pack_task`).  The client journals the
:class:`PackResult` each pack's last task returns.

Data errors (:class:`~idexdask.errors.IdexDaskError`) are deterministic and
come back as failed units; anything else raises, so the scheduler retries it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from idexdask.errors import IdexDaskError
from idexdask.pipeline.plan import Unit
from idexdask.pipeline.region_write import write_region
from idexdask.pipeline.store import StoreSchema
from idexdask.pipeline.units import ProcessedUnits, process_units
from idexdask.pipeline.writers import region_writer

__all__ = ["PackResult", "Processed", "StoreRegion", "held_schema", "pack_task", "process_task",
           "schema_task", "write_task"]


@dataclass(frozen=True)
class StoreRegion:
    """Where a run's packs are written: the store and its fixed row layout.

    Attributes
    ----------
    store : str
        The store directory.
    rows : int
        Events per chunk of the store.
    n_events : int
        Rows of the store.
    run_id : str
        The run (each worker keeps one region writer per run).
    """

    store: str
    rows: int
    n_events: int
    run_id: str


@dataclass
class Processed:
    """A processed pack (the result of :func:`process_task`, held by its worker)."""

    units: ProcessedUnits
    elapsed_s: float


@dataclass
class PackResult:
    """What became of a pack's units: what the client journals.

    Attributes
    ----------
    status : dict
        ``{uid: "done" | "failed"}``.
    reason : dict
        ``{uid: why}`` of the failed units.
    attrs : dict
        ``{uid: decode attributes}`` (:attr:`ProcessedUnits.attrs`).
    overrides_hash : dict
        ``{uid: digest of the override rows applied}``.
    worker : str
        ``host:pid`` of the worker ("" when the task itself failed).
    elapsed_s : float
        The pack's processing and writing time, s.
    """

    status: dict[str, str] = field(default_factory=dict)
    reason: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides_hash: dict[str, str] = field(default_factory=dict)
    worker: str = ""
    elapsed_s: float = 0.0

    @classmethod
    def failed(cls, pack: Sequence[Unit], reason: str) -> PackResult:
        """Every unit of ``pack`` failed for ``reason`` (the task raised)."""
        return cls(status={u.uid: "failed" for u in pack}, reason={u.uid: reason for u in pack})


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_task(
    pack: tuple[Unit, ...], config: Mapping[str, Any], overrides: xr.Dataset | None = None
) -> Processed:
    """Decode and analyse a pack's units (no store access).

    ``overrides``: the store's override rows in force, applied to their events.
    """
    start = time.perf_counter()
    processed = process_units(pack, config, overrides)
    return Processed(processed, time.perf_counter() - start)


def schema_task(processed: Processed) -> StoreSchema | str:
    """The store's schema (one event, no per-sample values) from a processed pack,
    or why there is none."""
    units = processed.units
    if units.dataset is None:
        return "; ".join(units.failures.values()) or "no events"
    return StoreSchema.of(units.dataset)


def held_schema(key: str, dask_worker: Any) -> StoreSchema | str:
    """:func:`schema_task` of the processed pack a worker holds under ``key``.

    Run with :meth:`distributed.Client.run`: in the worker's event loop, beside the
    task its thread runs, so that the schema leaves as soon as the pack is
    processed, not after the worker's next task.  The pack is only read.

    Parameters
    ----------
    key : str
        Key of the pack's :func:`process_task`.
    dask_worker : distributed.Worker
        The worker (given by ``Client.run``).

    Returns
    -------
    StoreSchema or str
        As :func:`schema_task`.

    Raises
    ------
    KeyError
        If the worker does not hold ``key``.
    """
    return schema_task(dask_worker.data[key])


def _contiguous(units: Sequence[Unit]) -> list[list[Unit]]:
    """Units in runs of contiguous store rows (a failed unit splits a pack)."""
    runs: list[list[Unit]] = []
    for unit in units:
        if runs and runs[-1][-1].region[1] == unit.region[0]:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    return runs


def write_task(processed: Processed, pack: tuple[Unit, ...], target: StoreRegion) -> PackResult:
    """Write the regions of a processed pack's units (the store exists).

    The processed units are written as runs of contiguous rows, with the
    worker's region writer of this run (:mod:`~idexdask.pipeline.writers`).
    """
    units = processed.units
    start = time.perf_counter() - processed.elapsed_s
    reasons = dict(units.failures)
    done: list[str] = []
    if units.dataset is not None:
        writer = region_writer(target.store, target.rows, target.n_events, target.run_id)
        offset = 0
        for run in _contiguous(units.done):
            count = sum(u.n_events for u in run)
            region = (run[0].region[0], run[-1].region[1])
            part = units.dataset.isel(epoch=slice(offset, offset + count))
            offset += count
            try:
                write_region(target.store, part, region, rows=target.rows,
                             n_events=target.n_events, writer=writer)
            except IdexDaskError as exc:
                reasons.update({u.uid: str(exc) for u in run})
            else:
                done.extend(u.uid for u in run)
    return PackResult(
        status={**{uid: "failed" for uid in reasons}, **{uid: "done" for uid in done}},
        reason=reasons, attrs=units.attrs, overrides_hash=units.overrides_hash,
        worker=worker_name(), elapsed_s=time.perf_counter() - start,
    )


def pack_task(
    pack: tuple[Unit, ...], config: Mapping[str, Any], target: StoreRegion,
    overrides: xr.Dataset | None = None,
) -> PackResult:
    """A pack's processing and region write in one task (once the store exists).

    Nothing but the small :class:`PackResult` leaves the task, so the worker
    frees the pack's data as soon as it is written, whatever the client is
    doing (a processed pack is ~80 MiB for 512 events).
    """
    return write_task(process_task(pack, config, overrides), pack, target)
