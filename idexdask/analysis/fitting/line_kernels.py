"""Compiled kernel of a sum of EMG and Gaussian lines plus a constant, one window at a time.

The compiled engine fits a ``KERNEL_LINES``
:class:`~idexdask.analysis.fitting.BatchModel` (the Gaussian + constant of the
line fits' Gaussian fallback, the joint blend models of
:func:`idexdask.analysis.blends.multi_line_model`) through
:func:`lines_constant_normal`: the model and its weighted Jacobian in one pass
over the window, then the normal equations as two BLAS products.  The lines'
expressions are the array models' (``models._gaussian_fj``,
``lineshapes.gaussian_jacobian``, ``lineshapes.emg_jacobian``) in the compiled
engine's forms: :func:`~idexdask.analysis.special.erfcx_kernel` and
multiplications by ``1/sigma`` (equal to rounding, see
:mod:`idexdask.analysis.fitting.compiled`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from idexdask.analysis.fitting.emg_kernels import NEGLIGIBLE_EXPONENT, emg_point
from idexdask.analysis.fitting.models import LINE_EMG

__all__ = ["gaussian_point", "lines_constant_normal"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def gaussian_point(xq, amp, mu, inv_s):  # pragma: no cover - compiled
    """Gaussian line at one point: unit profile and d/d(center, sigma) of the line.

    ``inv_s`` is ``1/sigma``.  The unit profile is
    ``exp(-u**2/2) / (sigma sqrt(2 pi))`` with ``u = (x - center)/sigma``; the
    line ``amp`` times it has derivatives ``amp g u / sigma`` (centre) and
    ``amp g (u**2 - 1) / sigma`` (sigma).  Beyond ``u**2/2 >``
    :data:`~.emg_kernels.NEGLIGIBLE_EXPONENT` all three are taken as exact zeros
    (see :func:`~.emg_kernels.fit_profile`).
    """
    u = (xq - mu) * inv_s
    if 0.5 * u * u > NEGLIGIBLE_EXPONENT:  # negligible: see emg_kernels.fit_profile
        return 0.0, 0.0, 0.0
    g = math.exp(-0.5 * u * u) * (inv_s * _INV_SQRT_2PI)
    fs = amp * g * inv_s
    return g, fs * u, fs * (u * u - 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lines_constant_normal(x, y, w, p, lines, a, b, jm, rr, inv_s, limit):  # pragma: no cover
    """Chi-square, ``A = J J^T`` and ``b = J r`` of a sum of lines plus a constant on one window.

    The weighted Jacobian is written point by point into ``jm`` (one row per
    point) and the residuals into ``rr``; ``A`` and ``b`` are then two BLAS
    products, which for a blend of 10-30 parameters cost a third of
    accumulating ``k (k + 1) / 2`` products per point.

    Parameters
    ----------
    x, y, w : numpy.ndarray
        Times (µs), data (DN) and weights (1/DN) of the window's points; a
        point of weight 0 is masked (its ``x`` is finite, see ``fit_batch``)
        and adds zeros.
    p : numpy.ndarray
        Parameters: amplitude, center, sigma[, gamma] per line, the constant last.
    lines : numpy.ndarray
        Shape of each line (``LINE_EMG``, ``LINE_GAUSSIAN``), int64.
    a, b : numpy.ndarray
        ``A`` (k, k) and ``b`` (k,), written.
    jm, rr, inv_s : numpy.ndarray
        Scratch: the weighted Jacobian (n_points, k), the weighted residuals
        (n_points,), ``1/sigma`` per line.
    limit : float
        The chi-square a trial step must stay below to be accepted (NaN for
        none): once the partial sum, which only grows, reaches it, the
        step is rejected whatever the rest of the window holds, and ``inf`` is
        returned without ``A`` and ``b``.

    Returns
    -------
    float
        Chi-square (``inf`` where it reached ``limit``).
    """
    k = p.size
    j = 0
    for n in range(lines.size):
        inv_s[n] = 1.0 / p[j + 2]
        j += 4 if lines[n] == LINE_EMG else 3
    chi = 0.0
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:  # a masked point adds exact zeros
            for q in range(k):
                jm[i, q] = 0.0
            rr[i] = 0.0
            continue
        xi = x[i]
        f = p[k - 1]
        j = 0
        for n in range(lines.size):
            amp = p[j]
            if lines[n] == LINE_EMG:
                g, jc, js, jg = emg_point(0, xi, amp, p[j + 1], p[j + 2], p[j + 3], inv_s[n])
                jm[i, j + 3] = jg * wi
                step = 4
            else:
                g, jc, js = gaussian_point(xi, amp, p[j + 1], inv_s[n])
                step = 3
            jm[i, j] = g * wi
            jm[i, j + 1] = jc * wi
            jm[i, j + 2] = js * wi
            f += amp * g
            j += step
        jm[i, k - 1] = wi
        r = wi * (y[i] - f)
        rr[i] = r
        chi += r * r
        if chi >= limit:
            return math.inf
    np.dot(jm.T, jm, a)
    np.dot(jm.T, rr, b)
    return chi
