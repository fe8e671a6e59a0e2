"""The vectorised Levenberg–Marquardt engine: all fits advance together, on NumPy or CuPy.

One iteration per Python loop pass, every operation vectorised across fits:

* model values and Jacobians for all windows at once
  (:meth:`~idexdask.analysis.fitting.BatchModel.jacobian`, or one compiled pass
  for a model with a kernel, see :mod:`idexdask.analysis.fitting.compiled`);
* normal equations as an ``(n_fits, p, p)`` stack, Marquardt-scaled and solved
  with one batched ``xp.linalg.solve``;
* per-fit damping, acceptance, convergence and failure masks; finished fits are
  dropped from the working set so the slow ones do not cost the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any

import numpy as np

from idexdask.analysis import xp as _xp
from idexdask.analysis.fitting.compiled import KernelChoice, residual_jacobian
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
from idexdask.analysis.fitting.linalg import covariance, normal_equations, solve_damped
from idexdask.analysis.fitting.models import BatchModel
from idexdask.analysis.fitting.result import FitStatus

__all__ = ["Evaluation", "StepPlan", "iterate_xp"]


@dataclass(frozen=True)
class Evaluation:
    """The model at one set of internal parameters, per fit of a working set.

    Attributes
    ----------
    params : array
        External (bounded) parameters (n, n_params).
    chisq : array
        Chi-square (n,), ``inf`` where it or the normal equations are not finite.
    a, b : array
        Normal equations in the internal parameters, (n, p, p) and (n, p).
    a_ext : array
        ``A`` in the external parameters (n, p, p): the inverse covariance.
    """

    params: Any
    chisq: Any
    a: Any
    b: Any
    a_ext: Any

    def take(self, keep: Any) -> Evaluation:
        """The fits indexed by ``keep``."""
        return Evaluation(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def accepted(self, xp: ModuleType, accept: Any, trial: Evaluation) -> Evaluation:
        """``trial`` where ``accept`` (n,) holds, else this evaluation."""
        acc2, acc3 = accept[:, None], accept[:, None, None]
        return Evaluation(
            params=xp.where(acc2, trial.params, self.params),
            chisq=xp.where(accept, trial.chisq, self.chisq),
            a=xp.where(acc3, trial.a, self.a),
            b=xp.where(acc2, trial.b, self.b),
            a_ext=xp.where(acc3, trial.a_ext, self.a_ext),
        )

    @classmethod
    def concatenate(cls, xp: ModuleType, parts: list[Evaluation]) -> Evaluation:
        """The evaluations of consecutive blocks of fits as one."""
        return cls(
            **{
                f.name: xp.concatenate([getattr(part, f.name) for part in parts], axis=0)
                for f in fields(cls)
            }
        )


@dataclass(frozen=True)
class StepPlan:
    """The next damped step per fit, and whether the fit has converged.

    Attributes
    ----------
    step : array
        Step in the internal parameters (n, p).
    predicted : array
        Chi-square gain the quadratic model predicts for the step (n,).
    converged : array of bool
        Converged: an undamped step predicts a gain below ``ftol``, the scaled
        gradient is below ``gtol``, or chi-square is at the rounding floor (n,).
    cosine : array
        Largest scaled gradient component ``|J_j . r| / (|J_j| |r|)`` (n,).
    """

    step: Any
    predicted: Any
    converged: Any
    cosine: Any


@dataclass(frozen=True)
class _Evaluator:
    """Evaluates a model's chi-square and normal equations for a working set."""

    xp: ModuleType
    model: BatchModel
    kernel: int
    scipy_erfcx: int
    block: int

    def __call__(self, theta: Any, work: WorkingSet) -> Evaluation:
        """The model at internal parameters ``theta`` (n, p) of ``work``'s fits.

        Done in blocks of ``block`` fits so the temporaries stay in cache (CPU).
        """
        n = theta.shape[0]
        if n <= self.block:
            return self._block(theta, work)
        parts = [
            self._block(theta[i : i + self.block], work.slice(i, i + self.block))
            for i in range(0, n, self.block)
        ]
        return Evaluation.concatenate(self.xp, parts)

    def _weighted_residuals(self, work: WorkingSet, p: Any) -> tuple[Any, Any]:
        """Weighted residuals (n, m) and Jacobian (n, p, m) at external parameters ``p``."""
        xp = self.xp
        if self.kernel:
            n, m = work.y.shape
            r = np.empty((n, m))
            jac = np.empty((n, self.model.n_params, m))
            weighted = work.weights is not None
            residual_jacobian(
                self.kernel, self.scipy_erfcx, work.x, work.y,
                work.weights if weighted else work.y, weighted, p, r, jac,
            )  # fmt: skip
            return r, jac
        f, jac = self.model.jacobian(xp, work.x, p)
        if work.weights is None:
            return work.y - f, jac
        # masked points: finite x and y, weight 0
        return work.weights * (work.y - f), jac * work.weights[:, None, :]

    def _block(self, theta: Any, work: WorkingSet) -> Evaluation:
        xp = self.xp
        p, dp = work.bounds.to_external(xp, theta)
        with _xp.errstate(xp, invalid="ignore", over="ignore", divide="ignore"):
            r, jac = self._weighted_residuals(work, p)
            a_ext, b_ext = normal_equations(xp, jac, r)
            chi = xp.sum(r * r, axis=1)
        # chain rule to the internal parameters: J_int = J_ext * dp/dtheta
        a = a_ext * (dp[:, :, None] * dp[:, None, :])
        b = b_ext * dp
        finite = xp.isfinite(chi) & xp.all(xp.isfinite(a_ext), axis=(1, 2))
        finite &= xp.all(xp.isfinite(b_ext), axis=1)
        return Evaluation(params=p, chisq=xp.where(finite, chi, math.inf), a=a, b=b, a_ext=a_ext)


