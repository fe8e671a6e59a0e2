"""The impact charge model: the pulse, its Jacobian, its batch-fit model and its rise time.

Model (per channel, raw signal units)::

    Q(t) = C0 + H(t - t0) * A * (1 - exp(-(t - t0)/tau_r)) * exp(-(t - t0)/tau_d)

with ``t0`` the time of impact (µs), ``C0`` the baseline (DN), ``A`` the
amplitude (DN; the charge the preamplifier would hold without discharge),
``tau_r`` the rise time and ``tau_d`` the discharge (decay) time (µs).

The Heaviside kink
    ``Q`` is continuous in ``t0`` (the pulse starts from zero) but its slope
    jumps from 0 to ``A/tau_r`` at ``t0``.  The model is used as it is, not
    smoothed: the chi-square is continuously differentiable in ``t0`` except
    when ``t0`` coincides with a sample time (a set of measure zero), and the
    analytic Jacobian below is the exact one-sided derivative everywhere else.
    Levenberg–Marquardt steps never rely on second derivatives, so the kink
    costs nothing in practice (the fits converge in ~10 iterations); smoothing
    ``H`` would instead bias ``t0`` and ``tau_r`` by the smoothing width.

The compiled kernels of the same model (the fitter's "auto" and "compiled"
engines) are in :mod:`idexdask.analysis.impact_kernels`; the fits of every
event's channels in :mod:`idexdask.analysis.impact`.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from idexdask.analysis import xp as _xp
from idexdask.analysis.fitting import KERNEL_IMPACT, BatchModel

__all__ = ["FIT_PARAMETERS", "impact_model", "impact_signal", "rise_time_10_90"]

FIT_PARAMETERS = ("time_of_impact", "constant_offset", "amplitude", "rise_time", "decay_time")
"""Order of the parameters in ``<channel>_fit_parameters``: µs, DN, DN, µs, µs."""


def impact_signal(xp: ModuleType, dt: Any, amp: Any, tau_r: Any, tau_d: Any) -> Any:
    """``A (1 - exp(-dt/tau_r)) exp(-dt/tau_d)`` for ``dt > 0``, else 0.

    Parameters
    ----------
    xp : module
        Array namespace.
    dt : array
        Time since impact, µs.
    amp : array
        Amplitude ``A``, DN.
    tau_r, tau_d : array
        Rise and decay times, µs.

    Returns
    -------
    array
        Signal above the baseline, DN.
    """
    d = xp.maximum(dt, 0.0)
    return amp * (1.0 - xp.exp(-d / tau_r)) * xp.exp(-d / tau_d)


def _evaluate_jac(xp: ModuleType, x: Any, p: Any) -> tuple[Any, Any]:
    t0, c0, a, tr, td = (p[:, j : j + 1] for j in range(5))
    dt = x - t0
    on = dt > 0.0
    d = xp.where(on, dt, 0.0)
    with _xp.errstate(xp, under="ignore"):
        er = xp.exp(-d / tr)
        ed = xp.exp(-d / td)
    rise = 1.0 - er
    g = rise * ed
    f = c0 + a * g
    jac = xp.empty((x.shape[0], 5, x.shape[1]), dtype=xp.float64)
    # d/dt0 = -dQ/dt (one-sided at the kink; 0 before the impact)
    jac[:, 0, :] = xp.where(on, -a * ed * (er / tr - rise / td), 0.0)
    jac[:, 1, :] = 1.0
    jac[:, 2, :] = g
    jac[:, 3, :] = -a * ed * er * d / (tr * tr)
    jac[:, 4, :] = a * g * d / (td * td)
    return f, jac


def _evaluate(xp: ModuleType, x: Any, p: Any) -> Any:
    t0, c0, a, tr, td = (p[:, j : j + 1] for j in range(5))
    return c0 + impact_signal(xp, x - t0, a, tr, td)


def impact_model() -> BatchModel:
    """:class:`BatchModel` of the impact charge signal with its analytic Jacobian.

    Parameters are :data:`FIT_PARAMETERS`; default bounds: rise and decay times
    positive, the rest free.
    """
    inf = math.inf
    return BatchModel(
        name="impact_charge",
        param_names=FIT_PARAMETERS,
        lower=(-inf, -inf, -inf, 1e-6, 1e-6),
        upper=(inf, inf, inf, inf, inf),
        evaluate=_evaluate,
        evaluate_with_jacobian=_evaluate_jac,
        kernel=KERNEL_IMPACT,
    )


def rise_time_10_90(tau_r: np.ndarray, tau_d: np.ndarray, iterations: int = 60) -> np.ndarray:
    """10-90 % rise time of the fitted pulse, µs (vectorised bisection).

    The pulse ``(1 - exp(-u/tau_r)) exp(-u/tau_d)`` peaks at
    ``u_max = tau_r ln(1 + tau_d/tau_r)``; the times where it first reaches 10 %
    and 90 % of that maximum are found by bisection on ``[0, u_max]``.

    Parameters
    ----------
    tau_r, tau_d : numpy.ndarray
        Rise and decay times, µs.
    iterations : int
        Bisection steps (60 reach double precision).

    Returns
    -------
    numpy.ndarray
        ``t90 - t10``, µs; NaN where the inputs are not finite and positive.
    """
    tr = np.asarray(tau_r, dtype=float)
    td = np.asarray(tau_d, dtype=float)
    ok = np.isfinite(tr) & np.isfinite(td) & (tr > 0) & (td > 0)
    tr = np.where(ok, tr, 1.0)
    td = np.where(ok, td, 1.0)
    umax = tr * np.log1p(td / tr)

    def shape(u: np.ndarray) -> np.ndarray:
        return -np.expm1(-u / tr) * np.exp(-u / td)

    gmax = shape(umax)
    # both levels in one bisection (rows 0 and 1): half the array operations
    lo = np.zeros((2, *umax.shape))
    hi = np.stack([umax, umax])
    target = np.array([0.1, 0.9]).reshape((2,) + (1,) * umax.ndim) * gmax
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = shape(mid) < target
        np.copyto(lo, mid, where=below)
        np.copyto(hi, mid, where=~below)
    out = 0.5 * (lo + hi)
    return np.where(ok, out[1] - out[0], np.nan)

