"""Damaged telemetry: every good event survives, damaged ones are flagged, nothing crashes.

The damage is made from the real uncompressed and compressed files, one kind at a
time, then at random (hypothesis) for the fuzz test.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idexdask import read_l0
from idexdask.errors import IdexDaskError
from idexdask.packets.layout import CHANNELS
from idexdask.packets.quality import QualityFlag
from tests.packet_damage import evtnum, ptype, split_packets

WAVEFORMS = [c.name for c in CHANNELS]


@pytest.fixture(scope="module", params=["non_compressed", "compressed"])
def clean(request, l0_dir):
    path = next(l0_dir.glob(f"{request.param}_2023_*.pkts"))
    data = path.read_bytes()
    return data, split_packets(data), read_l0(data)


def same_event(a, i, b, j) -> bool:
    return all(np.array_equal(a[v].values[i], b[v].values[j]) for v in WAVEFORMS)


def assert_events_kept(reference, damaged, rows):
    """Events ``rows`` of ``reference`` are in ``damaged``, sample for sample."""
    for row in rows:
        match = np.flatnonzero(damaged["epoch"].values == reference["epoch"].values[row])
        assert match.size == 1, f"event {row} lost"
        assert same_event(reference, row, damaged, match[0]), f"event {row} changed"


def test_truncated_file_keeps_complete_events(clean, caplog):
    data, packets, reference = clean
    cut = sum(len(p) for p in packets[:-3]) + 100  # inside the last event's data
    with caplog.at_level(logging.WARNING):
        damaged = read_l0(data[:cut])
    assert damaged.sizes["epoch"] == 4
    assert_events_kept(reference, damaged, range(3))
    assert damaged["quality_flags"].values[3] & QualityFlag.MISSING
    assert damaged["quality_flags"].values[:3].tolist() == [0, 0, 0]
    assert damaged.attrs["truncated_packets"] == 1
    assert "truncated" in caplog.text and "damaged" in caplog.text


def test_length_field_past_the_end_mid_file(clean):
    data, packets, reference = clean
    bad = bytearray(packets[5])
    bad[4:6] = (0xFFF0).to_bytes(2, "big")
    damaged = read_l0(b"".join(packets[:5] + [bytes(bad)] + packets[6:]))
    assert damaged.sizes["epoch"] == 4
    victim = next(i for i, p in enumerate(packets[:6]) if ptype(p) == 1 and i <= 5)
    status = damaged["channel_status"].values
    assert status.any()  # the event owning packet 5 lost a fragment
    untouched = [r for r in range(4) if not status[r].any()]
    assert len(untouched) == 3 and victim == 0
    assert_events_kept(reference, damaged, untouched)


def test_garbage_between_packets(clean, caplog):
    data, packets, reference = clean
    rng = np.random.default_rng(7)
    junk = rng.integers(0, 256, 999, dtype=np.uint8).tobytes()
    mixed = b"".join(p + (junk if i % 5 == 2 else b"") for i, p in enumerate(packets))
    with caplog.at_level(logging.WARNING):
        damaged = read_l0(mixed)
    assert_events_kept(reference, damaged, range(4))
    assert not damaged["quality_flags"].values.any()
    assert damaged.attrs["skipped_bytes"] >= 999 * (len(packets) // 5)
    assert "skipped" in caplog.text


def test_data_packet_before_its_header_is_an_orphan(clean):
    data, packets, reference = clean
    first_data = next(i for i, p in enumerate(packets) if ptype(p) != 1)
    reordered = [packets[first_data]] + packets[:first_data] + packets[first_data + 1 :]
    damaged = read_l0(b"".join(reordered))
    assert damaged.attrs["orphan_packets"] == 1
    assert damaged["quality_flags"].values[0] != 0  # its channel is now incomplete
    assert_events_kept(reference, damaged, range(1, 4))


def test_missing_channel_is_flagged_and_filled(clean):
    data, packets, reference = clean
    dropped = [p for p in packets if not (evtnum(p) == evtnum(packets[0]) and ptype(p) == 64)]
    damaged = read_l0(b"".join(dropped))
    grid = CHANNELS.index(next(c for c in CHANNELS if c.name == "Ion_Grid"))
    assert damaged["channel_status"].values[0, grid] == QualityFlag.MISSING
    assert (damaged["Ion_Grid"].values[0] == 0xFFFF).all()
    assert np.array_equal(damaged["TOF_High"].values[0], reference["TOF_High"].values[0])
    assert_events_kept(reference, damaged, range(1, 4))


def test_duplicated_fragment_is_harmless(clean):
    data, packets, reference = clean
    damaged = read_l0(b"".join(packets[:3] + [packets[1]] + packets[3:]))
    assert_events_kept(reference, damaged, range(4))
    assert damaged["quality_flags"].values[0] == QualityFlag.DUPLICATE_FRAGMENT


def test_conflicting_fragment_keeps_the_crc_valid_copy(clean):
    data, packets, reference = clean
    forged = bytearray(packets[1])
    forged[60] ^= 0xFF  # a different payload under the same FRAGOFF, bad CRC
    damaged = read_l0(b"".join(packets[:2] + [bytes(forged)] + packets[2:]))
    assert_events_kept(reference, damaged, range(4))
    assert damaged["quality_flags"].values[0] & QualityFlag.CONFLICTING_FRAGMENT


def test_crc_failure_keeps_samples_and_flags(clean, caplog):
    data, packets, reference = clean
    corrupt = bytearray(packets[-1])
    corrupt[-1] ^= 0x01  # only the CRC itself: samples intact
    with caplog.at_level(logging.WARNING):
        damaged = read_l0(b"".join(packets[:-1] + [bytes(corrupt)]))
    assert_events_kept(reference, damaged, range(4))
    assert damaged["quality_flags"].values[3] & QualityFlag.CRC_MISMATCH
    assert "CRC_MISMATCH" in caplog.text


def test_header_crc_failure_is_flagged(clean):
    data, packets, reference = clean
    corrupt = bytearray(packets[0])
    corrupt[-2] ^= 0x80
    damaged = read_l0(b"".join([bytes(corrupt)] + packets[1:]))
    assert damaged["quality_flags"].values[0] & QualityFlag.HEADER_CRC_MISMATCH
    assert_events_kept(reference, damaged, range(4))


def test_empty_and_hopeless_inputs_give_empty_datasets():
    for data in (b"", b"\x00" * 5, bytes(range(256)) * 40):
        ds = read_l0(data)
        assert ds.sizes["epoch"] == 0
        assert ds["TOF_High"].shape == (0, 8192)


def test_unreadable_path_raises_project_error(tmp_path):
    with pytest.raises(IdexDaskError, match="cannot read"):
        read_l0(tmp_path / "missing.pkts")


# ---------------------------------------------------------------- fuzzing
@st.composite
def mutations(draw, size):
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
    at = draw(st.integers(0, size - 1))
    if kind == "flip":
        return kind, at, at + 1, bytes([draw(st.integers(1, 255))])
    if kind == "truncate":
        return kind, at, size, b""
    if kind == "insert":
        return kind, at, at, draw(st.binary(min_size=1, max_size=600))
    span = draw(st.integers(1, 3000))
    if kind == "delete":
        return kind, at, min(size, at + span), b""
    return kind, at, min(size, at + span), draw(st.binary(min_size=1, max_size=64))


def event_spans(packets):
    """Byte range [first, end) of each event's packets (events are contiguous here)."""
    spans, pos, start = [], 0, None
    for packet in packets:
        if ptype(packet) == 1:
            if start is not None:
                spans.append((start, pos))
            start = pos
        pos += len(packet)
    spans.append((start, pos))
    return spans


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_mutated_real_packets(clean, data):
    original, packets, reference = clean
    kind, start, stop, payload = data.draw(mutations(len(original)))
    if kind == "flip":
        mutated = bytearray(original)
        mutated[start] ^= payload[0]
        mutated = bytes(mutated)
    elif kind == "overwrite":
        mutated = original[:start] + payload + original[start + len(payload) :]
        stop = start + len(payload)
    else:
        mutated = original[:start] + payload + original[stop:]
    try:
        damaged = read_l0(mutated)
    except IdexDaskError:
        return  # documented error type: acceptable, though none is expected
    for row, (first, end) in enumerate(event_spans(packets)):
        untouched = (stop <= first or start >= end) and not (
            kind == "insert" and first < start < end
        )
        if kind == "truncate":
            untouched = end <= start
        if untouched:
            assert_events_kept(reference, damaged, [row])
    # nothing was invented: every event decoded carries a real epoch or is flagged
    known = set(reference["epoch"].values.tolist())
    for row, epoch in enumerate(damaged["epoch"].values.tolist()):
        assert epoch in known or damaged["quality_flags"].values[row] != 0
