"""The scaled complementary error function ``erfcx`` for compiled kernels.

``erfcx(x) = exp(x**2) erfc(x)`` is the expensive part of every EMG line
evaluation (one call per point of every Levenberg–Marquardt step).  Two
scalar versions serve the numba kernels:

* :func:`call_scipy_erfcx`: SciPy's own C function, called through its address
  (:func:`scipy_erfcx_address`; both in :mod:`idexdask.compat.erfcx`, the
  adapter for SciPy's internals, which returns address 0 where they are not
  usable).  Kernels that reproduce the array code's
  expressions (``engine: auto``, :func:`~idexdask.analysis.line_fits.line_heights`)
  use it: their values then differ from the array code's only where libm's exp
  and NumPy's CPU-specific SIMD exp round apart (an ulp).
* :func:`erfcx_kernel`: a piecewise polynomial that the compiler inlines.  On
  ``0 <= x < 50`` the variable ``y = 400 / (4 + x)`` runs over ``(7.4, 100]``;
  each unit interval ``[k, k + 1)`` of ``y`` has a degree-6 polynomial in
  ``u = 2 y - (2 k + 1)``, interpolated at the Chebyshev points of the exact
  function (mpmath at 50 digits, :func:`erfcx_coefficients`) and rounded to
  double.  Above 50 the asymptotic series to ``x**-10`` (next term < 1e-18
  relative); below 0, ``2 exp(x**2) - erfcx(-x)``.

  Its values are SciPy's to within one unit in the last place (equal at
  ~99.99 % of points, ``tests/unit/analysis/test_special.py``) and equally accurate
  (at most ~7 ulp from the exact value, as SciPy's).  What it saves is a
  branch: SciPy's implementation dispatches the interval through a ``switch``,
  an indirect jump that the processor mispredicts whenever consecutive
  points fall in different intervals -- every point of a fit window, where
  ``x`` moves by ~0.3-0.7 per sample.  Measured on one core: 25 ns per call on
  such inputs against 7-8 ns here (the EMG line fits 10 % faster on simulated spectra).

The table is a read-only array that numba freezes into the compiled code as a
constant; its cache does not see a change of the table, so after regenerating
it delete the ``__pycache__/*.nb*`` files of this package.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from idexdask.analysis._erfcx_table import COEFFICIENTS, DEGREE, FIRST_INTERVAL
from idexdask.compat.erfcx import call_scipy_erfcx, scipy_erfcx_address

__all__ = ["call_scipy_erfcx", "erfcx_coefficients", "erfcx_kernel", "scipy_erfcx_address"]

_TABLE = np.array(COEFFICIENTS, dtype=np.float64)
_TABLE.flags.writeable = False
_LAST_INTERVAL = FIRST_INTERVAL + _TABLE.shape[0] - 1
_POLYNOMIAL_LIMIT = 50.0  # x below which the table is used
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _erfcx_nonnegative(x):  # pragma: no cover - compiled
    """``erfcx(x)`` for ``x >= 0`` (and NaN for NaN)."""
    if x < _POLYNOMIAL_LIMIT:
        y = 400.0 / (4.0 + x)
        k = int(y)
        u = 2.0 * y - (2 * k + 1)
        c = _TABLE[k - FIRST_INTERVAL]
        return c[0] + u * (c[1] + u * (c[2] + u * (c[3] + u * (c[4] + u * (c[5] + u * c[6])))))
    # asymptotic series: (1/(x sqrt(pi))) sum_n (-1)^n (2n-1)!! / (2 x^2)^n
    v = 1.0 / (x * x)  # 0 for x = inf
    series = 1.0 - v * (0.5 - v * (0.75 - v * (1.875 - v * (6.5625 - v * 29.53125))))
    return _INV_SQRT_PI / x * series


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erfcx_kernel(x):  # pragma: no cover - compiled
    """``erfcx(x) = exp(x**2) erfc(x)`` for compiled code (see the module docstring).

    Parameters
    ----------
    x : float
        Any real; NaN gives NaN, ``+inf`` gives 0, below about -26.6 the
        result overflows to ``inf`` as ``exp(x**2)`` does.
    """
    if x >= 0.0 or x != x:
        return _erfcx_nonnegative(x)
    return 2.0 * math.exp(x * x) - _erfcx_nonnegative(-x)


def erfcx_coefficients(degree: int = DEGREE) -> np.ndarray:
    """Compute the polynomial table of :func:`erfcx_kernel` (needs mpmath).

    Row ``k - 7`` holds the monomial coefficients, lowest order first, of the
    polynomial in ``u = 2 y - (2 k + 1)`` that interpolates ``erfcx(400/y - 4)``
    at the ``degree + 1`` Chebyshev points of ``y`` in ``[k, k + 1)``, computed
    with 50 significant digits and rounded to double once.
    ``idexdask/analysis/_erfcx_table.py`` holds the result for ``degree = 6``;
    a test checks that they agree.

    Returns
    -------
    numpy.ndarray
        Shape (94, degree + 1), float64.
    """
    import mpmath  # noqa: PLC0415 - a development dependency, for this builder only

    context = mpmath.mp.clone()
    context.dps = 50
    n = degree + 1
    nodes = [context.cos(context.pi * (j + context.mpf(1) / 2) / n) for j in range(n)]
    vandermonde = context.matrix([[u**j for j in range(n)] for u in nodes])
    rows = []
    for k in range(FIRST_INTERVAL, 101):
        x = [800 / (u + 2 * k + 1) - 4 for u in nodes]
        values = context.matrix([context.exp(v * v) * context.erfc(v) for v in x])
        coefficients = context.lu_solve(vandermonde, values)
        rows.append([float(coefficients[j]) for j in range(n)])
    return np.array(rows)
