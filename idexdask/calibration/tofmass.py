"""Time-of-flight to mass calibration: a polynomial in the square root of mass.

Model
-----
An ion of mass-to-charge ``m`` (u) arrives at

    t(m) = t0 + sum_{k=1..K} a_k * s**k,   s = sqrt(m),

with ``t`` in µs, ``t0`` the impact (zero-mass) time in µs and ``a_k`` in
µs/u**(k/2).  ``a_1`` is the *stretch* of the ideal drift-tube law
``t = t0 + a*sqrt(m)``; the higher terms absorb the non-ideal ion optics.

Coefficients are stored low order first, ``[t0, a_1, ..., a_K]``.  Arrays of
coefficients for many events are ``(n_events, K+1)``; rows may be padded with
zeros to a common order, and a row of NaN marks an uncalibrated event.

The mass range and the rule outside it
--------------------------------------
A calibration is valid over ``mass_range = (m_min, m_max)`` (default 0.5 to
300 u), on which ``dt/ds`` is strictly positive (checked when fitting); how
times map to masses outside it, and the per-sample :class:`MassFlag`, are those
of :func:`~idexdask.calibration.mass_axes.mass_axis` (see
:mod:`idexdask.calibration.mass_axes`), which :meth:`TOFMassCal.mass` uses.

Examples
--------
>>> import numpy as np
>>> cal = TOFMassCal.fit([1.46, 7.0, 11.0], [1.007, 22.99, 55.93], order=1)
>>> bool(abs(cal.time(cal.mass(7.0)) - 7.0) < 1e-12)
True
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from idexdask._logging import get_logger
from idexdask.calibration.mass_axes import (
    DEFAULT_MASS_RANGE,
    check_mass_range,
    mass_axis,
    time_axis,
)
from idexdask.calibration.settings import load_calibration_settings
from idexdask.errors import CalibrationError

__all__ = [
    "STATUS_CODES",
    "CalibrationStatus",
    "TOFMassCal",
    "adaptive_order",
    "min_slope",
    "slope_grid",
]

_log = get_logger(__name__)

#: Default minimum number of lines for orders 1, 2, 3 (2 -> K=1, 3-5 -> K=2, >=6 -> K=3).
DEFAULT_MIN_LINES_FOR_ORDER: tuple[int, ...] = (2, 3, 6)
_N_SLOPE_GRID = 512  # dense s-grid of the monotonicity check


class CalibrationStatus(enum.StrEnum):
    """Outcome of :meth:`TOFMassCal.fit`."""

    CALIBRATED = "calibrated"  #: fitted at the requested (or adaptive) order
    REDUCED_ORDER = "reduced_order"  #: fitted at a lower order (non-monotonic or too few lines)
    TOO_FEW_LINES = "too_few_lines"  #: fewer than two distinct lines
    NON_MONOTONIC = "non_monotonic"  #: dt/ds not > 0 over the mass range even at order 1
    FAILED = "failed"  #: numerically singular system

    @property
    def usable(self) -> bool:
        """True when the calibration defines a mass axis."""
        return self in (CalibrationStatus.CALIBRATED, CalibrationStatus.REDUCED_ORDER)


def min_slope(coefficients: ArrayLike, s_lo: float, s_hi: float) -> float:
    """Smallest ``dt/ds`` over ``[s_lo, s_hi]``, µs/sqrt(u).

    Evaluated on a dense grid *and* exactly at the interval ends and at the
    real critical points of the derivative (roots of ``d2t/ds2``); if the
    derivative itself has a real root inside the interval the result is <= 0.

    Parameters
    ----------
    coefficients : array_like, shape (K+1,)
        ``[t0, a_1, ..., a_K]``.
    s_lo, s_hi : float
        Interval in sqrt(u).

    Returns
    -------
    float
        Minimum slope, µs/sqrt(u) (``-inf`` for non-finite coefficients).
    """
    c = np.asarray(coefficients, dtype=float).ravel()
    if not np.all(np.isfinite(c)):
        return -math.inf
    d = np.arange(1, c.size) * c[1:]  # dt/ds, low order first
    # Drop leading terms negligible over the interval (avoids ill-posed root finding).
    scale = np.abs(d) * max(abs(s_hi), 1.0) ** np.arange(d.size)
    while d.size > 1 and scale[d.size - 1] <= 1e-13 * scale.max():
        d = d[:-1]
    d = np.trim_zeros(d, "b")
    if d.size == 0:
        return 0.0
    pts = [np.linspace(s_lo, s_hi, _N_SLOPE_GRID)]
    if d.size >= 3:  # derivative of the slope has real roots -> slope extrema
        dd = np.arange(1, d.size) * d[1:]
        roots = _roots(dd)
        real = roots[np.abs(roots.imag) <= 1e-12 * (1 + np.abs(roots.real))].real
        pts.append(real[(real >= s_lo) & (real <= s_hi)])
    s = np.concatenate(pts)
    slope = np.polynomial.polynomial.polyval(s, d)
    smin = float(slope.min())
    if d.size >= 2 and smin > 0:
        roots = _roots(d)
        real = roots[np.abs(roots.imag) <= 1e-12 * (1 + np.abs(roots.real))].real
        if np.any((real >= s_lo) & (real <= s_hi)):
            return 0.0
    return smin


def _roots(poly_low_first: NDArray) -> NDArray:
    """Complex roots of a low-order-first polynomial (empty if not computable)."""
    try:
        with np.errstate(all="ignore"):
            roots = np.roots(poly_low_first[::-1])
    except np.linalg.LinAlgError:
        return np.empty(0, dtype=complex)
    return roots[np.isfinite(roots)]


def adaptive_order(
    n_lines: int,
    max_order: int = 3,
    min_lines_for_order: Sequence[int] = DEFAULT_MIN_LINES_FOR_ORDER,
) -> int:
    """Polynomial order for ``n_lines`` distinct lines (0 when fewer than two).

    Parameters
    ----------
    n_lines : int
        Number of distinct calibration lines.
    max_order : int
        Cap (from ``calibration.yaml`` ``fit.max_order``).
    min_lines_for_order : sequence of int
        ``min_lines_for_order[k-1]`` lines are needed for order ``k``.

    Returns
    -------
    int
        Order K, never above ``n_lines - 1``.
    """
    order = 0
    for k, need in enumerate(min_lines_for_order, start=1):
        if n_lines >= need:
            order = k
    return int(max(0, min(order, max_order, n_lines - 1)))


# --------------------------------------------------------------------------- the model


@dataclass(eq=False)
class TOFMassCal:
    """A time-of-flight to mass calibration ``t = t0 + sum a_k sqrt(m)**k``.

    Build with :meth:`fit` (from assigned lines) or :meth:`from_dict` (from a
    product).  A calibration whose :attr:`status` is not usable (too few lines,
    non-monotonic, failed) holds NaN coefficients and refuses to give masses.

    Attributes
    ----------
    coefficients : numpy.ndarray, shape (K+1,)
        ``[t0, a_1, ..., a_K]``: µs, µs/sqrt(u), µs/u, µs/u**1.5.
    status : CalibrationStatus
    mass_range : (float, float)
        Range (u) over which dt/ds > 0 was verified.
    covariance : numpy.ndarray or None, shape (K+1, K+1)
        Coefficient covariance (µs² etc.); NaN when not estimable.
    requested_order : int
        Order asked for (or chosen adaptively) before any reduction.
    line_times_us, line_masses_u : numpy.ndarray
        Lines used by the fit (empty when built from a dict).
    residual_us : numpy.ndarray
        Observed minus model time per line, µs.
    residual_u : numpy.ndarray
        Mass from the observed time minus the line mass, u.
    residual_ppm : numpy.ndarray
        ``1e6 * residual_u / line_masses_u``, ppm.
    """

    coefficients: NDArray
    status: CalibrationStatus = CalibrationStatus.CALIBRATED
    mass_range: tuple[float, float] = DEFAULT_MASS_RANGE
    covariance: NDArray | None = None
    requested_order: int = 0
    line_times_us: NDArray = field(default_factory=lambda: np.empty(0))
    line_masses_u: NDArray = field(default_factory=lambda: np.empty(0))
    residual_us: NDArray = field(default_factory=lambda: np.empty(0))
    residual_u: NDArray = field(default_factory=lambda: np.empty(0))
    residual_ppm: NDArray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        self.coefficients = np.asarray(self.coefficients, dtype=float).ravel()
        if self.coefficients.size < 2:
            raise CalibrationError("a calibration needs at least [t0, a_1]")
        self.mass_range = check_mass_range(self.mass_range)
        self.status = CalibrationStatus(self.status)
        if not self.requested_order:
            self.requested_order = self.order

    # ---------------------------------------------------------------- properties
    @property
    def order(self) -> int:
        """Polynomial order K."""
        return int(self.coefficients.size - 1)

    @property
    def t0(self) -> float:
        """Zero-mass (impact) time, µs."""
        return float(self.coefficients[0])

    @property
    def stretch(self) -> float:
        """Linear coefficient ``a_1``, µs/sqrt(u)."""
        return float(self.coefficients[1])

    @property
    def usable(self) -> bool:
        """True when the calibration defines a mass axis."""
        return self.status.usable and bool(np.all(np.isfinite(self.coefficients)))

    @property
    def rms_residual_u(self) -> float:
        """RMS of the per-line mass residuals, u (NaN without lines)."""
        r = self.residual_u
        return float(np.sqrt(np.mean(r * r))) if r.size else math.nan

    def _require_usable(self) -> None:
        if not self.usable:
            raise CalibrationError(f"calibration is not usable (status {self.status.value})")

    # ---------------------------------------------------------------- evaluation
    def time(self, m: ArrayLike) -> NDArray | float:
        """Arrival time of mass ``m`` (u), µs (see :func:`time_axis`)."""
        self._require_usable()
        out = time_axis(self.coefficients, m, self.mass_range)
        return float(out) if np.ndim(m) == 0 else out

    def mass(
        self, t: ArrayLike, *, return_flags: bool = False
    ) -> NDArray | float | tuple[Any, Any]:
        """Mass (u) at times ``t`` (µs), the exact inverse of :meth:`time`.

        Parameters
        ----------
        t : array_like
            Times, µs, any shape.
        return_flags : bool
            Also return the per-sample :class:`MassFlag` (int8 array).

        Returns
        -------
        mass : float or numpy.ndarray
            Mass, u, in ``[0, m_max]``; 0 before ``t0``, NaN for non-finite ``t``.
        flags : numpy.ndarray, optional

        Raises
        ------
        CalibrationError
            If the calibration is not usable.
        """
        self._require_usable()
        tt = np.asarray(t, dtype=float)
        m, flags = mass_axis(self.coefficients, tt.ravel(), self.mass_range, return_flags=True)
        m = m.reshape(tt.shape)
        flags = flags.reshape(tt.shape)
        if tt.ndim == 0:
            m, flags = float(m), int(flags)
        return (m, flags) if return_flags else m

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        times_us: ArrayLike,
        masses_u: ArrayLike,
        weights: ArrayLike | None = None,
        *,
        order: int | None = None,
        mass_range: Sequence[float] = DEFAULT_MASS_RANGE,
        max_order: int | None = None,
        min_lines_for_order: Sequence[int] | None = None,
    ) -> TOFMassCal:
        """Weighted least-squares calibration from assigned lines.

        The design matrix is a Vandermonde matrix in the centred, scaled variable
        ``u = (s - s_c)/s_w`` solved by QR (well conditioned for any order), then
        converted exactly to coefficients in ``s``.  The order is reduced while
        ``dt/ds`` is not strictly positive over ``mass_range`` (or the linear
        bridge below ``m_min`` would not rise from ``t0``).

        Parameters
        ----------
        times_us : array_like
            Measured line centres, µs.
        masses_u : array_like
            Their ion masses, u; must lie inside ``mass_range``.
        weights : array_like, optional
            Inverse variances of the times, 1/µs².  Given, the covariance is
            absolute; omitted, unit weights are used and the covariance is scaled
            by the residual variance (NaN with no degree of freedom left).
        order : int, optional
            Polynomial order K; default chosen from the number of distinct lines
            (2 -> 1, 3-5 -> 2, >= 6 -> 3, see ``calibration.yaml`` ``fit``).
        mass_range : (float, float)
            Range (u) over which the calibration must be monotonic.
        max_order : int, optional
            Cap on K; default ``fit.max_order`` of ``calibration.yaml``.
        min_lines_for_order : sequence of int, optional
            Default ``fit.min_lines_for_order`` of ``calibration.yaml``.

        Returns
        -------
        TOFMassCal
            With :attr:`status`; check :attr:`usable` before use.

        Raises
        ------
        CalibrationError
            On malformed input: mismatched shapes, non-finite values, masses
            outside ``mass_range``, non-positive weights.
        """
        m_min, m_max = check_mass_range(mass_range)
        t = np.asarray(times_us, dtype=float).ravel()
        m = np.asarray(masses_u, dtype=float).ravel()
        if t.shape != m.shape:
            raise CalibrationError(f"{t.size} times but {m.size} masses")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(m))):
            raise CalibrationError("line times and masses must be finite")
        if np.any((m < m_min) | (m > m_max)):
            raise CalibrationError(f"line masses must lie within the mass range {mass_range}")
        absolute = weights is not None
        w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=float).ravel()
        if w.shape != t.shape or not np.all(np.isfinite(w) & (w > 0)):
            raise CalibrationError("weights must be finite, > 0, one per line")
        if max_order is None or min_lines_for_order is None:
            fit_cfg = load_calibration_settings().fit
            max_order = fit_cfg.max_order if max_order is None else max_order
            if min_lines_for_order is None:
                min_lines_for_order = fit_cfg.min_lines_for_order

        n_distinct = int(np.unique(m).size)
        auto = adaptive_order(n_distinct, int(max_order), min_lines_for_order)
        requested = auto if order is None else int(order)
        if requested < 0:
            raise CalibrationError(f"order must be >= 1, got {order}")
        common = dict(mass_range=(m_min, m_max), line_times_us=t, line_masses_u=m)
        if n_distinct < 2 or requested < 1:
            return cls._unusable(CalibrationStatus.TOO_FEW_LINES, requested, **common)
        k_start = min(requested, n_distinct - 1)
        s = np.sqrt(m)
        s_min, s_max = math.sqrt(m_min), math.sqrt(m_max)
        singular = False
        for k in range(k_start, 0, -1):
            solved = _wls(s, t, w, k, absolute)
            if solved is None:
                singular = True
                continue
            coef, cov = solved
            bridge_rise = float(np.polynomial.polynomial.polyval(s_min, coef)) - coef[0]
            if min_slope(coef, s_min, s_max) > 0 and bridge_rise > 0:
                status = (
                    CalibrationStatus.CALIBRATED
                    if k == requested
                    else CalibrationStatus.REDUCED_ORDER
                )
                if k != requested:
                    _log.debug("calibration order reduced from %d to %d", requested, k)
                cal = cls(coef, status, (m_min, m_max), cov, requested, t, m)
                cal.fill_residuals()
                return cal
            _log.debug("order %d calibration is not monotonic over %s u", k, mass_range)
        status = CalibrationStatus.FAILED if singular else CalibrationStatus.NON_MONOTONIC
        return cls._unusable(status, requested, **common)

    @classmethod
    def _unusable(
        cls, status: CalibrationStatus, requested: int, **kwargs: Any
    ) -> TOFMassCal:
        k = max(int(requested), 1)
        return cls(np.full(k + 1, np.nan), status, requested_order=k, **kwargs)

    def fill_residuals(self) -> None:
        """Set the ``residual_*`` attributes from the fitted lines' times and masses."""
        t, m = self.line_times_us, self.line_masses_u
        model_t = np.polynomial.polynomial.polyval(np.sqrt(m), self.coefficients)
        self.residual_us = t - model_t
        self.residual_u = np.asarray(self.mass(t)) - m
        self.residual_ppm = 1e6 * self.residual_u / m

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation for products (JSON/attrs friendly).

        Returns
        -------
        dict
            ``coefficients`` (list, ``[t0, a_1..a_K]``), ``order``, ``t0_us``,
            ``status``, ``mass_range_u`` and ``covariance`` (nested list or None).
        """
        return {
            "coefficients": [float(v) for v in self.coefficients],
            "order": self.order,
            "t0_us": self.t0,
            "status": self.status.value,
            "mass_range_u": [float(v) for v in self.mass_range],
            "covariance": None if self.covariance is None else self.covariance.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TOFMassCal:
        """Rebuild a calibration stored with :meth:`to_dict`.

        Raises
        ------
        CalibrationError
            If keys are missing or inconsistent (order vs coefficients, t0).
        """
        try:
            coef = np.asarray(data["coefficients"], dtype=float)
            status = CalibrationStatus(data["status"])
            order = int(data.get("order", coef.size - 1))
            mass_range = tuple(data.get("mass_range_u", DEFAULT_MASS_RANGE))
            cov = data.get("covariance")
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"not a stored calibration: {exc}") from exc
        if coef.ndim != 1 or order != coef.size - 1:
            raise CalibrationError(f"order {order} does not match {coef.size} coefficients")
        t0 = data.get("t0_us")
        if t0 is not None and status.usable and not np.isclose(float(t0), coef[0]):
            raise CalibrationError("t0_us does not match coefficients[0]")
        cov_arr = None if cov is None else np.asarray(cov, dtype=float)
        return cls(coef, status, mass_range, cov_arr, order)  # type: ignore[arg-type]


def _wls(
    s: NDArray, t: NDArray, w: NDArray, k: int, absolute: bool
) -> tuple[NDArray, NDArray] | None:
    """Weighted LS of order k in centred/scaled s; coefficients and covariance in s."""
    centre = float(np.average(s, weights=w))
    scale = float(np.max(np.abs(s - centre))) or 1.0
    u = (s - centre) / scale
    vander = np.vander(u, k + 1, increasing=True)
    sw = np.sqrt(w)
    q, r = np.linalg.qr(vander * sw[:, None])
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * diag.max():
        return None
    r_inv = np.linalg.inv(r)  # (K+1)x(K+1) upper triangular: tiny, well conditioned
    beta = r_inv @ (q.T @ (t * sw))
    cov_u = r_inv @ np.ascontiguousarray(r_inv.T)
    dof = t.size - (k + 1)
    if not absolute:
        if dof > 0:
            resid = (t - vander @ beta) * sw
            cov_u = cov_u * float(resid @ resid) / dof
        else:
            cov_u = np.full_like(cov_u, np.nan)
    # t = sum_j beta_j ((s - c)/h)^j = sum_k s^k sum_{j>=k} beta_j C(j,k) (-c)^(j-k) h^-j
    transform = np.zeros((k + 1, k + 1))
    for j in range(k + 1):
        for i in range(j + 1):
            transform[i, j] = math.comb(j, i) * (-centre) ** (j - i) / scale**j
    coef = transform @ beta
    cov = transform @ cov_u @ transform.T
    return coef, cov


#: Codes of :class:`CalibrationStatus` returned by the compiled
#: :func:`idexdask.calibration.polynomial.fit_event`, in this order.
STATUS_CODES: tuple[CalibrationStatus, ...] = (
    CalibrationStatus.CALIBRATED,
    CalibrationStatus.REDUCED_ORDER,
    CalibrationStatus.TOO_FEW_LINES,
    CalibrationStatus.NON_MONOTONIC,
    CalibrationStatus.FAILED,
)


def slope_grid(mass_range: Sequence[float]) -> NDArray:
    """The dense s-grid of :func:`min_slope` over ``mass_range`` (u), sqrt(u)."""
    m_min, m_max = check_mass_range(mass_range)
    return np.linspace(math.sqrt(m_min), math.sqrt(m_max), _N_SLOPE_GRID)
