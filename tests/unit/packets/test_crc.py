"""CRC-16/CCITT-FALSE kernels: check value, bit-by-bit reference, kernels agree."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.packets.crc import crc16_ccitt_false, crc16_of_packets, folding_available


def bitwise_crc(data: bytes) -> int:
    """The definition, one bit at a time (no table)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def test_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def random_ranges(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    # every length class of the folding kernel: < 32, 32-127 (one lane), >= 128
    # (four lanes) with every tail length, at every byte alignment
    lengths = np.concatenate([np.arange(0, 200), rng.integers(200, 5000, n - 200)]).astype(np.int64)
    starts = rng.integers(0, size - lengths.max(), lengths.size).astype(np.int64)
    return starts, lengths


def test_table_kernel_matches_definition() -> None:
    rng = np.random.default_rng(1)
    buffer = rng.integers(0, 256, 20_000, dtype=np.uint8)
    starts, lengths = random_ranges(rng, 260, buffer.size)
    got = crc16_of_packets(buffer, starts, lengths, kernel="tables")
    want = [bitwise_crc(buffer[s : s + n].tobytes()) for s, n in zip(starts, lengths, strict=True)]
    assert got.tolist() == want


@pytest.mark.skipif(not folding_available(), reason="CPU without PCLMULQDQ: tables only")
def test_folding_kernel_matches_tables() -> None:
    rng = np.random.default_rng(2)
    buffer = rng.integers(0, 256, 200_000, dtype=np.uint8)
    starts, lengths = random_ranges(rng, 3000, buffer.size)
    folded = crc16_of_packets(buffer, starts, lengths, kernel="folding")
    tables = crc16_of_packets(buffer, starts, lengths, kernel="tables")
    np.testing.assert_array_equal(folded, tables)
    # spot check against the bit-by-bit definition, including long ranges
    for i in range(0, starts.size, 97):
        s, n = starts[i], lengths[i]
        assert folded[i] == bitwise_crc(buffer[s : s + n].tobytes())


@pytest.mark.skipif(not folding_available(), reason="CPU without PCLMULQDQ: tables only")
def test_folding_detects_every_single_bit_flip_in_a_packet() -> None:
    rng = np.random.default_rng(3)
    packet = rng.integers(0, 256, 300, dtype=np.uint8)
    flipped = np.tile(packet, (packet.size * 8, 1))
    rows = np.arange(flipped.shape[0])
    flipped[rows, rows // 8] ^= (1 << (rows % 8)).astype(np.uint8)
    buffer = np.concatenate([packet, flipped.ravel()])
    starts = np.arange(flipped.shape[0] + 1, dtype=np.int64) * packet.size
    lengths = np.full(starts.size, packet.size, dtype=np.int64)
    crcs = crc16_of_packets(buffer, starts, lengths, kernel="folding")
    assert crcs[0] == bitwise_crc(packet.tobytes())
    assert (crcs[1:] != crcs[0]).all()


def test_unknown_kernel_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown CRC kernel"):
        crc16_of_packets(np.zeros(4, np.uint8), np.array([0]), np.array([4]), kernel="fast")
