"""Compiled kernels of the EMG line (+ constant baseline), one point or one window at a time.

The batch fitter runs an ``emg+constant`` :class:`~idexdask.analysis.fitting.BatchModel`
through these kernels on NumPy arrays (``KERNEL_EMG_CONSTANT``).  With
``scipy_erfcx`` the address of SciPy's C erfcx they reproduce the array model's
expressions (``models._emg_fj``, ``lineshapes.emg_tail_factor``) one by one, for the
"auto" engine; with ``scipy_erfcx = 0`` they take the compiled engine's cheaper
forms, equal to rounding (:func:`~idexdask.analysis.special.erfcx_kernel`,
multiplications by reciprocals).  :func:`emg_profile` is also the line search's
EMG shape (:mod:`idexdask.analysis.peaks`).
"""

from __future__ import annotations

import math

import numba

from idexdask.analysis.normal_sums import ACC5_ZERO, acc5, store5
from idexdask.analysis.special import erfcx_kernel
from idexdask.compat.erfcx import call_scipy_erfcx

__all__ = ["emg_constant_normal", "emg_point", "emg_profile"]

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / _SQRT2
_EXP_ZERO = 746.0  # exp(-x) is exactly 0 beyond this (below half the least subnormal, e**-745.13)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def emg_profile(scipy_erfcx, u, gs):  # pragma: no cover - compiled
    """``exp(-u**2/2)`` and the EMG shape ``h`` at ``u = (x - center)/sigma``, ``gs = gamma sigma``.

    ``emg_tail_factor``'s expressions for one point: one ``erfcx`` of ``|z|``,
    ``z = (gs - u)/sqrt(2)``.  ``scipy_erfcx`` nonzero (the address of scipy's C
    erfcx): the array code's expressions (its values but for exp, which libm and
    NumPy's CPU-specific SIMD code round an ulp apart); zero: the compiled engine's
    :func:`~idexdask.analysis.special.erfcx_kernel` and a multiplication by
    1/sqrt(2) (equal to rounding).
    """
    exact = scipy_erfcx != 0
    z = (gs - u) / _SQRT2 if exact else (gs - u) * _INV_SQRT2
    if 0.5 * u * u > _EXP_ZERO and z == z:
        # exp(-u**2/2) is exactly 0, and so is its product with erfcx(|z|) (finite
        # for a number z): the same values without either call, on the far side
        # of the Gaussian core (most of a window's tail points)
        if z >= 0.0:
            return 0.0, 0.0
        return 0.0, 2.0 * math.exp(min(gs * (0.5 * gs - u), 0.0))
    az = abs(z)
    e = call_scipy_erfcx(scipy_erfcx, az) if exact else erfcx_kernel(az)
    gauss = math.exp(-0.5 * u * u)
    ge = gauss * e
    if z >= 0.0:
        return gauss, ge
    return gauss, 2.0 * math.exp(min(gs * (0.5 * gs - u), 0.0)) - ge  # exp(<= 0); NaN stays NaN


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def emg_point(scipy_erfcx, xq, amp, mu, s, gam, inv_s):  # pragma: no cover - compiled
    """EMG line at one point: unit profile and d/d(center, sigma, gamma) of the line.

    ``scipy_erfcx`` nonzero (the address of scipy's C erfcx): the expressions of
    ``_emg_fj``/``_emg_unit_jac``/``emg_tail_factor`` one by one (no contraction to FMA),
    so the values are the array code's but for the ulp by which libm's exp and
    NumPy's CPU-specific SIMD exp may differ.  Zero: the compiled
    engine's cheaper forms, equal to rounding: :func:`~idexdask.analysis.special.erfcx_kernel`,
    and the divisions by ``s`` and sqrt(2) as multiplications by ``inv_s = 1/s``
    (computed once per window) and 1/sqrt(2) (the kernel 10 % faster).
    """
    exact = scipy_erfcx != 0
    t = xq - mu
    u = t / s if exact else t * inv_s
    gs = gam * s
    gauss, h = emg_profile(scipy_erfcx, u, gs)
    half_h = 0.5 * h
    g = gam * half_h
    gg = (gam / _SQRT_2PI) * gauss
    d_center = gam * g - (gg / s if exact else gg * inv_s)
    d_sigma = (gam * gam * s) * g - gg * (gam + (t / (s * s) if exact else t * (inv_s * inv_s)))
    d_gamma = half_h * (1.0 + gam * (gam * s * s - t)) - gg * s
    return g, amp * d_center, amp * d_sigma, amp * d_gamma


@numba.njit(cache=True, nogil=True, error_model="numpy")
def emg_constant_normal(scipy_erfcx, x, y, w, p, a, b, limit):  # pragma: no cover - compiled
    """Chi-square, ``A = J J^T`` and ``b = J r`` of EMG + constant on one window.

    ``limit``: the chi-square a trial step must stay below to be accepted
    (NaN for none).  The chi-square only grows point by point, so once its
    partial sum reaches ``limit`` the step is rejected whatever the rest of the
    window holds: ``inf`` is returned there and ``A``, ``b`` are not written.
    """
    amp, mu, s, gam, c = p[0], p[1], p[2], p[3], p[4]
    inv_s = 1.0 / s
    acc = ACC5_ZERO
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:
            continue  # a masked point adds exact zeros (its x is finite, see fit_batch)
        g, jc, js, jg = emg_point(scipy_erfcx, x[i], amp, mu, s, gam, inv_s)
        r = wi * (y[i] - (amp * g + c))
        acc = acc5(acc, g * wi, jc * wi, js * wi, jg * wi, wi, r)
        if acc[20] >= limit:
            return math.inf
    return store5(acc, a, b)
