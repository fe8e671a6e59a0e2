"""What the two Levenberg–Marquardt engines share: their inputs, outputs and constants.

:func:`~idexdask.analysis.fitting.fit_batch` prepares a :class:`WorkingSet` (the
fits that can be fitted, their data, bounds and start), full-batch
:class:`FitOutputs` and the :class:`StopCriteria`, and hands them to one engine
(:mod:`~idexdask.analysis.fitting.engine_xp` or
:mod:`~idexdask.analysis.fitting.engine_compiled`), which writes every fit's
result into the outputs at its batch row.  The damping constants below are the
engines' common decisions: both take the same iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from idexdask.analysis.fitting.bounds import Bounds
from idexdask.analysis.fitting.result import FitStatus

__all__ = [
    "LAMBDA_GN",
    "LAMBDA_MAX",
    "LAMBDA_MIN",
    "LAMBDA_START",
    "STALL_WINDOW",
    "FitOutputs",
    "StopCriteria",
    "WorkingSet",
]

#: Marquardt damping of the first step.
LAMBDA_START = 1e-3
#: Damping floor, also added to the unit diagonal so the damped system is never singular.
LAMBDA_MIN = 1e-12
#: Damping beyond this: no descent possible at double precision.
LAMBDA_MAX = 1e16
#: A step taken with no more damping than this is ~ Gauss-Newton.
LAMBDA_GN = 1e-2
#: Iterations over which a fit must make progress.
STALL_WINDOW = 10


@dataclass(frozen=True)
class StopCriteria:
    """When a fit stops (see :func:`~idexdask.analysis.fitting.fit_batch`).

    Attributes
    ----------
    max_iter : int
        Iteration limit.
    ftol : float
        Relative chi-square gain a Gauss–Newton step must still predict.
    gtol : float
        Scaled-gradient threshold.
    bound_rtol : float
        Relative distance to a bound reported as ``HIT_BOUND``.
    stall_tol : float
        Relative chi-square fall over :data:`STALL_WINDOW` iterations below which
        a fit has stalled.
    """

    max_iter: int
    ftol: float
    gtol: float
    bound_rtol: float
    stall_tol: float


@dataclass(frozen=True)
class WorkingSet:
    """The fits an engine iterates, with their data (axis 0: fits of the set).

    Attributes
    ----------
    rows : array of int
        Batch row of each fit (where its results go in :class:`FitOutputs`).
    x : array
        Times (n, n_points), µs; masked points hold a finite stand-in.
    y : array
        Data (n, n_points), DN; 0 at masked points.
    weights : array or None
        Residual weights (n, n_points), 1/DN, 0 at masked points; None for unit
        weights everywhere (the multiplications are skipped).
    bounds : Bounds
        Parameter bounds of each fit.
    theta : array
        Start, as internal (unbounded) parameters (n, n_params).
    chi_floor : array
        Chi-square of residuals at the data's rounding level (n,): a noiseless
        window has converged when chi-square reaches it.
    """

    rows: Any
    x: Any
    y: Any
    weights: Any
    bounds: Bounds
    theta: Any
    chi_floor: Any

    @property
    def size(self) -> int:
        """Number of fits in the set."""
        return int(self.rows.shape[0])

    def take(self, keep: Any) -> WorkingSet:
        """The fits indexed by ``keep`` (an integer array)."""
        return WorkingSet(
            rows=self.rows[keep],
            x=self.x[keep],
            y=self.y[keep],
            weights=None if self.weights is None else self.weights[keep],
            bounds=self.bounds.take(keep),
            theta=self.theta[keep],
            chi_floor=self.chi_floor[keep],
        )

    def slice(self, start: int, stop: int) -> WorkingSet:
        """The fits ``start:stop`` (views)."""
        return WorkingSet(
            rows=self.rows[start:stop],
            x=self.x[start:stop],
            y=self.y[start:stop],
            weights=None if self.weights is None else self.weights[start:stop],
            bounds=self.bounds.slice(start, stop),
            theta=self.theta[start:stop],
            chi_floor=self.chi_floor[start:stop],
        )


@dataclass(frozen=True)
class FitOutputs:
    """Full-batch result arrays the engines write into, at each fit's batch row.

    Attributes
    ----------
    params : array
        Parameters (n_fits, n_params), NaN until written.
    cov : array
        Covariance of the parameters, unscaled (n_fits, n_params, n_params).
    chisq : array
        Chi-square (n_fits,).
    nfev, niter : array of int64
        Model evaluations and iterations (n_fits,).
    status : array of int8
        :class:`~idexdask.analysis.fitting.FitStatus` (n_fits,),
        ``INVALID_INPUT`` until written.
    """

    params: Any
    cov: Any
    chisq: Any
    nfev: Any
    niter: Any
    status: Any

    @classmethod
    def empty(cls, xp: ModuleType, n_fits: int, n_params: int) -> FitOutputs:
        """Outputs of ``n_fits`` fits none of which has run (``INVALID_INPUT``)."""
        f64 = xp.float64
        return cls(
            params=xp.full((n_fits, n_params), math.nan, dtype=f64),
            cov=xp.full((n_fits, n_params, n_params), math.nan, dtype=f64),
            chisq=xp.full((n_fits,), math.nan, dtype=f64),
            nfev=xp.zeros((n_fits,), dtype=xp.int64),
            niter=xp.zeros((n_fits,), dtype=xp.int64),
            status=xp.full((n_fits,), int(FitStatus.INVALID_INPUT), dtype=xp.int8),
        )

    def store(
        self, rows: Any, params: Any, cov: Any, chisq: Any, nfev: Any, niter: Any, status: Any
    ) -> None:
        """Write the results of the fits at batch ``rows``."""
        self.params[rows] = params
        self.chisq[rows] = chisq
        self.cov[rows] = cov
        self.nfev[rows] = nfev
        self.niter[rows] = niter
        self.status[rows] = status
