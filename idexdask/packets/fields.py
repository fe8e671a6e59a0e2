"""Extraction of fixed-width header fields from many packets at once."""

from __future__ import annotations

from collections.abc import Iterable

import numba
import numpy as np

from idexdask.packets.layout import Field

__all__ = ["extract_fields"]


@numba.njit(cache=True, nogil=True)
def _gather_fields(buffer, starts, byte_offsets, leads, widths, out):  # pragma: no cover
    """out[f, p] = bits [lead, lead + width) of packet p read from its byte_offsets[f]."""
    for p in range(starts.shape[0]):
        start = np.uint64(starts[p])  # unsigned: no negative-index wrap checks
        for f in range(byte_offsets.shape[0]):
            first = start + np.uint64(byte_offsets[f])
            n_bytes = (leads[f] + widths[f] + 7) // 8
            value = np.uint64(0)
            for k in range(np.uint64(n_bytes)):
                value = (value << np.uint64(8)) | np.uint64(buffer[first + k])
            value >>= np.uint64(8 * n_bytes - leads[f] - widths[f])
            out[f, p] = value & np.uint64((1 << widths[f]) - 1)


def extract_fields(
    buffer: np.ndarray, packet_starts: np.ndarray, fields: Iterable[Field]
) -> dict[str, np.ndarray]:
    """Read fields (bit offset, width <= 32) of every packet in one compiled pass.

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
    fields = list(fields)
    starts = np.ascontiguousarray(packet_starts, dtype=np.int64)
    offsets = np.array([f.bit_offset for f in fields], dtype=np.int64)
    widths = np.array([f.bits for f in fields], dtype=np.int64)
    if (widths > 32).any() or (widths < 1).any():
        raise ValueError("fields must be 1 to 32 bits wide")
    values = np.empty((len(fields), starts.size), dtype=np.uint64)
    _gather_fields(
        np.ascontiguousarray(buffer, dtype=np.uint8),
        starts,
        offsets // 8,
        offsets % 8,
        widths,
        values,
    )
    return {field.name: values[i].astype(field.dtype) for i, field in enumerate(fields)}
