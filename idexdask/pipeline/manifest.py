"""The run manifest: an append-only JSON-lines journal inside the store directory.

One writer only (the submitting client) appends the records of a task's units
after the task's region write has completed, and flushes them to disk
(``fsync``) before the next task is accounted for.  A unit not in the manifest
is redone on the next run, so an interrupted run resumes where it stopped and
nothing is counted as done that is not in the store.

Records (one JSON object per line, key ``record``):

``run_start``
    ``run_id``, ``time`` (UTC ISO), ``host``, ``pid``, ``total_events``,
    ``units``, ``todo_units``, ``todo_events``, ``config_hash``, ``dashboard``.
``unit``
    ``uid``, ``status`` (``done`` / ``failed``), ``input``, ``input_index``,
    ``region`` ([start, stop) rows), ``n_events``, ``input_hash``,
    ``config_hash``, ``reason`` (failures), ``elapsed_s``, ``worker``, ``run_id``,
    ``time``, ``attrs`` (the unit's decode attributes: packet counts, ...),
    ``task_units`` (units processed in the same task; ``elapsed_s`` is the
    task's time shared among them by events), ``overrides_hash`` (digest of
    the manual override rows applied to the unit's events, ``""`` for none).
``run_end``
    ``run_id``, ``time``, ``events_done``, ``units_done``, ``units_failed``,
    ``elapsed_s``.

A line cut short by a crash (the last one) is ignored when read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["MANIFEST_NAME", "PIPELINE_DIR", "Manifest", "UnitRecord", "pipeline_dir"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
PIPELINE_DIR = "_pipeline"
_GROUP_MARKER = '{"zarr_format": 3, "node_type": "group", "attributes": {}}'


def pipeline_dir(store: str | os.PathLike, create: bool = False) -> Path:
    """``<store>/_pipeline``: the manifest, the plan and the chunk locks.

    It is marked as an (empty) Zarr group so that Zarr readers of the store
    recognise it and leave it alone.
    """
    path = Path(store) / PIPELINE_DIR
    if create:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / "zarr.json"
        if not marker.exists():
            marker.write_text(_GROUP_MARKER)
    return path


@dataclass(frozen=True)
class UnitRecord:
    """A ``unit`` record of the manifest: what became of one unit in one run.

    The fields are those of the module docstring.  Whether the unit is done
    needs the first five (:meth:`is_done`); a record read back without the
    others gets their defaults.  ``elapsed_s``, ``task_units``, ``worker``,
    ``attrs`` and ``overrides_hash`` belong to units that ran (None, and left
    out of the JSON, for an input that failed planning).
    """

    uid: str
    status: str
    region: tuple[int, int]
    input_hash: str
    config_hash: str
    input: str = ""
    input_index: int = -1
    n_events: int = 0
    reason: str = ""
    run_id: str = ""
    time: str = ""
    elapsed_s: float | None = None
    task_units: int | None = None
    worker: str | None = None
    attrs: dict[str, Any] | None = None
    overrides_hash: str | None = None

    RECORD: ClassVar[str] = "unit"
    """The ``record`` key of these records."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the journal (``record: unit``, no null fields)."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        data["region"] = list(self.region)
        return {"record": self.RECORD, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UnitRecord:
        """A record read back (:meth:`Manifest.records`); unknown keys are ignored.

        Raises
        ------
        KeyError
            If ``data`` lacks a field every unit record has.
        """
        known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        known["region"] = tuple(int(r) for r in data["region"])
        return cls(**known)

    def is_done(self, input_hash: str, region: Sequence[int], config_hash: str) -> bool:
        """Whether this record says the unit with these digests and rows is in the store."""
        return (self.status == "done" and self.input_hash == input_hash
                and self.config_hash == config_hash and list(self.region) == list(region))


class Manifest:
    """Append-only journal of a store's runs (see the module docstring).

    Parameters
    ----------
    store : path
        The Zarr store directory; the journal is ``<store>/_pipeline/manifest.jsonl``.
    """

    def __init__(self, store: str | os.PathLike) -> None:
        self.store = Path(store)
        self.path = pipeline_dir(store) / MANIFEST_NAME

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record and force it to disk."""
        self.extend([record])

    def extend(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (one task's units) in one write, forced to disk once.

        A crash in between leaves at most the last line torn, which
        :meth:`records` skips: those units are redone, never counted twice.
        """
        if not records:
            return
        text = "".join(
            json.dumps(record, sort_keys=True, default=_jsonable) + "\n" for record in records
        )
        pipeline_dir(self.store, create=True)
        with open(self.path, "a+b") as stream:
            if stream.tell() > 0:  # a line torn by a crash stays alone on its line
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    text = "\n" + text
            stream.write(text.encode("utf-8"))
            stream.flush()
            os.fsync(stream.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, oldest first (a torn last line is skipped)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.endswith("\n"):
                    logger.warning("%s: incomplete line %d ignored", self.path, number)
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s: unreadable line %d ignored", self.path, number)

    def latest_units(self) -> dict[str, dict[str, Any]]:
        """The most recent ``unit`` record of every unit id."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.records():
            if record.get("record") == "unit":
                latest[record["uid"]] = record
        return latest

    def clear(self) -> None:
        """Remove the journal (the store is being recreated)."""
        self.path.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    """JSON fallback for NumPy scalars and other simple objects."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)
