"""The override table of a campaign store: the manual edits ``idexdask submit`` reapplies.

A person's corrections of the automatic analysis (a line added or removed, a fit
window, a line shape, a species assigned by hand, a calibration from assigned
lines) are rows of one table (:mod:`idexdask.analysis.overrides`), kept in the
store as ``<store>/_pipeline/overrides.json``: readable JSON, one record per
row, never rewritten in place (a new version replaces the old one atomically,
so a reader sees the old table or the new one, never half of it).

Every row has an ``id``, the time it was ``created``, its ``author`` and
``origin`` (``dashboard``, ``api``, ...) and an optional ``note``.  Undoing a
row marks it ``undone`` (with the time) instead of deleting it: the file is the
history of the edits, and an undone row can be redone.

``idexdask submit`` reads the table before it plans the work, applies to each
unit the rows of its events and records their digest
(:func:`idexdask.analysis.overrides.override_digest`) in the manifest beside
the input and configuration digests: a rerun reprocesses exactly the units
whose rows changed.

Writers take the store's lock (:func:`store_write_lock`, the lock of
:mod:`idexdask.pipeline.lock`), so two writers (two dashboards, a dashboard
and a running ``submit``) never interleave: a write while another holds it
raises :class:`~idexdask.errors.StoreLockedError`.  Readers take no lock.
See ``docs/pipeline.md``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.analysis.overrides import (
    NO_SPECIES,
    SCHEMA,
    active_overrides,
    empty_overrides,
    make_overrides,
    new_override_id,
    override_digest,
    override_records,
)
from idexdask.errors import AnalysisError, IdexDaskError, StoreError, StoreLockedError
from idexdask.pipeline.lock import read_lock, store_lock
from idexdask.pipeline.manifest import Manifest, pipeline_dir
from idexdask.pipeline.progress import done_units
from idexdask.pipeline.store import read_store_meta

__all__ = [
    "OVERRIDES_NAME",
    "SAME_PROCESS_WAIT_S",
    "add_override_rows",
    "event_override_rows",
    "overrides_in_force",
    "overrides_path",
    "read_overrides_file",
    "read_store_overrides",
    "redo_override",
    "store_write_lock",
    "undo_override",
    "unit_override_digests",
    "units_awaiting_overrides",
    "write_overrides_file",
    "write_store_overrides",
]

logger = logging.getLogger(__name__)

OVERRIDES_NAME = "overrides.json"
#: How long a writer waits for a save of the same process to finish, s.
SAME_PROCESS_WAIT_S = 5.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (a container without passwd entry)
        return ""


def overrides_path(store: str | os.PathLike) -> Path:
    """``<store>/_pipeline/overrides.json`` (it may not exist)."""
    return pipeline_dir(store) / OVERRIDES_NAME


def _campaign_store(store: str | os.PathLike) -> Path:
    """``store`` as a Path, checked to be a campaign store written by ``submit``.

    Raises
    ------
    StoreError
        If it is missing, not a Zarr store, or a Zarr store of another tool.
    """
    path = Path(store)
    meta = read_store_meta(path)  # StoreError for a foreign Zarr store or a file
    if meta is None:
        raise StoreError(f"{path} is not a campaign store (run `idexdask submit` first)")
    return path


@contextlib.contextmanager
def store_write_lock(store: str | os.PathLike, *, purpose: str) -> Iterator[None]:
    """The store's lock (:func:`idexdask.pipeline.lock.store_lock`) while the table is written.

    The one place the override writers take it.  ``idexdask submit`` holds the
    same lock for its whole run, so an edit saved during a run is refused (and
    can be saved once the run ends); the run applies the table it read at its
    start.  A lock held by this same process (another session of one dashboard
    server saving at the same moment) is waited for, up to
    :data:`SAME_PROCESS_WAIT_S`: a save takes milliseconds.

    Raises
    ------
    StoreLockedError
        If another run holds the lock (the message names it).
    """
    deadline = time.monotonic() + SAME_PROCESS_WAIT_S
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(store_lock(store, purpose=f"override table: {purpose}"))
                break
            except StoreLockedError:
                holder = read_lock(store)  # None: released meanwhile, try again
                other = holder is not None and (holder.host, holder.pid) != (
                    socket.gethostname(), os.getpid())
                if other or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield


def read_store_overrides(store: str | os.PathLike) -> xr.Dataset:
    """The store's override table, every row (undone ones included), in order.

    Parameters
    ----------
    store : path
        A campaign store written by ``idexdask submit``.

    Returns
    -------
    xarray.Dataset
        The table (:mod:`idexdask.analysis.overrides`); an empty table when the
        store has none.  Rows in force: ``table.undone == ""``
        (:func:`idexdask.analysis.overrides.active_overrides`).

    Raises
    ------
    StoreError
        If ``store`` is not a campaign store, or its table cannot be read or is
        invalid.
    """
    path = _campaign_store(store)
    return read_overrides_file(path)


def read_overrides_file(store: str | os.PathLike) -> xr.Dataset:
    """The table file of ``store``, every row (empty without a file), no store check.

    Raises
    ------
    StoreError
        If the file cannot be read or holds an invalid table.
    """
    file = overrides_path(store)
    if not file.exists():
        return empty_overrides()
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the override table {file}: {exc}") from exc
    records = doc.get("overrides") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise StoreError(f"{file} is not an override table (no 'overrides' list)")
    try:
        return make_overrides(records)
    except AnalysisError as exc:
        raise StoreError(f"{file}: {exc}") from exc


def _validated(table: xr.Dataset | Iterable[Mapping[str, Any]]) -> xr.Dataset:
    """``table`` checked as the analysis checks it, plus species known to the ion tables."""
    from idexdask.calibration.ions import ion_mass  # noqa: PLC0415

    records = override_records(table) if isinstance(table, xr.Dataset) else list(table)
    try:
        checked = make_overrides(records)
    except AnalysisError as exc:
        raise StoreError(f"invalid override table: {exc}") from exc
    for rid, action, species in zip(
        checked["override"].values, checked["action"].values, checked["species"].values,
        strict=True,
    ):
        if action == "species" and species != NO_SPECIES:
            try:
                ion_mass(str(species))
            except IdexDaskError as exc:
                raise StoreError(f"override {rid}: unknown species {species!r}: {exc}") from exc
    return checked


def write_overrides_file(store: str | os.PathLike, table: xr.Dataset) -> None:
    """Write the table file atomically (temporary file, ``fsync``, rename), without locking.

    For a caller that already holds the store's lock (``submit`` keeping the
    table across ``--overwrite``); everyone else calls :func:`write_store_overrides`.
    """
    directory = pipeline_dir(store, create=True)
    target = directory / OVERRIDES_NAME
    tmp = directory / f".{OVERRIDES_NAME}.{os.getpid()}.tmp"
    text = json.dumps({"schema": SCHEMA, "overrides": override_records(table)}, indent=1)
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, target)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def write_store_overrides(
    store: str | os.PathLike,
    table: xr.Dataset | Iterable[Mapping[str, Any]],
    *,
    purpose: str = "dashboard",
) -> None:
    """Replace the store's override table (validated, atomic, under the store lock).

    Parameters
    ----------
    store : path
        A campaign store.
    table : xarray.Dataset or records
        The whole new table (:func:`idexdask.analysis.overrides.make_overrides`
        records are accepted).  Prefer :func:`add_override_rows` and
        :func:`undo_override`, which keep the history.
    purpose : str
        Who writes, for the lock's message (``dashboard``, ``api``, ...).

    Raises
    ------
    StoreError
        Not a campaign store, or an invalid table.
    StoreLockedError
        If another run holds the store's lock.
    """
    path = _campaign_store(store)
    checked = _validated(table)
    with store_write_lock(path, purpose=purpose):
        write_overrides_file(path, checked)
    logger.info("%s: override table written (%d rows)", path, checked.sizes["override"])


def _store_epochs(store: Path) -> np.ndarray | None:
    """The store's event epochs (None when the store has no ``epoch`` array yet)."""
    import zarr  # noqa: PLC0415

    try:
        return np.asarray(zarr.open_array(str(store / "epoch"), mode="r")[:], dtype=np.int64)
    except Exception:  # noqa: BLE001 - zarr raises several types for a missing array
        return None


