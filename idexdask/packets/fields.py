"""Vectorised extraction of fixed-width header fields from many packets at once."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from idexdask.packets.layout import Field

__all__ = ["extract_fields"]


def extract_fields(
    buffer: np.ndarray, packet_starts: np.ndarray, fields: Iterable[Field]
) -> dict[str, np.ndarray]:
    """Read fields (bit offset, width <= 32) of every packet in one pass per field.

    Parameters
    ----------
    buffer : numpy.ndarray of uint8
        File contents, with at least 8 readable bytes beyond the last field read
        (the reader pads its buffer).
    packet_starts : numpy.ndarray of int64
        Byte offset of each packet.
    fields : iterable of Field
        Fields to read; offsets are relative to the packet start.

    Returns
    -------
    dict
        Field name -> array (one value per packet) of the field's dtype.
    """
    starts = np.asarray(packet_starts, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for field in fields:
        first_byte = starts + field.bit_offset // 8
        lead = field.bit_offset % 8
        n_bytes = (lead + field.bits + 7) // 8
        value = np.zeros(starts.shape, dtype=np.uint64)
        for k in range(n_bytes):  # at most 5 gathers per field, vectorised over packets
            value = (value << np.uint64(8)) | buffer[first_byte + k].astype(np.uint64)
        value >>= np.uint64(8 * n_bytes - lead - field.bits)
        value &= np.uint64((1 << field.bits) - 1)
        out[field.name] = value.astype(field.dtype)
    return out
