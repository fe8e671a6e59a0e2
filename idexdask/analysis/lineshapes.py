"""Area-normalised line shapes for time-of-flight spectra.

Parameter names follow lmfit: ``amplitude`` (area, DN·µs), ``center`` (µs),
``sigma`` (µs), ``gamma`` (1/µs, the exponential tail's rate).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc, erfcx

__all__ = ["emg"]

_SQRT2 = np.sqrt(2.0)


def emg(x, amplitude, center, sigma, gamma):
    """Exponentially modified Gaussian of area ``amplitude``, tail to the right.

    With ``u = (x - center)/sigma`` and ``z = (gamma*sigma - u)/sqrt(2)`` the
    profile is ``amplitude*gamma/2 * exp(z**2 - u**2/2) * erfc(z)``.  The naive
    ``exp(...)*erfc(...)`` form overflows for sharp tails (IDEX lines have
    gamma near 100/µs); here it is evaluated as ``exp(-u**2/2) * erfcx(z)`` where
    ``z >= 0`` and as ``exp((gamma*sigma)**2/2 - gamma*sigma*u) * erfc(z)`` where
    ``z < 0``: neither factor can overflow on its own branch.

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
    numpy.ndarray
        Line profile, DN.
    """
    x = np.asarray(x, dtype=float)
    gs = np.asarray(gamma, dtype=float) * sigma
    u = (x - center) / sigma
    z = (gs - u) / _SQRT2
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        right_of_tail_onset = np.exp(-0.5 * u * u) * erfcx(z)
        far_tail = np.exp(0.5 * gs * gs - gs * u) * erfc(z)
    return 0.5 * amplitude * gamma * np.where(z >= 0.0, right_of_tail_onset, far_tail)