def add_override_rows(
    store: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    *,
    author: str | None = None,
    origin: str = "dashboard",
    purpose: str = "dashboard",
) -> list[str]:
    """Append rows to the store's override table; return their ids.

    Parameters
    ----------
    store : path
        A campaign store.
    rows : iterable of mapping
        Records with the table's columns (``epoch``, ``action``, ``target``,
        ``center_us``, ...; ``note`` optional).  ``id``, ``created``, ``author``
        and ``origin`` are filled in where missing; ``undone`` is cleared.
    author : str, optional
        Who makes the edits (default: the user running the process).
    origin : str
        What makes them (``dashboard``, ``api``, ``cli``).
    purpose : str
        For the lock's message.

    Returns
    -------
    list of str
        The new rows' ids, in order.

    Raises
    ------
    StoreError
        Not a campaign store, an invalid row, an epoch that is not an event of
        the store; ``StoreLockedError`` (a ``StoreError``) if another run holds
        the store's lock.
    """
    path = _campaign_store(store)
    now = _now()
    who = _user() if author is None else author
    new = []
    for row in rows:
        record = dict(row)
        record["id"] = str(record.get("id") or new_override_id())
        record["created"] = record.get("created") or now
        record["author"] = record.get("author") or who
        record["origin"] = record.get("origin") or origin
        record["undone"] = ""
        record["undone_by"] = ""
        new.append(record)
    if not new:
        return []
    epochs = _store_epochs(path)
    if epochs is not None:
        unknown = sorted({int(r["epoch"]) for r in new if r.get("epoch") is not None}
                         - set(epochs.tolist()))
        if unknown:
            raise StoreError(f"{path}: no event with epoch {unknown[0]} in the store")
    with store_write_lock(path, purpose=purpose):
        records = override_records(read_overrides_file(path)) + new
        checked = _validated(records)
        write_overrides_file(path, checked)
    logger.info("%s: %d override row(s) added", path, len(new))
    return [r["id"] for r in new]