def _plan(
    xp: ModuleType, at: Evaluation, chi: Any, lam: Any, floor: Any, stop: StopCriteria
) -> StepPlan:
    """Next damped step from ``at``'s normal equations, with chi-square ``chi``.

    ``floor`` is the chi-square of residuals at the data's rounding level: a
    noiseless window is converged when chi-square reaches it.
    """
    a, b = at.a, at.b
    at_floor = chi <= 100.0 * floor  # residuals at rounding level (noiseless data)
    chi = chi + floor
    with _xp.errstate(xp, invalid="ignore", divide="ignore", over="ignore"):
        step = solve_damped(xp, a, b, lam)
        predicted = xp.sum(step * (2.0 * b - (a @ step[:, :, None])[:, :, 0]), axis=1)
        diag = xp.diagonal(a, axis1=1, axis2=2)
        cosine = xp.abs(b) / xp.sqrt(diag * chi[:, None])
    cosine = xp.max(xp.where(diag > 0.0, cosine, 0.0), axis=1)
    # a nearly undamped step predicting less than ftol*chisq gain: the minimum
    # is reached (and evaluating that step would only show rounding noise)
    converged = ((lam <= LAMBDA_GN) & (predicted <= stop.ftol * chi)) | (cosine <= stop.gtol)
    return StepPlan(step=step, predicted=predicted, converged=converged | at_floor, cosine=cosine)


