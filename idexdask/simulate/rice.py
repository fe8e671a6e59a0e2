"""Rice/Golomb encoder for IDEX waveform streams (the inverse of the L0 decompressor).

Stream format (bit order: most significant bit first, no frame marker)
------------------------------------------------------------------------
The channel's samples are cut into subframes of 64.  Each subframe starts with a
2-bit predictor code:

``0`` constant
    one ``N``-bit value, repeated 64 times (only valid when all 64 are equal);
``1`` verbatim
    64 raw ``N``-bit values;
``2`` first-order prediction
    4-bit Rice parameter ``k``, one ``N``-bit warm-up sample, then 63 residuals
    ``e = x[i] - x[i-1]``;
``3`` second-order prediction
    4-bit ``k``, two ``N``-bit warm-up samples, then 62 residuals
    ``e = x[i] - (2 x[i-1] - x[i-2])``.

A residual is split into a high part ``h = floor(e / 2**(k+1))`` and a remainder
``r = e - h 2**(k+1)`` (``k + 1`` bits, unsigned).  ``h`` is zigzag mapped to a
quotient ``q = 2h`` (``h >= 0``) or ``q = -2h - 1`` (``h < 0``) and written in unary:
``q`` zero bits then a one.  When ``q >= 47`` the residual is escaped instead: 47
zeros, a one, then ``e`` as an ``N + 2``-bit two's-complement number.  The whole
stream is padded with zero bits to a multiple of 32 bits.

``N`` is 10 for the TOF channels and 12 for the low-rate channels.

The encoder picks, for every subframe, the predictor and ``k`` (0..15) giving the
fewest bits; ties go to the lower predictor code and the lower ``k``.  The choice
is vectorised over all subframes of all streams; the bits are written by a
compiled (numba) kernel.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask._logging import get_logger
from idexdask.errors import PacketError

__all__ = [
    "ESCAPE_QUOTIENT",
    "K_BITS",
    "SUBFRAME",
    "choose_parameters",
    "encode_channel",
    "encode_channels",
    "validate_samples",
]

_log = get_logger(__name__)

SUBFRAME = 64
"""Samples per subframe."""
K_BITS = 4
"""Width of the Rice parameter field."""
ESCAPE_QUOTIENT = 47
"""Unary quotient that announces a raw (N+2)-bit residual."""
_N_K = 1 << K_BITS
_CHUNK_SUBFRAMES = 4096  # bounds each int16 (subframes, k, residuals) temporary to ~8 MB


def _residual_bits(residuals: np.ndarray, bits: int) -> np.ndarray:
    """Bits needed by each row of residuals for every Rice parameter.

    Parameters
    ----------
    residuals : numpy.ndarray of int, shape (m, r)
        Prediction residuals, DN (|e| < 2**(bits + 1)).
    bits : int
        Sample width N.

    Returns
    -------
    numpy.ndarray of int64, shape (m, 16)
        Total residual bits of each row for k = 0..15.
    """
    # int16 is wide enough (|e| <= 2**13, q < 2**14, row sums < 64*62) and keeps
    # the (m, 16, r) cube small, which is what bounds the speed here.
    e = residuals.astype(np.int16)[:, np.newaxis, :]
    k1 = np.arange(1, _N_K + 1, dtype=np.int16)[np.newaxis, :, np.newaxis]
    high = e >> k1  # floor division by 2**(k+1)
    quotient = (high << 1) ^ (high >> 15)  # zigzag: 2h for h >= 0, -2h - 1 for h < 0
    cost = np.where(
        quotient < ESCAPE_QUOTIENT,
        quotient + (k1 + 1),
        np.int16(ESCAPE_QUOTIENT + 1 + bits + 2),
    )
    return cost.sum(axis=2, dtype=np.int64)


def choose_parameters(
    subframes: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cheapest predictor and Rice parameter of every subframe.

    Parameters
    ----------
    subframes : numpy.ndarray of int64, shape (m, 64)
        Samples, DN.
    bits : int
        Sample width N (10 or 12).

    Returns
    -------
    predictor : numpy.ndarray of int64, shape (m,)
        Predictor code 0..3.
    k : numpy.ndarray of int64, shape (m,)
        Rice parameter 0..15 (0 for predictors 0 and 1).
    n_bits : numpy.ndarray of int64, shape (m,)
        Encoded size of each subframe, bits.
    """
    m = subframes.shape[0]
    predictor = np.empty(m, dtype=np.int64)
    k = np.empty(m, dtype=np.int64)
    n_bits = np.empty(m, dtype=np.int64)
    for lo in range(0, m, _CHUNK_SUBFRAMES):
        x = subframes[lo : lo + _CHUNK_SUBFRAMES]
        first = x[:, 1:] - x[:, :-1]
        second = first[:, 1:] - first[:, :-1]
        cost1 = _residual_bits(first, bits)
        cost2 = _residual_bits(second, bits)
        k1 = cost1.argmin(axis=1)
        k2 = cost2.argmin(axis=1)
        rows = np.arange(x.shape[0])
        big = np.iinfo(np.int64).max // 4
        costs = np.stack(
            [
                np.where((first == 0).all(axis=1), 2 + bits, big),
                np.full(x.shape[0], 2 + SUBFRAME * bits),
                2 + K_BITS + bits + cost1[rows, k1],
                2 + K_BITS + 2 * bits + cost2[rows, k2],
            ],
            axis=1,
        )
        choice = costs.argmin(axis=1)  # first minimum: the lower code wins ties
        predictor[lo : lo + x.shape[0]] = choice
        k[lo : lo + x.shape[0]] = np.where(choice == 2, k1, np.where(choice == 3, k2, 0))
        n_bits[lo : lo + x.shape[0]] = costs[rows, choice]
    return predictor, k, n_bits


