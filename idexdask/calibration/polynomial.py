"""Compiled per-event kernels of the time-of-flight calibration polynomial.

The calibration is ``t(s) = sum_k c_k s^k`` with ``s = sqrt(m)`` (µs, u), as in
:class:`~idexdask.calibration.tofmass.TOFMassCal`.  These are scalar, per-event
versions of :meth:`TOFMassCal.fit <idexdask.calibration.tofmass.TOFMassCal.fit>`,
:func:`~idexdask.calibration.tofmass.min_slope` and
:func:`~idexdask.calibration.mass_axes.time_axis` for the batched calibration of
many events at once (:func:`idexdask.calibration.comb.comb_calibrations`):
at a handful of lines per event the NumPy versions are dominated by call overhead.

They follow the NumPy code step by step, down to the BLAS/LAPACK calls and the
array orders that pick the BLAS kernels, so the results are the same bit for bit
(tests/unit/calibration/test_tofmass.py; above order 3, complex roots of the slope go through
another eigenvalue solver: rounding only).  Numba's on-disk cache of a caller
(the batched calibration's event loop) is not invalidated by an edit here: after
changing these kernels delete idexdask/calibration/__pycache__/*.nbi and *.nbc.

Status codes returned by :func:`fit_event` index
:data:`idexdask.calibration.tofmass.STATUS_CODES`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from idexdask.numerics import pairwise_sum

__all__ = [
    "adaptive_order_of",
    "fit_event",
    "min_slope_on_grid",
    "polyval_at",
    "real_roots_between",
    "time_of_mass",
    "weighted_fit",
]


@numba.njit(cache=True, nogil=True)
def polyval_at(x: float, c: NDArray, n: int) -> float:  # pragma: no cover - compiled
    """``numpy.polynomial.polynomial.polyval(x, c[:n])`` for a scalar x."""
    c0 = c[n - 1]
    for i in range(2, n + 1):
        c0 = c[n - i] + c0 * x
    return c0


@numba.njit(cache=True, nogil=True)
def real_roots_between(
    d: NDArray, n: int, lo: float, hi: float
) -> NDArray:  # pragma: no cover - compiled
    """Real roots (|imag| <= 1e-12 (1+|real|)) of the low-first ``d[:n]`` inside [lo, hi]."""
    high_first = np.empty(n)
    for i in range(n):
        high_first[i] = d[n - 1 - i]
    try:
        # real eigenvalues of the companion matrix: LAPACK dgeev, as in NumPy
        roots = np.roots(high_first).astype(np.complex128)
    except Exception:  # noqa: BLE001 - some roots complex (numba refuses): complex solver
        try:
            roots = np.roots(high_first.astype(np.complex128))
        except Exception:  # noqa: BLE001 - LinAlgError in compiled code: no roots
            return np.empty(0)
    out = np.empty(roots.size)
    k = 0
    for r in roots:
        re = r.real
        im = r.imag
        if not (np.isfinite(re) and np.isfinite(im)):
            continue
        if abs(im) <= 1e-12 * (1.0 + abs(re)) and re >= lo and re <= hi:
            out[k] = re
            k += 1
    return out[:k]


@numba.njit(cache=True, nogil=True)
def min_slope_on_grid(
    c: NDArray, s_lo: float, s_hi: float, grid: NDArray
) -> float:  # pragma: no cover - compiled
    """:func:`min_slope` of the coefficients ``c`` with its dense ``grid`` precomputed."""
    n = c.size
    for v in c:
        if not np.isfinite(v):
            return -np.inf
    nd = n - 1
    d = np.empty(nd)
    scale = np.empty(nd)
    base = max(abs(s_hi), 1.0)
    smax = 0.0
    for k in range(nd):
        d[k] = (k + 1) * c[k + 1]
        scale[k] = abs(d[k]) * base ** float(k)
        smax = max(smax, scale[k])
    while nd > 1 and scale[nd - 1] <= 1e-13 * smax:
        nd -= 1
    while nd > 0 and d[nd - 1] == 0.0:
        nd -= 1
    if nd == 0:
        return 0.0
    smin = np.inf
    for s in grid:
        smin = min(smin, polyval_at(s, d, nd))
    if nd >= 3:
        dd = np.empty(nd - 1)
        for k in range(1, nd):
            dd[k - 1] = k * d[k]
        for s in real_roots_between(dd, nd - 1, s_lo, s_hi):
            smin = min(smin, polyval_at(s, d, nd))
    if nd >= 2 and smin > 0 and real_roots_between(d, nd, s_lo, s_hi).size:
        return 0.0
    return smin


@numba.njit(cache=True, nogil=True)
def weighted_fit(
    s: NDArray, t: NDArray, w: NDArray, k: int, absolute: bool, coef: NDArray, cov: NDArray
) -> bool:  # pragma: no cover - compiled
    """Weighted least-squares polynomial of order ``k``, t(s), as ``TOFMassCal.fit`` solves it.

    Centred and scaled Vandermonde, QR, back-transformed to plain coefficients;
    writes ``coef[:k+1]`` (low order first, µs / sqrt(u)^j) and ``cov[:k+1, :k+1]``.
    ``absolute``: weights are 1/sigma^2 (covariance not rescaled by the residuals).
    Returns False when the system is singular.
    """
    n = s.size
    centre = pairwise_sum(s * w, 0, n) / pairwise_sum(w, 0, n)  # numpy.average
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(s[i] - centre))
    if scale == 0.0:
        scale = 1.0
    kk = k + 1
    a = np.empty((n, kk))
    y = np.empty(n)
    for i in range(n):
        sw = math.sqrt(w[i])
        u = (s[i] - centre) / scale
        v = 1.0
        for j in range(kk):
            a[i, j] = v * sw
            v *= u
        y[i] = t[i] * sw
    q, r = np.linalg.qr(a)
    dmin = np.inf
    dmax = 0.0
    for j in range(kk):
        dmin = min(dmin, abs(r[j, j]))
        dmax = max(dmax, abs(r[j, j]))
    if dmin <= 1e-10 * dmax:
        return False
    # what numpy.linalg.inv does (gesv); C order so that the products use the same BLAS calls
    r_inv = np.ascontiguousarray(np.linalg.solve(r, np.eye(kk)))
    qty = np.ascontiguousarray(q).T @ y  # as NumPy: C-ordered q, so the same BLAS gemv
    beta = r_inv @ qty
    cov_u = r_inv @ np.ascontiguousarray(r_inv.T)
    dof = n - kk
    if not absolute:
        if dof > 0:
            vander = np.empty((n, kk))
            sw = np.sqrt(w)
            for i in range(n):
                u = (s[i] - centre) / scale
                v = 1.0
                for j in range(kk):
                    vander[i, j] = v
                    v *= u
            resid = (t - vander @ beta) * sw  # BLAS gemv and ddot, as in NumPy
            rss = np.dot(resid, resid)
            cov_u = cov_u * rss / dof
        else:
            cov_u[:, :] = np.nan
    transform = np.zeros((kk, kk))
    for j in range(kk):
        binom = 1.0
        for i in range(j + 1):
            # binom = C(j, i), built up exactly in floating point (small integers)
            transform[i, j] = binom * (-centre) ** float(j - i) / scale ** float(j)
            binom = binom * (j - i) / (i + 1)
    c_out = transform @ beta
    cov_out = transform @ cov_u @ np.ascontiguousarray(transform.T)
    for i in range(kk):
        coef[i] = c_out[i]
        for j in range(kk):
            cov[i, j] = cov_out[i, j]
    return True


@numba.njit(cache=True, nogil=True)
def adaptive_order_of(n_lines: int, max_order: int, min_lines: NDArray) -> int:  # pragma: no cover
    """:func:`~idexdask.calibration.tofmass.adaptive_order` for ``n_lines`` distinct masses."""
    order = 0
    for k in range(min_lines.size):
        if n_lines >= min_lines[k]:
            order = k + 1
    return max(0, min(order, max_order, n_lines - 1))


@numba.njit(cache=True, nogil=True)
def fit_event(
    s: NDArray,
    m: NDArray,
    t: NDArray,
    w: NDArray,
    absolute: bool,
    max_order: int,
    min_lines: NDArray,
    s_min: float,
    s_max: float,
    grid: NDArray,
    coef: NDArray,
    cov: NDArray,
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """:meth:`TOFMassCal.fit` (adaptive order) of lines at ``s = sqrt(m)``, times ``t``.

    Writes the coefficients (zero-padded to ``coef.size``, NaN when unusable) and
    covariance; returns (status code of :data:`STATUS_CODES`, order, requested order).
    The inputs are assumed valid (finite, masses inside the range, weights > 0).
    """
    coef[:] = np.nan
    cov[:, :] = np.nan
    ms = np.sort(m)
    n_distinct = 0
    for i in range(ms.size):
        if i == 0 or ms[i] != ms[i - 1]:
            n_distinct += 1
    requested = adaptive_order_of(n_distinct, max_order, min_lines)
    if n_distinct < 2 or requested < 1:
        return 2, max(requested, 1), max(requested, 1)
    singular = False
    c = np.empty(coef.size)
    cv = np.empty((coef.size, coef.size))
    for k in range(min(requested, n_distinct - 1), 0, -1):
        if not weighted_fit(s, t, w, k, absolute, c, cv):
            singular = True
            continue
        bridge_rise = polyval_at(s_min, c, k + 1) - c[0]
        if min_slope_on_grid(c[: k + 1], s_min, s_max, grid) > 0 and bridge_rise > 0:
            coef[:] = 0.0
            coef[: k + 1] = c[: k + 1]
            cov[:, :] = np.nan
            cov[: k + 1, : k + 1] = cv[: k + 1, : k + 1]
            return (0 if k == requested else 1), k, requested
    return (4 if singular else 3), requested, requested


@numba.njit(cache=True, nogil=True)
def time_of_mass(c: NDArray, order: int, s: float, s_min: float) -> float:  # pragma: no cover
    """:func:`time_axis` of one mass at ``s = sqrt(m)`` (bridge below ``s_min``)."""
    out = c[order]
    for k in range(order - 1, -1, -1):
        out = out * s + c[k]
    if s < s_min:
        t_lo = c[order]
        for k in range(order - 1, -1, -1):
            t_lo = t_lo * s_min + c[k]
        out = c[0] + (t_lo - c[0]) * (s / s_min)
    return out
