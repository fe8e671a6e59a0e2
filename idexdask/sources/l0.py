"""IDEX L0 telemetry: files of CCSDS packets, decoded by :func:`~idexdask.packets.reader.read_l0`.

Planning reads a file once, indexes its packets
(:func:`idexdask.packets.framing.index_packets`) and counts the event-header
packets (science TYPE 1), deduplicated exactly as the decoder does (one event
per distinct time + event-number key).  A file holding more than
``batch_events`` events is cut at header packets into byte ranges of whole
events: a cut is only made where no event is split (no data packet after the
cut attaches to a header before it, and no event key appears on both sides), so
decoding each byte range with ``read_l0(bytes)`` gives exactly the events of the
whole file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import xarray as xr

from idexdask.errors import IdexDaskError
from idexdask.packets.fields import extract_fields
from idexdask.packets.framing import PacketIndex, index_packets
from idexdask.packets.layout import (
    CHANNELS,
    EVENT_HEADER_BYTES,
    EVENT_HEADER_FIELDS,
    KNOWN_APIDS,
    MIN_SCIENCE_PACKET_BYTES,
    PAYLOAD_OFFSET,
    SCIENCE_APID,
    SCIENCE_HEADER_FIELDS,
    TRAILER_BYTES,
)
from idexdask.packets.reader import load_l0_buffer, read_l0
from idexdask.sources.base import Source, SourceDefaults, next_cut
from idexdask.sources.unit import Unit, digest_bytes

__all__ = ["L0Packets", "plan_l0_file"]

logger = logging.getLogger(__name__)

_KEY_FIELDS = ("idx__txhdrtimesec1", "idx__txhdrtimesec2", "idx__txhdrtimesubs", "idx__txhdrevtnum")
_SCIENCE_FIELDS = tuple(
    f for f in SCIENCE_HEADER_FIELDS if f.name in ("idx__sci0type", "idx__sci0evtnum")
)
_HEADER_KEY_FIELDS = tuple(f for f in EVENT_HEADER_FIELDS if f.name in _KEY_FIELDS)


class L0Packets(Source):
    """IDEX L0 telemetry: a file of CCSDS packets (``.pkts``, ``.bin``, no suffix).

    A file of another suffix is read when its first bytes are the primary header
    of a telemetry packet of an IDEX APID.
    """

    kind = "l0"
    source_kind = "idex_l0"
    family = "events"
    description = "IDEX L0 packet files"
    suffixes: ClassVar[tuple[str, ...]] = (".pkts", ".bin", "")

    @classmethod
    def is_source_for(cls, path: Path) -> bool:
        if not path.is_file() or path.name.startswith("."):
            return False
        suffix = path.suffix.lower()
        if suffix in cls.suffixes:
            return True
        if suffix in _OTHER_SUFFIXES:
            return False
        return _starts_with_idex_packet(path)

    @classmethod
    def plan(cls, path: Path, batch_events: int, input_index: int = 0, *,
             first_row: int = 0, align: int | None = None) -> list[Unit]:
        return plan_l0_file(path, batch_events, input_index, first_row=first_row, align=align)

    @classmethod
    def read_unit(cls, unit: Unit) -> xr.Dataset:
        dataset = read_l0(unit.read_input())
        dataset.attrs["source"] = Path(unit.path).name
        return dataset

    @classmethod
    def read(cls, path: Path) -> xr.Dataset:
        return read_l0(path)

    @classmethod
    def defaults(cls) -> SourceDefaults:
        return SourceDefaults(
            calibration_preset="flight",
            channel_map="fixed by the packet layout: "
            + ", ".join(c.name for c in CHANNELS),
        )


# suffixes of the other sources' files and of the files beside telemetry
# (XTCE definitions, text): never sniffed as packets
_OTHER_SUFFIXES = (".cdf", ".trc", ".xml", ".txt", ".md", ".json", ".yaml", ".csv", ".zarr")


def _starts_with_idex_packet(path: Path) -> bool:
    """The file's first 2 bytes: CCSDS version 0, telemetry, an IDEX APID."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(2)
    except OSError:
        return False
    if len(head) < 2 or head[0] >> 5 != 0 or head[0] & 0x10:
        return False
    return ((head[0] & 0x07) << 8 | head[1]) in KNOWN_APIDS


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
        up to the chunk's end, which :func:`~idexdask.pipeline.plan.pack_units`
        puts in one task with the previous file's last unit.  Not used where
        ``align > batch_events`` (units smaller than a chunk).

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
    target = next_cut(done, batch_events, first_row, align)
    for offset, before in zip(cut_bytes.tolist(), events_before.tolist(), strict=True):
        if before >= target and total - before > 0:
            bounds.append(offset)
            counts.append(before - done)
            done = before
            target = next_cut(done, batch_events, first_row, align)
    bounds.append(size)
    counts.append(total - done)
    units = []
    for start, stop, count in zip(bounds[:-1], bounds[1:], counts, strict=True):
        units.append(
            Unit(
                uid=f"{path}@{start}-{stop}",
                kind=L0Packets.kind,
                path=str(path),
                input_index=input_index,
                n_events=int(count),
                input_hash=digest_bytes(buffer[start:stop]),
                byte_range=(int(start), int(stop)),
            )
        )
    return units
