"""Calibrate spectra without known lines: align a comb of common impact ions.

Given the centres (µs) and amplitudes of the peaks found in one TOF spectrum,
find the stretch ``a`` (µs/sqrt(u)) and shift ``t0`` (µs) for which the comb
``t0 + a*sqrt(m_i)`` of common cations (``configs/calibration.yaml``) lines up
with the peaks, then fit a :class:`~idexdask.calibration.tofmass.TOFMassCal`.

Method
------
1. *Coarse search* over the whole (a, t0) box at once.  The peaks and, for every
   trial stretch, the comb are rasterised as weighted impulse trains on a time
   grid (bin = the coarse tolerance, linear split between bins); their
   cross-correlation for *all* shifts and *all* stretches of a block is one
   2-D real FFT product, smoothed by a Gaussian kernel of the coarse tolerance
   in the Fourier domain.  The stretch step is the coarse tolerance divided by
   the largest comb sqrt(m), so no alignment falls between grid nodes.
2. *Refine* the best few distinct (a, t0) maxima: mutual-nearest-neighbour
   assignment within a tolerance shrinking from the coarse to the final one,
   alternating with a linear least-squares fit of (t0, a).
3. *Score* = sum over matched peaks of ion weight x peak weight x match quality
   ``exp(-0.5*(dt/(tol/2))**2)``; apply the credibility gates (matches, score,
   explained peak weight, ambiguity).
4. *Reassign*: fit a ``TOFMassCal`` (order grows with the number of lines),
   predict the times of a bigger list (comb + isotopes + extra ions), reassign,
   refit, until the assignment no longer changes.

A spectrum that fails a gate is returned UNCALIBRATED with a reason; no mass
axis is ever made up.

:func:`comb_calibrations` calibrates many spectra at once (the search runs as
blocks of events, the kernels are in :mod:`idexdask.calibration.comb_search`);
:func:`comb_calibration` is one spectrum.  The search settings are the
``bootstrap:`` section of ``configs/calibration.yaml``
(:class:`~idexdask.calibration.settings.BootstrapSettings`).
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft

from idexdask._logging import get_logger
from idexdask.calibration.comb_search import (
    CoarseGrid,
    coarse_grid,
    finish_events,
    impulse_trains,
    scan_events,
)
from idexdask.calibration.settings import CalibrationSettings, load_calibration_settings
from idexdask.calibration.tofmass import STATUS_CODES, TOFMassCal, slope_grid
from idexdask.errors import CalibrationError

__all__ = [
    "Assignment",
    "CombBatch",
    "CombResult",
    "CombStatus",
    "UncalibratedReason",
    "comb_calibration",
    "comb_calibrations",
    "stack_coefficients",
]

_log = get_logger(__name__)


class CombStatus(enum.StrEnum):
    """Outcome of :func:`comb_calibration`."""

    CALIBRATED = "calibrated"
    UNCALIBRATED = "uncalibrated"


class UncalibratedReason(enum.StrEnum):
    """Why a spectrum was left without a mass axis."""

    NONE = "none"  #: calibrated
    NO_LINES = "no_lines"  #: no peak at all
    ONE_LINE = "one_line"  #: a single peak cannot fix two parameters
    OFF_COMB = "off_comb"  #: too few peaks (or too little peak weight) match the comb
    LOW_SCORE = "low_score"  #: matches too weak (low-weight ions, poor agreement)
    AMBIGUOUS = "ambiguous"  #: a different alignment scores nearly as well
    FIT_FAILED = "fit_failed"  #: the polynomial calibration could not be built


@dataclass(frozen=True)
class Assignment:
    """One peak identified as an ion.

    Attributes
    ----------
    peak_index : int
        Index into the input peak arrays.
    label : str
        Ion label, e.g. ``"Na+"``, ``"54Fe+"``.
    mass_u : float
        Ion mass, u.
    time_us : float
        Measured peak centre, µs.
    residual_us : float
        Measured minus calibrated time, µs.
    """

    peak_index: int
    label: str
    mass_u: float
    time_us: float
    residual_us: float


@dataclass
class CombResult:
    """Result of :func:`comb_calibration` for one spectrum.

    Attributes
    ----------
    status : CombStatus
    reason : UncalibratedReason
    calibration : TOFMassCal or None
        None unless CALIBRATED.
    assignments : list of Assignment
        Final identification (empty unless CALIBRATED), sorted by peak index.
    stretch : float
        Linear stretch ``a``, µs/sqrt(u): least squares over the final assigned
        lines when calibrated, else of the best comb alignment (NaN if none).
    shift : float
        Linear shift ``t0``, µs (same rule).
    score : float
        Comb-stage score (see module docstring).
    n_matched : int
        Comb lines matched by the best alignment.
    explained_fraction : float
        Matched share of the peak weight inside the comb's time span.
    message : str
        Human-readable detail.
    """

    status: CombStatus
    reason: UncalibratedReason
    calibration: TOFMassCal | None = None
    assignments: list[Assignment] = field(default_factory=list)
    stretch: float = math.nan
    shift: float = math.nan
    score: float = 0.0
    n_matched: int = 0
    explained_fraction: float = 0.0
    message: str = ""

    @property
    def calibrated(self) -> bool:
        """True when a calibration was found."""
        return self.status is CombStatus.CALIBRATED


def stack_coefficients(
    calibrations: Sequence[TOFMassCal | CombResult | None], order: int | None = None
) -> NDArray:
    """Coefficient array ``(n_events, K+1)`` for :func:`~.mass_axes.mass_axis`.

    Lower orders are zero-padded; unusable or missing calibrations give NaN rows.
    """
    cals = [c.calibration if isinstance(c, CombResult) else c for c in calibrations]
    k = order if order is not None else max([c.order for c in cals if c is not None] or [1])
    out = np.full((len(cals), k + 1), np.nan)
    for n, cal in enumerate(cals):
        if cal is not None and cal.usable:
            if cal.order > k:
                raise CalibrationError(f"event {n}: order {cal.order} exceeds {k}")
            out[n] = 0.0
            out[n, : cal.order + 1] = cal.coefficients
    return out


#: Reason codes of the compiled kernels: index into this tuple; -1 marks malformed input.
_REASONS: tuple[UncalibratedReason, ...] = tuple(UncalibratedReason)
_ERROR = -1
_PER_ROW = 3  # local maxima kept per stretch row of the coarse scan
_CHUNK = 256  # events per block of the coarse search (bounds the (events, n_fft) arrays)


@dataclass(frozen=True)
class _Tables:
    """Event-independent arrays of one :class:`CalibrationSettings`."""

    grid: CoarseGrid
    s_comb: NDArray  # (I,) sqrt of the comb masses, sqrt(u)
    c_comb: NDArray  # (I,) comb weights
    comb_to_ext: NDArray  # (I,) index of each comb line in the extended list
    m_ext: NDArray  # (X,) extended masses, u
    s_ext: NDArray  # (X,) sqrt(m_ext)
    tols: NDArray  # refinement tolerances, µs
    min_lines: NDArray  # fit.min_lines_for_order
    slope_grid: NDArray  # dense s-grid of the monotonicity check


@functools.lru_cache(maxsize=8)
def _tables(cfg_all: CalibrationSettings) -> _Tables:
    cfg = cfg_all.bootstrap
    m_comb = np.array([ion.mass_u for ion in cfg_all.comb])
    s_comb = np.sqrt(m_comb)
    c_comb = np.array([ion.weight for ion in cfg_all.comb])
    m_ext = np.array([ion.mass_u for ion in cfg_all.extended])
    ratio = cfg.tolerance_us / cfg.coarse_tolerance_us
    tables = _Tables(
        grid=coarse_grid(cfg, tuple(map(float, s_comb)), tuple(map(float, c_comb))),
        s_comb=s_comb,
        c_comb=c_comb,
        comb_to_ext=np.searchsorted(m_ext, m_comb).astype(np.int64),
        m_ext=m_ext,
        s_ext=np.sqrt(m_ext),
        tols=np.array([cfg.coarse_tolerance_us * ratio**f for f in (0.0, 0.5, 1.0, 1.0)]),
        min_lines=np.asarray(cfg_all.fit.min_lines_for_order, dtype=np.int64),
        slope_grid=slope_grid(cfg_all.fit.mass_range_u),
    )
    for arr in (tables.s_comb, tables.c_comb, tables.comb_to_ext, tables.m_ext, tables.s_ext,
                tables.tols, tables.min_lines, tables.slope_grid):
        arr.flags.writeable = False  # shared by every call: read-only
    return tables


@dataclass
class CombBatch:
    """Result of :func:`comb_calibrations` for many spectra (E events, N peaks).

    Attributes
    ----------
    settings : CalibrationSettings
        Settings used.
    times_us : numpy.ndarray, shape (N,)
        Input peak centres, µs.
    offsets : numpy.ndarray, shape (E+1,)
        Peaks of event e are ``times_us[offsets[e]:offsets[e+1]]``.
    reason_code : numpy.ndarray of int8, shape (E,)
        Index into ``tuple(UncalibratedReason)`` (0: calibrated), -1 for an event
        whose input is malformed (non-finite values).
    coefficients : numpy.ndarray, shape (E, max_order+1)
        ``[t0, a_1, ...]`` (µs, µs/u**(k/2)), zero-padded above the order; NaN rows
        unless calibrated.
    covariance : numpy.ndarray, shape (E, max_order+1, max_order+1)
        Coefficient covariance (NaN outside the order and unless calibrated).
    order, requested_order : numpy.ndarray of int, shape (E,)
        Polynomial order of the calibration (0 unless calibrated) and the order
        asked for before any reduction.
    fit_status : numpy.ndarray of int8, shape (E,)
        Index into :data:`~idexdask.calibration.tofmass.STATUS_CODES` of the last
        polynomial fit, -1 where none was made.
    stretch, shift, score, n_matched, explained_fraction : numpy.ndarray, shape (E,)
        As in :class:`CombResult` (µs/sqrt(u), µs, 1, 1, 1).
    rival_stretch, rival_score : numpy.ndarray, shape (E,)
        Stretch (µs/sqrt(u)) and score of the rival of an AMBIGUOUS event, else NaN.
    peak_line : numpy.ndarray of int, shape (N,)
        Index into ``settings.extended`` of the line assigned to each peak, -1 if
        none (always -1 unless calibrated).
    fit_line : numpy.ndarray of int, shape (N,)
        Line of each peak in the final polynomial fit (differs from ``peak_line``
        only when the reassignment stopped at ``max_iterations``).
    """

    settings: CalibrationSettings
    times_us: NDArray
    offsets: NDArray
    reason_code: NDArray
    coefficients: NDArray
    covariance: NDArray
    order: NDArray
    requested_order: NDArray
    fit_status: NDArray
    stretch: NDArray
    shift: NDArray
    score: NDArray
    n_matched: NDArray
    explained_fraction: NDArray
    rival_stretch: NDArray
    rival_score: NDArray
    peak_line: NDArray
    fit_line: NDArray

    @property
    def calibrated(self) -> NDArray:
        """Boolean (E,): True where a calibration was found."""
        return self.reason_code == 0

    @property
    def status(self) -> NDArray:
        """:class:`CombStatus` values per event, ``str`` array (E,)."""
        return np.where(self.calibrated, CombStatus.CALIBRATED.value,
                        CombStatus.UNCALIBRATED.value)

    @property
    def reason(self) -> NDArray:
        """:class:`UncalibratedReason` values per event, ``"error"`` for malformed input."""
        labels = np.array([r.value for r in _REASONS] + ["error"])
        return labels[self.reason_code]  # -1 picks "error"

    def stacked(self, order: int | None = None) -> NDArray:
        """Coefficients ``(E, order+1)`` as :func:`stack_coefficients` gives them.

        Raises
        ------
        CalibrationError
            If a calibration has a higher order than ``order``.
        """
        k = order if order is not None else max(int(self.order.max(initial=1)), 1)
        too_high = np.nonzero(self.calibrated & (self.order > k))[0]
        if too_high.size:
            e = int(too_high[0])
            raise CalibrationError(f"event {e}: order {int(self.order[e])} exceeds {k}")
        out = np.full((self.order.size, k + 1), np.nan)
        ncol = min(k + 1, self.coefficients.shape[1])
        cal = self.calibrated
        out[cal] = 0.0
        out[cal, :ncol] = self.coefficients[cal, :ncol]
        return out

    def result(self, e: int) -> CombResult:
        """The :class:`CombResult` of event ``e`` (what :func:`comb_calibration` gives).

        Raises
        ------
        CalibrationError
            If the input of event ``e`` was malformed.
        """
        code = int(self.reason_code[e])
        if code == _ERROR:
            raise CalibrationError("peak times and amplitudes must be finite")
        reason = _REASONS[code]
        info = dict(stretch=float(self.stretch[e]), shift=float(self.shift[e]),
                    score=float(self.score[e]), n_matched=int(self.n_matched[e]),
                    explained_fraction=float(self.explained_fraction[e]))
        if reason is not UncalibratedReason.NONE:
            message = self._message(e, reason, info)
            _log.debug("comb: uncalibrated (%s): %s", reason.value, message)
            return CombResult(CombStatus.UNCALIBRATED, reason, message=message, **info)
        sl = slice(int(self.offsets[e]), int(self.offsets[e + 1]))
        p = self.times_us[sl]
        ext = self.settings.extended
        m_ext = _tables(self.settings).m_ext
        fit_cfg = self.settings.fit
        k = int(self.order[e])
        in_fit = np.nonzero(self.fit_line[sl] >= 0)[0]
        cal = TOFMassCal(
            self.coefficients[e, : k + 1].copy(), STATUS_CODES[int(self.fit_status[e])],
            fit_cfg.mass_range_u, self.covariance[e, : k + 1, : k + 1].copy(),
            int(self.requested_order[e]), p[in_fit].copy(), m_ext[self.fit_line[sl][in_fit]],
        )
        cal.fill_residuals()
        pj = np.nonzero(self.peak_line[sl] >= 0)[0]
        ij = self.peak_line[sl][pj]
        model_t = np.asarray(cal.time(m_ext[ij]))
        assignments = [
            Assignment(int(j), ext[i].label, float(ext[i].mass_u), float(p[j]), float(p[j] - tj))
            for j, i, tj in zip(pj, ij, model_t, strict=True)
        ]
        return CombResult(
            CombStatus.CALIBRATED, UncalibratedReason.NONE, cal, assignments,
            message=f"{len(assignments)} lines, order {cal.order}", **info,
        )

    def _message(self, e: int, reason: UncalibratedReason, info: dict[str, Any]) -> str:
        n_best = info["n_matched"]
        if reason is UncalibratedReason.NO_LINES:
            return "no peaks"
        if reason is UncalibratedReason.ONE_LINE:
            return "a single peak fixes only one parameter"
        if reason is UncalibratedReason.OFF_COMB:
            if n_best < 2:
                return "no alignment matches two comb lines"
            if n_best < self.settings.bootstrap.min_matches:
                return f"best alignment matches {n_best} comb lines"
            return f"comb explains {info['explained_fraction']:.0%} of the peak weight"
        if reason is UncalibratedReason.LOW_SCORE:
            return f"score {info['score']:.2f}"
        if reason is UncalibratedReason.AMBIGUOUS:
            return (
                f"alignments a={info['stretch']:.4f} and a={self.rival_stretch[e]:.4f} "
                f"µs/sqrt(u) score {info['score']:.2f} and {self.rival_score[e]:.2f}"
            )
        return f"polynomial fit {STATUS_CODES[int(self.fit_status[e])].value}"


def comb_calibrations(
    peak_times_us: ArrayLike,
    amplitudes: ArrayLike | None,
    offsets: ArrayLike,
    *,
    preset: str = "flight",
    settings: CalibrationSettings | None = None,
) -> CombBatch:
    """Calibrate many spectra at once from their peak lists (batched :func:`comb_calibration`).

    Same algorithm and results as :func:`comb_calibration` event by event
    (which calls this with one event); the coarse search runs as blocks of
    events (one FFT per block) and the refinement, gates and reassignment are
    compiled.

    Parameters
    ----------
    peak_times_us : array_like, shape (N,)
        Peak centres of all events, µs, event after event.
    amplitudes : array_like, shape (N,), or None
        Peak heights or areas (any unit); None: all equal.
    offsets : array_like of int, shape (E+1,)
        Event e owns peaks ``offsets[e]:offsets[e+1]``; non-decreasing, from 0 to N.
    preset : str
        Preset of ``calibration.yaml``, if ``settings`` is not given.
    settings : CalibrationSettings, optional
        Pre-loaded settings (see :func:`load_calibration_settings`).

    Returns
    -------
    CombBatch
        Per-event arrays; an event with non-finite times or amplitudes is not
        calibrated and gets reason code -1 (``"error"``) instead of raising.

    Raises
    ------
    CalibrationError
        If the array shapes or ``offsets`` are inconsistent.
    """
    cfg_all = settings if settings is not None else load_calibration_settings(preset)
    cfg = cfg_all.bootstrap
    tab = _tables(cfg_all)
    p = np.ascontiguousarray(np.asarray(peak_times_us, dtype=float).ravel())
    if amplitudes is None:
        amp = np.ones_like(p)
    else:
        amp = np.ascontiguousarray(np.asarray(amplitudes, dtype=float).ravel())
        if amp.shape != p.shape:
            raise CalibrationError(f"{p.size} peak times but {amp.size} amplitudes")
    off = np.asarray(offsets)
    if (off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer)
            or off[0] != 0 or off[-1] != p.size or np.any(np.diff(off) < 0)):
        raise CalibrationError("offsets must be non-decreasing integers from 0 to the peak count")
    off = off.astype(np.int64)
    n_ev = off.size - 1
    starts = np.ascontiguousarray(off[:-1])
    counts = np.diff(off)
    k1 = cfg_all.fit.max_order + 1

    bad = ~(np.isfinite(p) & np.isfinite(amp))
    bad_ev = np.zeros(n_ev, dtype=bool)
    if bad.any():
        bad_ev[np.searchsorted(off, np.nonzero(bad)[0], side="right") - 1] = True
    reason = np.full(n_ev, 3, dtype=np.int8)  # OFF_COMB unless decided otherwise
    reason[counts == 0] = 1
    reason[counts == 1] = 2
    reason[bad_ev] = _ERROR
    out = CombBatch(
        settings=cfg_all, times_us=p, offsets=off, reason_code=reason,
        coefficients=np.full((n_ev, k1), np.nan), covariance=np.full((n_ev, k1, k1), np.nan),
        order=np.zeros(n_ev, dtype=np.int64), requested_order=np.zeros(n_ev, dtype=np.int64),
        fit_status=np.full(n_ev, -1, dtype=np.int8),
        stretch=np.full(n_ev, np.nan), shift=np.full(n_ev, np.nan), score=np.zeros(n_ev),
        n_matched=np.zeros(n_ev, dtype=np.int64), explained_fraction=np.zeros(n_ev),
        rival_stretch=np.full(n_ev, np.nan), rival_score=np.full(n_ev, np.nan),
        peak_line=np.full(p.size, -1, dtype=np.int64),
        fit_line=np.full(p.size, -1, dtype=np.int64),
    )
    todo = np.nonzero((counts >= 2) & ~bad_ev)[0]
    if todo.size == 0:
        return out
    g = tab.grid
    a_lo, a_hi = cfg.stretch_range
    w = np.ones_like(p)
    fit = cfg_all.fit
    s_min, s_max = (math.sqrt(v) for v in fit.mass_range_u)
    for c0 in range(0, todo.size, _CHUNK):
        events = todo[c0 : c0 + _CHUNK]
        meas = np.empty((events.size, g.n_fft))
        impulse_trains(p, amp, starts, counts, events, g.origin, cfg.coarse_tolerance_us,
                cfg.amplitude_power, w, meas)
        ms = sfft.irfft(sfft.rfft(meas, axis=-1) * g.kernel, n=g.n_fft, axis=-1)
        vals, lags = scan_events(ms, g.j0, g.w_lo, g.w_hi, g.first, g.last, _PER_ROW)
        order = np.argsort(-vals, axis=1)  # row by row as numpy.argsort of one event
        finish_events(
            p, w, starts, counts, events, order, vals, lags, g.stretches, g.t0_axis,
            _PER_ROW, int(cfg.n_candidates), 3 * cfg.coarse_tolerance_us,
            tab.s_comb, tab.c_comb, tab.tols, float(cfg.tolerance_us), float(a_lo), float(a_hi),
            int(cfg.min_matches), float(cfg.min_score), float(cfg.min_explained_fraction),
            float(cfg.ambiguity_ratio),
            tab.comb_to_ext, tab.s_ext, tab.m_ext, 1.0 / fit.timing_sigma_us**2,
            int(cfg.max_iterations), int(fit.max_order), tab.min_lines, s_min, s_max,
            tab.slope_grid,
            out.reason_code, out.rival_stretch, out.rival_score, out.fit_status, out.stretch,
            out.shift, out.score, out.n_matched, out.explained_fraction, out.coefficients,
            out.covariance, out.order, out.requested_order, out.peak_line, out.fit_line,
        )
    return out


def comb_calibration(
    peak_times_us: ArrayLike,
    amplitudes: ArrayLike | None = None,
    *,
    preset: str = "flight",
    settings: CalibrationSettings | None = None,
) -> CombResult:
    """Calibrate one spectrum from its peak list, without known lines.

    Parameters
    ----------
    peak_times_us : array_like, shape (n_peaks,)
        Peak centres, µs, on the same time origin as the preset's ``t0_range_us``.
    amplitudes : array_like, optional
        Peak heights or areas (any unit, >= 0); default all equal.  They weight
        the score as ``(A / A.max()) ** amplitude_power``.
    preset : str
        Preset of ``calibration.yaml`` (``"flight"``, ``"lab"``), if ``settings``
        is not given.
    settings : CalibrationSettings, optional
        Pre-loaded settings (see :func:`load_calibration_settings`).

    Returns
    -------
    CombResult
        CALIBRATED with a :class:`TOFMassCal` and the assignments, or
        UNCALIBRATED with a :class:`UncalibratedReason`.

    Raises
    ------
    CalibrationError
        If the inputs are malformed (shape mismatch, non-finite values).

    See Also
    --------
    comb_calibrations : many spectra at once, same results.
    """
    p = np.asarray(peak_times_us, dtype=float).ravel()
    batch = comb_calibrations(
        p, amplitudes, np.array([0, p.size]), preset=preset, settings=settings
    )
    return batch.result(0)
