"""Helpers that damage real L0 packet streams for the decoding and instrument-state tests."""

from __future__ import annotations

from idexdask.packets.crc import crc16_ccitt_false

#: APID of IDEX science packets (event headers and waveform fragments).
SCIENCE_APID = 1424


def split_packets(data: bytes) -> list[bytes]:
    """The CCSDS packets of ``data``, cut by each primary header's length field."""
    packets, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 4 : pos + 6], "big") + 7
        packets.append(data[pos : pos + length])
        pos += length
    return packets


def with_crc(packet: bytes) -> bytes:
    """Recompute the CRC so that a deliberate change passes the check."""
    return packet[:-2] + crc16_ccitt_false(packet[:-2]).to_bytes(2, "big")


def apid(packet: bytes) -> int:
    """The packet's application process identifier."""
    return (packet[0] & 0x07) << 8 | packet[1]


def ptype(packet: bytes) -> int:
    """IDEX science packet type (1: event header, otherwise a waveform fragment)."""
    return packet[16]


def evtnum(packet: bytes) -> int:
    """IDEX event number of a science packet."""
    return int.from_bytes(packet[20:22], "big")


def header_packets(packets: list[bytes]) -> list[int]:
    """Indices of the science event header packets."""
    return [i for i, p in enumerate(packets) if apid(p) == SCIENCE_APID and ptype(p) == 1]
