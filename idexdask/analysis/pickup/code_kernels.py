"""The pickup derivative's pass formed from a record's ADC codes, in integers.

A scope record's samples are its recorded codes ``c`` in volts,
``v = float32(gain * c - offset)`` (:func:`idexdask.read_trc`).  The smoothed
derivative of :func:`~idexdask.analysis.pickup.kernels.derivative_rows`,

    ``d[i] = mean(p y[i : i + w]) - mean(p y[i - w : i])``  (``p`` the polarity),

is then ``gain * D[i] / w`` with the integer ``D[i] = p (sum of c[i : i + w] -
sum of c[i - w : i])``: formed from exact int64 prefix sums of the codes (no
chain of rounding float64 additions: any order, one-cycle adds) and scaled
once, each value the correctly rounded one (``|D| < 2**32`` and a float32
gain: ``D * gain`` is exact in float64, the division rounds once).  The order
statistics (the MAD, the edge maxima) are those of the integers ``D``.

These values differ from the float path's by its roundings: each sample's
float32 rounding of ``gain * c - offset`` (the float path differentiates the
rounded volts, this one the codes they represent) and the float64 rounding of
its running sums.  A record whose every sample is not exactly the float32 of
its code (another gain or offset, NaN samples, values between codes) is left
to the float path, and so is one whose derivative has a zero MAD (the float
path then takes the derivative's standard deviation).

Where the reader kept the codes it decoded the volts from
(:class:`idexdask.adccodes.RecordedCodes`), the pass takes them as they are:
no code is found from a value and none checked (the volts are those codes'
by construction).  A record holding the fill code (missing samples) is left
to the float path, as its NaN volts would send it there.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.adccodes import code_value
from idexdask.analysis.pickup.kernels import (
    BLOCK,
    CHUNK,
    derivative_window,
    first_maximum,
    first_minimum,
)
from idexdask.analysis.pickup.order_stats import (
    BINS,
    COPIES,
    binned_median_and_mad_of_ints,
    int_keys,
)

__all__ = ["CODE_LIMIT", "chunk_prefix_sums", "code_derivative", "code_derivative_rows",
           "decode_chunk", "int_extremes", "prefix_sums", "recorded_derivative_rows",
           "recorded_prefix_sums"]

CODE_LIMIT = 32768.0
"""Largest code magnitude taken (16-bit codes): ``|D| <= 2 w CODE_LIMIT``
fits an int32 for ``w < 2**15``."""

_SPAN = 8 * CHUNK
"""Prefix sums held beyond the ``2 w`` a derivative value reaches back (the
held sums move to the buffer's front once per :data:`_SPAN` samples)."""


@numba.njit(cache=True, nogil=True)
def code_derivative_rows(
    y, single, polarity, gain, offset, w, min_transit, max_transit, half
):  # pragma: no cover - compiled
    """:func:`~idexdask.analysis.pickup.kernels.derivative_rows`'s results from
    the codes of the rows that are exactly on them (see the module docstring):
    :func:`recorded_derivative_rows` with no recorded codes (each row's codes
    found from its values and checked)."""
    return recorded_derivative_rows(y, np.empty((0, 0), dtype=np.int16), 0, single, polarity,
                                    gain, offset, w, min_transit, max_transit, half)


@numba.njit(cache=True, nogil=True)
def recorded_derivative_rows(
    y, recorded, fill, single, polarity, gain, offset, w, min_transit, max_transit, half
):  # pragma: no cover - compiled
    """:func:`~idexdask.analysis.pickup.kernels.derivative_rows`'s results from
    the records' ADC codes: the codes the reader recorded (``recorded``), else
    those of the rows that are exactly on them (see the module docstring).

    Parameters
    ----------
    y : numpy.ndarray of float32 or float64, (rows, n)
        The records, V.
    recorded : numpy.ndarray of int16, (rows, n) or (0, 0)
        The codes ``y`` was decoded from (``y = float(gain * code - offset)``
        exactly, ``fill`` where ``y`` is NaN), or an empty array: none recorded,
        each row's codes are found from its values and checked.  A row holding
        ``fill`` is left to the float path (its missing samples).
    fill : int
        The code of a missing sample in ``recorded``.
    single : bool
        Whether ``y`` is float32 (its values the float32 of the codes' volts).
    polarity : float
        ±1: the sign that makes the pulse positive.
    gain, offset : numpy.ndarray, (rows,)
        Each row's ``vertical_gain`` (V/count, > 0) and ``vertical_offset`` (V):
        ``y = gain * code - offset`` rounded to ``y``'s dtype.  NaN: unknown.
    w, min_transit, max_transit, half : int
        As :func:`~idexdask.analysis.pickup.kernels.derivative_rows`.

    Returns
    -------
    exact : numpy.ndarray of bool, (rows,)
        Rows formed from their codes (recorded codes: every row whose scale is
        known and which holds no ``fill``; else those exactly on their codes);
        the other rows' values below are not set.
    mad : numpy.ndarray, (rows,)
        Median absolute deviation of the derivative ``d[w : n - w + 1]``, V.
    i_in, i_out : numpy.ndarray, (rows,), int64
        Sample indices of the entry and exit edge peaks (first on ties).
    win_in, win_out : numpy.ndarray, (rows, 2 half + 1)
        The derivative around each edge, V.
    """
    rows, n = y.shape
    m = n - 2 * w + 1
    exact = np.zeros(rows, dtype=np.bool_)
    mad = np.full(rows, np.nan)
    i_in = np.zeros(rows, dtype=np.int64)
    i_out = np.zeros(rows, dtype=np.int64)
    win_in = np.zeros((rows, 2 * half + 1))
    win_out = np.zeros((rows, 2 * half + 1))
    if m < 1 or w >= 1 << 15:
        return exact, mad, i_in, i_out, win_in, win_out
    core = np.empty(m, dtype=np.int32)  # D[w : n - w + 1]
    block_max = np.empty((m + BLOCK - 1) // BLOCK)
    block_min = np.empty((m + BLOCK - 1) // BLOCK)
    counts = np.empty((COPIES, BINS), dtype=np.int32)
    sums = np.empty(2 * w + 1 + _SPAN, dtype=np.int64)
    codes = np.empty(CHUNK, dtype=np.int32)
    keys = np.empty(CHUNK, dtype=np.uint16)
    buf_med = np.empty(m)  # the values of a few bins (pages touched as written)
    buf_dev = np.empty(m)
    scratch = np.empty(m)
    sign = 1 if polarity > 0 else -1
    given = recorded.shape[0] == rows and recorded.shape[1] == n
    none = np.empty(0, dtype=np.int16)
    for r in range(rows):
        g = gain[r]
        o = offset[r]
        if not (g > 0.0 and g < np.inf and o - o == 0.0):
            continue
        counts[:] = 0
        if not code_derivative(y[r], recorded[r] if given else none, fill, single, sign, g, o,
                               w, core, block_max, block_min, counts, sums, codes, keys):
            continue
        _, mad_d = binned_median_and_mad_of_ints(core, m, counts, buf_med, buf_dev, scratch)
        if not mad_d > 0.0:  # unverified (NaN) or zero: the float pass decides
            continue
        at = first_maximum(core, block_max, m, w, n)
        lo = min(at + min_transit, n)
        hi = min(at + max_transit + 1, n)
        out = first_minimum(core, block_min, n, w, lo, hi) if hi > lo else 0
        mad[r] = mad_d * g / w
        i_in[r] = at
        i_out[r] = out
        derivative_window(core, n, w, at, half, win_in[r])
        derivative_window(core, n, w, out, half, win_out[r])
        for k in range(2 * half + 1):  # D * gain exact, one rounding in the division
            win_in[r, k] = win_in[r, k] * g / w
            win_out[r, k] = win_out[r, k] * g / w
        exact[r] = True
    return exact, mad, i_in, i_out, win_in, win_out


@numba.njit(cache=True, nogil=True)
def code_derivative(
    row, recorded, fill, single, sign, gain, offset, w, core, block_max, block_min, counts, sums,
    codes, keys
):  # pragma: no cover - compiled
    """One record's integer derivative ``core[k] = D[k + w]`` from its codes, the
    extremes of each :data:`~idexdask.analysis.pickup.kernels.BLOCK` values and
    their bins' counts (:func:`~idexdask.analysis.pickup.order_stats.int_keys`);
    False (the outputs partly written) as soon as a chunk of the record is not
    exactly on its codes (``recorded`` given: as soon as it holds ``fill``).

    The record goes in chunks of
    :data:`~idexdask.analysis.pickup.kernels.CHUNK` samples: their codes
    (``recorded``, the record's recorded codes, taken as they are; if empty,
    :func:`decode_chunk` of ``row``), the running int64 sums ``S`` (``S[i]`` the sum of
    the first ``i`` codes), and ``D[k + w] = sign (S[k + 2 w] - 2 S[k + w] +
    S[k])`` for every ``k`` whose sums are formed; ``sums`` holds the last of
    them, not a record-long array.
    """
    n = row.size
    m = n - 2 * w + 1
    inverse = 1.0 / gain
    sums[0] = 0
    base = 0  # sums[t] = S[base + t]
    held = 1
    total = 0
    k_next = 0  # first derivative value not formed yet
    k_stat = 0  # first derivative value not in a block's extremes yet
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        ok, total, held, base = chunk_prefix_sums(row, c0, c1, gain, offset, inverse, single,
                                                  codes, recorded, fill, sums, held, base,
                                                  k_next, total)
        if not ok:
            return False
        k_end = min(c1 - 2 * w + 1, m)
        if k_end <= k_next:
            continue
        low = sums[k_next - base : k_end - base]
        mid = sums[k_next + w - base : k_end + w - base]
        high = sums[k_next + 2 * w - base : k_end + 2 * w - base]
        d = core[k_next:k_end]
        for t in range(d.size):  # no carried dependency: vectorised
            d[t] = sign * (high[t] - 2 * mid[t] + low[t])
        int_keys(d, keys, counts)
        k_next = k_end
        while k_stat < k_next and (k_stat + BLOCK <= k_next or k_next == m):
            end = min(k_stat + BLOCK, m)
            block_max[k_stat // BLOCK], block_min[k_stat // BLOCK] = int_extremes(
                core[k_stat:end])
            k_stat = end
    return True


@numba.njit(cache=True, nogil=True)
def chunk_prefix_sums(
    row, c0, c1, gain, offset, inverse, single, codes, recorded, fill, sums, held, base, k_next,
    total
):  # pragma: no cover - compiled
    """The running int64 sums ``S`` of the codes of samples ``c0:c1`` appended to the
    ones ``sums`` holds, the pass over a record in chunks that
    :func:`code_derivative` and
    :func:`~idexdask.analysis.pickup.histogram_kernels.histogram_derivative` share.

    The chunk's codes are ``recorded[c0:c1]`` (the recorded codes, taken as they
    are) or, where ``recorded`` is empty, :func:`decode_chunk` of ``row`` into
    ``codes``.  ``sums[t]`` is ``S[base + t]`` for ``t < held``; where the chunk's
    sums do not fit, the ones before ``S[k_next]`` (no longer needed) are dropped.

    Returns
    -------
    (bool, int, int, int)
        Whether the chunk is exactly on its codes (``recorded`` given: holds no
        ``fill``), and the new ``total`` (``S`` at ``c1``), ``held`` and ``base``.
    """
    size = c1 - c0
    if recorded.size == 0 and not decode_chunk(row, c0, c1, gain, offset, inverse, single,
                                               codes):
        return False, total, held, base
    if held + size > sums.size:  # keep S[k_next:], the sums still needed
        drop = k_next - base
        for t in range(held - drop):
            sums[t] = sums[t + drop]
        held -= drop
        base = k_next
    new = sums[held : held + size]
    if recorded.size:
        total, missing = recorded_prefix_sums(recorded[c0:c1], fill, total, new)
        if missing:
            return False, total, held, base
    else:
        total = prefix_sums(codes[:size], total, new)
    return True, total, held + size, base


@numba.njit(cache=True, nogil=True)
def prefix_sums(codes, total, out):  # pragma: no cover - compiled
    """``out[t] = total + codes[0] + ... + codes[t]`` (int64); the last sum.
    One-cycle integer adds: no float latency chain."""
    for t in range(codes.size):
        total += codes[t]
        out[t] = total
    return total


@numba.njit(cache=True, nogil=True)
def recorded_prefix_sums(codes, fill, total, out):  # pragma: no cover - compiled
    """:func:`prefix_sums` of recorded codes, and whether ``fill`` is among them
    (the comparison rides along the sums' latency chain at no cost)."""
    found = False
    for t in range(codes.size):
        c = codes[t]
        found |= c == fill
        total += c
        out[t] = total
    return total, found


@numba.njit(cache=True, nogil=True)
def decode_chunk(row, c0, c1, gain, offset, inverse, single, codes):  # pragma: no cover
    """``codes[:c1 - c0]``: the codes of ``row[c0:c1]``, ``rint((v + offset) /
    gain)``; True when every value is exactly its code's, ``float32(gain * code -
    offset)`` (``single``) or its float64, with ``|code| <= CODE_LIMIT`` (NaN is
    not).  One loop without branches (it vectorises)."""
    ok = True
    if single:
        # the code in float32 (twice the lanes; within 0.01 code of the float64
        # quotient for a value on its code, so the same integer), checked in float64
        offset32 = np.float32(offset)
        inverse32 = np.float32(inverse)
        limit32 = np.float32(CODE_LIMIT)
        for t in range(c1 - c0):
            v = row[c0 + t]
            c = np.rint((v + offset32) * inverse32)
            c = min(max(c, -limit32), limit32)
            ok &= code_value(np.float64(c), gain, -offset, True) == v
            codes[t] = np.int32(c)
    else:
        for t in range(c1 - c0):
            v = row[c0 + t]
            c = np.rint((np.float64(v) + offset) * inverse)
            ok &= (code_value(c, gain, -offset, False) == v) & (abs(c) <= CODE_LIMIT)
            codes[t] = np.int32(min(max(c, -CODE_LIMIT), CODE_LIMIT))
    return ok


@numba.njit(cache=True, nogil=True)
def int_extremes(values):  # pragma: no cover - compiled
    """Largest and smallest of the (non-empty) integer ``values``, as float64
    (integer comparisons without a carried float conversion: vectorised)."""
    hi = values[0]
    lo = values[0]
    for t in range(values.size):
        v = values[t]
        hi = v if v > hi else hi
        lo = v if v < lo else lo
    return np.float64(hi), np.float64(lo)
