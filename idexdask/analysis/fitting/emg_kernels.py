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

__all__ = ["NEGLIGIBLE_EXPONENT", "emg_constant_normal", "emg_point", "emg_profile", "fit_profile"]

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / _SQRT2
_EXP_ZERO = 746.0  # exp(-x) is exactly 0 beyond this (below half the least subnormal, e**-745.13)
#: Exponent below which the compiled engine takes a line's terms as exact zeros: its
#: profile and derivatives are then below ~e**-300 = 5e-131 of the line's own scale.
NEGLIGIBLE_EXPONENT = 300.0


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
def fit_profile(u, gs):  # pragma: no cover - compiled
    """The compiled engine's :func:`emg_profile` (``scipy_erfcx = 0``), negligible terms as zeros.

    Where ``exp(-u**2/2)`` and, right of the tail's onset (``z < 0``), the tail
    ``exp(gs (gs/2 - u))`` are below ``e**-NEGLIGIBLE_EXPONENT`` (5e-131), the
    Gaussian or the whole profile is taken as exactly 0 without computing it.
    Both bound the profile: ``erfcx(|z|) <= 1`` and ``h <= 2 tail`` (the tail's
    exponent is never below ``-u**2/2``: their difference is ``(gs - u)**2/2``),
    so a dropped term is at most ~1e-130 of the line's peak, far below the
    rounding of any sum it enters beside the line's own points.  What it saves
    is not only the ``exp``/``erfcx`` calls: those terms' products, down where
    doubles lose precision (subnormals, below 2.2e-308), cost a microcode assist
    each (~140 ns) in the profile, the normal sums and the BLAS products of a
    blend's Jacobian.  NaN stays NaN (left to :func:`emg_profile`).
    """
    z = (gs - u) * _INV_SQRT2
    half_u2 = 0.5 * u * u
    if z >= 0.0:
        if half_u2 > NEGLIGIBLE_EXPONENT:  # h = exp(-u**2/2) erfcx(z) <= exp(-u**2/2)
            return 0.0, 0.0
    elif z < 0.0:
        tail = gs * (0.5 * gs - u)
        if tail < -NEGLIGIBLE_EXPONENT:  # and so is -u**2/2 (<= tail)
            return 0.0, 0.0
        if half_u2 > NEGLIGIBLE_EXPONENT:
            return 0.0, 2.0 * math.exp(min(tail, 0.0))
    return emg_profile(0, u, gs)


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
    gauss, h = emg_profile(scipy_erfcx, u, gs) if exact else fit_profile(u, gs)
    half_h = 0.5 * h
    g = gam * half_h
    gg = (gam / _SQRT_2PI) * gauss
    d_center = gam * g - (gg / s if exact else gg * inv_s)
    d_sigma = (gam * gam * s) * g - gg * (gam + (t / (s * s) if exact else t * (inv_s * inv_s)))
    d_gamma = half_h * (1.0 + gam * (gam * s * s - t)) - gg * s
    return g, amp * d_center, amp * d_sigma, amp * d_gamma


@numba.njit(cache=True, nogil=True, error_model="numpy")
def emg_constant_normal(scipy_erfcx, x, y, w, p, a, b, jm, rr, limit):  # pragma: no cover
    """Chi-square, ``A = J J^T`` and ``b = J r`` of EMG + constant on one window.

    Two passes: the first evaluates the line and its weighted Jacobian at each
    unmasked point into ``jm`` (rows of at least 5) and the weighted residual
    into ``rr`` (scratch of the window's length), summing the chi-square; the
    second adds them, in the same point order, to the 20 other sums of
    :func:`~idexdask.analysis.normal_sums.acc5`.  Every sum takes the same
    additions in the same order as one fused pass (the same values), but the
    model's arithmetic and the 21 running sums no longer compete for registers
    in one loop, and a rejected step pays for the chi-square alone.

    ``limit``: the chi-square a trial step must stay below to be accepted
    (NaN for none).  The chi-square only grows point by point, so once its
    partial sum reaches ``limit`` the step is rejected whatever the rest of the
    window holds: ``inf`` is returned there and ``A``, ``b`` are not written.
    """
    amp, mu, s, gam, c = p[0], p[1], p[2], p[3], p[4]
    inv_s = 1.0 / s
    chi = 0.0
    m = 0
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:
            continue  # a masked point adds exact zeros (its x is finite, see fit_batch)
        g, jc, js, jg = emg_point(scipy_erfcx, x[i], amp, mu, s, gam, inv_s)
        r = wi * (y[i] - (amp * g + c))
        jm[m, 0] = g * wi
        jm[m, 1] = jc * wi
        jm[m, 2] = js * wi
        jm[m, 3] = jg * wi
        jm[m, 4] = wi
        rr[m] = r
        m += 1
        chi += r * r
        if chi >= limit:
            return math.inf
    acc = ACC5_ZERO
    for i in range(m):
        r = rr[i]
        acc = acc5(acc, jm[i, 0], jm[i, 1], jm[i, 2], jm[i, 3], jm[i, 4], r)
    store5(acc, a, b)
    return chi
