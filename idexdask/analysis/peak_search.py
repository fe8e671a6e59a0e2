"""Compiled peak search: :func:`scipy.signal.find_peaks` with height and prominence limits.

:func:`find_peaks` gives SciPy's peaks, heights and prominences (``wlen=None``)
of one row; :func:`find_peaks_scaled` those of ``raw / div`` without forming
the quotient (the line search's normalised spectrum, see
:mod:`idexdask.analysis.peaks`).  Prominence walks cross blocks of
``PROM_BLOCK`` samples at once where every sample stays below the peak.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["PROM_BLOCK", "block_stats", "find_peaks", "find_peaks_in_blocks",
           "find_peaks_scaled", "formula_row", "grown"]

PROM_BLOCK = 64
"""Samples per block a prominence walk crosses at once."""


@numba.njit(cache=True, nogil=True)
def find_peaks(
    x: np.ndarray, hmin: float, hmax: float, pmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """``scipy.signal.find_peaks(x, height=(hmin, hmax), prominence=pmin)``, compiled.

    The same local maxima (plateaus at their middle sample), kept when their
    height lies in ``[hmin, hmax]``, then when their prominence (``wlen=None``)
    is at least ``pmin``: SciPy's tests, with the height test made first, so
    neither time nor memory goes to the maxima of the noise.  Returns the peak
    indices, heights and prominences (checked against SciPy in the tests).
    :func:`find_peaks_scaled` with the divisor 1 (``x / 1`` is ``x``).
    """
    return find_peaks_scaled(x, 1.0, hmin, hmax, pmin)


@numba.njit(cache=True, nogil=True)
def find_peaks_scaled(
    raw: np.ndarray, div: float, hmin: float, hmax: float, pmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`find_peaks` of ``x = raw / div`` (``div > 0``), ``x`` never formed.

    ``raw / div`` is a non-decreasing function of ``raw`` (rounding included),
    so the largest and smallest ``x`` of a block of samples are its largest and
    smallest ``raw`` divided by ``div``: each block of ``PROM_BLOCK`` samples
    gets those two (max ``inf`` where it holds a NaN, which stops a walk) in one
    pass; a block is searched for maxima only where its largest ``x`` reaches
    ``hmin``, and a prominence walk crosses it at once where it stays ``<= top``
    (see :func:`_walk_min`).  Only the samples a search or walk visits one by
    one are divided.
    """
    n_blocks = (raw.shape[0] + PROM_BLOCK - 1) // PROM_BLOCK
    bmax = np.empty(n_blocks)
    bmin = np.empty(n_blocks)
    for b in range(n_blocks):
        block_stats(raw, b, bmax, bmin)
    return find_peaks_in_blocks(raw, div, hmin, hmax, pmin, bmax, bmin)


