"""CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR).

Every IDEX science packet ends with this CRC computed over the whole packet up to
and including the sync word.  The kernel is table driven and compiled with numba:
it checks all packets of a file in one call, at memory speed.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["crc16_ccitt_false", "crc16_of_packets"]

_POLY = 0x1021
_INIT = 0xFFFF


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) if crc & 0x8000 else (crc << 1)
        table[byte] = crc & 0xFFFF
    return table


def _make_slicing_tables(base: np.ndarray, n: int = 8) -> np.ndarray:
    tables = np.zeros((n, 256), dtype=np.int64)
    tables[0] = base
    for k in range(1, n):
        previous = tables[k - 1]
        tables[k] = ((previous << 8) & 0xFFFF) ^ base[previous >> 8]
    return tables


_TABLES = _make_slicing_tables(_make_table().astype(np.int64))
_TABLES.setflags(write=False)


@numba.njit(cache=True, nogil=True)
def _crc_many(buffer, starts, lengths, t, out):  # pragma: no cover - compiled
    for i in range(starts.shape[0]):
        crc = np.int64(0xFFFF)
        j = starts[i]
        end = j + lengths[i]
        while j + 8 <= end:
            crc = (
                t[7, ((crc >> 8) ^ buffer[j]) & 0xFF]
                ^ t[6, (crc ^ buffer[j + 1]) & 0xFF]
                ^ t[5, buffer[j + 2]]
                ^ t[4, buffer[j + 3]]
                ^ t[3, buffer[j + 4]]
                ^ t[2, buffer[j + 5]]
                ^ t[1, buffer[j + 6]]
                ^ t[0, buffer[j + 7]]
            )
            j += 8
        while j < end:
            crc = ((crc << 8) & 0xFFFF) ^ t[0, ((crc >> 8) ^ buffer[j]) & 0xFF]
            j += 1
        out[i] = crc


def crc16_of_packets(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC of many byte ranges of one buffer.

    Parameters
    ----------
    buffer : numpy.ndarray of uint8
        The file contents.
    starts, lengths : numpy.ndarray of int64
        First byte and number of bytes of each range.

    Returns
    -------
    numpy.ndarray of uint16
        One CRC per range.
    """
    out = np.empty(len(starts), dtype=np.uint16)
    _crc_many(
        np.ascontiguousarray(buffer, dtype=np.uint8),
        np.asarray(starts, dtype=np.int64),
        np.asarray(lengths, dtype=np.int64),
        _TABLES,
        out,
    )
    return out


def crc16_ccitt_false(data: bytes | np.ndarray) -> int:
    """CRC-16/CCITT-FALSE of one byte string (check value of b"123456789" is 0x29B1)."""
    array = np.frombuffer(bytes(data), dtype=np.uint8)
    return int(crc16_of_packets(array, np.array([0]), np.array([array.size]))[0])
