"""Line-plus-baseline models for the batch fitter, with their analytic Jacobians.

A :class:`BatchModel` evaluates a model and its Jacobian for a whole batch of
windows at once, on any array namespace (NumPy or CuPy): analytic derivatives
for the Gaussian and all EMG-family lines and the baselines, vectorised forward
differences for the Voigt line.  A model may also name a compiled kernel
(``KERNEL_*``) that computes the same values on NumPy arrays in one pass (see
:mod:`idexdask.analysis.fitting.compiled`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from idexdask.analysis import xp as _xp
from idexdask.analysis.lineshapes import (
    GAMMA_MAX,
    SIGMA_MIN,
    emg_tail_factor,
    voigt,
)
from idexdask.errors import AnalysisError

__all__ = [
    "KERNEL_EMG_CONSTANT",
    "KERNEL_IMPACT",
    "KERNEL_LINES",
    "KERNEL_NONE",
    "LINE_EMG",
    "LINE_GAUSSIAN",
    "BatchModel",
    "Evaluate",
    "EvaluateJac",
    "batch_model",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_FD_STEP = math.sqrt(2.220446049250313e-16)  # forward-difference relative step

#: ``BatchModel.kernel`` values: which compiled kernel fits the model (0: none).
KERNEL_NONE = 0
KERNEL_EMG_CONSTANT = 1
KERNEL_IMPACT = 2
#: A sum of EMG and Gaussian lines plus a constant (``BatchModel.kernel_lines``
#: names the lines): the Gaussian fallback and the joint blend fits.
KERNEL_LINES = 3

#: ``BatchModel.kernel_lines`` codes, the line shapes of a ``KERNEL_LINES`` model
#: (parameters amplitude, center, sigma[, gamma] per line, in order).
LINE_EMG = 0
LINE_GAUSSIAN = 1


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
        none, then the vectorised loop is used; ``KERNEL_LINES``: the compiled
        engine only).  It must compute the same model and Jacobian as
        ``evaluate_with_jacobian``.
    kernel_lines : tuple of int
        For ``KERNEL_LINES``: the shape of each line (``LINE_EMG``,
        ``LINE_GAUSSIAN``), in parameter order, the constant last; empty otherwise.
    """

    name: str
    param_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    evaluate: Evaluate
    evaluate_with_jacobian: EvaluateJac | None = None
    kernel: int = 0
    kernel_lines: tuple[int, ...] = ()

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
    h, gauss = emg_tail_factor(xp, t / s, gam * s, with_gauss=True)
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
#: The line-plus-baseline models with a compiled kernel.
_KERNELS = {("emg", "constant"): KERNEL_EMG_CONSTANT, ("gaussian", "constant"): KERNEL_LINES}
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
    """Build a line-plus-baseline model for :func:`~idexdask.analysis.fitting.fit_batch`.

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
        kernel=_KERNELS.get((line, baseline), KERNEL_NONE),
        kernel_lines=(LINE_GAUSSIAN,) if (line, baseline) == ("gaussian", "constant") else (),
    )

