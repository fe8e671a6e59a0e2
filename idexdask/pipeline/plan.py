"""Planning: inputs -> units of work, each with an exact event count.

The store is laid out before any unit runs (every task writes its own region of a
store of the full size), so the planner must know how many events each unit will
return.  It finds that out cheaply:

* **L0 files** are read once, their packets indexed
  (:func:`idexdask.packets.framing.index_packets`) and the event-header packets
  (science TYPE 1) counted, deduplicated exactly as the decoder does (one event
  per distinct time + event-number key).  A file holding more than
  ``pipeline.batch_events`` events is cut at header packets into byte ranges of
  whole events: a cut is only made where no event is split (no data packet after
  the cut attaches to a header before it, and no event key appears on both
  sides), so decoding each byte range with ``read_l0(bytes)`` gives exactly the
  events of the whole file.
* **LeCroy captures** (``.trc``) are grouped by impact number; every impact is one
  event and one unit.

Each unit carries a digest of its input bytes, so that a re-run can tell whether
the unit done before is still the same work.

Units are what the manifest journals; tasks are *packs* of consecutive units
(:func:`pack_units`): the small units of short files (a day of telemetry may
hold a dozen events; a lab impact is one) are processed together, so that every
task amortises the per-call costs of decoding, analysis and the region write
over about ``batch_events`` events, and packs end on chunk boundaries of the
store wherever the units allow it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import xxhash

from idexdask.errors import IdexDaskError
from idexdask.packets.fields import extract_fields
from idexdask.packets.framing import PacketIndex, index_packets
from idexdask.packets.layout import (
    EVENT_HEADER_BYTES,
    EVENT_HEADER_FIELDS,
    MIN_SCIENCE_PACKET_BYTES,
    PAYLOAD_OFFSET,
    SCIENCE_APID,
    SCIENCE_HEADER_FIELDS,
    TRAILER_BYTES,
)
from idexdask.packets.reader import load_l0_buffer

__all__ = [
    "Plan", "PlanFailure", "Unit", "batch_sizes", "digest_bytes", "pack_units", "plan_inputs",
    "plan_l0_file",
]

logger = logging.getLogger(__name__)

L0_SUFFIXES = (".pkts", ".bin", "")
_KEY_FIELDS = ("idx__txhdrtimesec1", "idx__txhdrtimesec2", "idx__txhdrtimesubs", "idx__txhdrevtnum")
_SCIENCE_FIELDS = tuple(
    f for f in SCIENCE_HEADER_FIELDS if f.name in ("idx__sci0type", "idx__sci0evtnum")
)
_HEADER_KEY_FIELDS = tuple(f for f in EVENT_HEADER_FIELDS if f.name in _KEY_FIELDS)


def digest_bytes(*chunks: bytes | memoryview | np.ndarray) -> str:
    """XXH3-128 hex digest of the concatenated ``chunks``.

    The digest tells whether a unit's input is still the bytes planned (and
    journalled): a change-detection checksum, not a defence against crafted
    collisions.  XXH3 hashes ~16 GB/s on one core against BLAKE2b's ~0.8, which
    took 70 % of the planner's CPU and ~0.03 ms per event again in the worker,
    which checks the bytes it reads against the plan.
    """
    hasher = xxhash.xxh3_128()
    for chunk in chunks:
        hasher.update(memoryview(chunk).cast("B") if not isinstance(chunk, bytes) else chunk)
    return hasher.hexdigest()


@dataclass(frozen=True)
class Unit:
    """One task's worth of input: a byte range of an L0 file, or one lab impact.

    Attributes
    ----------
    uid : str
        Stable identifier (input path and byte range, or directory and impact).
    kind : {"l0", "trc"}
        Input type.
    path : str
        The L0 file, or the directory of the ``.trc`` captures (absolute).
    input_index : int
        Position of the input file (L0) or capture directory (TRC) among the
        run's inputs (``inputs`` attribute of the store).
    n_events : int
        Events the unit decodes to (exact).
    input_hash : str
        XXH3-128 digest of the unit's input bytes (:func:`digest_bytes`).
    byte_range : tuple of int, optional
        ``[start, stop)`` byte offsets in the L0 file.
    files : tuple of str
        The ``.trc`` files of the impact (TRC units).
    impact : int
        Impact number (TRC units), -1 otherwise.
    region : tuple of int
        ``[start, stop)`` rows of the store this unit writes (set by the planner).
    """

    uid: str
    kind: str
    path: str
    input_index: int
    n_events: int
    input_hash: str
    byte_range: tuple[int, int] | None = None
    files: tuple[str, ...] = ()
    impact: int = -1
    region: tuple[int, int] = (0, 0)

    def read_input(self) -> bytes:
        """The unit's L0 bytes (its byte range of the file).

        Raises
        ------
        IdexDaskError
            If the file cannot be read or no longer holds the planned bytes.
        """
        if self.byte_range is None:
            raise IdexDaskError(f"{self.uid}: not an L0 unit")
        start, stop = self.byte_range
        try:
            with open(self.path, "rb") as stream:
                stream.seek(start)
                data = stream.read(stop - start)
        except OSError as exc:
            raise IdexDaskError(f"cannot read {self.path}: {exc}") from exc
        if len(data) != stop - start or digest_bytes(data) != self.input_hash:
            raise IdexDaskError(
                f"{self.path} changed since the run was planned (bytes {start}-{stop}); "
                "submit again to re-plan"
            )
        return data


@dataclass(frozen=True)
class PlanFailure:
    """An input that could not even be planned (unreadable, no events)."""

    path: str
    input_index: int
    reason: str

    @property
    def uid(self) -> str:
        return f"{self.path}@plan"


@dataclass
class Plan:
    """The units of a run, in store order, and the inputs that failed planning.

    ``empty`` lists valid inputs without science events (housekeeping files).
    """

    inputs: list[str]
    units: list[Unit] = field(default_factory=list)
    failures: list[PlanFailure] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        """Total events of all units (rows of the store)."""
        return self.units[-1].region[1] if self.units else 0

    @property
    def kind(self) -> str:
        kinds = {u.kind for u in self.units}
        return kinds.pop() if len(kinds) == 1 else "l0"


# --------------------------------------------------------------------------- L0


def _segment_events(
    buffer: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, PacketIndex]:
    """Valid cut points of an L0 buffer and the events before each.

    Returns
    -------
    cut_bytes : numpy.ndarray of int64
        Byte offsets of the header packets at which the file may be cut.
    events_before : numpy.ndarray of int64
        Distinct events whose header lies before each cut.
    total : numpy.ndarray
        0-d array: distinct events of the whole buffer.
    index : PacketIndex
        The packets found.
    """
    index = index_packets(buffer[:size])
    science = (index.apid == SCIENCE_APID) & (index.length >= MIN_SCIENCE_PACKET_BYTES)
    starts = index.start[science]
    lengths = index.length[science]
    n = starts.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.asarray(0), index
    fields = extract_fields(buffer, starts, _SCIENCE_FIELDS)
    types = fields["idx__sci0type"].astype(np.int64)
    evtnums = fields["idx__sci0evtnum"].astype(np.int64)
    is_type1 = types == 1
    header_ok = lengths >= PAYLOAD_OFFSET + EVENT_HEADER_BYTES + TRAILER_BYTES
    is_header = is_type1 & header_ok
    position = np.arange(n, dtype=np.int64)

    # Event keys of the headers; the first occurrence of each key is an event.
    header_pos = np.flatnonzero(is_header)
    key_fields = extract_fields(buffer, starts[header_pos], _HEADER_KEY_FIELDS)
    keys = (
        (key_fields["idx__txhdrtimesec1"].astype(np.uint64) << np.uint64(48))
        | (key_fields["idx__txhdrtimesec2"].astype(np.uint64) << np.uint64(32))
        | (key_fields["idx__txhdrtimesubs"].astype(np.uint64) << np.uint64(16))
        | key_fields["idx__txhdrevtnum"].astype(np.uint64)
    )
    order = np.lexsort((header_pos, keys))
    sorted_keys = keys[order]
    first_of_key = np.ones(sorted_keys.size, dtype=bool)
    first_of_key[1:] = sorted_keys[1:] != sorted_keys[:-1]
    last_of_key = np.ones(sorted_keys.size, dtype=bool)
    last_of_key[:-1] = first_of_key[1:]
    first_pos = header_pos[order][first_of_key]
    last_pos = header_pos[order][last_of_key]
    new_event = np.zeros(n, dtype=np.int64)
    new_event[first_pos] = 1

    # Spans that a cut must not fall into: (first, last] copy of each key, and
    # (header, data packet] for every data packet attached to a header.
    forbid = np.zeros(n + 1, dtype=np.int64)
    np.add.at(forbid, first_pos + 1, 1)
    np.add.at(forbid, last_pos + 1, -1)
    # Attachment, as the decoder does it: latest TYPE-1 packet with the same EVTNUM.
    by_evt = np.lexsort((position, evtnums))
    group = np.cumsum(np.r_[True, evtnums[by_evt][1:] != evtnums[by_evt][:-1]]) - 1
    base = group * (n + 2)
    latest = np.maximum.accumulate(np.where(is_type1[by_evt], position[by_evt] + base, base - 1))
    attached = np.empty(n, dtype=np.int64)
    attached[by_evt] = latest - base
    data = ~is_type1 & (attached >= 0)
    np.add.at(forbid, attached[data] + 1, 1)
    np.add.at(forbid, position[data] + 1, -1)
    blocked = np.cumsum(forbid)[:n] > 0

    cut = is_type1 & ~blocked
    cut[0] = False  # the first segment always starts at byte 0
    cumulative = np.cumsum(new_event)
    cut_positions = np.flatnonzero(cut)
    events_before = cumulative[cut_positions] - new_event[cut_positions]
    return starts[cut_positions], events_before, np.asarray(int(cumulative[-1])), index


def _next_cut(done: int, batch_events: int, first_row: int, align: int | None) -> int:
    """Events of the file before which the next unit should end."""
    want = done + max(1, int(batch_events))
    if not align or align <= 1 or align > batch_events:
        return want  # units smaller than a chunk share chunks whatever the cuts
    # the last chunk boundary at or before the target: a file starting inside a
    # chunk gets a short first unit up to the next boundary, which
    # pack_units joins to the previous file's last unit (one task, one chunk)
    aligned = ((first_row + want) // align) * align - first_row
    while aligned <= done:
        aligned += align
    return aligned


def plan_l0_file(
    path: str | Path,
    batch_events: int,
    input_index: int = 0,
    *,
    first_row: int = 0,
    align: int | None = None,
) -> list[Unit]:
    """Cut one L0 file into units of about ``batch_events`` whole events.

    Parameters
    ----------
    path : path
        L0 packet file.
    batch_events : int
        Target events per unit (a unit may hold more where no cut is possible).
    input_index : int
        Position of the file among the run's inputs.
    first_row : int
        Store row of the file's first event (with ``align``).
    align : int, optional
        Cut where the store row is a multiple of ``align`` (the store's events
        per chunk): each unit then writes whole chunks, and only the chunks at
        the file's two ends are shared with the neighbouring files' units (a
        shared chunk is read, merged and rewritten under a lock, ~2x the cost).
        A unit ends at the last multiple of ``align`` at most ``batch_events``
        past its start (the next one if there is none), or at the first allowed
        cut after it: a file that starts inside a chunk has a short first unit
        up to the chunk's end, which :func:`pack_units` puts in one task with
        the previous file's last unit.  Not used where ``align > batch_events`` (units smaller
        than a chunk).

    Returns
    -------
    list of Unit
        Units in file order (``region`` not yet assigned); empty if the file holds
        valid packets but no science event (housekeeping only).

    Raises
    ------
    IdexDaskError
        If the file cannot be read or holds no CCSDS packet of IDEX at all
        (corrupt, or not telemetry).
    """
    path = Path(path).resolve()
    buffer, size, _ = load_l0_buffer(path)  # PacketError (an IdexDaskError) if unreadable
    cut_bytes, events_before, total, index = _segment_events(buffer, size)
    total = int(total)
    if total == 0:
        if size and (len(index) == 0 or index.skipped_bytes > size // 2):
            raise IdexDaskError(
                f"{path.name} is not IDEX L0 telemetry: {index.skipped_bytes} of {size} bytes "
                f"hold no valid packet ({len(index)} packets found)"
            )
        logger.info("%s: %d packets, no science events", path.name, len(index))
        return []
    # Greedy: cut at the first allowed header once a batch is full (at the
    # target row, with alignment).
    bounds = [0]
    counts = []
    done = 0
    target = _next_cut(done, batch_events, first_row, align)
    for offset, before in zip(cut_bytes.tolist(), events_before.tolist(), strict=True):
        if before >= target and total - before > 0:
            bounds.append(offset)
            counts.append(before - done)
            done = before
            target = _next_cut(done, batch_events, first_row, align)
    bounds.append(size)
    counts.append(total - done)
    units = []
    for start, stop, count in zip(bounds[:-1], bounds[1:], counts, strict=True):
        units.append(
            Unit(
                uid=f"{path}@{start}-{stop}",
                kind="l0",
                path=str(path),
                input_index=input_index,
                n_events=int(count),
                input_hash=digest_bytes(buffer[start:stop]),
                byte_range=(int(start), int(stop)),
            )
        )
    return units


def batch_sizes(
    plan: Plan, batch_events: int, chunk_events: int, lab_batch_events: int
) -> tuple[int, int]:
    """Events per task (pack) and per store chunk for ``plan``.

    Lab impacts hold ~80 flight events' worth of samples each: their packs and
    chunks are ``lab_batch_events`` (at most ``batch_events``), so that a
    campaign of a few hundred impacts is spread over the workers and a task's
    memory stays near that of a flight task.

    Returns
    -------
    (int, int)
        ``(batch_events, chunk_events)`` to use.
    """
    if plan.units and plan.kind == "trc":
        n = max(1, min(int(batch_events), int(lab_batch_events)))
        return n, n
    return int(batch_events), int(chunk_events)


def pack_units(
    units: Sequence[Unit], batch_events: int, align: int | None = None
) -> list[tuple[Unit, ...]]:
    """Group consecutive units into packs of about ``batch_events`` events, one task each.

    A pack holds units whose store regions follow each other without a gap (the
    units still to do of a resumed run may not), in plan order.  It is closed
    once it holds at least ``batch_events`` events and either ends on a
    multiple of ``align`` (a chunk boundary of the store: the pack then shares
    no chunk with the next one), or would exceed ``2 * batch_events`` with the
    next unit.  A unit larger than that is a pack of its own.

    Parameters
    ----------
    units : sequence of Unit
        Planned units (``region`` assigned), in store order.
    batch_events : int
        Target events per pack.
    align : int, optional
        Store events per chunk.

    Returns
    -------
    list of tuple of Unit
        Every unit exactly once, in the given order.
    """
    target = max(1, int(batch_events))
    align = int(align) if align and align > 1 else 1
    packs: list[tuple[Unit, ...]] = []
    current: list[Unit] = []
    events = 0
    for index, unit in enumerate(units):
        if current and unit.region[0] != current[-1].region[1]:
            packs.append(tuple(current))  # a gap (units done before): never bridged
            current, events = [], 0
        current.append(unit)
        events += unit.n_events
        following = units[index + 1] if index + 1 < len(units) else None
        if events < target:
            continue
        aligned = unit.region[1] % align == 0
        too_big = following is None or events + following.n_events > 2 * target
        if aligned or too_big:
            packs.append(tuple(current))
            current, events = [], 0
    if current:
        packs.append(tuple(current))
    return packs


# --------------------------------------------------------------------------- TRC


def _plan_trc_dir(directory: Path, input_index: int) -> list[Unit]:
    from idexdask.io.trc import parse_trc_filename

    groups: dict[int, list[Path]] = {}
    for file in sorted(directory.iterdir()):
        if file.suffix.lower() != ".trc" or not file.is_file():
            continue
        parsed = parse_trc_filename(file.name)
        if parsed is None:
            logger.warning("%s: not an impact capture name; skipped", file)
            continue
        groups.setdefault(parsed[1], []).append(file)
    settings = sorted(directory.glob("*settings*.txt"))
    settings_bytes = b"".join(p.read_bytes() for p in settings)
    units = []
    for impact, files in sorted(groups.items()):
        try:
            digest = digest_bytes(settings_bytes, *(f.read_bytes() for f in files))
        except OSError as exc:
            raise IdexDaskError(f"cannot read the captures of impact {impact}: {exc}") from exc
        units.append(
            Unit(
                uid=f"{directory}#impact{impact}",
                kind="trc",
                path=str(directory),
                input_index=input_index,
                n_events=1,
                input_hash=digest,
                files=tuple(str(f) for f in files),
                impact=impact,
            )
        )
    return units


# --------------------------------------------------------------------------- plan


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Inputs -> ``[(kind, path)]``: L0 files, and directories of L0 files or captures.

    A directory holding ``.trc`` files is one capture directory; any other
    directory contributes its ``.pkts``, ``.bin`` and extensionless files.

    Raises
    ------
    IdexDaskError
        If an input does not exist, nothing is found, or L0 files and captures
        are mixed (they have different products and cannot share a store).
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item).resolve()
        if path.is_dir():
            if any(p.suffix.lower() == ".trc" for p in path.iterdir()):
                found.append(("trc", path))
                continue
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in L0_SUFFIXES and not p.name.startswith(".")
            )
            found.extend(("l0", p) for p in files)
        elif path.is_file():
            found.append(("trc" if path.suffix.lower() == ".trc" else "l0", path))
        else:
            raise IdexDaskError(f"input not found: {item}")
    found = list(dict.fromkeys(found))
    if not found:
        raise IdexDaskError("no input files found")
    kinds = {kind for kind, _ in found}
    if len(kinds) > 1:
        raise IdexDaskError(
            "the inputs mix L0 telemetry and LeCroy captures; submit them to separate stores"
        )
    if kinds == {"trc"} and any(p.is_file() for _, p in found):
        raise IdexDaskError("give LeCroy captures as directories (one impact = several files)")
    return found


def plan_inputs(
    inputs: Sequence[str | Path], batch_events: int, *, align: int | None = None
) -> Plan:
    """Plan a run: every input's units with their exact event counts and store regions.

    Parameters
    ----------
    inputs : sequence of path
        L0 files, directories of L0 files, or directories of ``.trc`` captures.
    batch_events : int
        Target events per unit.
    align : int, optional
        Store events per chunk: L0 units are cut at chunk boundaries
        (:func:`plan_l0_file`).

    Returns
    -------
    Plan
        Units in store order (by input, then by position in the input), each with
        its ``region``; inputs that cannot be read or hold no event are listed in
        ``failures``.
    """
    expanded = expand_inputs(inputs)
    plan = Plan(inputs=[str(p) for _, p in expanded])
    row = 0
    for input_index, (kind, path) in enumerate(expanded):
        try:
            if kind == "trc":
                units = _plan_trc_dir(path, input_index)
            else:
                units = plan_l0_file(
                    path, batch_events, input_index, first_row=row, align=align
                )
        except IdexDaskError as exc:
            plan.failures.append(PlanFailure(str(path), input_index, str(exc)))
            continue
        if not units:
            if kind == "trc":
                plan.failures.append(
                    PlanFailure(str(path), input_index, f"no impact captures in {path}")
                )
            else:
                plan.empty.append(str(path))
            continue
        for unit in units:
            plan.units.append(replace(unit, region=(row, row + unit.n_events)))
            row += unit.n_events
    logger.info(
        "planned %d events in %d units from %d inputs (%d failed)",
        row, len(plan.units), len(expanded), len(plan.failures),
    )
    return plan
