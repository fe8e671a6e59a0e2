"""Area-normalised line shapes for time-of-flight spectra.

Parameter names follow lmfit: ``amplitude`` (area, DN·µs), ``center`` (µs),
``sigma`` (µs), ``gamma`` (1/µs, the exponential tail's rate).  Every shape
integrates to ``amplitude`` over the real line, so ``amplitude`` is the line's
area and a fitted amplitude is directly a charge-like quantity.

Each array function works on NumPy and on CuPy arrays (the namespace is taken
from the arguments, see :mod:`idexdask.analysis.xp`), and each has an
``*_model(prefix="")`` factory returning an :class:`lmfit.Model` with bounds
suited to IDEX lines, for interactive refits with constraints.

Shapes
------
``gaussian``
    Normal profile.
``emg``
    Exponentially modified Gaussian, tail to later times (right).
``double_emg``
    Two right-tailed EMGs sharing centre and width, tail rates ``gamma1`` and
    ``gamma2``, weights ``fraction`` and ``1 - fraction``.
``hyper_emg``
    A left-tailed and a right-tailed EMG sharing centre and width (the
    "hyper-EMG" of time-of-flight mass spectrometry), weights
    ``fraction_left`` and ``1 - fraction_left``.  The left tail extends to
    *earlier* times.
``voigt``
    Gaussian convolved with a Lorentzian (:func:`scipy.special.voigt_profile`).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any

from idexdask.analysis import xp as _xp

if TYPE_CHECKING:  # lmfit is imported where a model is made: it costs a worker ~0.5 s
    import lmfit

__all__ = [
    "double_emg",
    "double_emg_model",
    "emg",
    "emg_jacobian",
    "emg_tail_factor",
    "emg_model",
    "gaussian",
    "gaussian_jacobian",
    "gaussian_model",
    "hyper_emg",
    "hyper_emg_model",
    "profiles_vanish",
    "voigt",
    "voigt_model",
]

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)

#: Smallest Gaussian width the lmfit models accept, µs (keeps ``sigma > 0``).
SIGMA_MIN = 1e-9
#: Default upper bound of the tail rates in the lmfit models, 1/µs.
GAMMA_MAX = 1e4


def emg_tail_factor(xp: ModuleType, u: Any, gs: Any, with_gauss: bool = False) -> Any:
    """``exp(z**2 - u**2/2) * erfc(z)`` with ``z = (gs - u)/sqrt(2)``, overflow-free.

    For ``z >= 0`` this is ``exp(-u**2/2) * erfcx(z)``; for ``z < 0`` it is
    ``exp(gs**2/2 - gs*u) * erfc(z)`` with ``erfc(z) = 2 - exp(-z**2)*erfcx(-z)``,
    i.e. ``2*exp(gs**2/2 - gs*u) - exp(-u**2/2)*erfcx(-z)``, whose exponent is
    ``<= -gs**2/2`` there.  One ``erfcx`` call on ``|z|`` serves both branches;
    neither branch can overflow.  With ``with_gauss`` also returns
    ``exp(-u**2/2)`` (the Jacobian needs it).
    """
    z = (gs - u) / _SQRT2
    e = _xp.erfcx(xp.abs(z))
    with _xp.errstate(xp, over="ignore", under="ignore"):
        gauss = xp.exp(-0.5 * u * u)
        ge = gauss * e
        # clip the exponent at 0: it is <= 0 wherever this branch is used
        tail = 2.0 * xp.exp(xp.minimum(gs * (0.5 * gs - u), 0.0)) - ge
    h = xp.where(z >= 0.0, ge, tail)
    if with_gauss:
        return h, gauss
    return h


#: ``|u|`` beyond which ``exp(-u**2/2)`` is exactly 0 in double precision (its exponent
#: below -750, past -745.13 where the least subnormal rounds to 0), whatever exp rounds.
_U_ZERO = 38.75
#: Tail exponent ``gs (gs/2 - u)`` below which the EMG's tail term is exactly 0.
_TAIL_ZERO = -750.0


def profiles_vanish(t_lo: Any, t_hi: Any, amplitude: Any, center: Any, sigma: Any,
                    gamma: Any) -> Any:
    """Lines whose :func:`emg` (or :func:`gaussian` where ``gamma`` is not finite)
    profile is exactly 0 at every time of ``[t_lo, t_hi]``, as those functions compute it.

    A line after the interval (``u = (t_hi - center)/sigma`` below -38.75): its
    ``exp(-u**2/2)`` underflows to 0 at every time of it, and so does the EMG
    (left of its tail's onset there, ``gauss * erfcx``).  A line before it
    (``u = (t_lo - center)/sigma`` above 38.75) likewise, an EMG only where its
    tail's exponent ``gs (gs/2 - u)`` (``gs = gamma sigma``) is below -750 there
    too.  ``u`` and the tail's exponent are rounded monotonically in the time
    (the same expressions), so their bounds at the interval's ends hold at
    every time inside; the margins (exponents of -750 against exp's -745.13)
    cover the rounding of ``u**2/2``.  With ``amplitude >= 0`` each such
    profile is ``+0``: leaving it out of a sum (or a difference) of profiles
    changes no value.  Lines with a negative or non-finite amplitude, sigma or
    centre, or an interval end that is not finite, are never reported.

    Parameters
    ----------
    t_lo, t_hi : float or numpy.ndarray
        The interval, µs (one for all lines, or one per line).
    amplitude, center, sigma, gamma : numpy.ndarray
        The lines' parameters (DN·µs, µs, µs, 1/µs; NaN gamma: a Gaussian), (m,).

    Returns
    -------
    numpy.ndarray
        Bool (m,).
    """
    xp = _xp.get_namespace(amplitude, center, sigma, gamma)
    a, c, s, g, t_lo, t_hi = (xp.asarray(v, dtype=xp.float64)
                              for v in (amplitude, center, sigma, gamma, t_lo, t_hi))
    with _xp.errstate(xp, all="ignore"):
        u_hi = (t_hi - c) / s
        u_lo = (t_lo - c) / s
        tail = xp.isfinite(g)
        gs = xp.where(tail, g * s, 0.0)
        tail_exp = gs * (0.5 * gs - u_lo)
        before = (u_lo > _U_ZERO) & (~tail | ((g > 0) & (tail_exp < _TAIL_ZERO)))
        after = (u_hi < -_U_ZERO) & (~tail | (g > 0))
        usable = (a >= 0) & xp.isfinite(a) & xp.isfinite(c) & (s > 0) & xp.isfinite(s)
    ends = xp.isfinite(t_lo) & xp.isfinite(t_hi)
    return usable & (before | after) & ends


def _prepare(x: Any, *params: Any) -> tuple[ModuleType, Any]:
    xp = _xp.get_namespace(x, *params)
    return xp, xp.asarray(x, dtype=xp.float64)


def gaussian(x, amplitude, center, sigma):
    """Normal profile of area ``amplitude``.

    ``amplitude / (sigma*sqrt(2*pi)) * exp(-(x - center)**2 / (2*sigma**2))``.

    Parameters
    ----------
    x : array_like
        Time, µs.
    amplitude : float or array_like
        Line area, DN·µs.
    center : float or array_like
        Mean, µs.
    sigma : float or array_like
        Standard deviation, µs (> 0).

    Returns
    -------
    array
        Line profile, DN (NumPy or CuPy, like the inputs).
    """
    xp, x = _prepare(x, amplitude, center, sigma)
    u = (x - center) / sigma
    with _xp.errstate(xp, under="ignore"):
        return amplitude / (_SQRT_2PI * sigma) * xp.exp(-0.5 * u * u)


def emg(x, amplitude, center, sigma, gamma):
    """Exponentially modified Gaussian of area ``amplitude``, tail to the right.

    With ``u = (x - center)/sigma`` and ``z = (gamma*sigma - u)/sqrt(2)`` the
    profile is ``amplitude*gamma/2 * exp(z**2 - u**2/2) * erfc(z)``.  The naive
    ``exp(...)*erfc(...)`` form overflows for sharp tails (IDEX lines have
    gamma near 100/µs); here it is evaluated as ``exp(-u**2/2) * erfcx(z)`` where
    ``z >= 0`` and as ``exp((gamma*sigma)**2/2 - gamma*sigma*u) * erfc(z)`` where
    ``z < 0``: neither factor can overflow on its own branch.  (``erfc(z)`` for
    ``z < 0`` is taken as ``2 - exp(-z**2)*erfcx(-z)``, so a single ``erfcx``
    evaluation serves both branches.)

    Its mean is ``center + 1/gamma`` and its variance ``sigma**2 + 1/gamma**2``.
    Same function and parameter meaning as lmfit's ``exponential_gaussian``.

    Parameters
    ----------
    x : array_like
        Time, µs.
    amplitude : float or array_like
        Line area, DN·µs.
    center : float or array_like
        Centre of the Gaussian component, µs.
    sigma : float or array_like
        Gaussian width, µs (> 0).
    gamma : float or array_like
        Tail rate, 1/µs (> 0).

    Returns
    -------
    array
        Line profile, DN (NumPy or CuPy, like the inputs).
    """
    xp, x = _prepare(x, amplitude, center, sigma, gamma)
    u = (x - center) / sigma
    return 0.5 * amplitude * gamma * emg_tail_factor(xp, u, gamma * sigma)


def double_emg(x, amplitude, center, sigma, gamma1, gamma2, fraction):
    """Sum of two right-tailed EMGs sharing centre and width, total area ``amplitude``.

    ``fraction * emg(x, amplitude, center, sigma, gamma1)
    + (1 - fraction) * emg(x, amplitude, center, sigma, gamma2)``: a fast and a
    slow tail (e.g. prompt ions and ions from a longer-lived plasma).

    Parameters
    ----------
    x : array_like
        Time, µs.
    amplitude : float or array_like
        Total line area, DN·µs.
    center : float or array_like
        Centre of the common Gaussian component, µs.
    sigma : float or array_like
        Gaussian width, µs (> 0).
    gamma1, gamma2 : float or array_like
        Tail rates of the two components, 1/µs (> 0).
    fraction : float or array_like
        Share of the area in the ``gamma1`` component, in [0, 1].

    Returns
    -------
    array
        Line profile, DN.
    """
    xp, x = _prepare(x, amplitude, center, sigma, gamma1, gamma2, fraction)
    u = (x - center) / sigma
    h1 = emg_tail_factor(xp, u, gamma1 * sigma)
    h2 = emg_tail_factor(xp, u, gamma2 * sigma)
    return 0.5 * amplitude * (fraction * gamma1 * h1 + (1.0 - fraction) * gamma2 * h2)


def hyper_emg(x, amplitude, center, sigma, gamma_left, gamma_right, fraction_left):
    """Hyper-EMG: a left- and a right-tailed EMG sharing centre and width, area ``amplitude``.

    The left component is the EMG mirrored about ``center`` (its tail extends to
    earlier times, e.g. ions formed ahead of the nominal start); the right one is
    :func:`emg`.  ``fraction_left`` of the area is in the left component.

    Parameters
    ----------
    x : array_like
        Time, µs.
    amplitude : float or array_like
        Total line area, DN·µs.
    center : float or array_like
        Centre of the common Gaussian component, µs.
    sigma : float or array_like
        Gaussian width, µs (> 0).
    gamma_left : float or array_like
        Tail rate of the left (early) tail, 1/µs (> 0).
    gamma_right : float or array_like
        Tail rate of the right (late) tail, 1/µs (> 0).
    fraction_left : float or array_like
        Share of the area in the left-tailed component, in [0, 1].

    Returns
    -------
    array
        Line profile, DN.
    """
    xp, x = _prepare(x, amplitude, center, sigma, gamma_left, gamma_right, fraction_left)
    u = (x - center) / sigma
    h_left = emg_tail_factor(xp, -u, gamma_left * sigma)
    h_right = emg_tail_factor(xp, u, gamma_right * sigma)
    return (
        0.5
        * amplitude
        * (fraction_left * gamma_left * h_left + (1.0 - fraction_left) * gamma_right * h_right)
    )


def gaussian_jacobian(xp: ModuleType, t: Any, sigma: Any) -> tuple[Any, Any, Any]:
    """Unit-area Gaussian at ``t = x - center`` and its derivatives.

    Parameters
    ----------
    xp : module
        Array namespace (NumPy or CuPy).
    t : array
        Time from the centre, µs.
    sigma : array
        Width, µs (> 0).

    Returns
    -------
    g, d_center, d_sigma : array
        The profile (1/µs) and its derivatives by centre and sigma.
    """
    u = t / sigma
    with _xp.errstate(xp, under="ignore"):
        g = xp.exp(-0.5 * u * u) / (_SQRT_2PI * sigma)
    gs = g / sigma
    return g, gs * u, gs * (u * u - 1.0)


def emg_jacobian(xp: ModuleType, t: Any, sigma: Any, gamma: Any) -> tuple[Any, Any, Any, Any]:
    """Unit-area EMG at ``t = x - center`` and its derivatives (centre, sigma, gamma).

    ``ln g = ln(gamma/2) + (gamma*sigma)**2/2 - gamma*t + ln erfc(z)`` with
    ``z = (gamma*sigma - t/sigma)/sqrt(2)``; the ``erfc'(z)`` terms reduce to
    the Gaussian ``G = exp(-t**2/(2 sigma**2))``:
    ``g * d ln erfc(z)/dz = -gamma*G/sqrt(pi)``.  Overflow-free as :func:`emg`.

    Parameters
    ----------
    xp : module
        Array namespace (NumPy or CuPy).
    t : array
        Time from the centre, µs.
    sigma : array
        Gaussian width, µs (> 0).
    gamma : array
        Tail rate, 1/µs (> 0).

    Returns
    -------
    g, d_center, d_sigma, d_gamma : array
        The profile (1/µs) and its derivatives.
    """
    h, gauss = emg_tail_factor(xp, t / sigma, gamma * sigma, with_gauss=True)
    half_h = 0.5 * h
    g = gamma * half_h
    gg = (gamma / _SQRT_2PI) * gauss
    d_center = gamma * g - gg / sigma
    d_sigma = (gamma * gamma * sigma) * g - gg * (gamma + t / (sigma * sigma))
    d_gamma = half_h * (1.0 + gamma * (gamma * sigma * sigma - t)) - gg * sigma
    return g, d_center, d_sigma, d_gamma


def voigt(x, amplitude, center, sigma, gamma):
    """Voigt profile of area ``amplitude``.

    Convolution of a Gaussian (standard deviation ``sigma``) with a Lorentzian
    whose **half width at half maximum** is ``gamma`` — lmfit's meaning of
    ``gamma`` for its ``VoigtModel``, and *not* a rate as for :func:`emg`.

    Parameters
    ----------
    x : array_like
        Time, µs.
    amplitude : float or array_like
        Line area, DN·µs.
    center : float or array_like
        Line centre, µs.
    sigma : float or array_like
        Gaussian standard deviation, µs (>= 0).
    gamma : float or array_like
        Lorentzian half width at half maximum, µs (>= 0).

    Returns
    -------
    array
        Line profile, DN.
    """
    xp, x = _prepare(x, amplitude, center, sigma, gamma)
    return amplitude * _xp.voigt_profile(x - center, sigma, gamma)


# ----------------------------------------------------------------------------- lmfit models


def _model(func, prefix: str, hints: dict[str, dict[str, float]]) -> lmfit.Model:
    import lmfit  # not at module import: the batched engines never need it

    model = lmfit.Model(func, prefix=prefix)
    for name, hint in hints.items():
        model.set_param_hint(name, **hint)
    return model


_AMPLITUDE = {"value": 1.0}
_CENTER = {"value": 0.0}
_SIGMA = {"value": 0.01, "min": SIGMA_MIN}
_RATE = {"value": 100.0, "min": 0.0, "max": GAMMA_MAX}
_FRACTION = {"value": 0.5, "min": 0.0, "max": 1.0}


def gaussian_model(prefix: str = "") -> lmfit.Model:
    """:func:`gaussian` as an :class:`lmfit.Model`; ``sigma >= SIGMA_MIN`` (µs).

    Parameters
    ----------
    prefix : str
        Prefix of the parameter names (for composite models).

    Returns
    -------
    lmfit.Model
    """
    return _model(gaussian, prefix, {"amplitude": _AMPLITUDE, "center": _CENTER, "sigma": _SIGMA})


def emg_model(prefix: str = "") -> lmfit.Model:
    """:func:`emg` as an :class:`lmfit.Model` with bounds fit for IDEX tails.

    ``sigma >= SIGMA_MIN`` (µs) and ``0 <= gamma <= GAMMA_MAX`` (1/µs).  Unlike
    lmfit's ``ExponentialGaussianModel`` (naive formula, gamma capped at 20 by
    default) this stays finite for IDEX-like tails, gamma ~ 100/µs.

    Parameters
    ----------
    prefix : str
        Prefix of the parameter names (for composite models).

    Returns
    -------
    lmfit.Model
    """
    return _model(
        emg,
        prefix,
        {"amplitude": _AMPLITUDE, "center": _CENTER, "sigma": _SIGMA, "gamma": _RATE},
    )


def double_emg_model(prefix: str = "") -> lmfit.Model:
    """:func:`double_emg` as an :class:`lmfit.Model`; rates in [0, GAMMA_MAX], fraction in [0, 1].

    Parameters
    ----------
    prefix : str
        Prefix of the parameter names (for composite models).

    Returns
    -------
    lmfit.Model
    """
    return _model(
        double_emg,
        prefix,
        {
            "amplitude": _AMPLITUDE,
            "center": _CENTER,
            "sigma": _SIGMA,
            "gamma1": {**_RATE, "value": 200.0},
            "gamma2": {**_RATE, "value": 20.0},
            "fraction": {**_FRACTION, "value": 0.8},
        },
    )


def hyper_emg_model(prefix: str = "") -> lmfit.Model:
    """:func:`hyper_emg` as an :class:`lmfit.Model`; rates in [0, GAMMA_MAX], fraction in [0, 1].

    Parameters
    ----------
    prefix : str
        Prefix of the parameter names (for composite models).

    Returns
    -------
    lmfit.Model
    """
    return _model(
        hyper_emg,
        prefix,
        {
            "amplitude": _AMPLITUDE,
            "center": _CENTER,
            "sigma": _SIGMA,
            "gamma_left": {**_RATE, "value": 300.0},
            "gamma_right": _RATE,
            "fraction_left": {**_FRACTION, "value": 0.1},
        },
    )


def voigt_model(prefix: str = "") -> lmfit.Model:
    """:func:`voigt` as an :class:`lmfit.Model`; ``sigma >= SIGMA_MIN``, ``gamma >= 0`` (µs).

    ``gamma`` is the Lorentzian half width at half maximum, µs (lmfit's meaning),
    and is free; tie it with ``model.set_param_hint("gamma", expr="sigma")`` to
    get lmfit's default single-width Voigt.

    Parameters
    ----------
    prefix : str
        Prefix of the parameter names (for composite models).

    Returns
    -------
    lmfit.Model
    """
    return _model(
        voigt,
        prefix,
        {
            "amplitude": _AMPLITUDE,
            "center": _CENTER,
            "sigma": _SIGMA,
            "gamma": {"value": 0.01, "min": 0.0},
        },
    )
