"""Find CCSDS packets in a byte buffer, resynchronising over damage.

A CCSDS file is a chain: each primary header gives the length of its packet, so
the scan is inherently sequential.  It runs as one compiled (numba) pass over the
buffer and returns arrays (start, length, APID) of every packet found, plus what
it had to skip.  Damage never stops it:

* a packet is accepted only if its length is confirmed: a science packet's sync
  word sits where the length says, or a plausible header follows it (or the end
  of the buffer, or a tail too short for a header: a file cut inside the next
  header keeps the packet before it).  Otherwise a byte-wise search for the
  next plausible header starts, and the bytes passed over are reported;
* a length pointing past the end of the buffer marks a truncated packet, reported
  and skipped, and the search continues after its header;
* while resynchronising, a plausible-looking header is accepted only if it names
  an IDEX APID and either the packet after it also starts with a plausible header
  (or the buffer ends less than a header after it) or it is a science packet
  whose sync word sits where its length says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from idexdask.packets.layout import KNOWN_APIDS, SCIENCE_APID, SYNC_WORD, TRAILER_BYTES

__all__ = ["PacketIndex", "index_packets"]

_KNOWN_APID = np.zeros(2048, dtype=np.bool_)
_KNOWN_APID[list(KNOWN_APIDS)] = True
_KNOWN_APID.setflags(write=False)


@dataclass(frozen=True)
class PacketIndex:
    """Where the packets of a buffer are.

    Attributes
    ----------
    start : numpy.ndarray of int64
        Byte offset of each packet.
    length : numpy.ndarray of int64
        Total length of each packet in bytes (primary header included).
    apid : numpy.ndarray of int32
        Application process identifier of each packet.
    skipped_bytes : int
        Bytes that belong to no packet (garbage, damaged headers).
    skipped_regions : int
        Number of separate runs of skipped bytes.
    first_skipped_offset : int
        Offset of the first skipped byte, -1 if none.
    truncated : int
        Packets whose length field points past the end of the buffer.
    """

    start: np.ndarray
    length: np.ndarray
    apid: np.ndarray
    skipped_bytes: int
    skipped_regions: int
    first_skipped_offset: int
    truncated: int

    def __len__(self) -> int:
        return int(self.start.size)


@numba.njit(cache=True, nogil=True)
def _plausible_header(buf, pos, n):  # pragma: no cover - compiled
    """Packet length at ``pos`` if its primary header looks valid, 0 if not, -1 if truncated."""
    if pos + 6 > n:
        return 0
    b0 = buf[pos]
    if (b0 >> 5) != 0 or ((b0 >> 4) & 1) != 0 or ((b0 >> 3) & 1) != 1:
        return 0
    length = ((np.int64(buf[pos + 4]) << 8) | np.int64(buf[pos + 5])) + 7
    if length < 12:  # primary + secondary header at least
        return 0
    if pos + length > n:
        return -1
    return length


@numba.njit(cache=True, nogil=True)
def _science_sync_ok(buf, pos, length):  # pragma: no cover - compiled
    """True if the packet is not science, or its sync word is where its length says."""
    apid = ((np.int64(buf[pos]) & 7) << 8) | np.int64(buf[pos + 1])
    if apid != SCIENCE_APID:
        return True
    sync_at = pos + length - TRAILER_BYTES
    return ((np.int64(buf[sync_at]) << 8) | np.int64(buf[sync_at + 1])) == SYNC_WORD


@numba.njit(cache=True, nogil=True)
def _scan(buf, n, known_apid):  # pragma: no cover - compiled
    capacity = max(64, n // 2048)
    starts = np.empty(capacity, dtype=np.int64)
    lengths = np.empty(capacity, dtype=np.int64)
    count = 0
    skipped = 0
    regions = 0
    first_skip = -1
    truncated = 0
    in_skip = False
    pos = 0
    while pos + 6 <= n:
        length = _plausible_header(buf, pos, n)
        accept = False
        if length > 0:
            nxt = pos + length
            # the buffer ends there, or too soon for another header (a file cut
            # inside the next packet's header): nothing contradicts the length
            followed = nxt + 6 > n or _plausible_header(buf, nxt, n) != 0
            apid = (np.int64(buf[pos]) & 7) << 8 | np.int64(buf[pos + 1])
            sync_ok = _science_sync_ok(buf, pos, length)
            if in_skip:
                # Resynchronising: demand an IDEX APID and corroboration, a science
                # sync word where the length says or a plausible header after it.
                accept = known_apid[apid] and ((apid == SCIENCE_APID and sync_ok) or followed)
            else:
                # In step with the chain: a science packet's sync word, or a
                # plausible header right after the packet, confirms its length.
                accept = (apid == SCIENCE_APID and sync_ok) or followed
        elif length == -1 and not in_skip:
            truncated += 1
        if accept:
            if count == capacity:
                capacity *= 2
                new_starts = np.empty(capacity, dtype=np.int64)
                new_lengths = np.empty(capacity, dtype=np.int64)
                new_starts[:count] = starts[:count]
                new_lengths[:count] = lengths[:count]
                starts = new_starts
                lengths = new_lengths
            starts[count] = pos
            lengths[count] = length
            count += 1
            in_skip = False
            pos += length
        else:
            if not in_skip:
                regions += 1
                if first_skip < 0:
                    first_skip = pos
                in_skip = True
            skipped += 1
            pos += 1
    if pos < n:  # tail shorter than a primary header
        if not in_skip:
            regions += 1
            if first_skip < 0:
                first_skip = pos
        skipped += n - pos
    return starts[:count], lengths[:count], skipped, regions, first_skip, truncated


def index_packets(buffer: np.ndarray) -> PacketIndex:
    """Locate every CCSDS packet in ``buffer``.

    Parameters
    ----------
    buffer : numpy.ndarray of uint8
        File contents.

    Returns
    -------
    PacketIndex
        Packet offsets, lengths and APIDs, and a count of what was skipped.
    """
    buf = np.ascontiguousarray(buffer, dtype=np.uint8)
    starts, lengths, skipped, regions, first_skip, truncated = _scan(buf, buf.size, _KNOWN_APID)
    b0 = buf[starts].astype(np.int32)
    apid = ((b0 & 7) << 8) | buf[starts + 1].astype(np.int32)
    return PacketIndex(
        start=starts,
        length=lengths,
        apid=apid,
        skipped_bytes=int(skipped),
        skipped_regions=int(regions),
        first_skipped_offset=int(first_skip),
        truncated=int(truncated),
    )
