"""Batched Levenberg–Marquardt: many small line fits at once, on NumPy or CuPy.

A campaign has millions of mass lines, each fitted in its own short window.
Fitting them one by one with lmfit costs milliseconds of Python overhead per
fit; here all windows advance together, one Levenberg–Marquardt iteration per
Python loop pass, with every operation vectorised across fits:

* model values and Jacobians for all windows at once (analytic for the
  Gaussian and all EMG-family lines and the baselines, vectorised forward
  differences for the Voigt line);
* normal equations as an ``(n_fits, p, p)`` stack, Marquardt-scaled and solved
  with one batched ``xp.linalg.solve``;
* per-fit damping, acceptance, convergence and failure masks; finished fits are
  dropped from the working set so the slow ones do not cost the others.

Bounds are handled as lmfit does (the MINUIT transforms: ``sin`` for a
two-sided bound, ``sqrt`` for a one-sided one), so a batch fit lands on the same
minimum as ``lmfit.Model.fit`` with the same bounds, and ``stderr`` is scaled by
the reduced chi-square as lmfit's default ``scale_covar=True``.

The fitter never returns a silent NaN: each fit carries a :class:`FitStatus`,
and windows that cannot be fitted get NaN parameters *and* a status saying why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any

import numba
import numpy as np

from idexdask.analysis import xp as _xp
from idexdask.analysis.lineshapes import (
    GAMMA_MAX,
    SIGMA_MIN,
    _emg_h,
    voigt,
)
from idexdask.analysis.special import call_scipy_erfcx, erfcx_kernel, scipy_erfcx_address
from idexdask.errors import AnalysisError

__all__ = [
    "FIT_DEVICES",
    "BatchFitResult",
    "BatchModel",
    "FitStatus",
    "batch_model",
    "fit_batch",
    "fit_batch_on",
]

log = logging.getLogger(__name__)

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / _SQRT2
_FD_STEP = math.sqrt(2.220446049250313e-16)  # forward-difference relative step
_LAMBDA_START = 1e-3
_LAMBDA_MIN = 1e-12
_LAMBDA_MAX = 1e16  # damping beyond this: no descent possible at double precision
_LAMBDA_GN = 1e-2  # a step taken with no more damping than this is ~ Gauss-Newton
_CPU_BLOCK = 256  # fits per block on the CPU (temporaries stay in cache)
_STALL_WINDOW = 10  # iterations over which a fit must make progress


class FitStatus(IntEnum):
    """Outcome of one fit in a batch."""

    #: The Gauss–Newton decrement (predicted chi-square gain) fell below ``ftol``.
    CONVERGED = 0
    #: ``max_iter`` iterations ran out, or the fit stalled (chi-square no longer
    #: falling, e.g. an undetermined parameter drifting), before convergence.
    MAX_ITERATIONS = 1
    #: The fit ended with a parameter on one of its bounds.
    HIT_BOUND = 2
    #: Model or chi-square became non-finite and no finite step could be found.
    FAILED_NONFINITE = 3
    #: The window cannot be fitted: too few finite points, flat data, bad start or bounds.
    INVALID_INPUT = 4


Evaluate = Callable[[ModuleType, Any, Any], Any]
EvaluateJac = Callable[[ModuleType, Any, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class BatchModel:
    """A line shape plus baseline, evaluated for a whole batch of windows.

    Attributes
    ----------
    name : str
        E.g. ``"emg+constant"``.
    param_names : tuple of str
        lmfit-style names, line parameters first, then the baseline's
        (``c`` for a constant, ``intercept`` and ``slope`` for a linear one),
        matching ``emg_model() + lmfit.models.ConstantModel()``.
    lower, upper : tuple of float
        Default bounds per parameter (``-inf``/``inf`` for none).
    evaluate : callable
        ``evaluate(xp, x, p) -> f``: ``x`` (n_fits, n_points) µs, ``p``
        (n_fits, n_params), returns the model (n_fits, n_points) DN.
    evaluate_with_jacobian : callable or None
        ``(xp, x, p) -> (f, J)`` with ``J`` (n_fits, n_params, n_points), the
        derivatives of ``f``; ``None`` to use forward differences.
    kernel : int
        Compiled kernel fitting this model on NumPy arrays (``KERNEL_*``; 0 for
        none, then the vectorised loop is used).  It must compute the same model
        and Jacobian as ``evaluate_with_jacobian``.
    """

    name: str
    param_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    evaluate: Evaluate
    evaluate_with_jacobian: EvaluateJac | None = None
    kernel: int = 0

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.param_names)

    def jacobian(self, xp: ModuleType, x: Any, p: Any) -> tuple[Any, Any]:
        """Model and Jacobian ``(f, J)``; ``J`` is (n_fits, n_params, n_points).

        Parameters
        ----------
        xp : module
            Array namespace.
        x : array
            Times (n_fits, n_points), µs.
        p : array
            Parameters (n_fits, n_params).

        Returns
        -------
        tuple of array
            ``f`` (n_fits, n_points) DN and ``J`` (n_fits, n_params, n_points).
        """
        if self.evaluate_with_jacobian is not None:
            return self.evaluate_with_jacobian(xp, x, p)
        f = self.evaluate(xp, x, p)
        cols = []
        for j in range(self.n_params):  # loop over parameters, not fits
            h = _FD_STEP * xp.where(p[:, j] != 0.0, xp.abs(p[:, j]), 1.0)
            pj = xp.copy(p)
            pj[:, j] = p[:, j] + h
            h = pj[:, j] - p[:, j]  # the step actually representable
            cols.append((self.evaluate(xp, x, pj) - f) / h[:, None])
        return f, xp.stack(cols, axis=1)


# ----------------------------------------------------------------------------- model pieces


def _col(p: Any, j: int) -> Any:
    return p[:, j : j + 1]


def _gaussian_fj(xp: ModuleType, x: Any, p: Any, jac: Any) -> Any:
    """Gaussian line; writes d/d(amplitude, center, sigma) into ``jac[:, :3]``."""
    a, mu, s = _col(p, 0), _col(p, 1), _col(p, 2)
    u = (x - mu) / s
    with _xp.errstate(xp, under="ignore"):
        g = xp.exp(-0.5 * u * u) / (_SQRT_2PI * s)
    f = a * g
    jac[:, 0, :] = g
    fs = f / s
    xp.multiply(fs, u, out=jac[:, 1, :])
    xp.multiply(fs, u * u - 1.0, out=jac[:, 2, :])
    return f


def _emg_unit_jac(xp: ModuleType, t: Any, s: Any, gam: Any) -> tuple[Any, Any, Any, Any]:
    """Unit-area EMG at ``t = x - center`` and its derivatives (center, sigma, gamma).

    ln g = ln(gamma/2) + (gamma*sigma)**2/2 - gamma*t + ln erfc(z) with
    z = (gamma*sigma - t/sigma)/sqrt(2); the erfc'(z) terms reduce to the
    Gaussian G = exp(-t**2/(2 sigma**2)): g * d ln erfc(z)/dz = -gamma*G/sqrt(pi).
    """
    h, gauss = _emg_h(xp, t / s, gam * s, with_gauss=True)
    half_h = 0.5 * h
    g = gam * half_h
    gg = (gam / _SQRT_2PI) * gauss  # gamma*G/sqrt(2*pi)
    d_center = gam * g - gg / s
    d_sigma = (gam * gam * s) * g - gg * (gam + t / (s * s))
    d_gamma = half_h * (1.0 + gam * (gam * s * s - t)) - gg * s
    return g, d_center, d_sigma, d_gamma


def _emg_fj(xp: ModuleType, x: Any, p: Any, jac: Any) -> Any:
    """EMG line; writes d/d(amplitude, center, sigma, gamma) into ``jac[:, :4]``."""
    a, mu, s, gam = _col(p, 0), _col(p, 1), _col(p, 2), _col(p, 3)
    g, dc, ds, dg = _emg_unit_jac(xp, x - mu, s, gam)
    jac[:, 0, :] = g
    xp.multiply(a, dc, out=jac[:, 1, :])
    xp.multiply(a, ds, out=jac[:, 2, :])
    xp.multiply(a, dg, out=jac[:, 3, :])
    return a * g


def _two_emg_fj(xp: ModuleType, x: Any, p: Any, jac: Any, mirror_first: bool) -> Any:
    """``a*(w*emg1 + (1-w)*emg2)`` sharing centre and width; emg1 mirrored for hyper-EMG."""
    a, mu, s, g1, g2, w = (_col(p, j) for j in range(6))
    t = x - mu
    u1, c1, s1, r1 = _emg_unit_jac(xp, -t if mirror_first else t, s, g1)
    if mirror_first:
        c1 = -c1  # d/d(center) of g(center - x)
    u2, c2, s2, r2 = _emg_unit_jac(xp, t, s, g2)
    v = 1.0 - w
    unit = w * u1 + v * u2
    jac[:, 0, :] = unit
    jac[:, 1, :] = a * (w * c1 + v * c2)
    jac[:, 2, :] = a * (w * s1 + v * s2)
    jac[:, 3, :] = (a * w) * r1
    jac[:, 4, :] = (a * v) * r2
    jac[:, 5, :] = a * (u1 - u2)
    return a * unit


def _double_emg_fj(xp: ModuleType, x: Any, p: Any, jac: Any) -> Any:
    return _two_emg_fj(xp, x, p, jac, mirror_first=False)


def _hyper_emg_fj(xp: ModuleType, x: Any, p: Any, jac: Any) -> Any:
    return _two_emg_fj(xp, x, p, jac, mirror_first=True)


def _fd_line(func: Callable[..., Any], n: int) -> Callable[[ModuleType, Any, Any], Any]:
    def evaluate(xp: ModuleType, x: Any, p: Any) -> Any:
        return func(x, *(_col(p, j) for j in range(n)))

    return evaluate


_ANALYTIC_LINES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "gaussian": (("amplitude", "center", "sigma"), _gaussian_fj),
    "emg": (("amplitude", "center", "sigma", "gamma"), _emg_fj),
    "double_emg": (
        ("amplitude", "center", "sigma", "gamma1", "gamma2", "fraction"),
        _double_emg_fj,
    ),
    "hyper_emg": (
        ("amplitude", "center", "sigma", "gamma_left", "gamma_right", "fraction_left"),
        _hyper_emg_fj,
    ),
}
_FD_LINES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "voigt": (("amplitude", "center", "sigma", "gamma"), voigt),
}
_BASELINES: dict[str, tuple[str, ...]] = {
    "none": (),
    "constant": ("c",),
    "linear": ("intercept", "slope"),
}
_INF = math.inf
_DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "sigma": (SIGMA_MIN, _INF),
    "gamma": (0.0, GAMMA_MAX),
    "gamma1": (0.0, GAMMA_MAX),
    "gamma2": (0.0, GAMMA_MAX),
    "gamma_left": (0.0, GAMMA_MAX),
    "gamma_right": (0.0, GAMMA_MAX),
    "fraction": (0.0, 1.0),
    "fraction_left": (0.0, 1.0),
}


def batch_model(line: str = "emg", baseline: str = "constant") -> BatchModel:
    """Build a line-plus-baseline model for :func:`fit_batch`.

    Parameters
    ----------
    line : {"emg", "gaussian", "double_emg", "hyper_emg", "voigt"}
        Line shape (see :mod:`idexdask.analysis.lineshapes`).  All but
        ``voigt`` have analytic Jacobians; ``voigt`` uses forward differences.
        For ``voigt``, ``gamma`` is the Lorentzian HWHM (µs), bounded below by 0.
    baseline : {"constant", "linear", "none"}
        ``c`` (DN), ``intercept + slope*x`` (DN, DN/µs), or nothing.

    Returns
    -------
    BatchModel
        With default bounds as the ``*_model()`` lmfit factories:
        ``sigma >= SIGMA_MIN``, rates in ``[0, GAMMA_MAX]``, fractions in [0, 1].

    Raises
    ------
    AnalysisError
        For an unknown line or baseline name.
    """
    if baseline not in _BASELINES:
        raise AnalysisError(f"unknown baseline {baseline!r}; choose from {sorted(_BASELINES)}")
    base_names = _BASELINES[baseline]
    if line in _ANALYTIC_LINES:
        line_names, line_fj = _ANALYTIC_LINES[line]
        line_eval = None
    elif line in _FD_LINES:
        line_names, func = _FD_LINES[line]
        line_fj = None
        line_eval = _fd_line(func, len(line_names))
    else:
        raise AnalysisError(
            f"unknown line {line!r}; choose from {sorted(_ANALYTIC_LINES) + sorted(_FD_LINES)}"
        )
    nl = len(line_names)
    names = line_names + base_names
    bounds = [_DEFAULT_BOUNDS.get(n, (-_INF, _INF)) for n in line_names]
    bounds += [(-_INF, _INF)] * len(base_names)
    if line == "voigt":
        bounds[3] = (0.0, _INF)

    def base_value(xp: ModuleType, x: Any, p: Any) -> Any:
        if baseline == "constant":
            return _col(p, nl)
        if baseline == "linear":
            return _col(p, nl) + _col(p, nl + 1) * x
        return 0.0

    def evaluate(xp: ModuleType, x: Any, p: Any) -> Any:
        if line_fj is not None:
            scratch = xp.empty((x.shape[0], nl, x.shape[1]), dtype=xp.float64)
            f_line = line_fj(xp, x, p, scratch)
        else:
            f_line = line_eval(xp, x, p)
        return f_line + base_value(xp, x, p)

    evaluate_with_jacobian = None
    if line_fj is not None:

        def evaluate_with_jacobian(xp: ModuleType, x: Any, p: Any) -> tuple[Any, Any]:
            jac = xp.empty((x.shape[0], len(names), x.shape[1]), dtype=xp.float64)
            f = line_fj(xp, x, p, jac) + base_value(xp, x, p)
            if baseline in ("constant", "linear"):
                jac[:, nl, :] = 1.0
            if baseline == "linear":
                jac[:, nl + 1, :] = x
            return f, jac

    return BatchModel(
        name=f"{line}+{baseline}" if baseline != "none" else line,
        param_names=names,
        lower=tuple(b[0] for b in bounds),
        upper=tuple(b[1] for b in bounds),
        evaluate=evaluate,
        evaluate_with_jacobian=evaluate_with_jacobian,
        kernel=KERNEL_EMG_CONSTANT if (line, baseline) == ("emg", "constant") else KERNEL_NONE,
    )


# ----------------------------------------------------------------------------- bound transforms


@dataclass(frozen=True)
class _Bounds:
    """Per-fit, per-parameter bound kinds and safe (finite) bound values."""

    lo: Any  # finite stand-in where unbounded
    hi: Any
    has_lo: Any
    has_hi: Any

    def slice(self, start: int, stop: int) -> _Bounds:
        return _Bounds(
            self.lo[start:stop],
            self.hi[start:stop],
            self.has_lo[start:stop],
            self.has_hi[start:stop],
        )

    def take(self, keep: Any) -> _Bounds:
        return _Bounds(self.lo[keep], self.hi[keep], self.has_lo[keep], self.has_hi[keep])

    def to_internal(self, xp: ModuleType, p: Any) -> Any:
        both = self.has_lo & self.has_hi
        width = xp.where(both, self.hi - self.lo, 1.0)
        with _xp.errstate(xp, invalid="ignore", over="ignore"):
            t_both = xp.arcsin(xp.clip(2.0 * (p - self.lo) / width - 1.0, -1.0, 1.0))
            t_lo = xp.sqrt(xp.maximum((p - self.lo + 1.0) ** 2 - 1.0, 0.0))
            t_hi = xp.sqrt(xp.maximum((self.hi - p + 1.0) ** 2 - 1.0, 0.0))
        return xp.where(both, t_both, xp.where(self.has_lo, t_lo, xp.where(self.has_hi, t_hi, p)))

    def to_external(self, xp: ModuleType, t: Any) -> tuple[Any, Any]:
        """External parameters and their derivative with respect to the internal ones."""
        both = self.has_lo & self.has_hi
        half = 0.5 * (self.hi - self.lo)
        with _xp.errstate(xp, over="ignore"):
            root = xp.sqrt(t * t + 1.0)
        p = xp.where(
            both,
            self.lo + half * (xp.sin(t) + 1.0),
            xp.where(
                self.has_lo,
                self.lo - 1.0 + root,
                xp.where(self.has_hi, self.hi + 1.0 - root, t),
            ),
        )
        dp = xp.where(
            both,
            half * xp.cos(t),
            xp.where(self.has_lo, t / root, xp.where(self.has_hi, -t / root, 1.0)),
        )
        # the transforms can land a hair outside [lo, hi] through rounding
        p = xp.where(self.has_lo, xp.maximum(p, self.lo), p)
        p = xp.where(self.has_hi, xp.minimum(p, self.hi), p)
        return p, dp

    def at_bound(self, xp: ModuleType, p: Any, rtol: float) -> Any:
        both = self.has_lo & self.has_hi
        scale_lo = xp.where(both, self.hi - self.lo, xp.maximum(xp.abs(self.lo), 1.0))
        scale_hi = xp.where(both, self.hi - self.lo, xp.maximum(xp.abs(self.hi), 1.0))
        near_lo = self.has_lo & (p - self.lo <= rtol * scale_lo)
        near_hi = self.has_hi & (self.hi - p <= rtol * scale_hi)
        return near_lo | near_hi


# ----------------------------------------------------------------------------- result


@dataclass
class BatchFitResult:
    """Results of :func:`fit_batch`; every array has the fits along axis 0.

    Arrays live in the namespace of the inputs (NumPy or CuPy).

    Attributes
    ----------
    param_names : tuple of str
        Column names of ``params`` and ``stderr``.
    params : array
        Best-fit parameters (n_fits, n_params); NaN where ``status`` is
        ``INVALID_INPUT`` or ``FAILED_NONFINITE``.
    stderr : array
        1-sigma uncertainties (n_fits, n_params), from the covariance scaled by
        the reduced chi-square like lmfit; NaN where the covariance is singular.
    chisq : array
        Chi-square ``sum((w*(y - f))**2)`` (n_fits,), DN² unweighted.
    redchi : array
        ``chisq / (ndata - n_params)`` (n_fits,).
    ndata : array
        Number of finite, non-zero-weight points per fit (n_fits,).
    nfev : array
        Model evaluations per fit, Jacobian evaluations included (n_fits,).
    niter : array
        Levenberg–Marquardt iterations per fit (n_fits,).
    status : array
        :class:`FitStatus` values (n_fits,), int8.
    """

    param_names: tuple[str, ...]
    params: Any
    stderr: Any
    chisq: Any
    redchi: Any
    ndata: Any
    nfev: Any
    niter: Any
    status: Any

    def __getitem__(self, name: str) -> Any:
        """Column of ``params`` for parameter ``name``."""
        return self.params[:, self.param_names.index(name)]

    @property
    def success(self) -> Any:
        """Boolean mask of fits with status ``CONVERGED``."""
        return self.status == FitStatus.CONVERGED


# ----------------------------------------------------------------------------- the fitter


def _as_2d(xp: ModuleType, a: Any, shape: tuple[int, int], what: str) -> Any:
    a = xp.asarray(a, dtype=xp.float64)
    try:
        return xp.broadcast_to(a, shape)
    except ValueError as exc:
        raise AnalysisError(f"{what} of shape {a.shape} does not broadcast to {shape}") from exc


def _normal_equations(xp: ModuleType, jt: Any, r: Any) -> tuple[Any, Any]:
    """``A = Jt Jt^T`` (n, p, p) and ``b = Jt r`` (n, p) for ``Jt`` (n, p, m)."""
    a = jt @ xp.swapaxes(jt, 1, 2)
    b = (jt @ r[:, :, None])[:, :, 0]
    return a, b


def _solve_damped(xp: ModuleType, a: Any, b: Any, lam: Any) -> Any:
    """Solve ``(A + lam*diag(A)) d = b`` per fit, Marquardt-scaled so it is never singular."""
    d = xp.diagonal(a, axis1=1, axis2=2)
    dmax = xp.max(d, axis=1, keepdims=True)
    d = xp.maximum(d, 1e-30 * dmax + 1e-300)
    s = 1.0 / xp.sqrt(d)
    n, k = b.shape
    eye = xp.eye(k, dtype=a.dtype)
    m = a * s[:, :, None] * s[:, None, :] + (lam[:, None, None] + _LAMBDA_MIN) * eye
    rhs = (s * b)[:, :, None]
    try:
        ds = xp.linalg.solve(m, rhs)[:, :, 0]
    except Exception as exc:  # LinAlgError (numpy) or its CuPy counterpart
        log.debug("batched solve failed (%s); falling back to eigh", exc)
        w, v = xp.linalg.eigh(m)
        w = xp.where(w > 0.0, w, math.inf)
        ds = (v @ ((xp.swapaxes(v, 1, 2) @ rhs) / w[:, :, None]))[:, :, 0]
    return s * ds


def _covariance(xp: ModuleType, a: Any) -> Any:
    """``inv(A)`` per fit, Marquardt-scaled; NaN where ``A`` is singular or indefinite.

    A batched LU inverse of the unit-diagonal matrix, accepted where it is
    finite, has a positive diagonal and reproduces the identity to 1e-3 (that is,
    condition numbers up to ~1e12); an eigen-decomposition (5x slower) is only
    the fallback when the batched LU meets an exactly singular matrix.
    """
    k = a.shape[1]
    eye = xp.eye(k, dtype=a.dtype)
    d = xp.diagonal(a, axis1=1, axis2=2)
    good = xp.all(d > 0.0, axis=1) & xp.all(xp.isfinite(a), axis=(1, 2))
    d = xp.where(d > 0.0, d, 1.0)
    s = 1.0 / xp.sqrt(d)
    m = a * s[:, :, None] * s[:, None, :]
    m = xp.where(good[:, None, None], m, eye)
    try:
        inv = xp.linalg.inv(m)
    except Exception as exc:  # LinAlgError (numpy) or its CuPy counterpart
        log.debug("batched inverse failed (%s); falling back to eigh", exc)
        w, v = xp.linalg.eigh(m)
        good &= w[:, 0] > 1e-14 * w[:, -1]
        w = xp.where(w > 0.0, w, 1.0)
        inv = (v / w[:, None, :]) @ xp.swapaxes(v, 1, 2)
    resid = xp.max(xp.abs(m @ inv - eye), axis=(1, 2))
    ok = good & (resid < 1e-3) & xp.all(xp.diagonal(inv, axis1=1, axis2=2) > 0.0, axis=1)
    cov = inv * s[:, :, None] * s[:, None, :]
    return xp.where(ok[:, None, None], cov, math.nan)


# ----------------------------------------------------------------------------- compiled kernels
#
# Models with a compiled kernel (``BatchModel.kernel``: EMG + constant, the impact
# charge model) have their per-point arithmetic in numba, used on NumPy inputs:
#
# * ``_residual_jacobian`` (engine "auto"): weighted residuals and Jacobian for
#   the vectorised loop in one pass.  The expressions are those of the xp
#   kernels (``_emg_fj`` + constant, ``impact._evaluate_jac``) in the same order,
#   erfcx is scipy's own C function (the code behind ``scipy.special.erfcx``),
#   and numba does not contract to FMA, so the values are the same to the last
#   bit and the fits follow exactly the same path (the kernels' ``scipy_erfcx``
#   argument: that function's address).
# * ``_lm_compiled`` (engine "compiled"): the whole Levenberg-Marquardt iteration
#   of ``_iterate_xp``, decision for decision, one fit at a time, with the model,
#   Jacobian and normal equations fused in one pass over the window (no
#   (n_fits, n_params, n_points) temporaries, no BLAS call, no per-iteration
#   Python overhead).  The normal equations are summed point by point instead of
#   by BLAS and the damped systems solved by Gaussian elimination instead of
#   LAPACK, erfcx is :func:`~idexdask.analysis.special.erfcx_kernel`
#   (``scipy_erfcx = 0``; within 1 ulp of scipy's, equal at ~99.99 % of points,
#   without scipy's mispredicted interval dispatch) and the EMG's divisions by
#   sigma are multiplications by its reciprocal (EMG kernel 3.73 -> 2.95 us per
#   evaluation of a 56-point window for the two):
#   rounding-level differences, which a converged fit absorbs (~1e-5
#   standard errors) but a wandering one (MAX_ITERATIONS / HIT_BOUND after a
#   creep) may not -- exactly as under a 1-ulp change of its data.

#: ``BatchModel.kernel`` values: which compiled kernel fits the model (0: none).
KERNEL_NONE = 0
KERNEL_EMG_CONSTANT = 1
KERNEL_IMPACT = 2

_INF_F = math.inf
_ST_CONVERGED = int(FitStatus.CONVERGED)
_ST_MAX_ITERATIONS = int(FitStatus.MAX_ITERATIONS)
_ST_FAILED_NONFINITE = int(FitStatus.FAILED_NONFINITE)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _acc5(acc, j0, j1, j2, j3, j4, r):  # pragma: no cover - compiled
    """Add one point to the running sums of ``A`` (upper triangle), ``b`` and chi-square.

    ``acc`` is a tuple of 21 floats (kept in registers once inlined).
    """
    return (
        acc[0] + j0 * j0,
        acc[1] + j0 * j1,
        acc[2] + j0 * j2,
        acc[3] + j0 * j3,
        acc[4] + j0 * j4,
        acc[5] + j1 * j1,
        acc[6] + j1 * j2,
        acc[7] + j1 * j3,
        acc[8] + j1 * j4,
        acc[9] + j2 * j2,
        acc[10] + j2 * j3,
        acc[11] + j2 * j4,
        acc[12] + j3 * j3,
        acc[13] + j3 * j4,
        acc[14] + j4 * j4,
        acc[15] + j0 * r,
        acc[16] + j1 * r,
        acc[17] + j2 * r,
        acc[18] + j3 * r,
        acc[19] + j4 * r,
        acc[20] + r * r,
    )


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _store5(acc, a, b):  # pragma: no cover - compiled
    """Write the sums of :func:`_acc5` to ``A`` (symmetric) and ``b``; return chi-square."""
    a[0, 0] = acc[0]
    a[0, 1] = a[1, 0] = acc[1]
    a[0, 2] = a[2, 0] = acc[2]
    a[0, 3] = a[3, 0] = acc[3]
    a[0, 4] = a[4, 0] = acc[4]
    a[1, 1] = acc[5]
    a[1, 2] = a[2, 1] = acc[6]
    a[1, 3] = a[3, 1] = acc[7]
    a[1, 4] = a[4, 1] = acc[8]
    a[2, 2] = acc[9]
    a[2, 3] = a[3, 2] = acc[10]
    a[2, 4] = a[4, 2] = acc[11]
    a[3, 3] = acc[12]
    a[3, 4] = a[4, 3] = acc[13]
    a[4, 4] = acc[14]
    b[0] = acc[15]
    b[1] = acc[16]
    b[2] = acc[17]
    b[3] = acc[18]
    b[4] = acc[19]
    return acc[20]


_ACC5_ZERO = (0.0,) * 21


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def emg_profile(scipy_erfcx, u, gs):  # pragma: no cover - compiled
    """``exp(-u**2/2)`` and the EMG shape ``h`` at ``u = (x - center)/sigma``, ``gs = gamma sigma``.

    ``_emg_h``'s expressions for one point: one ``erfcx`` of ``|z|``,
    ``z = (gs - u)/sqrt(2)``.  ``scipy_erfcx`` nonzero (the address of scipy's C
    erfcx): the array code's expressions (its values but for exp, which libm and
    NumPy's CPU-specific SIMD code round an ulp apart); zero: the compiled engine's
    :func:`~idexdask.analysis.special.erfcx_kernel` and a multiplication by
    1/sqrt(2) (equal to rounding).
    """
    exact = scipy_erfcx != 0
    z = (gs - u) / _SQRT2 if exact else (gs - u) * _INV_SQRT2
    az = abs(z)
    e = call_scipy_erfcx(scipy_erfcx, az) if exact else erfcx_kernel(az)
    gauss = math.exp(-0.5 * u * u)
    ge = gauss * e
    if z >= 0.0:
        return gauss, ge
    return gauss, 2.0 * math.exp(min(gs * (0.5 * gs - u), 0.0)) - ge  # exp(<= 0); NaN stays NaN


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _emg_point(scipy_erfcx, xq, amp, mu, s, gam, inv_s):  # pragma: no cover - compiled
    """EMG line at one point: unit profile and d/d(center, sigma, gamma) of the line.

    ``scipy_erfcx`` nonzero (the address of scipy's C erfcx): the expressions of
    ``_emg_fj``/``_emg_unit_jac``/``_emg_h`` one by one (no contraction to FMA),
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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _impact_point(xq, t0, amp, tr, td):  # pragma: no cover - compiled
    """Impact pulse at one point: ``g`` and d/d(t0, tau_r, tau_d) of ``A g``.

    Mirrors ``impact._evaluate_jac`` expression by expression; before the impact
    (``x <= t0``) the exponentials are exactly 1 and are not evaluated.
    """
    d = xq - t0
    if d > 0.0:
        return _impact_terms(d, math.exp(-d / tr), math.exp(-d / td), amp, tr, td, 0.0, 0.0, True)
    # d = 0: er = ed = 1, rise = g = 0
    return 0.0, 0.0, -amp * 0.0 / (tr * tr), amp * 0.0 * 0.0 / (td * td)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _impact_terms(d, er, ed, amp, tr, td, inv_tr, inv_td, exact):  # pragma: no cover
    """``g`` and d/d(t0, tau_r, tau_d) of ``A g`` at ``d = x - t0 > 0``, given
    ``er = exp(-d/tau_r)`` and ``ed = exp(-d/tau_d)``.

    ``exact``: the array code's expressions (its values within libm's and NumPy's
    exp rounding); else
    the divisions by ``tau`` as multiplications by ``inv_tr = 1/tau_r`` and
    ``inv_td = 1/tau_d`` (the compiled engine; equal to rounding).
    """
    rise = 1.0 - er
    g = rise * ed
    if exact:
        return (
            g,
            -amp * ed * (er / tr - rise / td),
            -amp * ed * er * d / (tr * tr),
            amp * g * d / (td * td),
        )
    return (
        g,
        -amp * ed * (er * inv_tr - rise * inv_td),
        -amp * ed * er * d * (inv_tr * inv_tr),
        amp * g * d * (inv_td * inv_td),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _emg_constant_normal(scipy_erfcx, x, y, w, p, a, b):  # pragma: no cover - compiled
    """Chi-square, ``A = J J^T`` and ``b = J r`` of EMG + constant on one window."""
    amp, mu, s, gam, c = p[0], p[1], p[2], p[3], p[4]
    inv_s = 1.0 / s
    acc = _ACC5_ZERO
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:
            continue  # a masked point adds exact zeros (its x is finite, see fit_batch)
        g, jc, js, jg = _emg_point(scipy_erfcx, x[i], amp, mu, s, gam, inv_s)
        r = wi * (y[i] - (amp * g + c))
        acc = _acc5(acc, g * wi, jc * wi, js * wi, jg * wi, wi, r)
    return _store5(acc, a, b)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _impact_normal(x, y, w, p, a, b, step):  # pragma: no cover - compiled
    """Chi-square, ``A`` and ``b`` of the impact charge model on one window.

    The model's two exponentials take ~60 % of a point's cost.  Where ``step``
    > 0 (the window's valid points lie on a uniform grid of that step, see
    :func:`_grid_steps`), they are carried from one point to the next by a
    factor ``exp(-step/tau)``, and evaluated afresh only at the first point after
    the impact or after a masked one; the values then differ from
    :func:`_impact_point`'s by ~1e-13 relative (one rounding per point).
    """
    t0, c0, amp, tr, td = p[0], p[1], p[2], p[3], p[4]
    inv_tr = 1.0 / tr
    inv_td = 1.0 / td
    acc = _ACC5_ZERO
    carry = step > 0.0
    q_r = math.exp(-step / tr) if carry else 0.0
    q_d = math.exp(-step / td) if carry else 0.0
    previous = -2  # index of the last point whose exponentials were computed
    er = 1.0
    ed = 1.0
    for i in range(x.size):
        wi = w[i]
        if wi == 0.0:
            continue  # a masked point adds exact zeros (its x is finite, see fit_batch)
        d = x[i] - t0
        if d > 0.0:
            if carry and previous == i - 1:
                er *= q_r
                ed *= q_d
            else:
                er = math.exp(-d / tr)
                ed = math.exp(-d / td)
            previous = i
            g, j0, j3, j4 = _impact_terms(d, er, ed, amp, tr, td, inv_tr, inv_td, False)
        else:
            g, j0, j3, j4 = _impact_point(x[i], t0, amp, tr, td)
        r = wi * (y[i] - (c0 + amp * g))
        acc = _acc5(acc, j0 * wi, wi, g * wi, j3 * wi, j4 * wi, r)
    return _store5(acc, a, b)


def _grid_steps(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per window, the step of the uniform grid its valid points lie on, else 0.

    Valid points are those of non-zero weight; the grid is index-based (point
    ``j`` at ``x[first] + (j - first) * step``), within 1e-9 of the step.
    """
    n, m = x.shape
    valid = w != 0.0
    index = np.arange(m)
    first = np.argmax(valid, axis=1)
    last = m - 1 - np.argmax(valid[:, ::-1], axis=1)
    span = np.maximum(last - first, 1)
    rows = np.arange(n)
    step = (x[rows, last] - x[rows, first]) / span
    grid = x[rows, first][:, None] + (index[None, :] - first[:, None]) * step[:, None]
    off = np.abs(np.where(valid, x - grid, 0.0))
    uniform = (last > first) & (step > 0.0) & np.all(off <= 1e-9 * step[:, None], axis=1)
    return np.where(uniform, step, 0.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _residual_jacobian(kernel, scipy_erfcx, x, y, w, weighted, p, r, jac):  # pragma: no cover
    """Weighted residuals ``r`` (n, m) and Jacobian ``jac`` (n, 5, m) of a compiled model.

    What the vectorised loop computes with ``model.jacobian`` and the weighting
    (within the ulp by which libm's exp and NumPy's SIMD exp may differ), in one
    pass (``weighted=False``: unit weights, ``w`` unused).
    """
    n, m = x.shape
    for i in range(n):
        p0, p1, p2, p3, p4 = p[i, 0], p[i, 1], p[i, 2], p[i, 3], p[i, 4]
        inv_s = 1.0 / p2
        for q in range(m):
            if kernel == KERNEL_EMG_CONSTANT:
                g, jc, js, jg = _emg_point(scipy_erfcx, x[i, q], p0, p1, p2, p3, inv_s)
                f = p0 * g + p4
                j0, j1, j2, j3, j4 = g, jc, js, jg, 1.0
            else:
                g, j0, j3, j4 = _impact_point(x[i, q], p0, p2, p3, p4)
                f = p1 + p2 * g
                j1, j2 = 1.0, g
            if weighted:
                wq = w[i, q]
                r[i, q] = wq * (y[i, q] - f)
                j0, j1, j2, j3, j4 = j0 * wq, j1 * wq, j2 * wq, j3 * wq, j4 * wq
            else:
                r[i, q] = y[i, q] - f
            jac[i, 0, q] = j0
            jac[i, 1, q] = j1
            jac[i, 2, q] = j2
            jac[i, 3, q] = j3
            jac[i, 4, q] = j4


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _to_external_one(theta, lo, hi, has_lo, has_hi, p, dp):  # pragma: no cover - compiled
    """``_Bounds.to_external`` for one fit."""
    for j in range(theta.size):
        t = theta[j]
        if has_lo[j] and has_hi[j]:
            half = 0.5 * (hi[j] - lo[j])
            pj = lo[j] + half * (math.sin(t) + 1.0)
            dp[j] = half * math.cos(t)
        elif has_lo[j]:
            root = math.sqrt(t * t + 1.0)
            pj = lo[j] - 1.0 + root
            dp[j] = t / root
        elif has_hi[j]:
            root = math.sqrt(t * t + 1.0)
            pj = hi[j] + 1.0 - root
            dp[j] = -t / root
        else:
            pj = t
            dp[j] = 1.0
        if has_lo[j] and pj < lo[j]:
            pj = lo[j]
        if has_hi[j] and pj > hi[j]:
            pj = hi[j]
        p[j] = pj


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _at_bound_one(p, lo, hi, has_lo, has_hi, rtol):  # pragma: no cover - compiled
    """``any(_Bounds.at_bound)`` for one fit."""
    for j in range(p.size):
        if has_lo[j] and has_hi[j]:
            scale_lo = hi[j] - lo[j]
            scale_hi = scale_lo
        else:
            scale_lo = max(abs(lo[j]), 1.0)
            scale_hi = max(abs(hi[j]), 1.0)
        if has_lo[j] and p[j] - lo[j] <= rtol * scale_lo:
            return True
        if has_hi[j] and hi[j] - p[j] <= rtol * scale_hi:
            return True
    return False


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _evaluate_one(kernel, scipy_erfcx, x, y, w, step, lo, hi, has_lo, has_hi, theta, p, dp,
                  a_ext, b_ext, a, b):  # pragma: no cover - compiled
    """``evaluate_block`` for one fit: chi-square (inf if not finite), ``A``, ``b``."""
    _to_external_one(theta, lo, hi, has_lo, has_hi, p, dp)
    if kernel == KERNEL_EMG_CONSTANT:
        chi = _emg_constant_normal(scipy_erfcx, x, y, w, p, a_ext, b_ext)
    else:
        chi = _impact_normal(x, y, w, p, a_ext, b_ext, step)
    k = theta.size
    finite = math.isfinite(chi)
    for j in range(k):
        finite = finite and math.isfinite(b_ext[j])
        b[j] = b_ext[j] * dp[j]
        for m in range(k):
            finite = finite and math.isfinite(a_ext[j, m])
            a[j, m] = a_ext[j, m] * (dp[j] * dp[m])
    return chi if finite else _INF_F


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _solve_damped_one(a, b, lam, step, m, s):  # pragma: no cover - compiled
    """``_solve_damped`` for one fit, by Gaussian elimination with partial pivoting.

    ``m`` is positive definite for a finite ``A`` (``lam + _LAMBDA_MIN > 0`` on
    the unit diagonal), so a zero pivot cannot occur; if it does (non-finite
    input), the step is NaN, which the iteration rejects like any failed step.
    """
    k = b.size
    dmax = a[0, 0]
    nan = False
    for j in range(k):
        d = a[j, j]
        if d != d:
            nan = True
        elif d > dmax:
            dmax = d
    floor = 1e-30 * dmax + 1e-300
    for j in range(k):
        d = a[j, j]
        s[j] = math.nan if nan else 1.0 / math.sqrt(max(d, floor))
    shift = lam + _LAMBDA_MIN
    for j in range(k):
        for c in range(k):
            m[j, c] = a[j, c] * s[j] * s[c] + shift * (1.0 if j == c else 0.0)
        step[j] = s[j] * b[j]
    for c in range(k):  # forward elimination
        piv = c
        big = abs(m[c, c])
        for r in range(c + 1, k):
            v = abs(m[r, c])
            if v > big:
                big = v
                piv = r
        if big == 0.0:
            step[:] = math.nan
            return
        if piv != c:
            for j in range(k):
                m[c, j], m[piv, j] = m[piv, j], m[c, j]
            step[c], step[piv] = step[piv], step[c]
        for r in range(c + 1, k):
            f = m[r, c] / m[c, c]
            for j in range(c + 1, k):
                m[r, j] -= f * m[c, j]
            step[r] -= f * step[c]
    for c in range(k - 1, -1, -1):  # back substitution
        v = step[c]
        for j in range(c + 1, k):
            v -= m[c, j] * step[j]
        step[c] = v / m[c, c]
    for j in range(k):
        step[j] *= s[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _plan_one(a, b, chi, lam, floor, ftol, gtol, step, m, s):  # pragma: no cover - compiled
    """``plan`` for one fit: fills ``step``; returns (predicted gain, done, cosine)."""
    at_floor = chi <= 100.0 * floor
    chi = chi + floor
    _solve_damped_one(a, b, lam, step, m, s)
    k = b.size
    predicted = 0.0
    cosine = 0.0
    for j in range(k):
        a_step = 0.0
        for c in range(k):
            a_step += a[j, c] * step[c]
        predicted += step[j] * (2.0 * b[j] - a_step)
        d = a[j, j]
        if d > 0.0:
            cj = abs(b[j]) / math.sqrt(d * chi)
            if cj != cj or cosine != cosine:
                cosine = math.nan
            elif cj > cosine:
                cosine = cj
    done = ((lam <= _LAMBDA_GN) and (predicted <= ftol * chi)) or (cosine <= gtol) or at_floor
    return predicted, done, cosine


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lm_compiled(kernel, scipy_erfcx, x, y, w, steps, lo, hi, has_lo, has_hi, theta0, chi_floor,
                 max_iter, ftol, gtol, bound_rtol, stall_tol,
                 out_p, out_chi, out_a, out_nfev, out_niter, out_status):  # pragma: no cover
    """The Levenberg-Marquardt loop of ``_iterate_xp``, one fit at a time."""
    n, k = theta0.shape
    theta = np.empty(k)
    theta_try = np.empty(k)
    p = np.empty(k)
    p_try = np.empty(k)
    dp = np.empty(k)
    a = np.empty((k, k))
    a_try = np.empty((k, k))
    a_ext = np.empty((k, k))
    a_ext_try = np.empty((k, k))
    b = np.empty(k)
    b_try = np.empty(k)
    b_ext = np.empty(k)
    step = np.empty(k)
    m = np.empty((k, k))
    s = np.empty(k)
    for i in range(n):
        xi, yi, wi = x[i], y[i], w[i]
        loi, hii, hl, hh = lo[i], hi[i], has_lo[i], has_hi[i]
        floor = chi_floor[i]
        theta[:] = theta0[i]
        chi = _evaluate_one(kernel, scipy_erfcx, xi, yi, wi, steps[i], loi, hii, hl, hh,
                            theta, p, dp, a_ext, b_ext, a, b)
        lam = _LAMBDA_START
        nfev = 1
        niter = 0
        chi_ref = chi
        nonfinite = not math.isfinite(chi)
        predicted, converged, _ = _plan_one(a, b, 1.0 if nonfinite else chi, lam, floor,
                                            ftol, gtol, step, m, s)
        nu = 2.0
        converged = converged and not nonfinite
        done = converged or nonfinite
        if nonfinite:
            status = _ST_FAILED_NONFINITE
        elif converged:
            status = _ST_CONVERGED
        else:
            status = _ST_MAX_ITERATIONS
        while not done:
            finite_theta = True
            for j in range(k):
                theta_try[j] = theta[j] + step[j]
                finite_theta = finite_theta and math.isfinite(theta_try[j])
            chi_try = _evaluate_one(kernel, scipy_erfcx, xi, yi, wi, steps[i], loi, hii, hl, hh,
                                    theta_try, p_try, dp, a_ext_try, b_ext, a_try, b_try)
            nfev += 1
            niter += 1
            accept = (chi_try < chi) and finite_theta
            pinned = _at_bound_one(p_try, loi, hii, hl, hh, bound_rtol)
            pinned_done = accept and pinned and (chi - chi_try <= ftol * chi)
            if accept:
                theta[:] = theta_try
                p[:] = p_try
                a[:, :] = a_try
                b[:] = b_try
                a_ext[:, :] = a_ext_try
            rho = (chi - chi_try) / predicted
            rho = rho if math.isfinite(rho) else 1.0
            shrink = max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            if accept:
                lam = max(lam * shrink, _LAMBDA_MIN)
                nu = 2.0
                chi = chi_try
            else:
                lam = lam * nu
                nu = 2.0 * nu
            predicted, converged, cosine = _plan_one(a, b, chi, lam, floor, ftol, gtol,
                                                     step, m, s)
            converged = converged or pinned_done
            stalled = lam > _LAMBDA_MAX
            converged = converged or (stalled and cosine <= 1e-4)
            window_end = (niter % _STALL_WINDOW) == 0
            no_progress = window_end and not (chi_ref - chi > stall_tol * chi_ref)
            converged = converged or (no_progress and chi <= 100.0 * floor)
            if converged:
                status = _ST_CONVERGED
            if window_end:
                chi_ref = chi
            done = converged or stalled or no_progress or niter >= max_iter
        out_p[i] = p
        out_chi[i] = chi
        out_a[i] = a_ext
        out_nfev[i] = nfev
        out_niter[i] = niter
        out_status[i] = status


def _compiled_kernel(xp: ModuleType, model: BatchModel, engine: str) -> int:
    """The compiled kernel of ``model`` usable here, or 0 (array code only)."""
    if engine not in ("auto", "compiled", "xp"):
        raise AnalysisError(f"engine must be 'auto', 'compiled' or 'xp', got {engine!r}")
    if engine == "xp":
        return KERNEL_NONE
    usable = xp is np and model.kernel != KERNEL_NONE
    if usable and model.kernel == KERNEL_EMG_CONSTANT and engine == "auto":
        usable = scipy_erfcx_address() != 0  # its bit-for-bit promise needs scipy's erfcx
    if engine == "compiled" and not usable:
        raise AnalysisError(
            f"no compiled kernel for model {model.name!r} on {xp.__name__} arrays"
        )
    return model.kernel if usable else KERNEL_NONE


def _iterate_compiled(
    kernel: int,
    work: tuple[Any, ...],
    outs: tuple[Any, ...],
    opts: tuple[int, float, float, float, float],
) -> None:
    """The Levenberg-Marquardt loop of :func:`_iterate_xp`, compiled, one fit at a time.

    Same arguments as :func:`_iterate_xp` (NumPy arrays only).
    """
    idx, xs, ys, ws, bs, theta, chi_floor = work
    out_p, out_cov, out_chi, out_nfev, out_iter, out_status = outs
    max_iter, ftol, gtol, bound_rtol, stall_tol = opts
    n_act = int(idx.shape[0])
    if n_act == 0:
        return
    k = theta.shape[1]
    p = np.empty((n_act, k))
    chi = np.empty(n_act)
    a_ext = np.empty((n_act, k, k))
    nfev = np.empty(n_act, dtype=np.int64)
    niter = np.empty(n_act, dtype=np.int64)
    status = np.empty(n_act, dtype=np.int8)

    def c64(a: Any) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float64)

    x64 = c64(xs)
    w64 = np.ones_like(c64(ys)) if ws is None else c64(ws)
    steps = _grid_steps(x64, w64) if kernel == KERNEL_IMPACT else np.zeros(n_act)
    _lm_compiled(
        kernel,
        0,  # erfcx_kernel, not scipy's erfcx (see "compiled kernels" above)
        x64,
        c64(ys),
        w64,
        steps,
        c64(bs.lo),
        c64(bs.hi),
        np.ascontiguousarray(bs.has_lo),
        np.ascontiguousarray(bs.has_hi),
        c64(theta),
        c64(chi_floor),
        int(max_iter),
        float(ftol),
        float(gtol),
        float(bound_rtol),
        float(stall_tol),
        p,
        chi,
        a_ext,
        nfev,
        niter,
        status,
    )
    out_p[idx] = p
    out_chi[idx] = chi
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out_cov[idx] = _covariance(np, a_ext)
    out_nfev[idx] = nfev
    out_iter[idx] = niter
    out_status[idx] = status


def _iterate_xp(
    xp: ModuleType,
    model: BatchModel,
    block: int,
    work: tuple[Any, ...],
    outs: tuple[Any, ...],
    opts: tuple[int, float, float, float, float],
    kernel: int = KERNEL_NONE,
) -> None:
    """The vectorised Levenberg-Marquardt loop (any namespace, any model).

    All fits of the working set advance together, one iteration per pass;
    finished fits are written to ``outs`` (``out_p, out_cov, out_chi, out_nfev,
    out_iter, out_status``, indexed by the batch row in ``idx``) and dropped.
    With a compiled ``kernel`` (NumPy only) the weighted residuals and Jacobian
    come from one compiled pass instead of ~30 array operations: the same
    expressions (an ulp apart where NumPy's exp runs SIMD code), so the same
    iterations and, within rounding, the same results.
    """
    idx, xs, ys, ws, bs, theta, chi_floor = work
    out_p, out_cov, out_chi, out_nfev, out_iter, out_status = outs
    max_iter, ftol, gtol, bound_rtol, stall_tol = opts
    scipy_erfcx = scipy_erfcx_address() if kernel == KERNEL_EMG_CONSTANT else 0

    def evaluate_block(theta_: Any, xs_: Any, ys_: Any, ws_: Any, bs_: Any) -> tuple[Any, ...]:
        p_, dp_ = bs_.to_external(xp, theta_)
        with _xp.errstate(xp, invalid="ignore", over="ignore", divide="ignore"):
            if kernel:
                n_, m_ = ys_.shape
                r_ = np.empty((n_, m_))
                jac_ = np.empty((n_, model.n_params, m_))
                weighted = ws_ is not None
                _residual_jacobian(
                    kernel, scipy_erfcx, xs_, ys_, ws_ if weighted else ys_, weighted,
                    p_, r_, jac_,
                )
            else:
                f_, jac_ = model.jacobian(xp, xs_, p_)
                if ws_ is None:
                    r_ = ys_ - f_
                else:  # masked points: finite x and y, weight 0
                    r_ = ws_ * (ys_ - f_)
                    jac_ = jac_ * ws_[:, None, :]
            a_ext_, b_ext_ = _normal_equations(xp, jac_, r_)
            chi_ = xp.sum(r_ * r_, axis=1)
        # chain rule to the internal parameters: J_int = J_ext * dp/dtheta
        a_ = a_ext_ * (dp_[:, :, None] * dp_[:, None, :])
        b_ = b_ext_ * dp_
        finite = xp.isfinite(chi_) & xp.all(xp.isfinite(a_ext_), axis=(1, 2))
        finite &= xp.all(xp.isfinite(b_ext_), axis=1)
        return p_, xp.where(finite, chi_, math.inf), a_, b_, a_ext_

    def evaluate(theta_: Any, xs_: Any, ys_: Any, ws_: Any, bs_: Any) -> tuple[Any, ...]:
        """External parameters, chi-square and internal normal equations at ``theta_``.

        Done in blocks of ``block`` fits so the temporaries stay in cache (CPU).
        """
        n_ = theta_.shape[0]
        if n_ <= block:
            return evaluate_block(theta_, xs_, ys_, ws_, bs_)
        parts = [
            evaluate_block(
                theta_[i : i + block],
                xs_[i : i + block],
                ys_[i : i + block],
                None if ws_ is None else ws_[i : i + block],
                bs_.slice(i, i + block),
            )
            for i in range(0, n_, block)
        ]
        return tuple(xp.concatenate(arrays, axis=0) for arrays in zip(*parts, strict=True))

    def plan(a_: Any, b_: Any, chi_: Any, lam_: Any, floor_: Any) -> tuple[Any, Any, Any]:
        """Next damped step, whether the fit has converged, and its scaled gradient.

        ``floor_`` is the chi-square of residuals at the data's rounding level: a
        noiseless window is converged when chi-square reaches it.
        """
        at_floor = chi_ <= 100.0 * floor_  # residuals at rounding level (noiseless data)
        chi_ = chi_ + floor_
        with _xp.errstate(xp, invalid="ignore", divide="ignore", over="ignore"):
            step_ = _solve_damped(xp, a_, b_, lam_)
            predicted = xp.sum(step_ * (2.0 * b_ - (a_ @ step_[:, :, None])[:, :, 0]), axis=1)
            diag = xp.diagonal(a_, axis1=1, axis2=2)
            cosine = xp.abs(b_) / xp.sqrt(diag * chi_[:, None])
        cosine = xp.max(xp.where(diag > 0.0, cosine, 0.0), axis=1)
        # a nearly undamped step predicting less than ftol*chisq gain: the minimum
        # is reached (and evaluating that step would only show rounding noise)
        done_ = ((lam_ <= _LAMBDA_GN) & (predicted <= ftol * chi_)) | (cosine <= gtol) | at_floor
        return step_, predicted, done_, cosine

    p_ext, chi, a, b, a_ext = evaluate(theta, xs, ys, ws, bs)
    n_act = int(idx.shape[0])
    lam = xp.full((n_act,), _LAMBDA_START, dtype=xp.float64)
    nfev = xp.full((n_act,), 1, dtype=xp.int64)
    niter = xp.zeros((n_act,), dtype=xp.int64)
    chi_ref = chi  # chi-square at the start of the current stall window
    nonfinite = ~xp.isfinite(chi)
    step, predicted, converged, _ = plan(a, b, xp.where(nonfinite, 1.0, chi), lam, chi_floor)
    nu = xp.full((n_act,), 2.0, dtype=xp.float64)  # Nielsen's damping growth factor
    converged &= ~nonfinite
    done = converged | nonfinite
    status = xp.where(
        nonfinite,
        int(FitStatus.FAILED_NONFINITE),
        xp.where(converged, int(FitStatus.CONVERGED), int(FitStatus.MAX_ITERATIONS)),
    ).astype(xp.int8)

    while True:
        if n_act and bool(xp.any(done)):
            fin = xp.nonzero(done)[0]
            gi = idx[fin]
            out_p[gi] = p_ext[fin]
            out_chi[gi] = chi[fin]
            with _xp.errstate(xp, invalid="ignore", divide="ignore", over="ignore"):
                out_cov[gi] = _covariance(xp, a_ext[fin])
            out_nfev[gi] = nfev[fin]
            out_iter[gi] = niter[fin]
            out_status[gi] = status[fin]
            keep = xp.nonzero(~done)[0]
            idx, xs, ys, bs = idx[keep], xs[keep], ys[keep], bs.take(keep)
            ws = None if ws is None else ws[keep]
            theta, p_ext, chi, a, b = theta[keep], p_ext[keep], chi[keep], a[keep], b[keep]
            a_ext, step, chi_ref = a_ext[keep], step[keep], chi_ref[keep]
            predicted, nu = predicted[keep], nu[keep]
            chi_floor = chi_floor[keep]
            lam, nfev, niter, status = lam[keep], nfev[keep], niter[keep], status[keep]
            n_act = int(idx.shape[0])
        if n_act == 0:
            break

        theta_try = theta + step
        p_try, chi_try, a_try, b_try, a_ext_try = evaluate(theta_try, xs, ys, ws, bs)
        nfev = nfev + 1
        niter = niter + 1
        accept = (chi_try < chi) & xp.all(xp.isfinite(theta_try), axis=1)
        # A parameter pinned on a bound: the transform's derivative vanishes there,
        # so Gauss-Newton only creeps up to it.  Stop once the creeping no longer
        # lowers chi-square by more than ftol (reported as HIT_BOUND at the end).
        pinned = xp.any(bs.at_bound(xp, p_try, bound_rtol), axis=1)
        pinned_done = accept & pinned & (chi - chi_try <= ftol * chi)
        acc2, acc3 = accept[:, None], accept[:, None, None]
        theta = xp.where(acc2, theta_try, theta)
        p_ext = xp.where(acc2, p_try, p_ext)
        a = xp.where(acc3, a_try, a)
        b = xp.where(acc2, b_try, b)
        a_ext = xp.where(acc3, a_ext_try, a_ext)
        # Nielsen's damping update: shrink by how well the quadratic model predicted
        # the gain (at most 3x), grow geometrically on repeated rejections
        with _xp.errstate(xp, invalid="ignore", divide="ignore"):
            rho = (chi - chi_try) / predicted
        shrink = xp.maximum(
            1.0 / 3.0, 1.0 - (2.0 * xp.where(xp.isfinite(rho), rho, 1.0) - 1.0) ** 3
        )
        lam = xp.where(accept, xp.maximum(lam * shrink, _LAMBDA_MIN), lam * nu)
        nu = xp.where(accept, 2.0, 2.0 * nu)
        chi = xp.where(accept, chi_try, chi)

        step, predicted, converged, cosine = plan(a, b, chi, lam, chi_floor)
        converged |= pinned_done
        # damping this large means no descent is left at double precision: a
        # minimum if the gradient is (nearly) orthogonal to the residuals
        stalled = lam > _LAMBDA_MAX
        converged |= stalled & (cosine <= 1e-4)
        window_end = (niter % _STALL_WINDOW) == 0
        no_progress = window_end & ~(chi_ref - chi > stall_tol * chi_ref)
        converged |= no_progress & (chi <= 100.0 * chi_floor)  # noiseless data, at rounding
        status = xp.where(converged, int(FitStatus.CONVERGED), status).astype(xp.int8)
        chi_ref = xp.where(window_end, chi, chi_ref)
        done = converged | stalled | no_progress | (niter >= max_iter)


def fit_batch(
    x: Any,
    y: Any,
    model: BatchModel,
    p0: Any,
    *,
    lower: Any = None,
    upper: Any = None,
    weights: Any = None,
    sigma: Any = None,
    max_iter: int = 200,
    ftol: float = 1e-10,
    gtol: float = 1e-10,
    bound_rtol: float = 1e-6,
    stall_tol: float = 1e-6,
    block_size: int | None = None,
    engine: str = "auto",
) -> BatchFitResult:
    """Fit ``model`` to many windows at once by Levenberg–Marquardt.

    Minimises ``chisq = sum((w*(y - model(x, p)))**2)`` per window, as
    ``lmfit.Model.fit(y, x=x, weights=w)`` does, with bounded parameters mapped
    through lmfit's (MINUIT) transforms.  Points where ``x``, ``y`` or the weight
    is not finite, or the weight is 0, are left out (lmfit's ``nan_policy="omit"``).

    Parameters
    ----------
    x : array_like
        Times (n_fits, n_points) or (n_points,) shared by all fits, µs.
    y : array_like
        Data (n_fits, n_points), DN.
    model : BatchModel
        From :func:`batch_model`.
    p0 : array_like
        Initial parameters (n_fits, n_params), or (n_params,) for all; clipped
        into the bounds like lmfit does.
    lower, upper : array_like, optional
        Bounds broadcastable to (n_fits, n_params); ``-inf``/``inf`` for none.
        Default: the model's bounds.
    weights : array_like, optional
        Residual weights broadcastable to (n_fits, n_points), 1/DN.
    sigma : array_like, optional
        Data uncertainties, DN; ``weights = 1/sigma``.  Give at most one of the two.
    max_iter : int
        Iteration limit.
    ftol : float
        Convergence when the chi-square a Gauss–Newton step still predicts to
        gain is below ``ftol * chisq`` (parameters then lie within about
        ``sqrt(ftol*ndata)`` standard errors of the minimum).
    gtol : float
        Convergence when every scaled gradient component
        ``|J_j . r| / (|J_j| |r|)`` is below ``gtol``.
    bound_rtol : float
        A parameter closer than this (relative to ``upper - lower``, or to
        ``max(1, |bound|)`` for a one-sided bound) to a bound is reported as
        ``HIT_BOUND``.
    stall_tol : float
        A fit whose chi-square fell by less than ``stall_tol`` (relative) over
        the last 10 iterations without converging is stopped as
        ``MAX_ITERATIONS`` (typically an undetermined parameter creeping along a
        flat valley, e.g. ``gamma`` running off to infinity on a line that is
        Gaussian within the noise).
    block_size : int, optional
        Fits per block when evaluating the model and normal equations.  The
        arithmetic is memory-bound on a CPU, so blocks whose temporaries fit in
        cache beat one pass over the whole batch (about 1.5x for 2000 windows).
        Default: 256 on NumPy, the whole batch on CuPy.  Not used by the
        compiled engine.
    engine : {"auto", "compiled", "xp"}
        ``"xp"``: the vectorised loop, all fits advancing together, array code
        only (NumPy or CuPy, any model).  ``"auto"``: the same loop, but on
        NumPy the weighted residuals and Jacobian of a model with a compiled
        ``kernel`` (EMG + constant, the impact charge model) come from one
        compiled pass: the same iterations, results equal within rounding (libm's
        exp against NumPy's CPU-specific SIMD exp), ~2x faster.
        ``"compiled"``: the whole iteration compiled, one fit at a time, model,
        Jacobian and normal equations fused (NumPy and a ``kernel`` required;
        another ~2x).  Its normal equations are summed and solved in a
        different order than BLAS/LAPACK do, so results differ at rounding
        level: converged fits agree to ~1e-5 standard errors, but a fit that
        wanders (MAX_ITERATIONS, HIT_BOUND after a long creep) can end
        elsewhere -- as it does under a 1-ulp change of the data.
    Returns
    -------
    BatchFitResult
        Parameters, standard errors, chi-square and a :class:`FitStatus` per fit.

    Raises
    ------
    AnalysisError
        If shapes are inconsistent (a programming error, not a bad window), or
        ``engine="compiled"`` is asked for where no compiled kernel applies.
    """
    xp = _xp.get_namespace(x, y, p0, lower, upper, weights, sigma)
    if block_size is None:
        block_size = _CPU_BLOCK if xp.__name__ == "numpy" else 2**62
    if block_size < 1:
        raise AnalysisError(f"block_size must be >= 1, got {block_size}")
    block = int(block_size)
    f64 = xp.float64
    y = xp.asarray(y, dtype=f64)
    if y.ndim != 2:
        raise AnalysisError(f"y must be (n_fits, n_points), got shape {y.shape}")
    n, m = y.shape
    k = model.n_params
    x = _as_2d(xp, x, (n, m), "x")
    if weights is not None and sigma is not None:
        raise AnalysisError("give weights or sigma, not both")
    if sigma is not None:
        with _xp.errstate(xp, divide="ignore"):
            w = 1.0 / _as_2d(xp, sigma, (n, m), "sigma")
    elif weights is not None:
        w = _as_2d(xp, weights, (n, m), "weights")
    else:
        w = xp.ones((n, m), dtype=f64)
    p0 = _as_2d(xp, p0, (n, k), "p0")
    lo = _as_2d(xp, model.lower if lower is None else lower, (n, k), "lower")
    hi = _as_2d(xp, model.upper if upper is None else upper, (n, k), "upper")

    # ---- data hygiene: masked points get weight 0 and harmless finite values
    valid = xp.isfinite(x) & xp.isfinite(y) & xp.isfinite(w) & (w != 0.0)
    ndata = xp.sum(valid, axis=1)
    safe_n = xp.maximum(ndata, 1)
    x_fill = xp.sum(xp.where(valid, x, 0.0), axis=1, keepdims=True) / safe_n[:, None]
    x = xp.where(valid, x, x_fill)
    y = xp.where(valid, y, 0.0)
    w = xp.where(valid, w, 0.0)
    y_max = xp.max(xp.where(valid, y, -math.inf), axis=1)
    y_min = xp.min(xp.where(valid, y, math.inf), axis=1)
    flat = ~(y_max > y_min)

    has_lo = xp.isfinite(lo)
    has_hi = xp.isfinite(hi)
    bad_bounds = xp.any(xp.isnan(lo) | xp.isnan(hi) | (lo >= hi), axis=1)
    bad_start = xp.any(~xp.isfinite(p0), axis=1)
    invalid = (ndata <= k) | flat | bad_bounds | bad_start
    bounds = _Bounds(
        lo=xp.where(has_lo, lo, 0.0), hi=xp.where(has_hi, hi, 0.0), has_lo=has_lo, has_hi=has_hi
    )
    p_start = xp.where(has_lo, xp.maximum(p0, bounds.lo), p0)
    p_start = xp.where(has_hi, xp.minimum(p_start, bounds.hi), p_start)
    p_start = xp.where(invalid[:, None], 0.0, p_start)

    # ---- outputs (full batch)
    out_p = xp.full((n, k), math.nan, dtype=f64)
    out_cov = xp.full((n, k, k), math.nan, dtype=f64)
    out_chi = xp.full((n,), math.nan, dtype=f64)
    out_nfev = xp.zeros((n,), dtype=xp.int64)
    out_iter = xp.zeros((n,), dtype=xp.int64)
    out_status = xp.full((n,), int(FitStatus.INVALID_INPUT), dtype=xp.int8)

    # ---- working set: the fits still iterating
    idx = xp.nonzero(~invalid)[0]
    xs, ys, ws, bs = x[idx], y[idx], w[idx], bounds.take(idx)
    chi_floor = 1e-26 * xp.sum((ws * ys) ** 2, axis=1)
    if weights is None and sigma is None and bool(xp.all(valid)):
        ws = None  # unit weights: skip the multiplications
    theta = bs.to_internal(xp, p_start[idx])

    work = (idx, xs, ys, ws, bs, theta, chi_floor)
    outs = (out_p, out_cov, out_chi, out_nfev, out_iter, out_status)
    opts = (max_iter, ftol, gtol, bound_rtol, stall_tol)
    kernel = _compiled_kernel(xp, model, engine)
    if engine == "compiled":
        _iterate_compiled(kernel, work, outs, opts)
    else:
        _iterate_xp(xp, model, block, work, outs, opts, kernel)

    # ---- statuses that depend on the final parameters
    fitted = out_status != int(FitStatus.INVALID_INPUT)
    failed = fitted & ~(xp.isfinite(out_chi) & xp.all(xp.isfinite(out_p), axis=1))
    hit = fitted & ~failed & xp.any(bounds.at_bound(xp, out_p, bound_rtol), axis=1)
    out_status = xp.where(failed, int(FitStatus.FAILED_NONFINITE), out_status)
    out_status = xp.where(hit, int(FitStatus.HIT_BOUND), out_status).astype(xp.int8)
    no_params = (out_status == int(FitStatus.INVALID_INPUT)) | (
        out_status == int(FitStatus.FAILED_NONFINITE)
    )
    out_p = xp.where(no_params[:, None], math.nan, out_p)
    out_chi = xp.where(no_params, math.nan, out_chi)

    nfree = ndata - k
    with _xp.errstate(xp, invalid="ignore", divide="ignore"):
        redchi = xp.where(nfree > 0, out_chi / xp.maximum(nfree, 1), math.nan)
        var = xp.diagonal(out_cov, axis1=1, axis2=2) * redchi[:, None]
        stderr = xp.where(var >= 0.0, xp.sqrt(xp.abs(var)), math.nan)
    stderr = xp.where(no_params[:, None], math.nan, stderr)
    if log.isEnabledFor(logging.DEBUG):
        counts = {s.name: int(xp.sum(out_status == int(s))) for s in FitStatus}
        log.debug("fit_batch %s: %d fits, %s", model.name, n, counts)
    return BatchFitResult(
        param_names=model.param_names,
        params=out_p,
        stderr=stderr,
        chisq=out_chi,
        redchi=redchi,
        ndata=ndata,
        nfev=out_nfev,
        niter=out_iter,
        status=out_status,
    )


FIT_DEVICES = ("cpu", "gpu")


def fit_batch_on(
    device: str,
    x: Any,
    y: Any,
    model: BatchModel,
    p0: Any,
    *,
    engine: str = "auto",
    **options: Any,
) -> BatchFitResult:
    """:func:`fit_batch` of NumPy inputs on the configured device, results in NumPy.

    This is how the analysis runs its fits (config ``analysis.fitting``; ``idexdask
    submit --gpu`` selects ``device="gpu"``): on ``"cpu"`` the arrays stay where
    they are and ``engine`` applies; on ``"gpu"`` every array argument is copied
    to the current CUDA device with CuPy, the fits run through the array code
    (the compiled engines are CPU-only, so ``engine`` is not used there), and
    the results are copied back, so callers never see a device array.

    Parameters
    ----------
    device : {"cpu", "gpu"}
        Where the fits run.
    x, y, model, p0, engine, **options
        As for :func:`fit_batch` (``lower``, ``upper``, ``weights``, ``sigma``,
        ``max_iter``, ...).

    Returns
    -------
    BatchFitResult
        With NumPy arrays.

    Raises
    ------
    AnalysisError
        On an unknown device, or ``"gpu"`` without an importable CuPy.
    """
    if device == "cpu":
        return fit_batch(x, y, model, p0, engine=engine, **options)
    if device != "gpu":
        raise AnalysisError(f"fit device must be one of {FIT_DEVICES}, got {device!r}")
    try:
        import cupy  # noqa: PLC0415  (optional GPU dependency)
    except ImportError as exc:
        raise AnalysisError(
            "analysis.fitting.device 'gpu' needs CuPy (pip install 'idexdask[gpu]')"
        ) from exc

    def to_device(a: Any) -> Any:
        return cupy.asarray(a) if isinstance(a, np.ndarray) else a

    result = fit_batch(
        to_device(np.asarray(x)),
        to_device(np.asarray(y)),
        model,
        to_device(np.asarray(p0)),
        engine="xp",
        **{k: to_device(v) for k, v in options.items()},
    )
    return BatchFitResult(
        param_names=result.param_names,
        **{
            name: _xp.to_numpy(getattr(result, name))
            for name in ("params", "stderr", "chisq", "redchi", "ndata", "nfev", "niter", "status")
        },
    )
