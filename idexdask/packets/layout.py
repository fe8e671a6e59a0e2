"""The IDEX science packet layout (APID 1424), defined here, independently of XTCE.

The fast decoding path reads packets with this table instead of walking an XTCE
document.  A test decodes the real files both ways (this table, and the official
``idex_science_packet_definition.xml`` through space-packet-parser) and asserts
that every field agrees.

Layout of one science packet (byte offsets from the start of the packet)::

    0   CCSDS primary header (6 B): version, type, secondary-header flag, APID,
        sequence flags, sequence count, packet data length (bytes - 7)
    6   secondary header: SHCOARSE u32 (s), SHFINE u16
    12  science header (32 B): AID, TYPE, CONT, spare/PACK/FRAG/COMP, EVTNUM, CAT,
        QUAL, FRAGOFF (32-bit words), VER, TIME32, 3 spare words
    44  payload: the 256-byte event header block (TYPE 1) or waveform words
    -4  sync word 0x3333, then CRC-16/CCITT-FALSE over bytes [0, -2)

Variable names follow the IMAP SDC L1a CDF conventions (lower case, ``idx__`` prefix)
so that users of the official products need not relearn them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "CCSDS_HEADER_BYTES",
    "CHANNELS",
    "EVENT_HEADER_FIELDS",
    "HIGH_RATE_CHANNELS",
    "LOW_RATE_CHANNELS",
    "PAYLOAD_OFFSET",
    "SCIENCE_APID",
    "SCIENCE_HEADER_FIELDS",
    "SYNC_WORD",
    "TRAILER_BYTES",
    "Channel",
    "ChannelSpec",
    "Field",
    "PacketType",
]

SCIENCE_APID = 1424
"""APID of IDEX science packets (event header and waveform fragments)."""

KNOWN_APIDS: dict[int, str] = {
    1376: "housekeeping",
    1377: "housekeeping",
    1413: "housekeeping",
    1414: "housekeeping",
    1418: "event message",
    1419: "catalog list",
    1424: "science",
    1425: "science fetch",
}
"""APIDs IDEX emits, with what they carry."""

CCSDS_HEADER_BYTES = 6
SECONDARY_HEADER_BYTES = 6
SCIENCE_HEADER_BYTES = 32
PAYLOAD_OFFSET = CCSDS_HEADER_BYTES + SECONDARY_HEADER_BYTES + SCIENCE_HEADER_BYTES  # 44
TRAILER_BYTES = 4  # sync word + CRC
SYNC_WORD = 0x3333
EVENT_HEADER_BYTES = 256
MIN_SCIENCE_PACKET_BYTES = PAYLOAD_OFFSET + TRAILER_BYTES


class PacketType(IntEnum):
    """Value of the science header TYPE field: which part of an event a packet holds."""

    EVENT_HEADER = 1
    TOF_HIGH = 2
    TOF_LOW = 4
    TOF_MID = 8
    TARGET_LOW = 16
    TARGET_HIGH = 32
    ION_GRID = 64


@dataclass(frozen=True)
class ChannelSpec:
    """How one waveform channel is sampled and packed.

    Attributes
    ----------
    name : str
        Variable name in the event dataset (``TOF_High``, ...).
    packet_type : PacketType
        TYPE value of the packets carrying it.
    bits : int
        ADC resolution (bits per sample).
    samples_per_word : int
        Samples in one uncompressed 32-bit word (the pad bits lead the word).
    samples : int
        Samples kept per record.
    rate_msps : float
        Sampling rate in mega-samples per second (1/µs).
    """

    name: str
    packet_type: PacketType
    bits: int
    samples_per_word: int
    samples: int
    rate_msps: float

    @property
    def high_rate(self) -> bool:
        """True for the 260 Msps TOF channels."""
        return self.bits == 10

    @property
    def pad_bits(self) -> int:
        """Leading pad bits of each uncompressed 32-bit word."""
        return 32 - self.bits * self.samples_per_word

    @property
    def fill_value(self) -> int:
        """Value written where a sample is missing (outside the ADC range)."""
        return 0xFFFF

    @property
    def words(self) -> int:
        """32-bit words needed to hold :attr:`samples` uncompressed samples."""
        return -(-self.samples // self.samples_per_word)


HIGH_RATE_MSPS = 260.0
LOW_RATE_MSPS = 4.0625
HIGH_RATE_SAMPLES = 8192  # 16 blocks of 512
LOW_RATE_SAMPLES = 512  # 64 blocks of 8
HIGH_RATE_BLOCK = 512
LOW_RATE_BLOCK = 8


class Channel(IntEnum):
    """Index of each waveform channel along the dataset's ``channel`` axis."""

    TOF_HIGH = 0
    TOF_MID = 1
    TOF_LOW = 2
    TARGET_HIGH = 3
    TARGET_LOW = 4
    ION_GRID = 5


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("TOF_High", PacketType.TOF_HIGH, 10, 3, HIGH_RATE_SAMPLES, HIGH_RATE_MSPS),
    ChannelSpec("TOF_Mid", PacketType.TOF_MID, 10, 3, HIGH_RATE_SAMPLES, HIGH_RATE_MSPS),
    ChannelSpec("TOF_Low", PacketType.TOF_LOW, 10, 3, HIGH_RATE_SAMPLES, HIGH_RATE_MSPS),
    ChannelSpec("Target_High", PacketType.TARGET_HIGH, 12, 2, LOW_RATE_SAMPLES, LOW_RATE_MSPS),
    ChannelSpec("Target_Low", PacketType.TARGET_LOW, 12, 2, LOW_RATE_SAMPLES, LOW_RATE_MSPS),
    ChannelSpec("Ion_Grid", PacketType.ION_GRID, 12, 2, LOW_RATE_SAMPLES, LOW_RATE_MSPS),
)
"""The six waveform channels, in :class:`Channel` order."""

