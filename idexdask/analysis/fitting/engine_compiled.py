"""The compiled Levenberg–Marquardt engine: one fit at a time, model and normal equations fused.

:func:`lm_compiled` runs the iteration of
:func:`~idexdask.analysis.fitting.engine_xp.iterate_xp` decision for decision,
for models with a compiled kernel on NumPy arrays (see
:mod:`idexdask.analysis.fitting.compiled` for what differs at rounding level);
:func:`iterate_compiled` feeds it a :class:`~.iteration.WorkingSet`.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from idexdask.analysis.fitting.bounds import at_bound_one, to_external_one
from idexdask.analysis.fitting.compiled import KernelChoice
from idexdask.analysis.fitting.emg_kernels import emg_constant_normal
from idexdask.analysis.fitting.iteration import (
    LAMBDA_GN,
    LAMBDA_MAX,
    LAMBDA_MIN,
    LAMBDA_START,
    STALL_WINDOW,
    FitOutputs,
    StopCriteria,
    WorkingSet,
)
from idexdask.analysis.fitting.linalg import covariance, solve_damped_one
from idexdask.analysis.fitting.line_kernels import lines_constant_normal
from idexdask.analysis.fitting.models import KERNEL_EMG_CONSTANT, KERNEL_IMPACT, KERNEL_LINES
from idexdask.analysis.fitting.result import FitStatus
from idexdask.analysis.impact_kernels import grid_steps, impact_normal

__all__ = ["iterate_compiled", "lm_compiled"]

_ST_CONVERGED = int(FitStatus.CONVERGED)
_ST_MAX_ITERATIONS = int(FitStatus.MAX_ITERATIONS)
_ST_FAILED_NONFINITE = int(FitStatus.FAILED_NONFINITE)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _evaluate_one(kernel, scipy_erfcx, x, y, w, step, lines, jm, rr, inv_s, lo, hi, has_lo,
                  has_hi, theta, p, dp, a_ext, b_ext, a, b, limit):  # pragma: no cover - compiled
    """The array engine's evaluation for one fit: chi-square (inf if not finite), ``A``, ``b``.

    ``lines``: the line shapes of a ``KERNEL_LINES`` model; ``jm``, ``rr``
    and ``inv_s``: the EMG and line kernels' scratch (see
    :func:`~.emg_kernels.emg_constant_normal`,
    :func:`~.line_kernels.lines_constant_normal`).  ``limit``: the chi-square
    of the current parameters for a trial step (NaN for the start: none): the
    step is rejected unless its chi-square is smaller, so the EMG and line
    kernels stop summing once their partial chi-square reaches it and ``inf``
    is returned, ``A`` and ``b`` unwritten (they are read only for an accepted
    step).  The decisions, and so every result, are those of full sums.
    """
    to_external_one(theta, lo, hi, has_lo, has_hi, p, dp)
    if kernel == KERNEL_EMG_CONSTANT:
        chi = emg_constant_normal(scipy_erfcx, x, y, w, p, a_ext, b_ext, jm, rr, limit)
    elif kernel == KERNEL_LINES:
        chi = lines_constant_normal(x, y, w, p, lines, a_ext, b_ext, jm, rr, inv_s, limit)
    else:
        chi = impact_normal(x, y, w, p, a_ext, b_ext, step)
    if limit == limit and not chi < limit:  # a rejected step: A, b unused
        return math.inf
    k = theta.size
    finite = math.isfinite(chi)
    for j in range(k):
        finite = finite and math.isfinite(b_ext[j])
        b[j] = b_ext[j] * dp[j]
        for m in range(k):
            finite = finite and math.isfinite(a_ext[j, m])
            a[j, m] = a_ext[j, m] * (dp[j] * dp[m])
    return chi if finite else math.inf



@numba.njit(cache=True, nogil=True, error_model="numpy")
def _plan_one(a, b, chi, lam, floor, ftol, gtol, step, m, s):  # pragma: no cover - compiled
    """The array engine's step plan for one fit: fills ``step``; returns (predicted gain,
    done, cosine)."""
    at_floor = chi <= 100.0 * floor
    chi = chi + floor
    solve_damped_one(a, b, lam, step, m, s)
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
    done = ((lam <= LAMBDA_GN) and (predicted <= ftol * chi)) or (cosine <= gtol) or at_floor
    return predicted, done, cosine


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lm_compiled(kernel, scipy_erfcx, x, y, w, steps, lines, lo, hi, has_lo, has_hi, theta0,
                chi_floor, max_iter, ftol, gtol, bound_rtol, stall_tol,
                out_p, out_chi, out_a, out_nfev, out_niter, out_status):  # pragma: no cover
    """The Levenberg-Marquardt loop of ``iterate_xp``, one fit at a time.

    ``steps``: the impact model's grid step per fit (``grid_steps``);
    ``lines``: the line shapes of a ``KERNEL_LINES`` model (int64, empty for
    the others).
    """
    n, k = theta0.shape
    lined = lines.size > 0
    fused = kernel == KERNEL_EMG_CONSTANT or lined  # kernels that take the Jacobian scratch
    jm = np.empty((x.shape[1] if fused else 0, k))
    rr = np.empty(x.shape[1] if fused else 0)
    inv_s = np.empty(max(lines.size, 1))
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
        chi = _evaluate_one(kernel, scipy_erfcx, xi, yi, wi, steps[i], lines, jm, rr, inv_s,
                            loi, hii, hl, hh, theta, p, dp, a_ext, b_ext, a, b, math.nan)
        lam = LAMBDA_START
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
            chi_try = _evaluate_one(kernel, scipy_erfcx, xi, yi, wi, steps[i], lines, jm, rr, inv_s,
                                    loi, hii, hl, hh, theta_try, p_try, dp, a_ext_try, b_ext,
                                    a_try, b_try, chi)
            nfev += 1
            niter += 1
            accept = (chi_try < chi) and finite_theta
            pinned = at_bound_one(p_try, loi, hii, hl, hh, bound_rtol)
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
                lam = max(lam * shrink, LAMBDA_MIN)
                nu = 2.0
                chi = chi_try
            else:
                lam = lam * nu
                nu = 2.0 * nu
            predicted, converged, cosine = _plan_one(a, b, chi, lam, floor, ftol, gtol,
                                                     step, m, s)
            converged = converged or pinned_done
            stalled = lam > LAMBDA_MAX
            converged = converged or (stalled and cosine <= 1e-4)
            window_end = (niter % STALL_WINDOW) == 0
            no_progress = window_end and not (chi_ref - chi > stall_tol * chi_ref)
            converged = converged or (no_progress and chi <= 100.0 * floor)
            done = converged or stalled or no_progress or niter >= max_iter
            if done and not converged and lam > LAMBDA_GN:
                # the ftol test of a Gauss-Newton step, which a fit whose
                # damping stays above LAMBDA_GN never takes (see iterate_xp)
                converged = _plan_one(a, b, chi, LAMBDA_GN, floor, ftol, gtol, step, m, s)[1]
            if converged:
                status = _ST_CONVERGED
            if window_end:
                chi_ref = chi
        out_p[i] = p
        out_chi[i] = chi
        out_a[i] = a_ext
        out_nfev[i] = nfev
        out_niter[i] = niter
        out_status[i] = status



def iterate_compiled(
    kernel: KernelChoice, work: WorkingSet, outputs: FitOutputs, stop: StopCriteria
) -> None:
    """The Levenberg-Marquardt loop of :func:`~.engine_xp.iterate_xp`, compiled, one fit at a time.

    Parameters
    ----------
    kernel : KernelChoice
        The model's compiled kernel (``KERNEL_EMG_CONSTANT``, ``KERNEL_IMPACT``
        or ``KERNEL_LINES`` with its line shapes) and the erfcx it calls (0:
        :func:`~idexdask.analysis.special.erfcx_kernel`).
    work : WorkingSet
        The fits to run (NumPy arrays only).
    outputs : FitOutputs
        Where each fit's results are written, at its batch row.
    stop : StopCriteria
        When a fit stops.
    """
    n_act = work.size
    if n_act == 0:
        return
    k = work.theta.shape[1]
    p = np.empty((n_act, k))
    chi = np.empty(n_act)
    a_ext = np.empty((n_act, k, k))
    nfev = np.empty(n_act, dtype=np.int64)
    niter = np.empty(n_act, dtype=np.int64)
    status = np.empty(n_act, dtype=np.int8)

    def c64(a: Any) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float64)

    x64 = c64(work.x)
    w64 = np.ones_like(c64(work.y)) if work.weights is None else c64(work.weights)
    steps = grid_steps(x64, w64) if kernel.kernel == KERNEL_IMPACT else np.zeros(n_act)
    bounds = work.bounds
    lm_compiled(
        kernel.kernel,
        kernel.scipy_erfcx,
        x64,
        c64(work.y),
        w64,
        steps,
        np.asarray(kernel.lines, dtype=np.int64),
        c64(bounds.lo),
        c64(bounds.hi),
        np.ascontiguousarray(bounds.has_lo),
        np.ascontiguousarray(bounds.has_hi),
        c64(work.theta),
        c64(work.chi_floor),
        int(stop.max_iter),
        float(stop.ftol),
        float(stop.gtol),
        float(stop.bound_rtol),
        float(stop.stall_tol),
        p,
        chi,
        a_ext,
        nfev,
        niter,
        status,
    )
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        cov = covariance(np, a_ext)
    outputs.store(work.rows, p, cov, chi, nfev, niter, status)
