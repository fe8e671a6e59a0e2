"""A bin-integrated Gaussian fitted to histogram counts with Poisson weights.

The model of bin ``[a, b)`` is ``amplitude * (Phi((b - mean) / sigma) -
Phi((a - mean) / sigma))``, the Gaussian integrated over the bin:
``amplitude`` is the area in samples, and for a rounding ADC ``sigma`` is the
analogue noise before quantisation.  It is fitted with
:func:`scipy.optimize.curve_fit` with Poisson weights ``1 / model`` iterated to
convergence (the fixed point is the Poisson maximum-likelihood estimate).
Uncertainties are the square roots of the covariance diagonal
(``absolute_sigma=True``); ``chi2`` is the Poisson likelihood-ratio
(Baker-Cousins) chi-square ``2 * sum(model - n + n * ln(n / model))`` over the
fitted bins whose expected count is at least 1.  Used per event by
:func:`idexdask.analysis.noise.noise_diagnostics`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special

from idexdask._logging import get_logger

__all__ = ["GaussianFit", "fit_gaussian_histogram"]

_log = get_logger(__name__)


@dataclass(frozen=True)
class GaussianFit:
    """Result of :func:`fit_gaussian_histogram` (units of the histogram's axis).

    Attributes
    ----------
    mean, mean_err : float
        Centre and its 1-sigma uncertainty (DN or V).
    sigma, sigma_err : float
        Standard deviation and its uncertainty (DN or V).
    amplitude, amplitude_err : float
        Area (number of samples) and its uncertainty.
    chi2 : float
        Poisson likelihood-ratio (Baker-Cousins) chi-square over the fitted bins
        expecting at least one count.
    ndf : int
        Bins in ``chi2`` - 3.
    model : numpy.ndarray
        Expected counts of every bin of the input (NaN where not fitted).
    ok : bool
        The fit converged with finite, positive-definite covariance.
    """

    mean: float
    mean_err: float
    sigma: float
    sigma_err: float
    amplitude: float
    amplitude_err: float
    chi2: float
    ndf: int
    model: np.ndarray
    ok: bool

    @property
    def reduced_chi2(self) -> float:
        """``chi2 / ndf`` (NaN when ``ndf < 1``)."""
        return self.chi2 / self.ndf if self.ndf > 0 else math.nan


    @classmethod
    def failed(cls, nbins: int) -> GaussianFit:
        """The result of a fit that could not be made: NaN values, ``ok=False``."""
        nan = math.nan
        return cls(nan, nan, nan, nan, nan, nan, nan, 0, np.full(nbins, nan), False)

def _binned_gauss(lower: np.ndarray, upper: np.ndarray):
    sqrt2 = math.sqrt(2.0)

    def model(_x: np.ndarray, mean: float, sigma: float, amplitude: float) -> np.ndarray:
        zu = (upper - mean) / (sqrt2 * sigma)
        zl = (lower - mean) / (sqrt2 * sigma)
        # 0.5 * (erf(zu) - erf(zl)), computed on the side with better precision
        prob = np.where(
            zl > 0,
            0.5 * (scipy.special.erfc(zl) - scipy.special.erfc(zu)),
            0.5 * (scipy.special.erfc(-zu) - scipy.special.erfc(-zl)),
        )
        return amplitude * prob

    return model



def fit_gaussian_histogram(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    p0: tuple[float, float, float] | None = None,
    fit_mask: np.ndarray | None = None,
    max_iter: int = 8,
) -> GaussianFit:
    """Fit a bin-integrated Gaussian to histogram counts with Poisson weights.

    Parameters
    ----------
    counts : numpy.ndarray, (n_bins,)
        Samples per bin.
    lower, upper : numpy.ndarray, (n_bins,)
        Bin edges (DN or V).
    p0 : (mean, sigma, amplitude), optional
        Start values; default the histogram's moments and total.
    fit_mask : numpy.ndarray of bool, optional
        Bins to fit (default all).
    max_iter : int
        Most re-weighting passes (weights ``1 / model``).

    Returns
    -------
    GaussianFit
        NaN values and ``ok=False`` when the histogram cannot constrain a Gaussian
        (fewer than 2 non-empty or 4 fitted bins, or the fit fails); never raises.
    """
    counts = np.asarray(counts, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    nb = counts.size
    use = np.ones(nb, dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    use &= np.isfinite(counts)
    c, lo, hi = counts[use], lower[use], upper[use]
    if c.size < 4 or np.count_nonzero(c) < 2 or c.sum() <= 0:
        return GaussianFit.failed(nb)
    centres = 0.5 * (lo + hi)
    total = float(c.sum())
    if p0 is None:
        m0 = float(np.sum(c * centres) / total)
        s0 = float(np.sqrt(max(np.sum(c * (centres - m0) ** 2) / total, 1e-12)))
        p0 = (m0, s0, total)
    m0, s0, a0 = (float(v) for v in p0)
    width = float(np.min(hi - lo))
    if not (math.isfinite(s0) and s0 > 0):
        s0 = width
    model = _binned_gauss(lo, hi)
    params = np.array([m0, s0, max(a0, 1.0)])
    weights = np.sqrt(np.maximum(c, 1.0))
    cov = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(max_iter):
                new, cov = scipy.optimize.curve_fit(
                    model, centres, c, p0=params, sigma=weights, absolute_sigma=True, method="lm"
                )
                new[1] = abs(new[1])  # the model is even in sigma
                mu = model(centres, *new)
                weights = np.sqrt(np.maximum(mu, 1e-3))
                converged = np.all(np.abs(new - params) <= 1e-5 * (np.abs(params) + width))
                params = new
                if converged:
                    break
            # covariance at the final Poisson weights
            params, cov = scipy.optimize.curve_fit(
                model, centres, c, p0=params, sigma=weights, absolute_sigma=True, method="lm"
            )
            params[1] = abs(params[1])
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        _log.debug("Gaussian histogram fit failed: %s", exc)
        return GaussianFit.failed(nb)
    if (
        cov is None
        or not np.all(np.isfinite(cov))
        or np.any(np.diag(cov) < 0)
        or not (np.isfinite(params).all() and params[1] > 0 and params[2] > 0)
    ):
        return GaussianFit.failed(nb)
    mu = model(centres, *params)
    gof = mu >= 1.0  # goodness of fit where the chi-square asymptotics hold
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(c > 0, c * np.log(c / np.maximum(mu, 1e-300)), 0.0)
        chi2 = float(2.0 * np.sum((mu - c + log_term)[gof]))
    full = np.full(nb, np.nan)
    full[use] = mu
    err = np.sqrt(np.diag(cov))
    return GaussianFit(
        mean=float(params[0]),
        mean_err=float(err[0]),
        sigma=float(params[1]),
        sigma_err=float(err[1]),
        amplitude=float(params[2]),
        amplitude_err=float(err[2]),
        chi2=chi2,
        ndf=int(np.count_nonzero(gof) - 3),
        model=full,
        ok=True,
    )

