"""Mass and time axes of calibration polynomials, for many events at once.

Model
-----
An ion of mass-to-charge ``m`` (u) arrives at

    t(m) = t0 + sum_{k=1..K} a_k * s**k,   s = sqrt(m),

with ``t`` in µs, ``t0`` the impact (zero-mass) time in µs and ``a_k`` in
µs/u**(k/2) (:class:`~idexdask.calibration.tofmass.TOFMassCal` fits them).
Coefficients are stored low order first, ``[t0, a_1, ..., a_K]``.  Arrays of
coefficients for many events are ``(n_events, K+1)``; rows may be padded with
zeros to a common order, and a row of NaN marks an uncalibrated event.

Valid domain and the rule outside it
------------------------------------
A calibration is valid over ``mass_range = (m_min, m_max)`` (default 0.5 to
300 u), on which ``dt/ds`` is strictly positive (checked when fitting).  Between
``s = 0`` and ``s_min = sqrt(m_min)`` the mapping is *bridged* linearly in ``s``
from ``t0`` to ``t(m_min)``, so that :func:`time_axis` and :func:`mass_axis` stay
continuous, strictly monotonic and exact inverses of each other on
``[0, m_max]``.  Then

* ``t < t0``  (before the impact): mass **0**, flag :attr:`MassFlag.BEFORE_T0`.
  Zero rather than NaN keeps a mass axis non-decreasing and usable with
  ``numpy.interp``; the flag says which samples carry no mass information.
* ``t0 <= t < t(m_min)``: bridge value, flag :attr:`MassFlag.BELOW_RANGE`.
* ``t > t(m_max)``: clipped to ``m_max``, flag :attr:`MassFlag.ABOVE_RANGE`.
* ``t`` not finite, or an uncalibrated event: NaN, flag :attr:`MassFlag.INVALID`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from idexdask._logging import get_logger
from idexdask.errors import CalibrationError

__all__ = ["DEFAULT_MASS_RANGE", "LineMasses", "MassFlag", "check_mass_range", "line_masses",
           "mass_axis", "time_axis"]

_log = get_logger(__name__)

#: Default calibrated mass range, u.
DEFAULT_MASS_RANGE: tuple[float, float] = (0.5, 300.0)
_N_TABLE = 64  # s-grid nodes of the inversion look-up table (initial guess and bracket)
_MAX_ITER = 100


class MassFlag(enum.IntEnum):
    """Per-sample flag of a mass axis (see the module docstring)."""

    OK = 0
    BEFORE_T0 = 1
    BELOW_RANGE = 2
    ABOVE_RANGE = 3
    INVALID = 4


def _horner(c: NDArray, s: NDArray) -> NDArray:
    """sum_k c[..., k] * s**k with ``c`` (E, K+1) and ``s`` (E, N)."""
    out = np.broadcast_to(c[:, -1:], s.shape).copy()
    for k in range(c.shape[1] - 2, -1, -1):
        out *= s
        out += c[:, k : k + 1]
    return out


def _horner_deriv(c: NDArray, s: NDArray) -> NDArray:
    """d/ds of :func:`_horner`."""
    kmax = c.shape[1] - 1
    if kmax < 1:
        return np.zeros_like(s)
    out = np.broadcast_to(kmax * c[:, -1:], s.shape).copy()
    for k in range(kmax - 1, 0, -1):
        out *= s
        out += k * c[:, k : k + 1]
    return out


def _as_coefficients(coefficients: ArrayLike) -> NDArray:
    c = np.asarray(coefficients, dtype=float)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] < 2:
        raise CalibrationError(
            f"coefficients must be (K+1,) or (n_events, K+1) with K >= 1, got shape {c.shape}"
        )
    return c


def check_mass_range(mass_range: Sequence[float]) -> tuple[float, float]:
    """``(m_min, m_max)`` as floats, u; CalibrationError unless ``0 < m_min < m_max``."""
    lo, hi = (float(v) for v in mass_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise CalibrationError(f"mass_range must satisfy 0 < m_min < m_max, got {mass_range!r}")
    return lo, hi


def _invert(
    c: NDArray, t: NDArray, s_min: float, s_max: float
) -> tuple[NDArray, NDArray]:
    """Solve ``t = T(s)`` for s, rows of ``c`` (E, K+1) against rows of ``t`` (E, N).

    Safeguarded Newton: a look-up table of T on an s-grid gives each sample a
    tight bracket [lo, hi] and a linear-interpolation start; a Newton step that
    leaves the bracket is replaced by bisection; the bracket shrinks with every
    evaluation.  Returns s (E, N) and flags (E, N).
    """
    n_ev, n_smp = t.shape
    s = np.zeros(t.shape)
    flags = np.zeros(t.shape, dtype=np.int8)

    grid = np.linspace(s_min, s_max, _N_TABLE)
    tab = _horner(c, np.broadcast_to(grid, (n_ev, _N_TABLE)))
    t0 = c[:, 0]
    t_lo = tab[:, 0]
    t_hi = tab[:, -1]
    with np.errstate(invalid="ignore"):
        good_row = np.all(np.isfinite(c), axis=1) & np.all(np.diff(tab, axis=1) > 0, axis=1)
        good_row &= t_lo > t0
    if not np.all(good_row):
        _log.debug("%d of %d events have no monotonic calibration", (~good_row).sum(), n_ev)

    finite = np.isfinite(t) & good_row[:, None]
    flags[~finite] = MassFlag.INVALID
    s[~finite] = np.nan

    t0b = t0[:, None]
    t_lob = t_lo[:, None]
    t_hib = t_hi[:, None]
    with np.errstate(invalid="ignore"):
        before = finite & (t < t0b)
        bridge = finite & (t >= t0b) & (t < t_lob)
        above = finite & (t > t_hib)
    inside = finite & ~before & ~bridge & ~above

    flags[before] = MassFlag.BEFORE_T0
    s[before] = 0.0
    flags[above] = MassFlag.ABOVE_RANGE
    s[above] = s_max
    if np.any(bridge):
        row = np.nonzero(bridge)[0]
        s[bridge] = s_min * (t[bridge] - t0[row]) / (t_lo[row] - t0[row])
        flags[bridge] = MassFlag.BELOW_RANGE

    if not np.any(inside):
        return s, flags
    row, col = np.nonzero(inside)
    tt = t[row, col]
    # Bracket from the table: normalise each row to [0, 1] and offset by row index
    # so one searchsorted serves all events at once.
    good_idx = np.nonzero(good_row)[0]
    span = (t_hi - t_lo)[good_idx]
    key_tab = ((tab[good_idx] - t_lo[good_idx, None]) / span[:, None]).clip(0.0, 1.0)
    key_tab += np.arange(good_idx.size)[:, None] * 2.0
    pos_of_row = np.full(n_ev, -1)
    pos_of_row[good_idx] = np.arange(good_idx.size)
    prow = pos_of_row[row]
    key = ((tt - t_lo[row]) / (t_hi - t_lo)[row]).clip(0.0, 1.0) + prow * 2.0
    j = np.searchsorted(key_tab.ravel(), key, side="right") - 1 - prow * _N_TABLE
    j = j.clip(0, _N_TABLE - 2)
    lo = grid[j].copy()
    hi = grid[j + 1].copy()
    tab_lo = tab[row, j]
    tab_hi = tab[row, j + 1]
    x = lo + (hi - lo) * ((tt - tab_lo) / (tab_hi - tab_lo)).clip(0.0, 1.0)

    cr = c[row]
    active = np.arange(tt.size)
    tol = 4.0 * np.finfo(float).eps * s_max
    for _ in range(_MAX_ITER):
        ca = cr[active]
        xa = x[active][:, None]
        f = _horner(ca, xa)[:, 0] - tt[active]
        fp = _horner_deriv(ca, xa)[:, 0]
        xa = xa[:, 0]
        lo_a = np.where(f < 0, xa, lo[active])
        hi_a = np.where(f > 0, xa, hi[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(fp > 0, f / fp, np.inf)
        x_new = xa - step
        out = ~((x_new > lo_a) & (x_new < hi_a))
        x_new[out] = 0.5 * (lo_a[out] + hi_a[out])
        done = (f == 0) | (np.abs(x_new - xa) <= tol) | (hi_a - lo_a <= tol)
        x_new[f == 0] = xa[f == 0]
        x[active] = x_new
        lo[active] = lo_a
        hi[active] = hi_a
        active = active[~done]
        if active.size == 0:
            break
    else:  # pragma: no cover - bisection bounds the count well below _MAX_ITER
        _log.warning("mass inversion: %d samples did not converge", active.size)
    s[row, col] = x
    return s, flags


def _broadcast_rows(c: NDArray, values: ArrayLike) -> tuple[NDArray, NDArray, tuple[int, ...]]:
    v = np.asarray(values, dtype=float)
    n_ev = c.shape[0]
    if v.ndim == 0:
        v2 = np.broadcast_to(v, (n_ev, 1))
    elif v.ndim == 1 and n_ev == 1:
        v2 = v[None, :]
    elif v.ndim == 1:
        v2 = np.broadcast_to(v, (n_ev, v.size))
    elif v.ndim == 2 and v.shape[0] in (1, n_ev):
        v2 = np.broadcast_to(v, (n_ev, v.shape[1]))
    else:
        raise CalibrationError(
            f"values of shape {v.shape} do not broadcast against {n_ev} events"
        )
    return c, np.ascontiguousarray(v2), v.shape


def mass_axis(
    coefficients: ArrayLike,
    t: ArrayLike,
    mass_range: Sequence[float] = DEFAULT_MASS_RANGE,
    *,
    return_flags: bool = False,
) -> NDArray | tuple[NDArray, NDArray]:
    """Mass axis for many events at once (vectorised inversion).

    Parameters
    ----------
    coefficients : array_like, shape (K+1,) or (n_events, K+1)
        ``[t0, a_1, ..., a_K]`` per event, µs and µs/u**(k/2); NaN rows give NaN.
    t : array_like
        Times, µs: a scalar, ``(n_samples,)`` shared by all events, or
        ``(n_events, n_samples)``.
    mass_range : (float, float)
        Calibrated range (m_min, m_max), u; must match the fit's.
    return_flags : bool
        Also return the :class:`MassFlag` of every sample.

    Returns
    -------
    mass : numpy.ndarray
        ``(n_events, n_samples)`` (or the shape of ``t`` for one event), u.
    flags : numpy.ndarray of int8, optional
        Same shape.
    """
    m_min, m_max = check_mass_range(mass_range)
    c = _as_coefficients(coefficients)
    c, tt, shape_in = _broadcast_rows(c, t)
    s, flags = _invert(c, tt, math.sqrt(m_min), math.sqrt(m_max))
    m = np.minimum(s * s, m_max)
    if np.asarray(coefficients).ndim == 1:
        m = m.reshape(shape_in)
        flags = flags.reshape(shape_in)
    return (m, flags) if return_flags else m


def time_axis(
    coefficients: ArrayLike, m: ArrayLike, mass_range: Sequence[float] = DEFAULT_MASS_RANGE
) -> NDArray:
    """Arrival times of masses ``m`` (u) for one or many events, µs.

    Below ``m_min`` the linear-in-sqrt(m) bridge to ``t0`` is used (see module
    docstring); above ``m_max`` the polynomial is extrapolated.  Negative or
    non-finite masses give NaN.
    """
    m_min, _ = check_mass_range(mass_range)
    c = _as_coefficients(coefficients)
    c, mm, shape_in = _broadcast_rows(c, m)
    with np.errstate(invalid="ignore"):
        s = np.sqrt(np.where(mm >= 0, mm, np.nan))
    s_min = math.sqrt(m_min)
    t = _horner(c, s)
    below = s < s_min
    if np.any(below):
        t_lo = _horner(c, np.full((c.shape[0], 1), s_min))
        bridged = c[:, :1] + (t_lo - c[:, :1]) * (s / s_min)
        t = np.where(below, bridged, t)
    if np.asarray(coefficients).ndim == 1:
        t = t.reshape(shape_in)
    return t


@dataclass(frozen=True)
class LineMasses:
    """Masses of fitted lines and the mass window of a time tolerance around each.

    Attributes
    ----------
    mass : numpy.ndarray
        Line masses, u; NaN where the line has no mass: before the impact
        (``t < t0``), beyond the calibrated range (a clipped value is not a
        mass), or an uncalibrated event.
    tolerance : numpy.ndarray
        ``|dm/dt| * tolerance_us`` at each line, u: the mass window a time
        tolerance spans there (it grows as sqrt(m) for a linear calibration);
        NaN where ``mass`` is.
    """

    mass: NDArray
    tolerance: NDArray


def line_masses(
    coefficients: ArrayLike,
    t: ArrayLike,
    tolerance_us: float,
    mass_range: Sequence[float] = DEFAULT_MASS_RANGE,
) -> LineMasses:
    """Masses of lines at times ``t`` (one per row of ``coefficients``).

    A mass *axis* (:func:`mass_axis`) is 0 before ``t0`` so that it stays
    non-decreasing; a *line* there (a detection before the impact) has no mass
    and gets NaN, as does one beyond ``m_max``.

    Parameters
    ----------
    coefficients : array_like, shape (N, K+1)
        The calibration of each line's event, ``[t0, a_1, ..., a_K]``.
    t : array_like, shape (N,)
        Line centres, µs.
    tolerance_us : float
        Time tolerance to express in u at each line (the calibration's
        match tolerance), µs.
    mass_range : (float, float)
        Calibrated range, u.

    Returns
    -------
    LineMasses
    """
    c = _as_coefficients(coefficients)
    tt = np.asarray(t, dtype=float).reshape(-1, 1)
    if c.shape[0] != tt.shape[0]:
        raise CalibrationError(f"{c.shape[0]} coefficient rows for {tt.shape[0]} lines")
    m, flags = mass_axis(c, tt, mass_range, return_flags=True)
    # below m_min the bridge value stays (continuous, flagged on the axis)
    has_mass = (flags[:, 0] == MassFlag.OK) | (flags[:, 0] == MassFlag.BELOW_RANGE)
    m = np.where(has_mass, m[:, 0], np.nan)
    s = np.sqrt(m)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = _horner_deriv(c, s)[:, 0]  # dt/ds, µs/sqrt(u)
        tol = np.abs(2.0 * s[:, 0] / slope) * float(tolerance_us)
    return LineMasses(mass=m, tolerance=np.where(np.isfinite(m), tol, np.nan))
