"""The store lock: one writer of a campaign store at a time.

A run that writes a store (``idexdask submit``, an override edit) holds
``<store>/_pipeline/lock.json`` while it works.  The file is created atomically
(``O_CREAT | O_EXCL``: of two runs racing for it exactly one succeeds) and holds,
as JSON, who holds it: ``host``, ``pid``, ``started`` (UTC ISO time),
``purpose``, plus the holder's process start time (``proc_start``, Linux clock
ticks since boot) so that a recycled pid is not mistaken for the holder.

A lock whose holder is gone is *stale*: on the same host, a pid that no longer
runs (or now belongs to another process) means the run died (a ``SIGKILL``, a
crash, a lost terminal) and the lock is taken over, with a warning in the log.
A lock held from another host cannot be checked from here: it is refused, and
the message says which file to delete once that run is known to be gone.

The lock lives in ``_pipeline/`` (an empty Zarr group that readers ignore) so
that the store stays a plain Zarr store; ``--overwrite`` clears everything but
the lock file.

Examples
--------
>>> from idexdask.pipeline.lock import store_lock
>>> with store_lock("campaign.zarr", purpose="idexdask submit"):  # doctest: +SKIP
...     ...  # write the store
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from idexdask.errors import StoreError, StoreLockedError
from idexdask.pipeline.manifest import pipeline_dir

__all__ = ["LOCK_NAME", "LockHolder", "lock_path", "read_lock", "store_lock"]

logger = logging.getLogger(__name__)

LOCK_NAME = "lock.json"
# A lock file found empty or cut short is being written by its creator (one
# os.write after the O_EXCL create); only when it stays so longer than this (s) was
# its creator killed in between.
_UNWRITTEN_GRACE_S = 10.0
_RETRY_INTERVAL_S = 0.05


@dataclass(frozen=True)
class LockHolder:
    """Who holds a store lock (the content of the lock file).

    Attributes
    ----------
    host : str
        Host name of the holder.
    pid : int
        Process id of the holder on ``host``.
    started : str
        UTC time the lock was taken (ISO 8601, seconds).
    purpose : str
        What the holder is doing (``idexdask submit``, ...).
    proc_start : int or None
        The holder process's start time (clock ticks since boot, Linux), to tell
        the holder from a later process that got the same pid; None elsewhere.
    """

    host: str
    pid: int
    started: str
    purpose: str
    proc_start: int | None = None

    def describe(self) -> str:
        """``host HOST, pid PID, started TIME (PURPOSE)`` for messages."""
        return (f"host {self.host}, pid {self.pid}, started {self.started} "
                f"({self.purpose})")


def lock_path(store: str | os.PathLike) -> Path:
    """Path of the lock file of ``store``: ``<store>/_pipeline/lock.json``."""
    return pipeline_dir(store) / LOCK_NAME


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (None if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after it
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 of proc(5), counted from field 3
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (also when another user owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder_gone(holder: LockHolder) -> bool:
    """Whether the holder process is known to have ended (same host only)."""
    if holder.host != socket.gethostname():
        return False
    if not pid_alive(holder.pid):
        return True
    if holder.proc_start is not None:
        now = _proc_start(holder.pid)
        return now is not None and now != holder.proc_start  # pid reused
    return False


def read_lock(store: str | os.PathLike) -> LockHolder | None:
    """Who holds the lock of ``store`` (None when it is free or being written).

    Raises
    ------
    StoreError
        If the lock file exists but cannot be read.
    """
    path = lock_path(store)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the store lock {path}: {exc}") from exc
    return _parse(text)


def _parse(text: str) -> LockHolder | None:
    try:
        data = json.loads(text)
        return LockHolder(host=str(data["host"]), pid=int(data["pid"]),
                          started=str(data["started"]), purpose=str(data["purpose"]),
                          proc_start=data.get("proc_start"))
    except (ValueError, KeyError, TypeError):
        return None


def _create(path: Path, holder: LockHolder) -> bool:
    """Create the lock file holding ``holder``; False if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(asdict(holder)).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _break_stale(path: Path, seen: str) -> bool:
    """Remove the lock file if it still holds ``seen``; whether it was removed.

    The file is renamed to a name of ours first (atomic: of two runs breaking the
    same stale lock one gets it, the other a FileNotFoundError), then checked: if
    a new holder's lock was caught instead, it is put back with ``os.link``
    (which never replaces a file).
    """
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if aside.read_text(encoding="utf-8") != seen:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            return False
        return True
    finally:
        aside.unlink(missing_ok=True)


