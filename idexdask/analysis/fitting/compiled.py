"""Compiled model kernels: which model has one, and the residuals and Jacobian they give.

Models with a compiled kernel (``BatchModel.kernel``: EMG + constant, the impact
charge model, a sum of EMG and Gaussian lines plus a constant) have their
per-point arithmetic in numba, used on NumPy inputs:

* :func:`residual_jacobian` (engine "auto", EMG + constant and impact model
  only): weighted residuals and Jacobian for
  the vectorised loop in one pass.  The expressions are those of the xp
  kernels (``models._emg_fj`` + constant, ``impact_model._evaluate_jac``) in the same
  order, erfcx is scipy's own C function (the code behind
  ``scipy.special.erfcx``), and numba does not contract to FMA, so the values
  are the same to the last bit and the fits follow exactly the same path (the
  kernels' ``scipy_erfcx`` argument: that function's address).
* :func:`~idexdask.analysis.fitting.engine_compiled.lm_compiled` (engine
  "compiled"): the whole Levenberg-Marquardt iteration of
  :func:`~idexdask.analysis.fitting.engine_xp.iterate_xp`, decision for
  decision, one fit at a time, with the model, Jacobian and normal equations
  fused in one pass over the window (no (n_fits, n_params, n_points)
  temporaries, no BLAS call, no per-iteration Python overhead).  The normal
  equations are summed point by point instead of by BLAS and the damped systems
  solved by Gaussian elimination instead of LAPACK, erfcx is
  :func:`~idexdask.analysis.special.erfcx_kernel` (``scipy_erfcx = 0``; within
  1 ulp of scipy's, equal at ~99.99 % of points, without scipy's mispredicted
  interval dispatch) and the EMG's divisions by sigma are multiplications by its
  reciprocal (EMG kernel 3.73 -> 2.95 us per evaluation of a 56-point window for
  the two): rounding-level differences, which a converged fit absorbs (~1e-5
  standard errors) but a wandering one (MAX_ITERATIONS / HIT_BOUND after a
  creep) may not -- exactly as under a 1-ulp change of its data.

The per-model kernels live with their models:
:mod:`idexdask.analysis.fitting.emg_kernels`,
:mod:`idexdask.analysis.fitting.line_kernels` (``KERNEL_LINES``: the compiled
engine only; "auto" fits those models on the array code) and
:mod:`idexdask.analysis.impact_kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numba
import numpy as np

from idexdask.analysis.fitting.emg_kernels import emg_point
from idexdask.analysis.fitting.models import (
    KERNEL_EMG_CONSTANT,
    KERNEL_IMPACT,
    KERNEL_NONE,
    BatchModel,
)
from idexdask.analysis.impact_kernels import impact_point
from idexdask.compat.erfcx import scipy_erfcx_address
from idexdask.errors import AnalysisError

__all__ = ["ENGINES", "KernelChoice", "residual_jacobian", "select_kernel"]

#: Values of ``fit_batch``'s ``engine``.
ENGINES = ("auto", "compiled", "xp")


@numba.njit(cache=True, nogil=True, error_model="numpy")
def residual_jacobian(kernel, scipy_erfcx, x, y, w, weighted, p, r, jac):  # pragma: no cover
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
                g, jc, js, jg = emg_point(scipy_erfcx, x[i, q], p0, p1, p2, p3, inv_s)
                f = p0 * g + p4
                j0, j1, j2, j3, j4 = g, jc, js, jg, 1.0
            else:
                g, j0, j3, j4 = impact_point(x[i, q], p0, p2, p3, p4)
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


@dataclass(frozen=True)
class KernelChoice:
    """The compiled kernel a batch fit runs, and the ``erfcx`` its EMG kernel calls.

    Attributes
    ----------
    kernel : int
        A ``KERNEL_*`` value; ``KERNEL_NONE``: the array code only.
    scipy_erfcx : int
        Address of SciPy's C erfcx (from the :mod:`idexdask.compat.erfcx`
        adapter) for the "auto" engine's EMG kernel, which reproduces the array
        code's values; 0 for the other kernels and the compiled engine
        (:func:`~idexdask.analysis.special.erfcx_kernel`).
    lines : tuple of int
        The line shapes of a ``KERNEL_LINES`` model (``BatchModel.kernel_lines``).
    """

    kernel: int
    scipy_erfcx: int = 0
    lines: tuple[int, ...] = ()


def select_kernel(xp: ModuleType, model: BatchModel, engine: str) -> KernelChoice:
    """The compiled kernel of ``model`` usable here (none: array code only).

    The erfcx adapter is asked once per fit, here: where it offers no SciPy
    erfcx (address 0), the "auto" engine fits an EMG on the array code, whose
    values the kernel could otherwise not promise.

    Parameters
    ----------
    xp : module
        Namespace of the fit's arrays (kernels need NumPy).
    model : BatchModel
        The model fitted.
    engine : {"auto", "compiled", "xp"}
        As for :func:`~idexdask.analysis.fitting.fit_batch`.

    Returns
    -------
    KernelChoice
        The kernel and the erfcx it calls.

    Raises
    ------
    AnalysisError
        For an unknown engine, or ``"compiled"`` where no kernel applies.
    """
    if engine not in ENGINES:
        raise AnalysisError(f"engine must be 'auto', 'compiled' or 'xp', got {engine!r}")
    if engine == "xp":
        return KernelChoice(KERNEL_NONE)
    usable = xp is np and model.kernel != KERNEL_NONE
    if engine == "compiled":
        if not usable:
            raise AnalysisError(
                f"no compiled kernel for model {model.name!r} on {xp.__name__} arrays"
            )
        # erfcx_kernel (see the module docstring)
        return KernelChoice(model.kernel, lines=model.kernel_lines)
    if usable and model.kernel == KERNEL_EMG_CONSTANT:
        address = scipy_erfcx_address()
        if address == 0:  # the kernel's bit-for-bit promise needs scipy's erfcx
            return KernelChoice(KERNEL_NONE)
        return KernelChoice(KERNEL_EMG_CONSTANT, address)
    # residual_jacobian has the EMG and impact models; other kernels: compiled engine only
    return KernelChoice(KERNEL_IMPACT if usable and model.kernel == KERNEL_IMPACT else KERNEL_NONE)
