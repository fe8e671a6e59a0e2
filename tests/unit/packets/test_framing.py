"""packets/framing.py: the packet index of a byte stream, with damage and resynchronisation."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.packets.framing import index_packets
from idexdask.packets.layout import KNOWN_APIDS, SCIENCE_APID, SYNC_WORD, TRAILER_BYTES

HOUSEKEEPING = min(KNOWN_APIDS)
UNKNOWN_APID = next(a for a in range(1, 2048) if a not in KNOWN_APIDS)


def packet(apid: int, length: int, *, sync: bool = True, fill: int = 0) -> bytes:
    """A CCSDS packet of ``length`` bytes (secondary header flag set); a science
    packet carries its sync word before the 2-byte CRC unless ``sync`` is False."""
    head = bytes([0x08 | (apid >> 8) & 7, apid & 0xFF, 0xC0, 0x00,
                  (length - 7) >> 8, (length - 7) & 0xFF])
    body = bytearray([fill]) * (length - 6)
    if apid == SCIENCE_APID and sync:
        at = length - TRAILER_BYTES - 6
        body[at:at + 2] = SYNC_WORD.to_bytes(2, "big")
    return head + bytes(body)


def index(data: bytes):
    return index_packets(np.frombuffer(data, dtype=np.uint8))


def test_a_clean_chain_is_indexed_in_order():
    parts = [packet(SCIENCE_APID, 60), packet(HOUSEKEEPING, 20), packet(SCIENCE_APID, 100)]
    found = index(b"".join(parts))
    assert len(found) == 3
    assert found.start.tolist() == [0, 60, 80]
    assert found.length.tolist() == [60, 20, 100]
    assert found.apid.tolist() == [SCIENCE_APID, HOUSEKEEPING, SCIENCE_APID]
    assert (found.skipped_bytes, found.skipped_regions) == (0, 0)
    assert (found.first_skipped_offset, found.truncated) == (-1, 0)


def test_garbage_is_skipped_and_reported():
    first, second = packet(SCIENCE_APID, 60), packet(SCIENCE_APID, 60, fill=7)
    junk = b"\xff" * 5
    found = index(first + junk + second + junk)
    assert found.start.tolist() == [0, 65]
    assert found.skipped_bytes == 10 and found.skipped_regions == 2
    assert found.first_skipped_offset == 60


def test_a_length_past_the_end_is_a_truncated_packet():
    whole = packet(HOUSEKEEPING, 20)
    cut = packet(SCIENCE_APID, 200)[:50]  # its length field says 200 bytes
    found = index(whole + cut)
    assert found.start.tolist() == [0]
    assert found.truncated == 1
    assert found.skipped_bytes == 50 and found.first_skipped_offset == 20


def test_a_tail_shorter_than_a_header_is_skipped():
    found = index(packet(HOUSEKEEPING, 20) + b"\x08\x01\x02")
    assert len(found) == 1 and found.skipped_bytes == 3 and found.skipped_regions == 1


def test_resynchronisation_needs_an_idex_apid_and_corroboration():
    """After damage, a plausible header of a foreign APID is not taken for a packet;
    the next IDEX packet confirmed by its sync word is."""
    science = packet(SCIENCE_APID, 60)
    foreign = packet(UNKNOWN_APID, 20)
    found = index(b"\xff\xff" + foreign + science)
    assert found.apid.tolist() == [SCIENCE_APID]
    assert found.start.tolist() == [22]
    assert found.skipped_bytes == 22 and found.skipped_regions == 1


def test_a_science_length_is_confirmed_by_its_sync_word_or_the_next_header():
    broken = packet(SCIENCE_APID, 60, sync=False)
    # followed by a plausible header: its length is trusted
    assert index(broken + packet(HOUSEKEEPING, 20)).start.tolist() == [0, 60]
    # followed by garbage and without its sync word: not a packet
    found = index(broken + b"\xff" * 8)
    assert len(found) == 0 and found.skipped_bytes == 68


@pytest.mark.parametrize("n", [0, 1, 5])
def test_short_buffers(n):
    found = index(b"\x00" * n)
    assert len(found) == 0 and found.skipped_bytes == n
    assert found.first_skipped_offset == (0 if n else -1)


def test_many_packets_grow_the_index():
    """More packets than the first capacity guess (64 for a small buffer)."""
    data = b"".join(packet(HOUSEKEEPING, 12, fill=i % 251) for i in range(500))
    found = index(data)
    assert len(found) == 500
    np.testing.assert_array_equal(found.start, np.arange(500) * 12)
