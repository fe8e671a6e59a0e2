"""Sample steps of time axes: the median step of each event's time row, and the
boxcar width a smoothing of a given duration spans at that step.

A sampled time axis has few distinct steps, one of which holds the middle ranks;
the compiled kernels here find that median exactly (the order statistic
``numpy.nanmedian`` gives) without forming the differences array, and the line
search (:mod:`idexdask.analysis.peaks`) uses the same kernels inside its own pass
over each time row.
"""

from __future__ import annotations

import numba
import numpy as np

from idexdask.analysis.robust import median_inplace, nanmedian_rows, quiet_nan_warnings

__all__ = [
    "STEP_PROBES", "boxcar_width", "gathered_median_step", "probe_step", "probe_step_formula",
    "sample_step", "step_is_median", "usable_step",
]

STEP_PROBES = 65
"""Time steps sampled for the trial median of :func:`sample_step`."""


def sample_step(t: np.ndarray) -> np.ndarray:
    """Median sample step per event, µs (n_events,).

    ``numpy.nanmedian(numpy.diff(t, axis=1), axis=1)`` (1 where that is not a
    positive number), computed row by row without the differences array.
    """
    t = np.asarray(t, dtype=float)
    if t.ndim == 2 and t.shape[1] >= 2:
        d = _median_step_rows(t)
    else:
        with quiet_nan_warnings():
            d = nanmedian_rows(np.diff(t, axis=1))
    return np.where(np.isfinite(d) & (d > 0), d, 1.0)


@numba.njit(cache=True, nogil=True)
def _median_step_rows(t: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Per row, the median of ``t[j + 1] - t[j]`` ignoring NaN (NaN for none).

    A sampled time axis has few distinct steps, one of which holds the middle
    ranks: the median of 65 evenly spaced steps is tried first, by one pass
    that counts the steps below and equal to it (the differences formed as
    read, no copy); where it holds both middle ranks it is the median, else
    the steps are gathered and selected (:func:`median_inplace`).  Either way
    the exact order statistics.
    """
    rows = t.shape[0]
    out = np.empty(rows)
    probe = np.empty(STEP_PROBES)
    for r in range(rows):
        found, value = _probe_median_step(t[r], probe)
        out[r] = value if found else gathered_median_step(t[r])
    return out


@numba.njit(cache=True, nogil=True)
def _probe_median_step(tr: np.ndarray, probe: np.ndarray) -> tuple[bool, float]:
    # pragma: no cover - compiled
    """Whether a probed step of ``tr`` is the median of its non-NaN steps, and that step.

    The probe is the median of ``STEP_PROBES`` evenly spaced steps (NaN ones
    sort last; a NaN probe median gives no answer).  It is the median when the
    counts of steps below it and equal to it place both middle ranks (the same
    one for an odd count) on it.
    """
    pivot = probe_step(tr, probe)
    if pivot != pivot:
        return False, np.nan
    below = 0
    equal = 0
    valid = 0
    for j in range(tr.shape[0] - 1):  # branch-free counts
        d = tr[j + 1] - tr[j]
        below += d < pivot
        equal += d == pivot
        valid += d == d
    return step_is_median(pivot, below, equal, valid)


@numba.njit(cache=True, nogil=True)
def probe_step(tr: np.ndarray, probe: np.ndarray) -> float:  # pragma: no cover - compiled
    """The median of ``STEP_PROBES`` evenly spaced steps of ``tr`` (NaN ones sort
    last); NaN for a row of fewer steps."""
    m = tr.shape[0] - 1
    if m < STEP_PROBES:
        return np.nan
    for i in range(STEP_PROBES):
        j = i * (m - 1) // (STEP_PROBES - 1)
        probe[i] = tr[j + 1] - tr[j]
    probe.sort()
    return probe[STEP_PROBES // 2]


@numba.njit(cache=True, nogil=True)
def probe_step_formula(
    start: float, step: float, count: int, scale: float, n: int, probe: np.ndarray
) -> float:  # pragma: no cover - compiled
    """:func:`probe_step` of the ``n`` times of a formula row
    (:func:`~idexdask.analysis.peak_search.formula_row`: ``(start + j step) scale``,
    NaN from ``count`` on), formed at the probed samples only."""
    m = n - 1
    if m < STEP_PROBES:
        return np.nan
    last = min(max(count, 0), n)
    for i in range(STEP_PROBES):
        j = i * (m - 1) // (STEP_PROBES - 1)
        t0 = (np.float64(j) * step + start) * scale if j < last else np.nan
        t1 = (np.float64(j + 1) * step + start) * scale if j + 1 < last else np.nan
        probe[i] = t1 - t0
    probe.sort()
    return probe[STEP_PROBES // 2]


@numba.njit(cache=True, nogil=True)
def step_is_median(pivot: float, below: int, equal: int, valid: int) -> tuple[bool, float]:
    # pragma: no cover - compiled
    """Whether ``pivot``, with ``below`` steps below it, ``equal`` equal to it of
    ``valid`` non-NaN steps, holds both middle ranks; and the median it then is."""
    hi = valid // 2
    lo = hi - 1 if valid % 2 == 0 else hi
    found = below <= lo and hi < below + equal
    return found, (0.5 * (pivot + pivot) if valid % 2 == 0 else pivot)  # median_inplace's


@numba.njit(cache=True, nogil=True)
def gathered_median_step(tr: np.ndarray) -> float:  # pragma: no cover - compiled
    """The median of the non-NaN steps of ``tr`` by gathering and selecting them (NaN for none)."""
    n = tr.shape[0]
    buf = np.empty(2 * max(n - 1, 1))
    k = 0
    for j in range(n - 1):
        d = tr[j + 1] - tr[j]
        if not np.isnan(d):
            buf[k] = d
            k += 1
    return median_inplace(buf, k) if k else np.nan


@numba.njit(cache=True, nogil=True, inline="always")
def usable_step(d: float) -> float:  # pragma: no cover - compiled
    """``sample_step``'s rule: ``d`` where it is a positive number, else 1."""
    return d if (np.isfinite(d) and d > 0) else 1.0


@numba.njit(cache=True, nogil=True, inline="always")
def boxcar_width(smooth_us: float, dt: float, n: int) -> int:  # pragma: no cover - compiled
    """``clip(rint(smooth_us / dt), 1, n // 4 + 1)`` samples, as an integer."""
    v = np.rint(smooth_us / dt)
    return int(min(max(v, 1.0), float(n // 4 + 1)))
