"""The matched filter of the targeted search: a Gaussian's area at given centres.

:func:`filter_areas` is the weighted least-squares area of a unit-area Gaussian
plus a constant at each of a few dozen centres of one stretch of spectrum (the
target time and the null positions around it, :mod:`idexdask.composition.targeted`).
It runs once per event and target, so on flight campaigns (thousands of events,
ten targets each) the per-call overhead of a NumPy expression over a gathered
(centres x window) block was most of the search's cost; the compiled kernel
computes the same terms in the same order, each sum over the gathered window
(zeros where a sample is not used, as in the NumPy block) in NumPy's pairwise
order (:func:`~idexdask.numerics.pairwise_sum`), so it differs from
:func:`filter_areas_reference` only where libm's ``exp`` and NumPy's SIMD
``exp`` differ in the last ulp.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from idexdask.numerics import pairwise_sum

__all__ = ["filter_areas", "filter_areas_kernel", "filter_areas_reference"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def filter_areas_kernel(x, y, w, centres, width, area, err):  # pragma: no cover - compiled
    """:func:`filter_areas` for compiled callers: writes ``area`` and ``err`` where defined.

    ``x`` must not be empty; ``area`` and ``err`` (``centres.size``) keep their
    values (NaN from the caller) where a centre has no estimate.
    """
    n = x.size
    m = centres.size
    first = np.searchsorted(x, centres - 4.0 * width)  # side="left"
    last = np.searchsorted(x, centres + 4.0 * width, side="right")
    span = 0
    for i in range(m):
        span = max(span, last[i] - first[i])
    span = max(span, 1)
    gg = np.empty(span)
    g1 = np.empty(span)
    w11 = np.empty(span)
    bg = np.empty(span)
    b1 = np.empty(span)
    norm = width * _SQRT_2PI
    for i in range(m):
        c = centres[i]
        used = 0
        for k in range(span):
            j = first[i] + k
            inside = j < last[i]
            j = min(j, n - 1)
            xj, yj, wj = x[j], y[j], w[j]
            ok = np.isfinite(xj) and np.isfinite(yj) and np.isfinite(wj) and wj > 0
            yy = yj if ok else 0.0
            u = (xj - c) / width
            sel = inside and abs(u) <= 4.0 and ok
            if sel:
                g = math.exp(-0.5 * u * u) / norm
                ws = wj * wj
                used += 1
            else:
                g = 0.0
                ws = 0.0
            gg[k] = ws * g * g
            g1[k] = ws * g
            w11[k] = ws
            bg[k] = ws * g * yy
            b1[k] = ws * yy
        s_gg = pairwise_sum(gg, 0, span)
        s_g1 = pairwise_sum(g1, 0, span)
        s_11 = pairwise_sum(w11, 0, span)
        b_g = pairwise_sum(bg, 0, span)
        b_1 = pairwise_sum(b1, 0, span)
        det = s_gg * s_11 - s_g1 * s_g1
        if used >= 6 and det > 0:
            area[i] = (s_11 * b_g - s_g1 * b_1) / det
            err[i] = math.sqrt(max(s_11 / det, 0.0))


def filter_areas(x: np.ndarray, y: np.ndarray, w: np.ndarray, centres: np.ndarray,
                 width: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares area of a unit-area Gaussian plus a constant, at each centre.

    Each centre's fit uses the samples within 4 widths of it.

    Parameters
    ----------
    x, y, w : numpy.ndarray
        Sample times (µs, increasing), signal and weights 1/sigma (n_samples,).
    centres : numpy.ndarray
        Filter centres, µs.
    width : float
        Gaussian sigma, µs.

    Returns
    -------
    area, err : numpy.ndarray
        The area and its white-noise standard error per centre (NaN with fewer
        than 6 usable samples or a singular system).
    """
    centres = np.ascontiguousarray(centres, dtype=float)
    area = np.full(centres.size, np.nan)
    err = np.full(centres.size, np.nan)
    if x.size == 0 or centres.size == 0:
        return area, err
    filter_areas_kernel(np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float),
                  np.ascontiguousarray(w, dtype=float), centres, float(width), area, err)
    return area, err


def filter_areas_reference(x: np.ndarray, y: np.ndarray, w: np.ndarray, centres: np.ndarray,
                 width: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filter_areas` in NumPy (same parameters and results): the reference
    the compiled kernel is tested against.  Each centre's fit is a row of a
    gathered (n_centres, window) block: 2x2 normal equations summed by NumPy.
    """
    centres = np.asarray(centres, dtype=float)
    if x.size == 0:
        return np.full(centres.size, np.nan), np.full(centres.size, np.nan)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    yy = np.where(ok, y, 0.0)
    w2 = np.where(ok, w, 0.0) ** 2
    # each centre's samples: a gathered (n_centres, span) block from the first
    # sample within 4 widths (x is increasing), not the whole stretch
    first = np.searchsorted(x, centres - 4.0 * width, side="left")
    last = np.searchsorted(x, centres + 4.0 * width, side="right")
    span = int(max(int((last - first).max(initial=0)), 1))
    idx = first[:, None] + np.arange(span)[None, :]
    inside = idx < last[:, None]
    idx = np.minimum(idx, x.size - 1)
    u = (x[idx] - centres[:, None]) / width
    sel = inside & (np.abs(u) <= 4.0) & ok[idx]
    g = np.where(sel, np.exp(-0.5 * u * u) / (width * math.sqrt(2.0 * math.pi)), 0.0)
    ws = np.where(sel, w2[idx], 0.0)
    yi = yy[idx]
    s_gg = np.sum(ws * g * g, axis=1)
    s_g1 = np.sum(ws * g, axis=1)
    s_11 = np.sum(ws, axis=1)
    b_g = np.sum(ws * g * yi, axis=1)
    b_1 = np.sum(ws * yi, axis=1)
    det = s_gg * s_11 - s_g1 * s_g1
    with np.errstate(invalid="ignore", divide="ignore"):
        good = (sel.sum(axis=1) >= 6) & (det > 0)
        area = np.where(good, (s_11 * b_g - s_g1 * b_1) / det, np.nan)
        err = np.where(good, np.sqrt(np.maximum(s_11 / det, 0.0)), np.nan)
    return area, err
