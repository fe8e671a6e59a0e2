"""Rice/Golomb decompression of IDEX waveforms (COMP = 1), as a numba kernel.

Bit stream layout (most significant bit first), repeated per 64-sample subframe:

* 2 bits predictor code ``p``;
* if ``p >= 2``: 4 bits Rice parameter ``k``;
* ``p = 0``: one N-bit sample, repeated 64 times;
* ``p = 1``: 64 verbatim N-bit samples;
* ``p = 2``: one N-bit warm-up sample, then 63 residuals, ``x[i] = x[i-1] + e``;
* ``p = 3``: two N-bit warm-up samples, then 62 residuals,
  ``x[i] = 2 x[i-1] - x[i-2] + e``.

A residual is a unary quotient ``q`` (``q`` zero bits, then a one).  ``q = 47`` is
an escape: the next N+2 bits hold ``e`` in two's complement.  Otherwise ``q`` is
zig-zag mapped to ``h`` (even: ``q/2``, odd: ``-(q+1)/2``), ``k+1`` remainder bits
``r`` follow and ``e = h * 2**(k+1) + r``.  N is 10 for TOF channels and 12 for
the low-rate channels.  The stream is zero-padded to a 32-bit word.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.errors import DecompressionError

__all__ = ["DECODE_OK", "DECODE_OUT_OF_RANGE", "DECODE_SHORT", "decode_channel"]

SUBFRAME = 64
ESCAPE_QUOTIENT = 47
DECODE_OK = 0
DECODE_SHORT = 1
"""The stream ended before all samples were decoded."""
DECODE_OUT_OF_RANGE = 2
"""A decoded sample fell outside the ADC range: the stream is corrupt."""

_LEADING_ZEROS_8 = np.array([8] + [7 - int(np.log2(v)) for v in range(1, 256)], dtype=np.int64)
_LEADING_ZEROS_8.setflags(write=False)


@numba.njit(cache=True, nogil=True, inline="always")
def _read(stream, bit_pos, n_bits):  # pragma: no cover - compiled
    """Read ``n_bits`` (<= 32) MSB-first at ``bit_pos``; the stream is zero padded."""
    byte = bit_pos >> 3
    window = np.uint64(0)
    for i in range(5):
        window = (window << np.uint64(8)) | np.uint64(stream[byte + i])
    shift = np.uint64(40 - (bit_pos & 7) - n_bits)
    return np.int64((window >> shift) & np.uint64((1 << n_bits) - 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _leading_zeros(window):  # pragma: no cover - compiled
    """Leading zero bits of a non-zero 32-bit value."""
    if window >> 16:
        if window >> 24:
            return _LEADING_ZEROS_8[window >> 24]
        return 8 + _LEADING_ZEROS_8[window >> 16]
    if window >> 8:
        return 16 + _LEADING_ZEROS_8[window >> 8]
    return 24 + _LEADING_ZEROS_8[window]


@numba.njit(cache=True, nogil=True)
def rice_decode_into(stream, n_bytes, bits, out, n_out):  # pragma: no cover - compiled
    """Decode one channel stream into ``out[:n_out]``.

    ``stream`` must hold at least 8 zero bytes beyond ``n_bytes``.  Returns
    ``(samples_decoded, status)`` with status one of the ``DECODE_*`` codes.
    """
    total_bits = n_bytes * 8
    top = (1 << bits) - 1
    bp = 0
    i = 0
    while i < n_out:
        if bp + 2 > total_bits:
            return i, DECODE_SHORT
        predictor = _read(stream, bp, 2)
        bp += 2
        k = 0
        if predictor >= 2:
            k = _read(stream, bp, 4)
            bp += 4
        count = min(SUBFRAME, n_out - i)
        if predictor == 0:
            if bp + bits > total_bits:
                return i, DECODE_SHORT
            value = _read(stream, bp, bits)
            bp += bits
            for j in range(count):
                out[i + j] = value
            i += count
            continue
        warmups = count if predictor == 1 else min(predictor - 1, count)
        for j in range(warmups):
            if bp + bits > total_bits:
                return i, DECODE_SHORT
            out[i] = _read(stream, bp, bits)
            bp += bits
            i += 1
        for j in range(warmups, count):
            # Unary quotient: count leading zeros of a 32-bit window, bytewise.
            q = 0
            while True:
                if bp >= total_bits:
                    return i, DECODE_SHORT
                window = _read(stream, bp, 32)
                if window != 0:
                    break
                q += 32
                bp += 32
            lead = _leading_zeros(window)
            q += lead
            bp += lead + 1  # the zeros and the terminating one
            if bp > total_bits:
                return i, DECODE_SHORT
            if q == ESCAPE_QUOTIENT:
                if bp + bits + 2 > total_bits:
                    return i, DECODE_SHORT
                residual = _read(stream, bp, bits + 2)
                bp += bits + 2
                if residual >= 1 << (bits + 1):
                    residual -= 1 << (bits + 2)
            else:
                high = q >> 1 if (q & 1) == 0 else -((q + 1) >> 1)
                if bp + k + 1 > total_bits:
                    return i, DECODE_SHORT
                used = lead + 1
                if used + k + 1 <= 32:  # the remainder is still in the window
                    remainder = (window >> (32 - used - k - 1)) & ((1 << (k + 1)) - 1)
                else:
                    remainder = _read(stream, bp, k + 1)
                residual = high * (1 << (k + 1)) + remainder
                bp += k + 1
            if predictor == 2:
                value = np.int64(out[i - 1]) + residual
            else:
                value = 2 * np.int64(out[i - 1]) - np.int64(out[i - 2]) + residual
            if value < 0 or value > top:
                return i, DECODE_OUT_OF_RANGE
            out[i] = value
            i += 1
    return i, DECODE_OK


def decode_channel(stream: bytes | np.ndarray, bits: int, n_samples: int) -> np.ndarray:
    """Decompress one complete channel stream.

    Parameters
    ----------
    stream : bytes or numpy.ndarray of uint8
        The channel's compressed bytes (fragments concatenated in FRAGOFF order).
    bits : int
        ADC resolution: 10 (TOF) or 12 (target, ion grid).
    n_samples : int
        Samples to decode (8192 or 512).

    Returns
    -------
    numpy.ndarray of uint16
        The samples.

    Raises
    ------
    DecompressionError
        If the stream ends early or decodes to values outside the ADC range.
    """
    raw = np.frombuffer(bytes(stream), dtype=np.uint8)
    padded = np.zeros(raw.size + 8, dtype=np.uint8)
    padded[: raw.size] = raw
    out = np.zeros(n_samples, dtype=np.uint16)
    decoded, status = rice_decode_into(padded, raw.size, bits, out, n_samples)
    if status == DECODE_SHORT:
        raise DecompressionError(f"stream ended after {decoded} of {n_samples} samples")
    if status == DECODE_OUT_OF_RANGE:
        raise DecompressionError(f"sample {decoded} decodes outside the {bits}-bit ADC range")
    return out
