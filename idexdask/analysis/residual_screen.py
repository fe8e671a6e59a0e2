"""Compiled screen of the data maxima inside converged lines' windows (residual line search).

:func:`window_maxima` finds the samples that
:mod:`idexdask.analysis.residual_lines` tests for a missed line: inside each
converged line's window, the local maxima of the spectrum (the highest sample
within ``reach`` samples on both sides, every sample there inside the record and
finite) at least ``height_sigma`` noise sigmas high.  One pass over each window
reads the samples where they lie: no (lines x window) blocks of the data, the
noise, masks and running maxima formed in NumPy (~0.1 ms of CPU per lab impact,
most of it allocating and freeing those blocks).  Comparisons only, so the
samples found are those of the array formulation (a maximum filter of the
window, ``-inf`` where not finite, and of its non-finite mask).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

__all__ = ["window_maxima"]

_ROWS = types.Array(types.float64, 2, "A", readonly=True)
_INTS = types.Array(types.int64, 1, "A", readonly=True)
_SIGNATURE = types.Array(types.int64, 1, "C")(_ROWS, _ROWS, _INTS, _INTS, _INTS, _INTS, _INTS,
                                              types.float64)
"""The one signature of :func:`window_maxima`: any layout, read-only or not (a lab
pack's noise is a read-only broadcast view of one value per event, a flight pack's
a C array), so that every call runs the one version ``idexdask compile`` cached."""


@numba.njit(_SIGNATURE, cache=True, nogil=True)
def window_maxima(
    y: np.ndarray,
    noise: np.ndarray,
    event: np.ndarray,
    index: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    reach: np.ndarray,
    height_sigma: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """Flat positions ``event * n_samples + sample`` of the maxima in the lines' windows.

    Parameters
    ----------
    y : numpy.ndarray
        Spectra (n_events, n_samples), signal units.
    noise : numpy.ndarray
        Noise sigma per sample (n_events, n_samples), signal units.
    event, index : numpy.ndarray
        Event and peak sample of each line (int64).
    left, right : numpy.ndarray
        Each line's window, samples before and after its peak sample (int64):
        samples ``index - left`` to ``index + right``.
    reach : numpy.ndarray
        Samples on each side a maximum must top (int64, at least 1).
    height_sigma : float
        A maximum is at least this many noise sigmas high (``y >= height_sigma *
        noise``; NaN noise: never).

    Returns
    -------
    numpy.ndarray
        The positions (int64), line after line and in sample order within a
        window; a sample in several windows appears once per window.
    """
    n = y.shape[1]
    out = np.empty(64, dtype=np.int64)
    m = 0
    for r in range(event.size):
        e = event[r]
        h = reach[r]
        for col in range(index[r] - left[r], index[r] + right[r] + 1):
            if col - h < 0 or col + h >= n:  # a sample within reach outside the record
                continue
            v = y[e, col]
            if not (v >= height_sigma * noise[e, col]):  # also NaN data or noise
                continue
            top = True
            for j in range(col - h, col + h + 1):
                u = y[e, j]
                if not (u - u == 0.0 and u <= v):  # not finite, or higher
                    top = False
                    break
            if top:
                if m == out.size:
                    grown = np.empty(2 * m, dtype=np.int64)
                    grown[:m] = out
                    out = grown
                out[m] = e * n + col
                m += 1
    return out[:m]