HIGH_RATE_CHANNELS = tuple(c for c in CHANNELS if c.high_rate)
LOW_RATE_CHANNELS = tuple(c for c in CHANNELS if not c.high_rate)

CHANNEL_BY_TYPE: dict[int, int] = {int(c.packet_type): i for i, c in enumerate(CHANNELS)}
"""TYPE field value -> index into :data:`CHANNELS`."""


@dataclass(frozen=True)
class Field:
    """One fixed-width unsigned field of a packet.

    Attributes
    ----------
    name : str
        Lower-case variable name (IMAP SDC L1a convention).
    bit_offset : int
        Offset of the most significant bit from the start of the packet.
    bits : int
        Width in bits (at most 32).
    """

    name: str
    bit_offset: int
    bits: int

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype holding the field."""
        for candidate in (np.uint8, np.uint16, np.uint32):
            if self.bits <= np.iinfo(candidate).bits:
                return np.dtype(candidate)
        return np.dtype(np.uint64)


def _fields(start_bit: int, spec: str) -> tuple[Field, ...]:
    """Lay out ``name:bits`` pairs (whitespace separated) back to back from ``start_bit``."""
    out = []
    offset = start_bit
    for token in spec.split():
        name, bits = token.split(":")
        out.append(Field(name, offset, int(bits)))
        offset += int(bits)
    return tuple(out)


SECONDARY_AND_SCIENCE_HEADER_FIELDS = _fields(
    8 * CCSDS_HEADER_BYTES,
    """
    shcoarse:32 shfine:16
    idx__sci0aid:32 idx__sci0type:8 idx__sci0cont:8
    idx__sci0spare1:13 idx__sci0pack:1 idx__sci0frag:1 idx__sci0comp:1
    idx__sci0evtnum:16 idx__sci0cat:8 idx__sci0qual:8 idx__sci0fragoff:16
    idx__sci0ver:16 idx__sci0time32:32
    idx__sci0spare2:32 idx__sci0spare3:32 idx__sci0spare4:32
    """,
)
SCIENCE_HEADER_FIELDS = SECONDARY_AND_SCIENCE_HEADER_FIELDS
"""Secondary header and science header, common to every science packet."""

# The 256-byte event header block carried by TYPE 1 packets: trigger, timing and
# housekeeping words sampled by the FPGA at the event.  ``sp`` fields are spare.
_TX = "idx__txhdr"
EVENT_HEADER_FIELDS = _fields(
    8 * PAYLOAD_OFFSET,
    " ".join(
        f"{_TX}{token}"
        for token in """
        scievtlen:32 sp00:16 timesec1:16 timesec2:16 timesubs:16
        sp01:1 trigoffset:3 sp02:2 trigid:10 evtnum:16 blocks:32
        hgtrigctrl1:32 hgtrigctrl2:32 lgtrigctrl1:32 lgtrigctrl2:32
        mgtrigctrl1:32 mgtrigctrl2:32
        sp03:8 lsadc:24
        polstat:1 sp04:22 polctrl:1 coinena:1 lstrigmode:1 mgtrigmode:2
        lgtrigmode:2 hgtrigmode:2
        sp05:32 sp06:32 sp07:32 sp08:32
        tofmax:32 tofmin:32 ls0maxmin:32 ls1maxmin:32 ls2maxmin:32
        fifodelay:32 sampdelay:32 transcnt:32
        prochkch01:32 prochkch23:32 prochkch45:32 prochkch67:32
        hvpshkch01:32 hvpshkch23:32 hvpshkch45:32 hvpshkch67:32
        lvhk0ch01:32 lvhk0ch23:32 lvhk0ch45:32 lvhk0ch67:32
        lvhk1ch01:32 lvhk1ch23:32 lvhk1ch45:32 lvhk1ch67:32
        lvhk2ch01:32 lvhk2ch23:32 lvhk2ch45:32 lvhk2ch67:32
        sp09:32 sp10:32 fswaidcopy:32 fswbincopy:32
        fswmajor:8 fswminor:8 fswpatch:16
        fswhvstat:32 fswmem0:32 fswmem1:32
        fswpt0:32 fswpt1:32 fswpt2:32 fswpt3:32 fswpt4:32
        fswpt5:32 fswpt6:32 fswpt7:32 fswpt8:32 fswpt9:32
        fpgaver:32
        """.split()
    ),
)
"""Fields of the event header block (TYPE 1 payload)."""

assert EVENT_HEADER_FIELDS[-1].bit_offset + 32 == 8 * (PAYLOAD_OFFSET + EVENT_HEADER_BYTES)

TRAILER_FIELD_NAMES = ("idx__syncsci0pkt", "idx__crcsci0pkt")
"""Names of the sync word and CRC of the event header packet in the dataset."""

RENAMED_FIELDS = {"idx__txhdrfswaidcopy": "aid"}
"""The FSW copy of the AID is the reliable one; L1a products call it ``aid``."""