def iterate_xp(
    xp: ModuleType,
    model: BatchModel,
    block: int,
    work: WorkingSet,
    outputs: FitOutputs,
    stop: StopCriteria,
    kernel: KernelChoice,
) -> None:
    """The vectorised Levenberg-Marquardt loop (any namespace, any model).

    All fits of the working set advance together, one iteration per pass;
    finished fits are written to ``outputs`` (at their batch row,
    ``work.rows``) and dropped.  With a compiled ``kernel`` (NumPy only) the
    weighted residuals and Jacobian come from one compiled pass instead of ~30
    array operations: the same expressions (an ulp apart where NumPy's exp runs
    SIMD code), so the same iterations and, within rounding, the same results.

    Parameters
    ----------
    xp : module
        Array namespace of the working set.
    model : BatchModel
        The model fitted.
    block : int
        Fits per block when evaluating the model and normal equations.
    work : WorkingSet
        The fits to run.
    outputs : FitOutputs
        Where each fit's results are written.
    stop : StopCriteria
        When a fit stops.
    kernel : KernelChoice
        The model's compiled kernel (NumPy only), or ``KERNEL_NONE`` for the array code.
    """
    evaluate = _Evaluator(xp, model, kernel.kernel, kernel.scipy_erfcx, block)

    theta = work.theta
    current = evaluate(theta, work)
    n_act = work.size
    lam = xp.full((n_act,), LAMBDA_START, dtype=xp.float64)
    nfev = xp.full((n_act,), 1, dtype=xp.int64)
    niter = xp.zeros((n_act,), dtype=xp.int64)
    chi_ref = current.chisq  # chi-square at the start of the current stall window
    nonfinite = ~xp.isfinite(current.chisq)
    plan = _plan(xp, current, xp.where(nonfinite, 1.0, current.chisq), lam, work.chi_floor, stop)
    step, predicted = plan.step, plan.predicted
    nu = xp.full((n_act,), 2.0, dtype=xp.float64)  # Nielsen's damping growth factor
    converged = plan.converged & ~nonfinite
    done = converged | nonfinite
    status = xp.where(
        nonfinite,
        int(FitStatus.FAILED_NONFINITE),
        xp.where(converged, int(FitStatus.CONVERGED), int(FitStatus.MAX_ITERATIONS)),
    ).astype(xp.int8)

    while True:
        if n_act and bool(xp.any(done)):
            fin = xp.nonzero(done)[0]
            with _xp.errstate(xp, invalid="ignore", divide="ignore", over="ignore"):
                cov = covariance(xp, current.a_ext[fin])
            outputs.store(
                work.rows[fin], current.params[fin], cov, current.chisq[fin], nfev[fin], niter[fin],
                status[fin],
            )  # fmt: skip
            keep = xp.nonzero(~done)[0]
            work, theta, current = work.take(keep), theta[keep], current.take(keep)
            step, predicted, chi_ref = step[keep], predicted[keep], chi_ref[keep]
            lam, nu, nfev, niter = lam[keep], nu[keep], nfev[keep], niter[keep]
            status = status[keep]
            n_act = work.size
        if n_act == 0:
            break

        theta_try = theta + step
        trial = evaluate(theta_try, work)
        nfev = nfev + 1
        niter = niter + 1
        chi, chi_try = current.chisq, trial.chisq
        accept = (chi_try < chi) & xp.all(xp.isfinite(theta_try), axis=1)
        # A parameter pinned on a bound: the transform's derivative vanishes there,
        # so Gauss-Newton only creeps up to it.  Stop once the creeping no longer
        # lowers chi-square by more than ftol (reported as HIT_BOUND at the end).
        pinned = xp.any(work.bounds.at_bound(xp, trial.params, stop.bound_rtol), axis=1)
        pinned_done = accept & pinned & (chi - chi_try <= stop.ftol * chi)
        theta = xp.where(accept[:, None], theta_try, theta)
        current = current.accepted(xp, accept, trial)
        # Nielsen's damping update: shrink by how well the quadratic model predicted
        # the gain (at most 3x), grow geometrically on repeated rejections
        with _xp.errstate(xp, invalid="ignore", divide="ignore"):
            rho = (chi - chi_try) / predicted
        shrink = xp.maximum(
            1.0 / 3.0, 1.0 - (2.0 * xp.where(xp.isfinite(rho), rho, 1.0) - 1.0) ** 3
        )
        lam = xp.where(accept, xp.maximum(lam * shrink, LAMBDA_MIN), lam * nu)
        nu = xp.where(accept, 2.0, 2.0 * nu)
        chi = current.chisq

        plan = _plan(xp, current, chi, lam, work.chi_floor, stop)
        step, predicted = plan.step, plan.predicted
        converged = plan.converged | pinned_done
        # damping this large means no descent is left at double precision: a
        # minimum if the gradient is (nearly) orthogonal to the residuals
        stalled = lam > LAMBDA_MAX
        converged |= stalled & (plan.cosine <= 1e-4)
        window_end = (niter % STALL_WINDOW) == 0
        no_progress = window_end & ~(chi_ref - chi > stop.stall_tol * chi_ref)
        converged |= no_progress & (chi <= 100.0 * work.chi_floor)  # noiseless data, at rounding
        done = converged | stalled | no_progress | (niter >= stop.max_iter)
        # A fit about to stop unconverged with its damping above LAMBDA_GN has
        # not taken the ftol test, which is a test of a Gauss-Newton step: a
        # strongly coupled fit (a joint fit of blended lines) converges
        # linearly with rho < 1/2, its damping never falls to LAMBDA_GN, and
        # the stall test stops it at its minimum.  Take the test with that step.
        gn = done & ~converged & (lam > LAMBDA_GN)
        if bool(xp.any(gn)):
            at = xp.nonzero(gn)[0]
            gn_plan = _plan(xp, current.take(at), chi[at], xp.full(at.shape, LAMBDA_GN),
                            work.chi_floor[at], stop)  # fmt: skip
            converged[at] = gn_plan.converged
        status = xp.where(converged, int(FitStatus.CONVERGED), status).astype(xp.int8)
        chi_ref = xp.where(window_end, chi, chi_ref)
