"""Compiled kernel of a sum of EMG and Gaussian lines plus a constant, one window at a time.

The compiled engine fits a ``KERNEL_LINES``
:class:`~idexdask.analysis.fitting.BatchModel` (the Gaussian + constant of the
line fits' Gaussian fallback, the joint blend models of
:func:`idexdask.analysis.blends.multi_line_model`) through
:func:`lines_constant_normal`: the model, its Jacobian and the normal equations
in one pass over the window, no (n_params, n_points) temporary.  The lines'
expressions are the array models' (``models._gaussian_fj``,
``lineshapes.gaussian_jacobian``, ``lineshapes.emg_jacobian``) in the compiled
engine's forms: :func:`~idexdask.analysis.special.erfcx_kernel` and
multiplications by ``1/sigma`` (equal to rounding, see
:mod:`idexdask.analysis.fitting.compiled`).
"""

from __future__ import annotations

import math

import numba

from idexdask.analysis.fitting.emg_kernels import emg_point
from idexdask.analysis.fitting.models import LINE_EMG

__all__ = ["gaussian_point", "lines_constant_normal"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def gaussian_point(xq, amp, mu, inv_s):  # pragma: no cover - compiled
    """Gaussian line at one point: unit profile and d/d(center, sigma) of the line.

    ``inv_s`` is ``1/sigma``.  The unit profile is
    ``exp(-u**2/2) / (sigma sqrt(2 pi))`` with ``u = (x - center)/sigma``; the
    line ``amp`` times it has derivatives ``amp g u / sigma`` (centre) and
    ``amp g (u**2 - 1) / sigma`` (sigma).
    """
    u = (xq - mu) * inv_s
    g = math.exp(-0.5 * u * u) * (inv_s * _INV_SQRT_2PI)
    fs = amp * g * inv_s
    return g, fs * u, fs * (u * u - 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lines_constant_normal(x, y, w, p, lines, a, b, jv, inv_s):  # pragma: no cover - compiled
    """Chi-square, ``A = J J^T`` and ``b = J r`` of a sum of lines plus a constant on one window.

    Parameters
    ----------
    x, y, w : numpy.ndarray
        Times (µs), data (DN) and weights (1/DN) of the window's points; a
        point of weight 0 is masked (its ``x`` is finite, see ``fit_batch``).
    p : numpy.ndarray
        Parameters: amplitude, center, sigma[, gamma] per line, the constant last.
    lines : numpy.ndarray
        Shape of each line (``LINE_EMG``, ``LINE_GAUSSIAN``), int64.
    a, b : numpy.ndarray
        ``A`` (k, k) and ``b`` (k,), written.
    jv, inv_s : numpy.ndarray
        Scratch: one weighted Jacobian column (k,), ``1/sigma`` per line.

    Returns
    -------
    float
        Chi-square.
    """
    k = p.size
    for q in range(k):
        b[q] = 0.0
        for c in range(k):
            a[q, c] = 0.0
    j = 0
    for n in range(lines.size):
        inv_s[n] = 1.0 / p[j + 2]
        j += 4 if lines[n] == LINE_EMG else 3
    chi = 0.0
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:
            continue  # a masked point adds exact zeros
        xi = x[i]
        f = p[k - 1]
        j = 0
        for n in range(lines.size):
            amp = p[j]
            if lines[n] == LINE_EMG:
                g, jc, js, jg = emg_point(0, xi, amp, p[j + 1], p[j + 2], p[j + 3], inv_s[n])
                jv[j + 3] = jg * wi
                step = 4
            else:
                g, jc, js = gaussian_point(xi, amp, p[j + 1], inv_s[n])
                step = 3
            jv[j] = g * wi
            jv[j + 1] = jc * wi
            jv[j + 2] = js * wi
            f += amp * g
            j += step
        jv[k - 1] = wi
        r = wi * (y[i] - f)
        chi += r * r
        for q in range(k):
            jq = jv[q]
            b[q] += jq * r
            for c in range(q, k):
                a[q, c] += jq * jv[c]
    for q in range(k):
        for c in range(q + 1, k):
            a[c, q] = a[q, c]
    return chi
