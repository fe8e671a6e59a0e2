"""Write IDEX science packets (APID 1424) from an event dataset, byte for byte.

Each event becomes, in the order of the real files: the event header packet
(TYPE 1, payload = the 256-byte event header block), then the waveform packets of
TOF_High, TOF_Low, TOF_Mid, Target_Low, Target_High and Ion_Grid (ascending TYPE).
A channel stream longer than 1008 words (4032 bytes) is split into fragments at
word boundaries; FRAGOFF gives each fragment's offset in words and FRAG is set on
every fragment but the last (as in the real files).  Every packet ends with the
sync word 0x3333 and the CRC-16/CCITT-FALSE of all bytes before the CRC.

Uncompressed streams pack 32-bit big-endian words, pad bits first: 2 pad bits and
three 10-bit samples (TOF), or 8 pad bits and two 12-bit samples (low rate); the
8192 TOF samples fill 2731 words; the last word holds a zero pad slot first,
then samples 8190 and 8191.
Compressed streams (COMP = 1) come from :mod:`idexdask.simulate.rice`.

Everything is vectorised over packets: header fields are written one field at a
time for all packets at once, payloads are copied by a compiled kernel and the
CRCs of all packets are computed in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.errors import PacketError
from idexdask.packets.crc import crc16_of_packets
from idexdask.packets.layout import (
    CHANNELS,
    EVENT_HEADER_BYTES,
    EVENT_HEADER_FIELDS,
    PAYLOAD_OFFSET,
    RENAMED_FIELDS,
    SCIENCE_APID,
    SCIENCE_HEADER_FIELDS,
    SYNC_WORD,
    TRAILER_BYTES,
    ChannelSpec,
    Field,
    PacketType,
)
from idexdask.packets.timing import MET_EPOCH_TT2000_NS, SUBSECOND_TICK_NS
from idexdask.simulate.defaults import EVENT_HEADER_DEFAULTS, SCIENCE_HEADER_DEFAULTS
from idexdask.simulate.rice import encode_channels, validate_samples

__all__ = [
    "MAX_PAYLOAD_WORDS",
    "EncodedPackets",
    "encode_events",
    "header_field_values",
    "write_packets",
]

_log = get_logger(__name__)

MAX_PAYLOAD_WORDS = 1008
"""Largest waveform payload of one packet, 32-bit words (4032 bytes)."""

_SEQUENCE_FLAGS_UNSEGMENTED = 3
_SEQUENCE_MODULUS = 1 << 14
_PACKETS_PER_SECOND = 1  # real files: SHCOARSE advances by one per packet of an event

# Channels in the order their packets follow the event header packet.
_PACKET_ORDER: tuple[ChannelSpec, ...] = tuple(sorted(CHANNELS, key=lambda c: int(c.packet_type)))

# Fields the writer sets per packet, whatever the dataset says.
_PER_PACKET = {"idx__sci0type", "idx__sci0frag", "idx__sci0fragoff", "idx__sci0comp"}


def _dataset_name(field: Field) -> str:
    return RENAMED_FIELDS.get(field.name, field.name)


@dataclass(frozen=True)
class EncodedPackets:
    """Packets written for a set of events.

    Attributes
    ----------
    data : bytes
        The packets, back to back.
    packet_start, packet_length : numpy.ndarray of int64
        Byte offset and length of every packet.
    packet_event : numpy.ndarray of int64
        Event (row of the dataset) each packet belongs to.
    packet_type : numpy.ndarray of int64
        TYPE of each packet.
    header_crc : numpy.ndarray of uint16
        CRC of each event's header packet (``idx__crcsci0pkt``).
    """

    data: bytes
    packet_start: np.ndarray
    packet_length: np.ndarray
    packet_event: np.ndarray
    packet_type: np.ndarray
    header_crc: np.ndarray


def _as_field_array(values, field: Field, name: str, n: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,):
        raise PacketError(f"{name}: expected shape ({n},), got {array.shape}")
    if array.dtype.kind not in "iu":
        raise PacketError(f"{name}: header fields must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64) if array.dtype != np.uint64 else array
    if n and (array.min() < 0 or int(array.max()) >> field.bits):
        raise PacketError(f"{name}: value does not fit the {field.bits}-bit field")
    return array.astype(np.uint64)


def _tof_extremes(waveforms: Mapping[str, np.ndarray], reduce) -> np.ndarray:
    """TOFMAX/TOFMIN word: mid gain in bits 20-29, low gain 10-19, high gain 0-9."""
    return (
        (reduce(waveforms["TOF_Mid"], axis=1).astype(np.int64) << 20)
        | (reduce(waveforms["TOF_Low"], axis=1).astype(np.int64) << 10)
        | reduce(waveforms["TOF_High"], axis=1).astype(np.int64)
    )


def header_field_values(
    events: xr.Dataset, waveforms: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Value of every science- and event-header field for each event.

    Fields present in ``events`` (under their dataset names, ``aid`` for the FSW
    AID copy) are taken as they are; missing ones get defaults: times from the
    ``epoch`` coordinate when it exists (else 0), TIME32 from the event time,
    SHCOARSE = TIME32, event numbers counting from 1, the min/max words from the
    waveforms, and the values of a real event for the rest.

    Parameters
    ----------
    events : xarray.Dataset
        Dataset with dimension ``epoch``.
    waveforms : mapping, optional
        Channel name -> (epoch, samples) array, used for TOFMAX/TOFMIN defaults.

    Returns
    -------
    dict
        Field name (layout name, not renamed) -> uint64 array, one value per event.

    Raises
    ------
    PacketError
        If a value does not fit its field.
    """
    n = int(events.sizes.get("epoch", 0))
    out: dict[str, np.ndarray] = {}

    def given(name: str) -> bool:
        return name in events.variables

    def take(field: Field) -> np.ndarray:
        name = _dataset_name(field)
        return _as_field_array(events[name].values, field, name, n)

    fields = {f.name: f for f in (*SCIENCE_HEADER_FIELDS, *EVENT_HEADER_FIELDS)}
    for field in fields.values():
        if given(_dataset_name(field)):
            out[field.name] = take(field)

    # Times: from the epoch coordinate when the header words are absent.
    time_names = ("idx__txhdrtimesec1", "idx__txhdrtimesec2", "idx__txhdrtimesubs")
    if not all(name in out for name in time_names):
        if "epoch" in events.coords and n:
            met_ns = np.asarray(events["epoch"].values, dtype=np.int64) - MET_EPOCH_TT2000_NS
            if met_ns.min() < 0:
                raise PacketError("epoch before the MET epoch 2010-01-01: cannot encode")
            seconds, rest = np.divmod(met_ns, 1_000_000_000)
            derived = (seconds >> 16, seconds & 0xFFFF, rest // SUBSECOND_TICK_NS)
        else:
            derived = (np.zeros(n, np.int64),) * 3
        for name, value in zip(time_names, derived, strict=True):
            out.setdefault(name, _as_field_array(value, fields[name], name, n))
    whole_seconds = (out["idx__txhdrtimesec1"] << np.uint64(16)) | out["idx__txhdrtimesec2"]
    defaults: dict[str, object] = {
        "idx__sci0time32": whole_seconds & np.uint64(0xFFFFFFFF),
        "idx__sci0evtnum": (np.arange(n) + 1) & 0xFFFF,
    }
    defaults["shcoarse"] = out.get("idx__sci0time32", defaults["idx__sci0time32"])
    defaults["idx__txhdrevtnum"] = out.get("idx__sci0evtnum", defaults["idx__sci0evtnum"])
    defaults["idx__txhdrfswaidcopy"] = SCIENCE_HEADER_DEFAULTS["aid"]
    defaults["idx__sci0aid"] = out.get("idx__txhdrfswaidcopy", SCIENCE_HEADER_DEFAULTS["aid"])
    if waveforms is not None and n:
        defaults["idx__txhdrtofmax"] = _tof_extremes(waveforms, np.max)
        defaults["idx__txhdrtofmin"] = _tof_extremes(waveforms, np.min)
    for name, value in SCIENCE_HEADER_DEFAULTS.items():
        defaults.setdefault(name, value)
    for name, value in EVENT_HEADER_DEFAULTS.items():
        defaults.setdefault(name, value)
    for name, field in fields.items():
        if name not in out:
            out[name] = _as_field_array(defaults.get(name, 0), field, name, n)
    return out


def _waveforms(events: xr.Dataset) -> dict[str, np.ndarray]:
    """The six waveform arrays, validated: shape (epoch, samples), ADC range."""
    n = int(events.sizes.get("epoch", 0))
    out = {}
    for spec in CHANNELS:
        if spec.name not in events:
            raise PacketError(f"dataset has no waveform variable {spec.name!r}")
        values = events[spec.name].values
        if values.shape != (n, spec.samples):
            raise PacketError(
                f"{spec.name}: expected shape ({n}, {spec.samples}), got {values.shape}"
            )
        out[spec.name] = validate_samples(values, spec.bits, spec.name)
    return out


def _pack_words(samples: np.ndarray, spec: ChannelSpec) -> np.ndarray:
    """Uncompressed stream bytes, shape (events, 4 * words)."""
    n = samples.shape[0]
    pad = spec.words * spec.samples_per_word - samples.shape[1]
    # A partly filled final word is right-aligned: its leading slot(s) are zero
    # padding.  (8192 TOF samples: the last word is 0, x[8190], x[8191]; the real
    # uncompressed/compressed pair of files agrees sample for sample only so.)
    full = samples.shape[1] - (samples.shape[1] % spec.samples_per_word if pad else 0)
    padded = np.concatenate(
        [samples[:, :full], np.zeros((n, pad), dtype=samples.dtype), samples[:, full:]], axis=1
    )
    grouped = padded.reshape(n, spec.words, spec.samples_per_word).astype(np.uint32)
    shifts = spec.bits * np.arange(spec.samples_per_word - 1, -1, -1, dtype=np.uint32)
    words = np.bitwise_or.reduce(grouped << shifts, axis=2)
    return words.astype(">u4").view(np.uint8).reshape(n, 4 * spec.words)


def _put_fields(block: np.ndarray, fields, values: Mapping[str, np.ndarray], base_bit: int) -> None:
    """OR each field's values into ``block`` (packets, bytes), all packets at once."""
    for field in fields:
        offset = field.bit_offset - base_bit
        first, lead = divmod(offset, 8)
        n_bytes = (lead + field.bits + 7) // 8
        shifted = values[field.name] << np.uint64(8 * n_bytes - lead - field.bits)
        for j in range(n_bytes):
            part = (shifted >> np.uint64(8 * (n_bytes - 1 - j))) & np.uint64(0xFF)
            block[:, first + j] |= part.astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def _copy_segments(src, src_start, dst, dst_start, length):  # pragma: no cover - compiled
    for i in range(length.shape[0]):
        s = src_start[i]
        d = dst_start[i]
        for j in range(length[i]):
            dst[d + j] = src[s + j]


@dataclass(frozen=True)
class _Streams:
    """All channel streams, concatenated: bytes, per (channel, event) offsets and words."""

    source: np.ndarray
    start: np.ndarray  # (channels, events) byte offset into source
    words: np.ndarray  # (channels, events)


def _channel_streams(
    waveforms: Mapping[str, np.ndarray], header_blocks: np.ndarray, compress: bool
) -> _Streams:
    n = header_blocks.shape[0]
    pieces = [header_blocks.reshape(-1)]
    offset = header_blocks.size
    starts, words = [], []
    for spec in _PACKET_ORDER:
        if compress:
            streams = encode_channels(waveforms[spec.name], spec.bits)
            n_bytes = np.array([len(s) for s in streams], dtype=np.int64)
            pieces.append(np.frombuffer(b"".join(streams), dtype=np.uint8))
        else:
            packed = _pack_words(waveforms[spec.name], spec)
            n_bytes = np.full(n, packed.shape[1], dtype=np.int64)
            pieces.append(packed.reshape(-1))
        starts.append(offset + (np.cumsum(n_bytes) - n_bytes).astype(np.int64))
        words.append(n_bytes // 4)
        offset += int(n_bytes.sum())
    return _Streams(np.concatenate(pieces), np.array(starts), np.array(words))


def _packet_table(words: np.ndarray) -> dict[str, np.ndarray]:
    """One row per packet, in file order: event, TYPE, FRAGOFF, FRAG, payload words."""
    n_channels, n = words.shape
    events = [np.arange(n)]
    ranks = [np.zeros(n, np.int64)]
    fragment = [np.zeros(n, np.int64)]
    fragoff = [np.zeros(n, np.int64)]
    more = [np.zeros(n, np.int64)]
    n_words = [np.full(n, EVENT_HEADER_BYTES // 4)]
    channel = [np.full(n, -1)]
    for c in range(n_channels):
        n_frag = np.maximum(1, -(-words[c] // MAX_PAYLOAD_WORDS))
        event = np.repeat(np.arange(n), n_frag)
        index = np.arange(event.size) - np.repeat(np.cumsum(n_frag) - n_frag, n_frag)
        events.append(event)
        ranks.append(np.full(event.size, c + 1))
        fragment.append(index)
        fragoff.append(index * MAX_PAYLOAD_WORDS)
        more.append((index < n_frag[event] - 1).astype(np.int64))
        n_words.append(np.minimum(MAX_PAYLOAD_WORDS, words[c][event] - index * MAX_PAYLOAD_WORDS))
        channel.append(np.full(event.size, c))
    columns = {
        "event": np.concatenate(events),
        "rank": np.concatenate(ranks),
        "fragment": np.concatenate(fragment),
        "fragoff": np.concatenate(fragoff),
        "more": np.concatenate(more),
        "words": np.concatenate(n_words),
        "channel": np.concatenate(channel),
    }
    order = np.lexsort((columns["fragment"], columns["rank"], columns["event"]))
    table = {key: value[order] for key, value in columns.items()}
    types = np.array([int(PacketType.EVENT_HEADER)] + [int(c.packet_type) for c in _PACKET_ORDER])
    table["type"] = types[table["rank"]]
    first_of_event = np.concatenate([[0], np.flatnonzero(np.diff(table["event"])) + 1])
    counts = np.diff(np.concatenate([first_of_event, [table["event"].size]]))
    table["index_in_event"] = np.arange(table["event"].size) - np.repeat(first_of_event, counts)
    return table


def encode_events(
    events: xr.Dataset, *, compress: bool = False, start_sequence: int = 0
) -> EncodedPackets:
    """Encode every event of a dataset into science packets.

    Parameters
    ----------
    events : xarray.Dataset
        Dimension ``epoch``; the six waveform variables (``TOF_High``, ``TOF_Mid``,
        ``TOF_Low``: (epoch, 8192); ``Target_High``, ``Target_Low``, ``Ion_Grid``:
        (epoch, 512)) with integer samples, DN, within the ADC range; header
        fields optional (see :func:`header_field_values`).  ``idx__sci0type``,
        ``idx__sci0frag``, ``idx__sci0fragoff`` and ``idx__sci0comp`` are set by
        the writer; ``idx__syncsci0pkt`` and ``idx__crcsci0pkt`` are computed.
    compress : bool
        Rice-compress the waveforms (COMP = 1).
    start_sequence : int
        CCSDS sequence count of the first packet (counts modulo 2**14).

    Returns
    -------
    EncodedPackets

    Raises
    ------
    PacketError
        On a missing or malformed waveform or a header value too wide for its field.
    """
    waveforms = _waveforms(events)
    n = next(iter(waveforms.values())).shape[0]
    values = header_field_values(events, waveforms)

    header_blocks = np.zeros((n, EVENT_HEADER_BYTES), dtype=np.uint8)
    _put_fields(header_blocks, EVENT_HEADER_FIELDS, values, 8 * PAYLOAD_OFFSET)
    streams = _channel_streams(waveforms, header_blocks, compress)
    table = _packet_table(streams.words)
    n_packets = table["event"].size

    payload_bytes = 4 * table["words"]
    length = PAYLOAD_OFFSET + payload_bytes + TRAILER_BYTES
    start = (np.cumsum(length) - length).astype(np.int64)
    buffer = np.zeros(int(length.sum()), dtype=np.uint8)

    # Primary header: version 0, type 0, secondary header present, APID; unsegmented.
    sequence = (int(start_sequence) + np.arange(n_packets)) % _SEQUENCE_MODULUS
    word0 = (1 << 11) | SCIENCE_APID
    word1 = (_SEQUENCE_FLAGS_UNSEGMENTED << 14) | sequence
    word2 = length - 7
    header = np.zeros((n_packets, PAYLOAD_OFFSET), dtype=np.uint8)
    for i, word in enumerate((np.full(n_packets, word0), word1, word2)):
        header[:, 2 * i] = (word >> 8) & 0xFF
        header[:, 2 * i + 1] = word & 0xFF

    event = table["event"]
    per_packet = {name: value[event] for name, value in values.items()}
    per_packet["shcoarse"] = (
        per_packet["shcoarse"]
        + np.uint64(_PACKETS_PER_SECOND) * table["index_in_event"].astype(np.uint64)
    ) & np.uint64(0xFFFFFFFF)
    per_packet["idx__sci0type"] = table["type"].astype(np.uint64)
    per_packet["idx__sci0frag"] = table["more"].astype(np.uint64)
    per_packet["idx__sci0fragoff"] = table["fragoff"].astype(np.uint64)
    per_packet["idx__sci0comp"] = np.full(n_packets, int(compress), dtype=np.uint64)
    _put_fields(header, SCIENCE_HEADER_FIELDS, per_packet, 0)
    buffer[start[:, np.newaxis] + np.arange(PAYLOAD_OFFSET)] = header

    is_header = table["channel"] < 0
    source_start = np.where(
        is_header,
        event * EVENT_HEADER_BYTES,
        streams.start[np.maximum(table["channel"], 0), event] + 4 * table["fragoff"],
    )
    _copy_segments(
        streams.source,
        source_start.astype(np.int64),
        buffer,
        (start + PAYLOAD_OFFSET).astype(np.int64),
        payload_bytes.astype(np.int64),
    )
    end = start + length
    buffer[end - 4] = SYNC_WORD >> 8
    buffer[end - 3] = SYNC_WORD & 0xFF
    crc = crc16_of_packets(buffer, start, length - 2)
    buffer[end - 2] = crc >> 8
    buffer[end - 1] = crc & 0xFF
    _log.debug(
        "wrote %d events as %d packets (%d bytes, compress=%s)",
        n,
        n_packets,
        buffer.size,
        compress,
    )
    return EncodedPackets(
        data=buffer.tobytes(),
        packet_start=start,
        packet_length=length.astype(np.int64),
        packet_event=event,
        packet_type=table["type"],
        header_crc=crc[is_header],
    )


def write_packets(events: xr.Dataset, *, compress: bool = False, start_sequence: int = 0) -> bytes:
    """Science packets (APID 1424) of every event in ``events``, back to back.

    Parameters
    ----------
    events : xarray.Dataset
        Event dataset as returned by :func:`idexdask.read_l0` or
        :func:`idexdask.simulate.simulate_events`: the six waveform variables
        (uint16 DN within the ADC range) and any header fields (missing ones get
        defaults, see :func:`header_field_values`).
    compress : bool
        Rice-compress the waveforms (COMP = 1 in every packet).
    start_sequence : int
        CCSDS sequence count of the first packet.

    Returns
    -------
    bytes
        The packets.  Decoding them returns ``events`` (with ``idx__sci0comp``
        equal to ``compress`` and the header packet's CRC in ``idx__crcsci0pkt``).

    Raises
    ------
    PacketError
        On a missing or malformed waveform or a header value too wide for its field.
    """
    return encode_events(events, compress=compress, start_sequence=start_sequence).data
