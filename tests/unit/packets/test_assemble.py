"""packets/assemble.py: science packets -> events, on hand-made packets.

Records are kept tiny (9 high-rate and 4 low-rate samples) so that every sample
can be checked; the integration tests (test_decode_damaged.py) run the same
rules on real files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from idexdask.packets.assemble import FILL, assemble_events
from idexdask.packets.layout import PAYLOAD_OFFSET, TRAILER_BYTES, PacketType
from idexdask.packets.quality import QualityFlag

N_HIGH, N_LOW = 9, 4
TOF_HIGH, TARGET_HIGH = 0, 3  # indices into CHANNELS


def words_3x10(samples) -> list[int]:
    """High-rate words: 2 pad bits + three 10-bit samples, most significant first."""
    s = [int(v) for v in samples]
    return [(s[i] << 20) | (s[i + 1] << 10) | s[i + 2] for i in range(0, len(s), 3)]


def words_2x12(samples) -> list[int]:
    """Low-rate words: 8 pad bits + two 12-bit samples."""
    s = [int(v) for v in samples]
    return [(s[i] << 12) | s[i + 1] for i in range(0, len(s), 2)]


@dataclass
class Packet:
    type: int
    evtnum: int
    words: tuple[int, ...] = ()
    fragoff: int = 0
    key: int = 0  # the event key of a header packet (time, then event number)
    crc_ok: bool = True


def assemble(packets: list[Packet], *, misalign: int = 0, n_high: int = N_HIGH):
    """Lay the packets out in a buffer (each at a 4-byte boundary plus ``misalign``)
    and assemble them."""
    chunks, starts, lengths = [], [], []
    at = 0
    for p in packets:
        payload = b"".join(int(w).to_bytes(4, "big") for w in p.words)
        body = bytes(misalign) + bytes(PAYLOAD_OFFSET) + payload + bytes(TRAILER_BYTES)
        body += bytes(-len(body) % 4)
        chunks.append(body)
        starts.append(at + misalign)
        lengths.append(PAYLOAD_OFFSET + len(payload) + TRAILER_BYTES)
        at += len(body)
    buffer = np.frombuffer(b"".join(chunks) + bytes(16), dtype=np.uint8).copy()
    n = len(packets)
    fields = {
        "idx__sci0type": np.array([p.type for p in packets]),
        "idx__sci0evtnum": np.array([p.evtnum for p in packets]),
        "idx__sci0fragoff": np.array([p.fragoff for p in packets]),
        "idx__sci0comp": np.zeros(n, dtype=int),
    }
    return assemble_events(
        buffer, np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64), fields,
        np.array([p.key for p in packets], dtype=np.uint64), np.ones(n, dtype=bool),
        np.array([p.crc_ok for p in packets]), np.ones(n, dtype=bool), n_high, N_LOW)


HIGH = np.array([1, 2, 3, 1021, 1022, 1023, 0, 512, 7], dtype=np.uint16)
LOW = np.array([4095, 0, 2048, 9], dtype=np.uint16)


def an_event(evtnum: int, key: int, high=HIGH, low=LOW) -> list[Packet]:
    return [Packet(int(PacketType.EVENT_HEADER), evtnum, key=key),
            Packet(int(PacketType.TOF_HIGH), evtnum, tuple(words_3x10(high))),
            Packet(int(PacketType.TARGET_HIGH), evtnum, tuple(words_2x12(low)))]


@pytest.mark.parametrize("misalign", [0, 2])  # the word-load path and the byte path
def test_events_are_sorted_by_time_and_their_samples_unpacked(misalign):
    later = an_event(evtnum=5, key=200, high=HIGH[::-1].copy(), low=LOW[::-1].copy())
    events = assemble(later + an_event(evtnum=6, key=100), misalign=misalign)
    assert events.header_packet.tolist() == [3, 0]  # the earlier event first
    np.testing.assert_array_equal(events.high[TOF_HIGH], [HIGH, HIGH[::-1]])
    np.testing.assert_array_equal(events.low[TARGET_HIGH - 3], [LOW, LOW[::-1]])
    # the channels no packet carried: fill, MISSING
    assert (events.high[1:] == FILL).all() and (events.low[1:] == FILL).all()
    missing = events.channel_status == QualityFlag.MISSING
    assert missing[:, [1, 2, 4, 5]].all() and not missing[:, [0, 3]].any()
    assert events.event_flags.tolist() == [0, 0]
    assert (events.orphan_packets, events.unknown_type_packets) == (0, 0)


def test_the_final_high_rate_word_is_right_aligned():
    """8 samples in 3 words: the last word holds two, behind one pad slot."""
    samples = np.arange(1, 9, dtype=np.uint16) * 100
    words = words_3x10(samples[:6]) + [(999 << 20) | (700 << 10) | 800]
    events = assemble([Packet(1, 1, key=1), Packet(int(PacketType.TOF_HIGH), 1, tuple(words))],
                      n_high=8)
    np.testing.assert_array_equal(events.high[TOF_HIGH, 0], samples)


def test_fragments_are_placed_by_their_offset_in_any_order():
    words = words_3x10(HIGH)
    packets = [Packet(1, 3, key=1),
               Packet(int(PacketType.TOF_HIGH), 3, tuple(words[2:]), fragoff=2),
               Packet(int(PacketType.TOF_HIGH), 3, tuple(words[:2]), fragoff=0)]
    events = assemble(packets)
    np.testing.assert_array_equal(events.high[TOF_HIGH, 0], HIGH)
    assert events.channel_status[0, TOF_HIGH] == 0


def test_a_missing_fragment_leaves_fill_and_flags_incomplete():
    words = words_3x10(HIGH)
    packets = [Packet(1, 3, key=1),
               Packet(int(PacketType.TOF_HIGH), 3, (words[0],), fragoff=0),
               Packet(int(PacketType.TOF_HIGH), 3, (words[2],), fragoff=2)]
    got = assemble(packets).high[TOF_HIGH, 0]
    np.testing.assert_array_equal(got[[0, 1, 2, 6, 7, 8]], HIGH[[0, 1, 2, 6, 7, 8]])
    assert (got[3:6] == FILL).all()
    assert assemble(packets).channel_status[0, TOF_HIGH] == QualityFlag.INCOMPLETE


def test_repeated_fragments_duplicate_or_conflicting():
    words = tuple(words_3x10(HIGH))
    other = tuple(words_3x10(HIGH[::-1]))
    same = assemble([Packet(1, 2, key=1), Packet(int(PacketType.TOF_HIGH), 2, words),
                     Packet(int(PacketType.TOF_HIGH), 2, words)])
    assert same.channel_status[0, TOF_HIGH] == QualityFlag.DUPLICATE_FRAGMENT
    np.testing.assert_array_equal(same.high[TOF_HIGH, 0], HIGH)
    # the first copy fails its CRC: the second, valid one is kept
    conflict = assemble([Packet(1, 2, key=1),
                         Packet(int(PacketType.TOF_HIGH), 2, other, crc_ok=False),
                         Packet(int(PacketType.TOF_HIGH), 2, words)])
    np.testing.assert_array_equal(conflict.high[TOF_HIGH, 0], HIGH)
    assert conflict.channel_status[0, TOF_HIGH] == (QualityFlag.CONFLICTING_FRAGMENT
                                                    | QualityFlag.CRC_MISMATCH)


def test_headers_repeated_or_failing_their_crc_are_flagged():
    packets = [Packet(1, 4, key=50, crc_ok=False), Packet(1, 4, key=50),
               Packet(int(PacketType.TOF_HIGH), 4, tuple(words_3x10(HIGH))),
               Packet(1, 9, key=60, crc_ok=False)]
    events = assemble(packets)
    assert events.header_packet.tolist() == [1, 3]  # the copy passing its CRC
    assert events.event_flags[0] == QualityFlag.DUPLICATE_HEADER
    assert events.event_flags[1] == QualityFlag.HEADER_CRC_MISMATCH


def test_orphans_and_unknown_types_are_counted_not_decoded():
    packets = [Packet(int(PacketType.TOF_HIGH), 8, tuple(words_3x10(HIGH))),  # before its header
               Packet(1, 8, key=1),
               Packet(0x80, 8, tuple(words_3x10(HIGH)))]  # a TYPE that names no channel
    events = assemble(packets)
    assert (events.orphan_packets, events.unknown_type_packets) == (1, 1)
    assert events.channel_status[0, TOF_HIGH] == QualityFlag.MISSING


def test_a_header_restarts_the_event_number_chain():
    """Data packets belong to the latest header with their EVTNUM before them."""
    first, second = HIGH, HIGH[::-1].copy()
    packets = [Packet(1, 7, key=1), Packet(int(PacketType.TOF_HIGH), 7, tuple(words_3x10(first))),
               Packet(1, 7, key=2), Packet(int(PacketType.TOF_HIGH), 7,
                                           tuple(words_3x10(second)))]
    events = assemble(packets)
    np.testing.assert_array_equal(events.high[TOF_HIGH], [first, second])