@numba.njit(cache=True, nogil=True)
def _put(out, state, value, n):  # pragma: no cover - compiled
    """Append the ``n`` (<= 32) low bits of ``value`` to ``out``; state = [acc, nacc, pos]."""
    acc = (state[0] << n) | (value & ((np.int64(1) << n) - 1))
    nacc = state[1] + n
    pos = state[2]
    while nacc >= 8:
        nacc -= 8
        out[pos] = (acc >> nacc) & 0xFF
        pos += 1
    state[0] = acc & ((np.int64(1) << nacc) - 1)
    state[1] = nacc
    state[2] = pos


@numba.njit(cache=True, nogil=True)
def _write_streams(
    x, predictor, k, bits, sub_start, byte_start, out
):  # pragma: no cover - compiled
    """Write every stream's subframes at its byte offset; return bits written per stream."""
    n_streams = sub_start.shape[0] - 1
    written = np.zeros(n_streams, dtype=np.int64)
    state = np.zeros(3, dtype=np.int64)
    raw_mask = (np.int64(1) << (bits + 2)) - 1
    for s in range(n_streams):
        state[0] = 0
        state[1] = 0
        state[2] = byte_start[s]
        for j in range(sub_start[s], sub_start[s + 1]):
            p = predictor[j]
            _put(out, state, p, 2)
            if p == 0:
                _put(out, state, x[j, 0], bits)
                continue
            if p == 1:
                for i in range(x.shape[1]):
                    _put(out, state, x[j, i], bits)
                continue
            kk = k[j]
            _put(out, state, kk, 4)
            _put(out, state, x[j, 0], bits)
            first = 1
            if p == 3:
                _put(out, state, x[j, 1], bits)
                first = 2
            for i in range(first, x.shape[1]):
                if p == 2:
                    e = x[j, i] - x[j, i - 1]
                else:
                    e = x[j, i] - 2 * x[j, i - 1] + x[j, i - 2]
                high = e >> (kk + 1)
                q = 2 * high if high >= 0 else -2 * high - 1
                if q >= 47:
                    _put(out, state, 0, 32)
                    _put(out, state, 1, 16)  # 47 zeros and a one
                    _put(out, state, e & raw_mask, bits + 2)
                else:
                    while q > 31:
                        _put(out, state, 0, 31)
                        q -= 31
                    _put(out, state, 1, q + 1)
                    _put(out, state, e - (high << (kk + 1)), kk + 1)
        n_bits = (state[2] - byte_start[s]) * 8 + state[1]
        if state[1] > 0:  # flush the last partial byte, zero padded
            _put(out, state, 0, 8 - state[1])
        written[s] = n_bits
    return written


