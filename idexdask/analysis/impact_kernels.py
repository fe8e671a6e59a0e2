"""Compiled kernels of the impact charge model (:mod:`idexdask.analysis.impact_model`).

The batch fitter (:mod:`idexdask.analysis.fitting`) runs the impact model through
these kernels on NumPy arrays (``BatchModel.kernel == KERNEL_IMPACT``):

* :func:`impact_point` gives the pulse and its derivatives at one sample with
  the expressions of the array model, ``impact_model._evaluate_jac``, in the same
  order (numba does not contract to FMA), for the fitter's "auto" engine;
* :func:`impact_normal` sums one window's chi-square and normal equations for
  the "compiled" engine, carrying the two exponentials along a uniform time grid
  (:func:`grid_steps`) instead of evaluating them at every sample.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from idexdask.analysis.normal_sums import ACC5_ZERO, acc5, store5

__all__ = ["grid_steps", "impact_normal", "impact_point", "impact_terms"]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def impact_point(xq, t0, amp, tr, td):  # pragma: no cover - compiled
    """Impact pulse at one point: ``g`` and d/d(t0, tau_r, tau_d) of ``A g``.

    Mirrors ``idexdask.analysis.impact_model._evaluate_jac`` expression by
    expression; before the impact (``x <= t0``) the exponentials are exactly 1
    and are not evaluated.
    """
    d = xq - t0
    if d > 0.0:
        return impact_terms(d, math.exp(-d / tr), math.exp(-d / td), amp, tr, td, 0.0, 0.0, True)
    # d = 0: er = ed = 1, rise = g = 0
    return 0.0, 0.0, -amp * 0.0 / (tr * tr), amp * 0.0 * 0.0 / (td * td)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def impact_terms(d, er, ed, amp, tr, td, inv_tr, inv_td, exact):  # pragma: no cover
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
def impact_normal(x, y, w, p, a, b, step):  # pragma: no cover - compiled
    """Chi-square, ``A`` and ``b`` of the impact charge model on one window.

    The model's two exponentials take ~60 % of a point's cost.  Where ``step``
    > 0 (the window's valid points lie on a uniform grid of that step, see
    :func:`grid_steps`), they are carried from one point to the next by a
    factor ``exp(-step/tau)``, and evaluated afresh only at the first point after
    the impact or after a masked one; the values then differ from
    :func:`impact_point`'s by ~1e-13 relative (one rounding per point).
    """
    t0, c0, amp, tr, td = p[0], p[1], p[2], p[3], p[4]
    inv_tr = 1.0 / tr
    inv_td = 1.0 / td
    acc = ACC5_ZERO
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
            g, j0, j3, j4 = impact_terms(d, er, ed, amp, tr, td, inv_tr, inv_td, False)
        else:
            g, j0, j3, j4 = impact_point(x[i], t0, amp, tr, td)
        r = wi * (y[i] - (c0 + amp * g))
        acc = acc5(acc, j0 * wi, wi, g * wi, j3 * wi, j4 * wi, r)
    return store5(acc, a, b)


def grid_steps(x: np.ndarray, w: np.ndarray) -> np.ndarray:
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


