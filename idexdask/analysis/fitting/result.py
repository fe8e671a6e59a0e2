"""What a batch fit returns: a status per fit and the :class:`BatchFitResult` arrays."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["BatchFitResult", "FitStatus"]


class FitStatus(IntEnum):
    """Outcome of one fit in a batch."""

    #: The Gauss–Newton decrement (predicted chi-square gain) fell below ``ftol``.
    CONVERGED = 0
    #: ``max_iter`` iterations ran out, or the fit stalled (chi-square no longer
    #: falling, e.g. an undetermined parameter drifting), before convergence.
    MAX_ITERATIONS = 1
    #: The fit ended with a parameter on one of its bounds.
    HIT_BOUND = 2
    #: Model or chi-square became non-finite and no finite step could be found.
    FAILED_NONFINITE = 3
    #: The window cannot be fitted: too few finite points, flat data, bad start or bounds.
    INVALID_INPUT = 4


@dataclass
class BatchFitResult:
    """Results of :func:`~idexdask.analysis.fitting.fit_batch`, the fits along axis 0.

    Arrays live in the namespace of the inputs (NumPy or CuPy).

    Attributes
    ----------
    param_names : tuple of str
        Column names of ``params`` and ``stderr``.
    params : array
        Best-fit parameters (n_fits, n_params); NaN where ``status`` is
        ``INVALID_INPUT`` or ``FAILED_NONFINITE``.
    stderr : array
        1-sigma uncertainties (n_fits, n_params), from the covariance scaled by
        the reduced chi-square like lmfit; NaN where the covariance is singular.
    chisq : array
        Chi-square ``sum((w*(y - f))**2)`` (n_fits,), DN² unweighted.
    redchi : array
        ``chisq / (ndata - n_params)`` (n_fits,).
    ndata : array
        Number of finite, non-zero-weight points per fit (n_fits,).
    nfev : array
        Model evaluations per fit, Jacobian evaluations included (n_fits,).
    niter : array
        Levenberg–Marquardt iterations per fit (n_fits,).
    status : array
        :class:`FitStatus` values (n_fits,), int8.
    """

    param_names: tuple[str, ...]
    params: Any
    stderr: Any
    chisq: Any
    redchi: Any
    ndata: Any
    nfev: Any
    niter: Any
    status: Any

    def __getitem__(self, name: str) -> Any:
        """Column of ``params`` for parameter ``name``."""
        return self.params[:, self.param_names.index(name)]

    @property
    def success(self) -> Any:
        """Boolean mask of fits with status ``CONVERGED``."""
        return self.status == FitStatus.CONVERGED