@numba.njit(cache=True, nogil=True)
def find_peaks_in_blocks(
    raw: np.ndarray, div: float, hmin: float, hmax: float, pmin: float, bmax: np.ndarray,
    bmin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`find_peaks_scaled` given each block's largest and smallest ``raw``
    (``bmax``, ``bmin``: :func:`block_stats` of every block, as a pass that
    writes ``raw`` may form them; divided by ``div`` here, in place)."""
    n = raw.shape[0]
    n_blocks = bmax.shape[0]
    for b in range(n_blocks):
        bmax[b] = bmax[b] / div
        bmin[b] = bmin[b] / div
    peaks = np.empty(16, dtype=np.int64)
    m = 0
    i_max = n - 1
    # SciPy's scan jumps over a plateau once found, but whether a sample starts a
    # peak (rises from its left neighbour, and its plateau then falls) does not
    # depend on that, so only the samples that pass the height test are examined
    for b in range(n_blocks):
        if not bmax[b] >= hmin:  # blocks of noise are skipped
            continue
        for i in range(max(b * PROM_BLOCK, 1), min((b + 1) * PROM_BLOCK, i_max)):
            v = raw[i] / div
            if v >= hmin and v <= hmax and raw[i - 1] / div < v:
                ahead = i + 1
                while ahead < i_max and raw[ahead] / div == v:
                    ahead += 1
                if raw[ahead] / div < v:
                    if m == peaks.shape[0]:
                        peaks = grown(peaks, m, 2 * m)
                    peaks[m] = (i + ahead - 1) // 2
                    m += 1
    idx = np.empty(m, dtype=np.int64)
    heights = np.empty(m)
    proms = np.empty(m)
    k = 0
    for p in range(m):
        peak = peaks[p]
        top = raw[peak] / div
        left_min = _walk_min(raw, div, peak, top, -1, bmax, bmin)
        right_min = _walk_min(raw, div, peak, top, 1, bmax, bmin)
        prom = top - max(left_min, right_min)
        if pmin <= prom:
            idx[k] = peak
            heights[k] = top
            proms[k] = prom
            k += 1
    return idx[:k], heights[:k], proms[:k]


@numba.njit(cache=True, nogil=True, inline="always")
def block_stats(x, b, bmax, bmin):  # pragma: no cover - compiled
    """Fill ``bmax[b]``, ``bmin[b]`` for block ``b`` of ``x`` (max inf where a NaN is in it)."""
    lo = b * PROM_BLOCK
    hi = min(lo + PROM_BLOCK, x.shape[0])
    top = -np.inf
    low = np.inf
    nan = False
    for i in range(lo, hi):
        v = x[i]
        top = v if v > top else top
        low = v if v < low else low
        nan |= v != v
    bmax[b] = np.inf if nan else top
    bmin[b] = low


@numba.njit(cache=True, nogil=True)
def _walk_min(raw, div, peak, top, direction, bmax, bmin):  # pragma: no cover - compiled
    """Smallest ``x = raw / div`` met walking from ``peak`` in ``direction`` (-1, 1) while
    ``x <= top``.

    SciPy's prominence base search, sample by sample, except that a whole
    block of ``PROM_BLOCK`` samples, entered at its first sample in the walk's
    direction, is crossed at once when all its samples are ``<= top`` (none
    NaN): the walk would visit each of them, so its minimum is the block's
    (``bmax``, ``bmin``: each block's largest and smallest ``x``).  A weak
    maximum on the tail of a strong line walks to the next higher sample,
    often the next line or the event's end: tens of thousands of samples.
    """
    n = raw.shape[0]
    low = top
    j = peak
    while 0 <= j < n:
        edge = (j + 1) % PROM_BLOCK == 0 if direction < 0 else j % PROM_BLOCK == 0
        if edge:  # the block of j lies entirely ahead of the walk
            b = j // PROM_BLOCK
            while 0 <= b < bmax.shape[0]:
                if not bmax[b] <= top:
                    break
                v = bmin[b]
                low = v if v < low else low
                b += direction
            if b < 0 or b >= bmax.shape[0]:
                break
            j = b * PROM_BLOCK + (PROM_BLOCK - 1 if direction < 0 else 0)
            if j >= n:
                break
        v = raw[j] / div
        if not v <= top:
            break
        low = v if v < low else low
        j += direction
    return low


@numba.njit(cache=True, nogil=True)
def formula_row(
    start: float, step: float, count: int, scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """The times of one event of a formula axis (:mod:`idexdask.timeaxis`) into
    ``out``: ``(start + j * step) * scale``, NaN at ``j >= count``, with the
    roundings of :class:`~idexdask.timeaxis.UniformAxisArray` (a product, a sum,
    a product, each rounded: no fused multiply-add without fastmath), so the
    search reads the values of the materialised axis from a row buffer."""
    n = out.shape[0]
    m = min(max(count, 0), n)
    for j in range(m):  # branch-free: it vectorises
        out[j] = (np.float64(j) * step + start) * scale
    for j in range(m, n):
        out[j] = np.nan


@numba.njit(cache=True, nogil=True)
def grown(a: np.ndarray, m: int, size: int) -> np.ndarray:  # pragma: no cover - compiled
    """A copy of ``a[:m]`` in an array of ``size`` elements."""
    out = np.empty(size, dtype=a.dtype)
    out[:m] = a[:m]
    return out
