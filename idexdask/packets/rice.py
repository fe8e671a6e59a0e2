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
from numba.cpython.unsafe.numbers import leading_zeros

from idexdask.errors import DecompressionError

__all__ = ["DECODE_OK", "DECODE_OUT_OF_RANGE", "DECODE_SHORT", "decode_channel"]

SUBFRAME = 64
ESCAPE_QUOTIENT = 47
DECODE_OK = 0
DECODE_SHORT = 1
"""The stream ended before all samples were decoded."""
DECODE_OUT_OF_RANGE = 2
"""A decoded sample fell outside the ADC range: the stream is corrupt."""

@numba.njit(cache=True, nogil=True, inline="always")
def _refill(stream, next_byte, acc, have):  # pragma: no cover - compiled
    """Top the 64-bit accumulator up to more than 56 valid bits (left-aligned)."""
    while have <= 56:
        acc |= np.uint64(stream[next_byte]) << np.uint64(56 - have)
        next_byte += 1
        have += 8
    return next_byte, acc, have


@numba.njit(cache=True, nogil=True, inline="always")
def _take(acc, have, used, n_bits):  # pragma: no cover - compiled
    """Pop ``n_bits`` (<= 56) from the accumulator: (value, acc, have, used)."""
    value = np.int64(acc >> np.uint64(64 - n_bits))
    return value, acc << np.uint64(n_bits), have - n_bits, used + n_bits


@numba.njit(cache=True, nogil=True)
def rice_decode_into(stream, n_bytes, bits, out, n_out):  # pragma: no cover - compiled
    """Decode one channel stream into ``out[:n_out]``.

    Bits are read through a 64-bit accumulator, refilled bytewise.  ``stream``
    must hold at least 8 zero bytes beyond ``n_bytes``.  Returns
    ``(samples_decoded, status)`` with status one of the ``DECODE_*`` codes.
    """
    total_bits = n_bytes * 8
    top = (1 << bits) - 1
    acc = np.uint64(0)
    have = 0  # valid bits in acc
    used = 0  # bits consumed from the stream
    next_byte = 0
    i = 0
    while i < n_out:
        next_byte, acc, have = _refill(stream, next_byte, acc, have)
        if used + 2 > total_bits:
            return i, DECODE_SHORT
        predictor, acc, have, used = _take(acc, have, used, 2)
        k = 0
        if predictor >= 2:
            k, acc, have, used = _take(acc, have, used, 4)
        count = min(SUBFRAME, n_out - i)
        if predictor == 0:
            if used + bits > total_bits:
                return i, DECODE_SHORT
            value, acc, have, used = _take(acc, have, used, bits)
            for j in range(count):
                out[i + j] = value
            i += count
            continue
        warmups = count if predictor == 1 else min(predictor - 1, count)
        for _ in range(warmups):
            next_byte, acc, have = _refill(stream, next_byte, acc, have)
            if used + bits > total_bits:
                return i, DECODE_SHORT
            value, acc, have, used = _take(acc, have, used, bits)
            out[i] = value
            i += 1
        for _ in range(warmups, count):
            next_byte, acc, have = _refill(stream, next_byte, acc, have)
            # unary quotient: leading zeros, then a one
            q = 0
            while (acc >> np.uint64(32)) == 0:  # 32 or more zeros: rare
                if used + 32 > total_bits:
                    return i, DECODE_SHORT
                acc <<= np.uint64(32)
                have -= 32
                used += 32
                q += 32
                next_byte, acc, have = _refill(stream, next_byte, acc, have)
            lead = np.int64(leading_zeros(acc))  # < 32: one CPU instruction (lzcnt)
            q += lead
            acc <<= np.uint64(lead + 1)
            have -= lead + 1
            used += lead + 1
            if used > total_bits:
                return i, DECODE_SHORT
            # no refill needed: > 56 bits were there, at most 32 went to the
            # quotient, and what follows takes at most 16 (k + 1) or 14 (escape)
            if q == ESCAPE_QUOTIENT:
                if used + bits + 2 > total_bits:
                    return i, DECODE_SHORT
                residual, acc, have, used = _take(acc, have, used, bits + 2)
                if residual >= 1 << (bits + 1):
                    residual -= 1 << (bits + 2)
            else:
                high = q >> 1 if (q & 1) == 0 else -((q + 1) >> 1)
                if used + k + 1 > total_bits:
                    return i, DECODE_SHORT
                remainder, acc, have, used = _take(acc, have, used, k + 1)
                residual = high * (1 << (k + 1)) + remainder
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
