"""Array-namespace dispatch: the same analysis code on NumPy (CPU) and CuPy (GPU).

The line shapes and the batched fitter never call :mod:`numpy` functions on their
working arrays directly; they ask :func:`get_namespace` for the module that owns
the arrays (``numpy`` or ``cupy``) and call that.  The special functions the line
shapes need live outside the array API (``scipy.special`` and
``cupyx.scipy.special``) and are dispatched here too.

CuPy is optional: it is imported only when an argument already is a CuPy array,
so importing this module never needs a GPU.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import numpy as np

from idexdask.errors import AnalysisError

__all__ = [
    "erfc",
    "erfcx",
    "errstate",
    "get_namespace",
    "is_cupy",
    "to_numpy",
    "voigt_profile",
]


def is_cupy(a: Any) -> bool:
    """Whether ``a`` is a CuPy array (checked without importing CuPy).

    Parameters
    ----------
    a : object
        Any object.

    Returns
    -------
    bool
        True for ``cupy.ndarray`` instances.
    """
    return type(a).__module__.split(".", 1)[0] == "cupy"


def get_namespace(*arrays: Any) -> ModuleType:
    """The array module owning ``arrays``: ``cupy`` if any is a CuPy array, else ``numpy``.

    Python scalars, ``None`` and NumPy arrays count as NumPy; mixing CuPy arrays
    with NumPy arrays (not scalars) is allowed here, the caller's arithmetic will
    decide whether it is legal.

    Parameters
    ----------
    *arrays : array_like or scalar
        The arrays (or scalars) an operation will combine.

    Returns
    -------
    module
        :mod:`numpy` or :mod:`cupy`.
    """
    for a in arrays:
        if is_cupy(a):
            import cupy  # noqa: PLC0415  (optional GPU dependency)

            return cupy
    return np


def _special(xp: ModuleType) -> ModuleType:
    if xp is np:
        import scipy.special  # noqa: PLC0415

        return scipy.special
    try:
        import cupyx.scipy.special  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - only without cupyx
        raise AnalysisError("CuPy arrays need cupyx.scipy.special for the line shapes") from exc
    return cupyx.scipy.special


def erfcx(z: Any) -> Any:
    """Scaled complementary error function ``exp(z**2) * erfc(z)`` on ``z``'s device.

    Parameters
    ----------
    z : array_like
        Argument (dimensionless).

    Returns
    -------
    array
        ``erfcx(z)``, a NumPy or CuPy array like ``z``.
    """
    return _special(get_namespace(z)).erfcx(z)


def erfc(z: Any) -> Any:
    """Complementary error function on ``z``'s device.

    Parameters
    ----------
    z : array_like
        Argument (dimensionless).

    Returns
    -------
    array
        ``erfc(z)``, a NumPy or CuPy array like ``z``.
    """
    return _special(get_namespace(z)).erfc(z)


def voigt_profile(x: Any, sigma: Any, gamma: Any) -> Any:
    """Unit-area Voigt profile on ``x``'s device.

    Parameters
    ----------
    x : array_like
        Offset from the line centre, µs.
    sigma : float or array_like
        Gaussian standard deviation, µs.
    gamma : float or array_like
        Lorentzian half width at half maximum, µs.

    Returns
    -------
    array
        Profile, 1/µs.

    Raises
    ------
    AnalysisError
        On CuPy arrays when this CuPy has no ``voigt_profile``.
    """
    special = _special(get_namespace(x, sigma, gamma))
    if not hasattr(special, "voigt_profile"):  # pragma: no cover - old cupyx
        raise AnalysisError("this cupyx.scipy.special has no voigt_profile")
    return special.voigt_profile(x, sigma, gamma)


def errstate(xp: ModuleType, **kwargs: str) -> contextlib.AbstractContextManager:
    """``numpy.errstate(**kwargs)`` for NumPy; a no-op context for CuPy (it never warns).

    Parameters
    ----------
    xp : module
        The array namespace.
    **kwargs : str
        Passed to :func:`numpy.errstate`.

    Returns
    -------
    context manager
    """
    if xp is np:
        return np.errstate(**kwargs)
    return contextlib.nullcontext()


def to_numpy(a: Any) -> np.ndarray:
    """Copy ``a`` to host memory as a NumPy array (no copy if it already is one).

    Parameters
    ----------
    a : array_like
        NumPy or CuPy array, or anything :func:`numpy.asarray` accepts.

    Returns
    -------
    numpy.ndarray
    """
    if is_cupy(a):
        return a.get()
    return np.asarray(a)