@contextlib.contextmanager
def store_lock(store: str | os.PathLike, *, purpose: str) -> Iterator[LockHolder]:
    """Hold the lock of ``store`` for the duration of the ``with`` block.

    The store directory (and its ``_pipeline/``) is created if missing; when the
    lock is released, directories this call created are removed again if they
    hold nothing else.  Not re-entrant: a process that holds the lock and asks
    again is refused like any other run.

    Parameters
    ----------
    store : path
        Campaign store directory.
    purpose : str
        What the holder does, shown to a refused run (``idexdask submit``).

    Yields
    ------
    LockHolder
        This run's entry in the lock file.

    Raises
    ------
    StoreLockedError
        If another live run holds the lock (the message names it: host, pid,
        start time, purpose).
    StoreError
        If the lock file cannot be created (store not writable).
    """
    store = Path(store).absolute()
    created = [p for p in (store, pipeline_dir(store)) if not p.exists()]
    try:
        pipeline_dir(store, create=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store lock in {store}: {exc}") from exc
    path = lock_path(store)
    me = LockHolder(host=socket.gethostname(), pid=os.getpid(),
                    started=datetime.now(UTC).isoformat(timespec="seconds"),
                    purpose=purpose, proc_start=_proc_start(os.getpid()))
    try:
        _acquire(path, me, store)
    except BaseException:
        _remove_created(created)
        raise
    try:
        yield me
    finally:
        try:
            if path.read_text(encoding="utf-8") == json.dumps(asdict(me)):
                path.unlink()
            else:  # someone judged us gone and took over: theirs now
                logger.warning("store lock %s no longer holds this run; left alone", path)
        except FileNotFoundError:
            logger.warning("store lock %s was removed while this run held it", path)
        _remove_created(created)


def _acquire(path: Path, me: LockHolder, store: Path) -> None:
    first_unreadable: float | None = None
    while True:
        try:
            if _create(path, me):
                return
        except OSError as exc:
            raise StoreError(f"cannot create the store lock {path}: {exc}") from exc
        try:
            seen = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # released meanwhile: try again
        holder = _parse(seen)
        if holder is None:  # created, content not yet written (or its writer died)
            now = time.monotonic()
            first_unreadable = first_unreadable or now
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < _UNWRITTEN_GRACE_S or now - first_unreadable < 1.0:
                time.sleep(_RETRY_INTERVAL_S)
                continue
            if _break_stale(path, seen):
                logger.warning("store lock %s: took over an unreadable lock file "
                               "(%.0f s old, its writer is gone)", path, age)
            continue
        if holder.host == me.host and holder.pid == me.pid:
            raise StoreLockedError(f"store {store} is already locked by this process "
                                   f"({holder.describe()})")
        if _holder_gone(holder):
            if _break_stale(path, seen):
                logger.warning("store lock %s: took over the stale lock of a run that is "
                               "gone (%s)", path, holder.describe())
            continue
        raise StoreLockedError(
            f"store {store} is being written by another run: {holder.describe()}; "
            f"wait for it to finish or use another store (if that run is gone, "
            f"delete {path})"
        )


def _remove_created(created: list[Path]) -> None:
    """Remove the directories the lock created, if they hold nothing of a run."""
    for directory in reversed(created):  # _pipeline/ first, then the store
        with contextlib.suppress(OSError):
            marker = directory / "zarr.json"
            if directory.name == "_pipeline" and [p.name for p in directory.iterdir()] == [
                "zarr.json"
            ]:
                marker.unlink()
            directory.rmdir()  # fails (suppressed) unless empty
