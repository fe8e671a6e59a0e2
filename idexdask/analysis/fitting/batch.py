"""Fit a model to many windows at once: :func:`fit_batch` and its device front :func:`fit_batch_on`.

:func:`fit_batch` checks and cleans the batch (masked points, bad windows,
bounds), prepares the working set, runs one engine
(:mod:`~idexdask.analysis.fitting.engine_xp` or
:mod:`~idexdask.analysis.fitting.engine_compiled`) and turns its outputs into a
:class:`~idexdask.analysis.fitting.BatchFitResult` with statuses and standard
errors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from idexdask.analysis import xp as _xp
from idexdask.analysis.fitting.bounds import Bounds
from idexdask.analysis.fitting.compiled import select_kernel
from idexdask.analysis.fitting.engine_compiled import iterate_compiled
from idexdask.analysis.fitting.engine_xp import iterate_xp
from idexdask.analysis.fitting.iteration import FitOutputs, StopCriteria, WorkingSet
from idexdask.analysis.fitting.models import BatchModel
from idexdask.analysis.fitting.result import BatchFitResult, FitStatus
from idexdask.errors import AnalysisError

__all__ = ["FIT_DEVICES", "fit_batch", "fit_batch_on"]

log = logging.getLogger(__name__)

#: Where :func:`fit_batch_on` runs fits.
FIT_DEVICES = ("cpu", "gpu")
_CPU_BLOCK = 256  # fits per block on the CPU (temporaries stay in cache)


def fit_batch(
    x: Any,
    y: Any,
    model: BatchModel,
    p0: Any,
    *,
    lower: Any = None,
    upper: Any = None,
    weights: Any = None,
    sigma: Any = None,
    max_iter: int = 200,
    ftol: float = 1e-10,
    gtol: float = 1e-10,
    bound_rtol: float = 1e-6,
    stall_tol: float = 1e-6,
    block_size: int | None = None,
    engine: str = "auto",
) -> BatchFitResult:
    """Fit ``model`` to many windows at once by Levenberg–Marquardt.

    Minimises ``chisq = sum((w*(y - model(x, p)))**2)`` per window, as
    ``lmfit.Model.fit(y, x=x, weights=w)`` does, with bounded parameters mapped
    through lmfit's (MINUIT) transforms.  Points where ``x``, ``y`` or the weight
    is not finite, or the weight is 0, are left out (lmfit's ``nan_policy="omit"``).

    Parameters
    ----------
    x : array_like
        Times (n_fits, n_points) or (n_points,) shared by all fits, µs.
    y : array_like
        Data (n_fits, n_points), DN.
    model : BatchModel
        From :func:`batch_model`.
    p0 : array_like
        Initial parameters (n_fits, n_params), or (n_params,) for all; clipped
        into the bounds like lmfit does.
    lower, upper : array_like, optional
        Bounds broadcastable to (n_fits, n_params); ``-inf``/``inf`` for none.
        Default: the model's bounds.
    weights : array_like, optional
        Residual weights broadcastable to (n_fits, n_points), 1/DN.
    sigma : array_like, optional
        Data uncertainties, DN; ``weights = 1/sigma``.  Give at most one of the two.
    max_iter : int
        Iteration limit.
    ftol : float
        Convergence when the chi-square a Gauss–Newton step still predicts to
        gain is below ``ftol * chisq`` (parameters then lie within about
        ``sqrt(ftol*ndata)`` standard errors of the minimum).  The step planned
        is that step while the damping is at most ``LAMBDA_GN``; a fit about to
        stop unconverged with more damping (a strongly coupled fit converging
        linearly keeps it there) takes the test with the Gauss-Newton step.
    gtol : float
        Convergence when every scaled gradient component
        ``|J_j . r| / (|J_j| |r|)`` is below ``gtol``.
    bound_rtol : float
        A parameter closer than this (relative to ``upper - lower``, or to
        ``max(1, |bound|)`` for a one-sided bound) to a bound is reported as
        ``HIT_BOUND``.
    stall_tol : float
        A fit whose chi-square fell by less than ``stall_tol`` (relative) over
        the last 10 iterations without converging is stopped as
        ``MAX_ITERATIONS`` (typically an undetermined parameter creeping along a
        flat valley, e.g. ``gamma`` running off to infinity on a line that is
        Gaussian within the noise).
    block_size : int, optional
        Fits per block when evaluating the model and normal equations.  The
        arithmetic is memory-bound on a CPU, so blocks whose temporaries fit in
        cache beat one pass over the whole batch (about 1.5x for 2000 windows).
        Default: 256 on NumPy, the whole batch on CuPy.  Not used by the
        compiled engine.
    engine : {"auto", "compiled", "xp"}
        ``"xp"``: the vectorised loop, all fits advancing together, array code
        only (NumPy or CuPy, any model).  ``"auto"``: the same loop, but on
        NumPy the weighted residuals and Jacobian of a model with a compiled
        ``kernel`` (EMG + constant, the impact charge model) come from one
        compiled pass: the same iterations, results equal within rounding (libm's
        exp against NumPy's CPU-specific SIMD exp), ~2x faster.
        ``"compiled"``: the whole iteration compiled, one fit at a time, model,
        Jacobian and normal equations fused (NumPy and a ``kernel`` required;
        another ~2x).  Its normal equations are summed and solved in a
        different order than BLAS/LAPACK do, so results differ at rounding
        level: converged fits agree to ~1e-5 standard errors, but a fit that
        wanders (MAX_ITERATIONS, HIT_BOUND after a long creep) can end
        elsewhere -- as it does under a 1-ulp change of the data.
    Returns
    -------
    BatchFitResult
        Parameters, standard errors, chi-square and a :class:`FitStatus` per fit.

    Raises
    ------
    AnalysisError
        If shapes are inconsistent (a programming error, not a bad window), or
        ``engine="compiled"`` is asked for where no compiled kernel applies.
    """
    xp = _xp.get_namespace(x, y, p0, lower, upper, weights, sigma)
    block = _block_size(xp, block_size)
    batch = _prepare(xp, x, y, model, p0, lower, upper, weights, sigma)
    work = _working_set(xp, batch)
    outputs = FitOutputs.empty(xp, batch.n_fits, model.n_params)
    stop = StopCriteria(max_iter, ftol, gtol, bound_rtol, stall_tol)
    kernel = select_kernel(xp, model, engine)
    if engine == "compiled":
        iterate_compiled(kernel, work, outputs, stop)
    else:
        iterate_xp(xp, model, block, work, outputs, stop, kernel)
    return _result(xp, model, batch, outputs, bound_rtol)


@dataclass(frozen=True)
class _Batch:
    """The inputs of a batch fit, checked and cleaned (axis 0: all fits of the batch).

    Masked points (``x``, ``y`` or the weight not finite, or the weight 0) hold
    weight 0 and harmless finite values: ``x`` the mean of the window's valid
    times, ``y`` 0.
    """

    x: Any  #: times (n, m), µs
    y: Any  #: data (n, m), DN
    weights: Any  #: residual weights (n, m), 1/DN
    unit_weights: bool  #: no weights given and no point masked
    ndata: Any  #: valid points per fit (n,)
    bounds: Bounds
    p_start: Any  #: start clipped into the bounds, 0 for invalid fits (n, k)
    invalid: Any  #: fits that cannot be fitted (n,)

    @property
    def n_fits(self) -> int:
        """Number of fits in the batch."""
        return int(self.y.shape[0])


def _as_2d(xp: ModuleType, a: Any, shape: tuple[int, int], what: str) -> Any:
    a = xp.asarray(a, dtype=xp.float64)
    try:
        return xp.broadcast_to(a, shape)
    except ValueError as exc:
        raise AnalysisError(f"{what} of shape {a.shape} does not broadcast to {shape}") from exc


def _block_size(xp: ModuleType, block_size: int | None) -> int:
    """Fits per evaluation block: the given size, or the namespace's default."""
    if block_size is None:
        block_size = _CPU_BLOCK if xp.__name__ == "numpy" else 2**62
    if block_size < 1:
        raise AnalysisError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


def _prepare(
    xp: ModuleType,
    x: Any,
    y: Any,
    model: BatchModel,
    p0: Any,
    lower: Any,
    upper: Any,
    weights: Any,
    sigma: Any,
) -> _Batch:
    """Check shapes, mask points that cannot be used and find the windows that cannot be fitted."""
    f64 = xp.float64
    y = xp.asarray(y, dtype=f64)
    if y.ndim != 2:
        raise AnalysisError(f"y must be (n_fits, n_points), got shape {y.shape}")
    n, m = y.shape
    k = model.n_params
    x = _as_2d(xp, x, (n, m), "x")
    if weights is not None and sigma is not None:
        raise AnalysisError("give weights or sigma, not both")
    if sigma is not None:
        with _xp.errstate(xp, divide="ignore"):
            w = 1.0 / _as_2d(xp, sigma, (n, m), "sigma")
    elif weights is not None:
        w = _as_2d(xp, weights, (n, m), "weights")
    else:
        w = xp.ones((n, m), dtype=f64)
    p0 = _as_2d(xp, p0, (n, k), "p0")
    lo = _as_2d(xp, model.lower if lower is None else lower, (n, k), "lower")
    hi = _as_2d(xp, model.upper if upper is None else upper, (n, k), "upper")

    # masked points get weight 0 and harmless finite values
    valid = xp.isfinite(x) & xp.isfinite(y) & xp.isfinite(w) & (w != 0.0)
    ndata = xp.sum(valid, axis=1)
    safe_n = xp.maximum(ndata, 1)
    x_fill = xp.sum(xp.where(valid, x, 0.0), axis=1, keepdims=True) / safe_n[:, None]
    x = xp.where(valid, x, x_fill)
    y = xp.where(valid, y, 0.0)
    w = xp.where(valid, w, 0.0)
    y_max = xp.max(xp.where(valid, y, -math.inf), axis=1)
    y_min = xp.min(xp.where(valid, y, math.inf), axis=1)
    flat = ~(y_max > y_min)

    bad_bounds = xp.any(xp.isnan(lo) | xp.isnan(hi) | (lo >= hi), axis=1)
    bad_start = xp.any(~xp.isfinite(p0), axis=1)
    invalid = (ndata <= k) | flat | bad_bounds | bad_start
    bounds = Bounds.from_limits(xp, lo, hi)
    p_start = xp.where(bounds.has_lo, xp.maximum(p0, bounds.lo), p0)
    p_start = xp.where(bounds.has_hi, xp.minimum(p_start, bounds.hi), p_start)
    p_start = xp.where(invalid[:, None], 0.0, p_start)
    return _Batch(
        x=x,
        y=y,
        weights=w,
        unit_weights=weights is None and sigma is None and bool(xp.all(valid)),
        ndata=ndata,
        bounds=bounds,
        p_start=p_start,
        invalid=invalid,
    )


def _working_set(xp: ModuleType, batch: _Batch) -> WorkingSet:
    """The fits of ``batch`` that can be fitted, started at internal parameters.

    Where every fit can be (the usual batch), the batch's arrays are used as
    they are, not copied row by row.
    """
    rows = xp.nonzero(~batch.invalid)[0]
    if rows.shape[0] == batch.n_fits:
        xs, ys, ws, bounds, p_start = batch.x, batch.y, batch.weights, batch.bounds, batch.p_start
    else:
        xs, ys, ws = batch.x[rows], batch.y[rows], batch.weights[rows]
        bounds, p_start = batch.bounds.take(rows), batch.p_start[rows]
    return WorkingSet(
        rows=rows,
        x=xs,
        y=ys,
        weights=None if batch.unit_weights else ws,  # unit weights: skip the multiplications
        bounds=bounds,
        theta=bounds.to_internal(xp, p_start),
        chi_floor=1e-26 * xp.sum((ws * ys) ** 2, axis=1),
    )


def _result(
    xp: ModuleType, model: BatchModel, batch: _Batch, outputs: FitOutputs, bound_rtol: float
) -> BatchFitResult:
    """Statuses that depend on the final parameters, and the standard errors."""
    status = _final_status(xp, outputs, batch.bounds, bound_rtol)
    no_params = (status == int(FitStatus.INVALID_INPUT)) | (
        status == int(FitStatus.FAILED_NONFINITE)
    )
    params = xp.where(no_params[:, None], math.nan, outputs.params)
    chisq = xp.where(no_params, math.nan, outputs.chisq)
    nfree = batch.ndata - model.n_params
    with _xp.errstate(xp, invalid="ignore", divide="ignore"):
        redchi = xp.where(nfree > 0, chisq / xp.maximum(nfree, 1), math.nan)
        # lmfit's scale_covar=True: the covariance scaled by the reduced chi-square
        var = xp.diagonal(outputs.cov, axis1=1, axis2=2) * redchi[:, None]
        stderr = xp.where(var >= 0.0, xp.sqrt(xp.abs(var)), math.nan)
    stderr = xp.where(no_params[:, None], math.nan, stderr)
    if log.isEnabledFor(logging.DEBUG):
        counts = {s.name: int(xp.sum(status == int(s))) for s in FitStatus}
        log.debug("fit_batch %s: %d fits, %s", model.name, batch.n_fits, counts)
    return BatchFitResult(
        param_names=model.param_names,
        params=params,
        stderr=stderr,
        chisq=chisq,
        redchi=redchi,
        ndata=batch.ndata,
        nfev=outputs.nfev,
        niter=outputs.niter,
        status=status,
    )


def _final_status(xp: ModuleType, outputs: FitOutputs, bounds: Bounds, bound_rtol: float) -> Any:
    """The engines' statuses, with ``FAILED_NONFINITE`` and ``HIT_BOUND`` from the results."""
    status = outputs.status
    fitted = status != int(FitStatus.INVALID_INPUT)
    failed = fitted & ~(xp.isfinite(outputs.chisq) & xp.all(xp.isfinite(outputs.params), axis=1))
    hit = fitted & ~failed & xp.any(bounds.at_bound(xp, outputs.params, bound_rtol), axis=1)
    status = xp.where(failed, int(FitStatus.FAILED_NONFINITE), status)
    return xp.where(hit, int(FitStatus.HIT_BOUND), status).astype(xp.int8)




def fit_batch_on(
    device: str,
    x: Any,
    y: Any,
    model: BatchModel,
    p0: Any,
    *,
    engine: str = "auto",
    **options: Any,
) -> BatchFitResult:
    """:func:`fit_batch` of NumPy inputs on the configured device, results in NumPy.

    This is how the analysis runs its fits (config ``analysis.fitting``; ``idexdask
    submit --gpu`` selects ``device="gpu"``): on ``"cpu"`` the arrays stay where
    they are and ``engine`` applies; on ``"gpu"`` every array argument is copied
    to the current CUDA device with CuPy, the fits run through the array code
    (the compiled engines are CPU-only, so ``engine`` is not used there), and
    the results are copied back, so callers never see a device array.

    Parameters
    ----------
    device : {"cpu", "gpu"}
        Where the fits run.
    x, y, model, p0, engine, **options
        As for :func:`fit_batch` (``lower``, ``upper``, ``weights``, ``sigma``,
        ``max_iter``, ...).

    Returns
    -------
    BatchFitResult
        With NumPy arrays.

    Raises
    ------
    AnalysisError
        On an unknown device, or ``"gpu"`` without an importable CuPy.
    """
    if device == "cpu":
        return fit_batch(x, y, model, p0, engine=engine, **options)
    if device != "gpu":
        raise AnalysisError(f"fit device must be one of {FIT_DEVICES}, got {device!r}")
    try:
        import cupy  # noqa: PLC0415  (optional GPU dependency)
    except ImportError as exc:
        raise AnalysisError(
            "analysis.fitting.device 'gpu' needs CuPy (pip install 'idexdask[gpu]')"
        ) from exc

    def to_device(a: Any) -> Any:
        return cupy.asarray(a) if isinstance(a, np.ndarray) else a

    result = fit_batch(
        to_device(np.asarray(x)),
        to_device(np.asarray(y)),
        model,
        to_device(np.asarray(p0)),
        engine="xp",
        **{k: to_device(v) for k, v in options.items()},
    )
    return BatchFitResult(
        param_names=result.param_names,
        **{
            name: _xp.to_numpy(getattr(result, name))
            for name in ("params", "stderr", "chisq", "redchi", "ndata", "nfev", "niter", "status")
        },
    )