def validate_samples(samples: np.ndarray, bits: int, name: str = "samples") -> np.ndarray:
    """Check that samples are integers within the ADC range and return them as int64.

    Parameters
    ----------
    samples : array_like
        Samples, DN.  Integral floats are accepted.
    bits : int
        ADC resolution.
    name : str
        What to call the samples in an error message.

    Raises
    ------
    PacketError
        If a sample is not an integer or lies outside ``[0, 2**bits - 1]``.
    """
    array = np.asarray(samples)
    if array.dtype.kind == "f":
        if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise PacketError(f"{name}: samples must be integers")
    elif array.dtype.kind not in "iu":
        raise PacketError(f"{name}: samples must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= (1 << bits)):
        raise PacketError(
            f"{name}: samples outside the {bits}-bit ADC range [0, {(1 << bits) - 1}]: "
            f"min {array.min()}, max {array.max()}"
        )
    return array


def encode_channels(samples: np.ndarray, bits: int) -> list[bytes]:
    """Rice-encode many records of one channel (one stream per row).

    Parameters
    ----------
    samples : numpy.ndarray of int, shape (n_records, n_samples)
        Samples, DN, within ``[0, 2**bits - 1]``.  A record whose length is not a
        multiple of 64 is completed by repeating its last sample; a decoder told
        the true sample count drops the repeats.
    bits : int
        Sample width N (10 for TOF, 12 for the low-rate channels).

    Returns
    -------
    list of bytes
        One stream per record, zero padded to a multiple of 4 bytes.

    Raises
    ------
    PacketError
        If a sample is not an integer within the ADC range.
    """
    if bits not in (10, 12):
        raise PacketError(f"IDEX streams carry 10- or 12-bit samples, not {bits}")
    x = validate_samples(samples, bits)
    if x.ndim != 2:
        raise PacketError(f"expected (records, samples), got shape {x.shape}")
    n_records, n_samples = x.shape
    if n_samples == 0:
        return [b""] * n_records
    pad = -n_samples % SUBFRAME
    if pad:
        x = np.concatenate([x, np.repeat(x[:, -1:], pad, axis=1)], axis=1)
    per_record = x.shape[1] // SUBFRAME
    subframes = np.ascontiguousarray(x.reshape(-1, SUBFRAME))
    predictor, k, n_bits = choose_parameters(subframes, bits)
    stream_bits = n_bits.reshape(n_records, per_record).sum(axis=1)
    stream_bytes = 4 * (-(-stream_bits // 32))
    byte_start = np.concatenate([[0], np.cumsum(stream_bytes)]).astype(np.int64)
    sub_start = np.arange(n_records + 1, dtype=np.int64) * per_record
    out = np.zeros(int(byte_start[-1]), dtype=np.uint8)
    written = _write_streams(subframes, predictor, k, bits, sub_start, byte_start, out)
    if not np.array_equal(written, stream_bits):  # pragma: no cover - internal consistency
        raise PacketError("Rice encoder wrote a different number of bits than it planned")
    _log.debug(
        "Rice-encoded %d records of %d %d-bit samples into %d bytes",
        n_records,
        n_samples,
        bits,
        out.size,
    )
    blob = out.tobytes()
    return [blob[byte_start[i] : byte_start[i + 1]] for i in range(n_records)]


def encode_channel(samples: np.ndarray, bits: int) -> bytes:
    """Rice-encode one channel record.

    Parameters
    ----------
    samples : numpy.ndarray of int, shape (n_samples,)
        Samples, DN, within ``[0, 2**bits - 1]``.
    bits : int
        Sample width N: 10 (TOF channels) or 12 (target and ion grid channels).

    Returns
    -------
    bytes
        The compressed stream, zero padded to a whole number of 32-bit words.

    Raises
    ------
    PacketError
        If a sample is not an integer within the ADC range.

    Examples
    --------
    >>> import numpy as np
    >>> stream = encode_channel(np.full(512, 2048), bits=12)
    >>> len(stream)  # 8 constant subframes of 14 bits -> 112 bits -> 4 words
    16
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise PacketError(f"expected a 1-D record, got shape {x.shape}")
    return encode_channels(x[np.newaxis, :], bits)[0]