def _set_undone(
    store: str | os.PathLike, row_id: str, undone: bool, author: str | None, purpose: str
) -> dict[str, Any]:
    path = _campaign_store(store)
    with store_write_lock(path, purpose=purpose):
        records = override_records(read_overrides_file(path))
        match = [r for r in records if r["id"] == row_id]
        if not match:
            raise StoreError(f"{path}: no override row {row_id!r}")
        row = match[0]
        if undone and row["undone"]:
            raise StoreError(f"override row {row_id!r} was already undone at {row['undone']}")
        if not undone and not row["undone"]:
            raise StoreError(f"override row {row_id!r} is in force: nothing to redo")
        row["undone"] = _now() if undone else ""
        row["undone_by"] = (_user() if author is None else author) if undone else ""
        write_overrides_file(path, make_overrides(records))
    return row


def undo_override(
    store: str | os.PathLike, row_id: str, *, author: str | None = None,
    purpose: str = "dashboard",
) -> dict[str, Any]:
    """Undo one row: it stays in the table, marked ``undone`` (UTC time), and is no longer applied.

    Returns
    -------
    dict
        The row as now stored.

    Raises
    ------
    StoreError
        Not a campaign store, no such row, a row already undone;
        ``StoreLockedError`` if another run holds the store's lock.
    """
    return _set_undone(store, row_id, True, author, purpose)


def redo_override(
    store: str | os.PathLike, row_id: str, *, author: str | None = None,
    purpose: str = "dashboard",
) -> dict[str, Any]:
    """Put an undone row back in force (the inverse of :func:`undo_override`).

    Raises
    ------
    StoreError
        Not a campaign store, no such row, a row in force; ``StoreLockedError``
        if another run holds the store's lock.
    """
    return _set_undone(store, row_id, False, author, purpose)


def event_override_rows(
    table: xr.Dataset, epoch: int, *, include_undone: bool = False
) -> list[dict[str, Any]]:
    """The rows of one event as records, in table order (for a studio's edit list).

    Parameters
    ----------
    table : xarray.Dataset
        From :func:`read_store_overrides`.
    epoch : int
        The event's epoch, ns TT2000.
    include_undone : bool
        Also the undone rows (the event's history).
    """
    records = override_records(table)
    return [r for r in records
            if r["epoch"] == int(epoch) and (include_undone or not r["undone"])]



def overrides_in_force(store: str | os.PathLike) -> xr.Dataset:
    """The rows ``submit`` applies: the table's rows not undone (empty without a table).

    Unlike :func:`read_store_overrides` it does not ask for a finished store:
    ``submit`` reads it before it creates or resumes one.

    Raises
    ------
    StoreError
        If the table exists but cannot be read or is invalid.
    """
    return active_overrides(read_overrides_file(Path(store)))


def unit_override_digests(
    store: str | os.PathLike, table: xr.Dataset, regions: Mapping[str, tuple[int, int]]
) -> dict[str, str]:
    """Per unit, the digest of the rows of the events stored in its region.

    Parameters
    ----------
    store : path
        The campaign store (its ``epoch`` array is read once).
    table : xarray.Dataset
        Rows in force (:func:`overrides_in_force`).
    regions : mapping of str to (int, int)
        ``uid -> [start, stop)`` rows of the store.

    Returns
    -------
    dict
        ``uid -> digest`` (:func:`idexdask.analysis.overrides.override_digest`),
        what ``process_units`` records for the same events.
    """
    if table.sizes.get("override", 0) == 0 or not regions:
        return dict.fromkeys(regions, "")
    epochs = _store_epochs(Path(store))
    if epochs is None:
        return dict.fromkeys(regions, "")
    return {uid: override_digest(table, epochs[start:stop])
            for uid, (start, stop) in regions.items()}


def units_awaiting_overrides(store: str | os.PathLike) -> list[dict[str, Any]]:
    """Done units whose override rows changed since they were processed.

    The next ``idexdask submit`` redoes exactly these; until then their stored
    products do not show the saved edits (a dashboard says so).

    Returns
    -------
    list of dict
        Planned units (``uid``, ``input``, ``region``, ...), in plan order.

    Raises
    ------
    StoreError
        If ``store`` is not a campaign store.
    """
    path = _campaign_store(store)
    _, units = done_units(path)
    latest = Manifest(path).latest_units()
    digests = unit_override_digests(path, overrides_in_force(path),
                                    {u["uid"]: tuple(u["region"]) for u in units})
    return [u for u in units
            if latest[u["uid"]].get("overrides_hash", "") != digests[u["uid"]]]
