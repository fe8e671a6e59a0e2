"""Assemble science packets into dust events and decode their six waveforms.

Input: the science packets of one buffer, in file order.  Output: one row per
event, waveforms as uint16 arrays, plus per-channel quality flags.

Rules (all vectorised or compiled; no Python loop over packets or samples):

* An event starts with its header packet (TYPE 1).  Events are identified by
  (TIMESEC1, TIMESEC2, TIMESUBS, TXHDREVTNUM); a repeated header is merged into
  the first (a copy passing its CRC is preferred) and flagged ``DUPLICATE_HEADER``.
* A data packet belongs to the latest header with the same EVTNUM before it.  A
  data packet with no such header is an orphan: counted and logged, not decoded.
* Fragments of a channel are ordered by FRAGOFF (32-bit words).  Two packets with
  the same FRAGOFF: identical ones are a harmless ``DUPLICATE_FRAGMENT``; different
  ones a ``CONFLICTING_FRAGMENT``, resolved in favour of the copy that passes its
  CRC, then the longer, then the first.
* Uncompressed words are unpacked where FRAGOFF puts them; samples no fragment
  covers are fill (65535) and flag ``INCOMPLETE``.  The final word of a high-rate
  record holds two samples, right-aligned behind one pad slot (8192 = 3*2730 + 2):
  the real compressed/uncompressed pair of files agrees sample for sample only so.
  Compressed streams are decoded from their contiguous start; a gap or early end
  flags ``INCOMPLETE``, a corrupt stream ``DECODE_ERROR``, and the samples from
  there on are fill.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numba
import numpy as np

from idexdask.packets.layout import CHANNEL_BY_TYPE, CHANNELS, PAYLOAD_OFFSET, TRAILER_BYTES
from idexdask.packets.quality import QualityFlag
from idexdask.packets.rice import DECODE_OK, DECODE_SHORT, rice_decode_into

__all__ = ["AssembledEvents", "assemble_events"]

N_CHANNELS = len(CHANNELS)
FILL = 0xFFFF
_CHANNEL_OF_TYPE = np.full(256, -1, dtype=np.int64)
for _type, _index in CHANNEL_BY_TYPE.items():
    _CHANNEL_OF_TYPE[_type] = _index
_CHANNEL_OF_TYPE.setflags(write=False)
del _type, _index


@dataclass
class AssembledEvents:
    """Waveforms and bookkeeping of the events of one buffer.

    Attributes
    ----------
    header_packet : numpy.ndarray of int64
        For each event (sorted by time), the index (among science packets) of the
        header packet used.
    high, low : numpy.ndarray of uint16
        Waveforms, shapes (3, events, 8192) and (3, events, 512), channels in
        :data:`~idexdask.packets.layout.CHANNELS` order.
    channel_status : numpy.ndarray of uint16
        :class:`~idexdask.packets.quality.QualityFlag` bits, shape (events, 6).
    event_flags : numpy.ndarray of uint16
        Event-level bits (header CRC, duplicate header), shape (events,).
    compressed : numpy.ndarray of bool
        Whether each channel arrived compressed, shape (events, 6).
    orphan_packets : int
        Data packets with no header before them.
    unknown_type_packets : int
        Science packets whose TYPE names no channel.
    """

    header_packet: np.ndarray
    high: np.ndarray
    low: np.ndarray
    channel_status: np.ndarray
    event_flags: np.ndarray
    compressed: np.ndarray
    orphan_packets: int
    unknown_type_packets: int


@numba.njit(cache=True, nogil=True)
def _attach(types, evtnums, header_event):  # pragma: no cover - compiled
    """Event index of every data packet: the latest header with its EVTNUM, or -1."""
    active = np.full(65536, -1, dtype=np.int64)
    event_of = np.full(types.shape[0], -1, dtype=np.int64)
    for i in range(types.shape[0]):
        if types[i] == 1:
            active[evtnums[i]] = header_event[i]
        else:
            event_of[i] = active[evtnums[i]]
    return event_of


@numba.njit(cache=True, nogil=True, inline="always")
def _be32(words, index, swap):  # pragma: no cover - compiled
    """Big-endian 32-bit word from a native-order uint32 view."""
    x = words[index]
    if swap:
        x = (
            ((x & np.uint32(0xFF)) << np.uint32(24))
            | ((x & np.uint32(0xFF00)) << np.uint32(8))
            | ((x >> np.uint32(8)) & np.uint32(0xFF00))
            | (x >> np.uint32(24))
        )
    return x


@numba.njit(cache=True, nogil=True, inline="always")
def _unpack_aligned(words, swap, src, n_words, out, first, per_word):  # pragma: no cover
    """Whole words at a 4-byte aligned ``src``: one load per word (3x the byte path).

    Indices are unsigned on purpose: numba wraps negative signed indices, and
    that per-element check kept LLVM from vectorising these loops (3x slower).
    """
    base = np.uint64(src // 4)
    k0 = np.uint64(first)
    if per_word == 3:
        for w in range(np.uint64(n_words)):
            x = _be32(words, base + w, swap)
            k = k0 + np.uint64(3) * w
            out[k] = (x >> np.uint32(20)) & np.uint32(0x3FF)
            out[k + np.uint64(1)] = (x >> np.uint32(10)) & np.uint32(0x3FF)
            out[k + np.uint64(2)] = x & np.uint32(0x3FF)
    else:
        for w in range(np.uint64(n_words)):
            x = _be32(words, base + w, swap)
            k = k0 + np.uint64(2) * w
            out[k] = (x >> np.uint32(12)) & np.uint32(0xFFF)
            out[k + np.uint64(1)] = x & np.uint32(0xFFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _unpack_3x10(buf, src, n_words, out, first):  # pragma: no cover - compiled
    """Words of 2 pad bits + three 10-bit samples, most significant first."""
    p0 = np.uint64(src)
    k0 = np.uint64(first)
    for w in range(np.uint64(n_words)):
        p = p0 + np.uint64(4) * w
        word = (
            (np.uint32(buf[p]) << 24)
            | (np.uint32(buf[p + np.uint64(1)]) << 16)
            | (np.uint32(buf[p + np.uint64(2)]) << 8)
            | np.uint32(buf[p + np.uint64(3)])
        )
        k = k0 + np.uint64(3) * w
        out[k] = (word >> 20) & 0x3FF
        out[k + np.uint64(1)] = (word >> 10) & 0x3FF
        out[k + np.uint64(2)] = word & 0x3FF


@numba.njit(cache=True, nogil=True, inline="always")
def _unpack_2x12(buf, src, n_words, out, first):  # pragma: no cover - compiled
    """Words of 8 pad bits + two 12-bit samples, most significant first."""
    p0 = np.uint64(src)
    k0 = np.uint64(first)
    for w in range(np.uint64(n_words)):
        p = p0 + np.uint64(4) * w
        k = k0 + np.uint64(2) * w
        out[k] = (np.uint16(buf[p + np.uint64(1)]) << 4) | (np.uint16(buf[p + np.uint64(2)]) >> 4)
        out[k + np.uint64(1)] = ((np.uint16(buf[p + np.uint64(2)]) & 0xF) << 8) | np.uint16(
            buf[p + np.uint64(3)]
        )


@numba.njit(cache=True, nogil=True)
def _decode_jobs(
    buf, words, swap, job_ptr, frag_start, frag_len, frag_off, job_compressed, high, low, status
):  # pragma: no cover - compiled
    n_events = high.shape[1]
    longest = 0
    for f in range(frag_len.shape[0]):
        longest = max(longest, frag_off[f] * 4 + frag_len[f])
    scratch = np.zeros(longest + 16, dtype=np.uint8)
    for job in range(n_events * 6):
        event = job // 6
        channel = job % 6
        if channel < 3:
            out = high[channel, event]
            bits = 10
            per_word = 3
        else:
            out = low[channel - 3, event]
            bits = 12
            per_word = 2
        n_out = out.shape[0]
        mask = (1 << bits) - 1
        first = job_ptr[job]
        last = job_ptr[job + 1]
        if first == last:
            out[:] = FILL
            status[event, channel] |= 1  # MISSING
            continue
        if job_compressed[job]:
            n_bytes = 0
            for f in range(first, last):
                if frag_off[f] * 4 != n_bytes:
                    status[event, channel] |= 2  # INCOMPLETE: gap in the stream
                    break
                src = frag_start[f]
                for b in range(frag_len[f]):
                    scratch[n_bytes + b] = buf[src + b]
                n_bytes += frag_len[f]
            for b in range(16):
                scratch[n_bytes + b] = 0
            decoded, code = rice_decode_into(scratch, n_bytes, bits, out, n_out)
            if code != DECODE_OK:
                status[event, channel] |= 2 if code == DECODE_SHORT else 4
            for k in range(decoded, n_out):
                out[k] = FILL
        else:
            # Coverage first (fragments are sorted by FRAGOFF): pre-fill only a
            # record that has gaps, so clean records are written exactly once.
            covered_until = 0
            covered = 0
            for f in range(first, last):
                lo = max(frag_off[f] * per_word, covered_until)
                hi = min((frag_off[f] + frag_len[f] // 4) * per_word, n_out)
                if hi > lo:
                    covered += hi - lo
                covered_until = max(covered_until, hi)
            if covered < n_out:
                out[:] = FILL
                status[event, channel] |= 2  # INCOMPLETE
            for f in range(first, last):
                word0 = frag_off[f]
                n_words = frag_len[f] // 4
                src = frag_start[f]
                # whole words inside the record, unrolled; the final partial word
                # of a record holds its samples right-aligned behind pad slots
                full = min(n_words, max(0, n_out // per_word - word0))
                if src % 4 == 0:
                    _unpack_aligned(words, swap, src, full, out, word0 * per_word, per_word)
                elif per_word == 3:
                    _unpack_3x10(buf, src, full, out, word0 * 3)
                else:
                    _unpack_2x12(buf, src, full, out, word0 * 2)
                for w in range(full, n_words):
                    p = src + 4 * w
                    word = (
                        (np.int64(buf[p]) << 24)
                        | (np.int64(buf[p + 1]) << 16)
                        | (np.int64(buf[p + 2]) << 8)
                        | np.int64(buf[p + 3])
                    )
                    base = (word0 + w) * per_word
                    skip = max(0, base + per_word - n_out)
                    for s in range(skip, per_word):
                        k = base + s - skip
                        if k < n_out:
                            out[k] = (word >> (bits * (per_word - 1 - s))) & mask


def assemble_events(
    buffer: np.ndarray,
    packet_start: np.ndarray,
    packet_length: np.ndarray,
    science_fields: dict[str, np.ndarray],
    event_keys: np.ndarray,
    header_ok: np.ndarray,
    crc_ok: np.ndarray,
    sync_ok: np.ndarray,
    n_high: int,
    n_low: int,
) -> AssembledEvents:
    """Group science packets into events and decode every channel.

    Parameters
    ----------
    buffer : numpy.ndarray of uint8
        File contents (zero padded by at least 8 bytes).
    packet_start, packet_length : numpy.ndarray of int64
        Byte offset and length of each science packet, in file order.
    science_fields : dict
        Science-header fields of each packet (``idx__sci0type``, ``idx__sci0evtnum``,
        ``idx__sci0fragoff``, ``idx__sci0comp``).
    event_keys : numpy.ndarray of uint64
        For header packets, the key that orders and identifies their event (time,
        then event number); ignored for data packets.
    header_ok : numpy.ndarray of bool
        True for header packets long enough to hold the event header block.
    crc_ok, sync_ok : numpy.ndarray of bool
        Per-packet CRC and sync word checks.
    n_high, n_low : int
        Samples kept per high-rate and low-rate record.

    Returns
    -------
    AssembledEvents
        The events' header fields, waveforms and per-channel status, in event order.
    """
    types = science_fields["idx__sci0type"].astype(np.int64)
    evtnums = science_fields["idx__sci0evtnum"].astype(np.int64)
    is_header = (types == 1) & header_ok

    # Events: unique header keys, sorted by time; a copy passing its CRC preferred.
    header_idx = np.flatnonzero(is_header)
    order = np.lexsort((~crc_ok[header_idx], event_keys[header_idx]))
    sorted_keys = event_keys[header_idx][order]
    first_of_key = np.ones(sorted_keys.size, dtype=bool)
    first_of_key[1:] = sorted_keys[1:] != sorted_keys[:-1]
    event_of_sorted = np.cumsum(first_of_key) - 1
    n_events = int(first_of_key.sum())
    header_event = np.full(types.size, -1, dtype=np.int64)
    header_event[header_idx[order]] = event_of_sorted
    chosen_header = header_idx[order][first_of_key]
    event_flags = np.zeros(n_events, dtype=np.uint16)
    copies = np.bincount(event_of_sorted, minlength=n_events)
    event_flags[copies > 1] |= np.uint16(QualityFlag.DUPLICATE_HEADER)
    event_flags[~crc_ok[chosen_header]] |= np.uint16(QualityFlag.HEADER_CRC_MISMATCH)

    # Data packets -> (event, channel).  Short header packets act as data-less
    # headers: they cut the EVTNUM chain so that their data are not misattributed.
    event_of = _attach(types, evtnums, header_event)
    channel_of = np.where(types == 1, -1, _CHANNEL_OF_TYPE[np.clip(types, 0, 255)])
    is_data = types != 1
    orphan = is_data & (event_of < 0)
    unknown = is_data & (channel_of < 0)
    usable = is_data & ~orphan & ~unknown
    data_idx = np.flatnonzero(usable)
    d_event = event_of[data_idx]
    d_channel = channel_of[data_idx]
    d_fragoff = science_fields["idx__sci0fragoff"][data_idx].astype(np.int64)
    d_start = packet_start[data_idx] + PAYLOAD_OFFSET
    d_len = np.maximum(packet_length[data_idx] - PAYLOAD_OFFSET - TRAILER_BYTES, 0)
    d_crc = crc_ok[data_idx]
    job = d_event * N_CHANNELS + d_channel

    status = np.zeros((n_events, N_CHANNELS), dtype=np.uint16)
    np.bitwise_or.at(
        status, (d_event[~d_crc], d_channel[~d_crc]), np.uint16(QualityFlag.CRC_MISMATCH)
    )
    bad_sync = ~sync_ok[data_idx]
    np.bitwise_or.at(
        status, (d_event[bad_sync], d_channel[bad_sync]), np.uint16(QualityFlag.SYNC_MISMATCH)
    )

    # Order fragments by (job, fragoff), best copy first among equal slots.
    order = np.lexsort((data_idx, -d_len, ~d_crc, d_fragoff, job))
    job, d_fragoff, d_start, d_len = job[order], d_fragoff[order], d_start[order], d_len[order]
    same_slot = np.zeros(job.size, dtype=bool)
    same_slot[1:] = (job[1:] == job[:-1]) & (d_fragoff[1:] == d_fragoff[:-1])
    if same_slot.any():
        kept_pos = np.maximum.accumulate(np.where(~same_slot, np.arange(job.size), 0))
        for pos in np.flatnonzero(same_slot):  # rare: only retransmitted fragments
            keep = kept_pos[pos]
            a = buffer[d_start[pos] : d_start[pos] + d_len[pos]]
            b = buffer[d_start[keep] : d_start[keep] + d_len[keep]]
            flag = (
                QualityFlag.DUPLICATE_FRAGMENT
                if np.array_equal(a, b)
                else QualityFlag.CONFLICTING_FRAGMENT
            )
            status[job[pos] // N_CHANNELS, job[pos] % N_CHANNELS] |= np.uint16(flag)
        keep_mask = ~same_slot
        job, d_fragoff = job[keep_mask], d_fragoff[keep_mask]
        d_start, d_len = d_start[keep_mask], d_len[keep_mask]
        order = order[keep_mask]
    job_ptr = np.zeros(n_events * N_CHANNELS + 1, dtype=np.int64)
    np.cumsum(np.bincount(job, minlength=n_events * N_CHANNELS), out=job_ptr[1:])
    comp_bit = science_fields["idx__sci0comp"][data_idx][order].astype(bool)
    job_compressed = np.zeros(n_events * N_CHANNELS, dtype=bool)
    has_any = job_ptr[1:] > job_ptr[:-1]
    job_compressed[has_any] = comp_bit[job_ptr[:-1][has_any]]

    high = np.empty((3, n_events, n_high), dtype=np.uint16)
    low = np.empty((3, n_events, n_low), dtype=np.uint16)
    words = buffer[: buffer.size // 4 * 4].view(np.uint32)  # buffer is 4-byte aligned
    _decode_jobs(
        buffer,
        words,
        sys.byteorder == "little",
        job_ptr,
        d_start,
        d_len,
        d_fragoff,
        job_compressed,
        high,
        low,
        status,
    )
    return AssembledEvents(
        header_packet=chosen_header,
        high=high,
        low=low,
        channel_status=status,
        event_flags=event_flags,
        compressed=job_compressed.reshape(n_events, N_CHANNELS),
        orphan_packets=int(orphan.sum()),
        unknown_type_packets=int(unknown.sum()),
    )
