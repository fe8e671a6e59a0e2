"""Calibrate a spectrum without known lines: align a comb of common impact ions.

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
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft

from idexdask._logging import get_logger
from idexdask.calibration.ions import (
    Ion,
    build_ion_table,
    isotopologues,
    parse_formula,
)
from idexdask.calibration.tofmass import TOFMassCal
from idexdask.config import load_yaml, merge
from idexdask.errors import CalibrationError, ConfigError

__all__ = [
    "FitSettings",
    "BootstrapSettings",
    "CalibrationSettings",
    "load_calibration_settings",
    "BootstrapStatus",
    "UncalibratedReason",
    "Assignment",
    "BootstrapResult",
    "bootstrap_calibration",
    "stack_coefficients",
    "synthetic_peaks",
]

_log = get_logger(__name__)

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FitSettings:
    """``fit:`` section of ``calibration.yaml``."""

    max_order: int
    min_lines_for_order: tuple[int, ...]
    mass_range_u: tuple[float, float]
    timing_sigma_us: float


@dataclass(frozen=True)
class BootstrapSettings:
    """``bootstrap:`` section merged with one ``presets:`` entry."""

    preset: str
    stretch_range: tuple[float, float]
    t0_range_us: tuple[float, float]
    coarse_tolerance_us: float
    tolerance_us: float
    n_candidates: int
    max_block_elements: int
    max_iterations: int
    min_matches: int
    min_score: float
    min_explained_fraction: float
    ambiguity_ratio: float
    amplitude_power: float


@dataclass(frozen=True)
class CalibrationSettings:
    """Validated content of ``calibration.yaml`` for one preset.

    Attributes
    ----------
    fit : FitSettings
    bootstrap : BootstrapSettings
    comb : tuple of Ion
        Search comb, sorted by mass.
    extended : tuple of Ion
        Comb + isotopes + extra ions for the reassignment stage, sorted by mass.
    """

    fit: FitSettings
    bootstrap: BootstrapSettings
    comb: tuple[Ion, ...]
    extended: tuple[Ion, ...]


def _get(section: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(section, Mapping) or key not in section:
        raise ConfigError(f"calibration.yaml: missing key {where}.{key}")
    return section[key]


def _num(value: Any, key: str, *, lo: float | None = None, hi: float | None = None,
         integer: bool = False, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if integer and float(value) != int(value):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if lo is not None and (value <= lo if open_lo else value < lo):
        raise ConfigError(f"{key}: {value!r} must be {'>' if open_lo else '>='} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} must be <= {hi}")
    return int(value) if integer else float(value)


def _pair(value: Any, key: str, *, positive: bool) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{key}: expected [low, high], got {value!r}")
    lo, hi = (_num(v, key, lo=0.0 if positive else None, open_lo=positive) for v in value)
    if not lo < hi:
        raise ConfigError(f"{key}: low {lo} must be < high {hi}")
    return lo, hi


def _ion_entries(items: Any, key: str) -> list[tuple[str, float]]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{key}: expected a non-empty list of {{ion, weight}}")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"ion", "weight"}:
            raise ConfigError(f"{key}[{n}]: expected {{ion: FORMULA, weight: W}}, got {item!r}")
        formula = str(item["ion"])
        parse_formula(formula)  # raises ConfigError on bad formulas
        weight = _num(item["weight"], f"{key}[{n}].weight", lo=0.0, hi=1.0, open_lo=True)
        out.append((formula, weight))
    return out


def _too_close(m1: float, m2: float, separation: float) -> bool:
    # The time separation of two lines scales as dm/sqrt(m): scale the limit.
    return abs(m1 - m2) < separation * math.sqrt(max(m1, m2) / 56.0)


def _parse_settings(raw: Mapping[str, Any], preset: str) -> CalibrationSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError("calibration.yaml: expected a mapping at top level")
    known = {"fit", "comb", "extended", "min_line_separation_u", "bootstrap", "presets"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"calibration.yaml: unknown keys {sorted(unknown)}")
    f = _get(raw, "fit", "")
    orders = _get(f, "min_lines_for_order", "fit")
    if not isinstance(orders, list) or not orders:
        raise ConfigError("fit.min_lines_for_order: expected a non-empty list")
    orders_t = tuple(_num(v, "fit.min_lines_for_order", lo=2, integer=True) for v in orders)
    if list(orders_t) != sorted(orders_t) or any(
        need < k + 1 for k, need in enumerate(orders_t, start=1)
    ):
        raise ConfigError(
            "fit.min_lines_for_order: must be non-decreasing with at least K+1 lines for order K"
        )
    fit = FitSettings(
        max_order=_num(_get(f, "max_order", "fit"), "fit.max_order", lo=1, hi=6, integer=True),
        min_lines_for_order=orders_t,
        mass_range_u=_pair(_get(f, "mass_range_u", "fit"), "fit.mass_range_u", positive=True),
        timing_sigma_us=_num(_get(f, "timing_sigma_us", "fit"), "fit.timing_sigma_us",
                             lo=0.0, open_lo=True),
    )
    sep = _num(_get(raw, "min_line_separation_u", ""), "min_line_separation_u", lo=0.0)
    comb_entries = _ion_entries(_get(raw, "comb", ""), "comb")
    comb = build_ion_table(comb_entries)
    for lo_ion, hi_ion in zip(comb[:-1], comb[1:], strict=True):
        if _too_close(lo_ion.mass_u, hi_ion.mass_u, sep):
            raise ConfigError(
                f"comb: {lo_ion.label} and {hi_ion.label} are closer than the line separation"
            )
    m_lo, m_hi = fit.mass_range_u
    outside = [ion.label for ion in comb if not m_lo <= ion.mass_u <= m_hi]
    if outside:
        raise ConfigError(f"comb: ions {outside} lie outside fit.mass_range_u")

    ext = _get(raw, "extended", "")
    min_ab = _num(_get(ext, "isotope_min_abundance_percent", "extended"),
                  "extended.isotope_min_abundance_percent", lo=0.0, hi=100.0, open_lo=True)
    extra = _ion_entries(_get(ext, "ions", "extended"), "extended.ions")
    candidates = list(comb_entries)
    for formula, weight in comb_entries:
        candidates += [(iso, weight * ratio) for iso, ratio in isotopologues(formula, min_ab)]
    candidates += extra
    # Keep the stronger of any two coinciding lines (comb lines first on ties).
    ranked = sorted(
        build_ion_table(candidates), key=lambda ion: -ion.weight
    )
    kept: list[Ion] = []
    for ion in ranked:
        if not m_lo <= ion.mass_u <= m_hi:
            continue
        if any(_too_close(ion.mass_u, k.mass_u, sep) for k in kept):
            _log.debug("extended line %s dropped: coincides with a stronger line", ion.label)
            continue
        kept.append(ion)
    extended = tuple(sorted(kept, key=lambda ion: ion.mass_u))

    presets = _get(raw, "presets", "")
    if not isinstance(presets, Mapping) or preset not in presets:
        raise ConfigError(f"calibration.yaml: no preset {preset!r} (have {list(presets)})")
    p = presets[preset]
    where = f"presets.{preset}"
    b = _get(raw, "bootstrap", "")
    if not isinstance(p, Mapping) or not isinstance(b, Mapping):
        raise ConfigError(f"calibration.yaml: {where} and bootstrap must be mappings")
    # A preset may override any bootstrap key (e.g. stricter gates for a wide search).
    extra = set(p) - {"stretch_range", "t0_range_us"}
    unknown_b = extra - set(b)
    if unknown_b:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown_b)}")
    b = {**b, **{k: p[k] for k in extra}}
    coarse = _num(_get(b, "coarse_tolerance_us", "bootstrap"), "bootstrap.coarse_tolerance_us",
                  lo=0.0, open_lo=True)
    tol = _num(_get(b, "tolerance_us", "bootstrap"), "bootstrap.tolerance_us",
               lo=0.0, open_lo=True)
    if tol > coarse:
        raise ConfigError("bootstrap.tolerance_us must not exceed bootstrap.coarse_tolerance_us")
    boot = BootstrapSettings(
        preset=preset,
        stretch_range=_pair(_get(p, "stretch_range", where), f"{where}.stretch_range",
                            positive=True),
        t0_range_us=_pair(_get(p, "t0_range_us", where), f"{where}.t0_range_us",
                          positive=False),
        coarse_tolerance_us=coarse,
        tolerance_us=tol,
        n_candidates=_num(_get(b, "n_candidates", "bootstrap"), "bootstrap.n_candidates",
                          lo=1, integer=True),
        max_block_elements=_num(_get(b, "max_block_elements", "bootstrap"),
                                "bootstrap.max_block_elements", lo=10_000, integer=True),
        max_iterations=_num(_get(b, "max_iterations", "bootstrap"), "bootstrap.max_iterations",
                            lo=1, integer=True),
        min_matches=_num(_get(b, "min_matches", "bootstrap"), "bootstrap.min_matches",
                         lo=2, integer=True),
        min_score=_num(_get(b, "min_score", "bootstrap"), "bootstrap.min_score", lo=0.0),
        min_explained_fraction=_num(_get(b, "min_explained_fraction", "bootstrap"),
                                    "bootstrap.min_explained_fraction", lo=0.0, hi=1.0),
        ambiguity_ratio=_num(_get(b, "ambiguity_ratio", "bootstrap"), "bootstrap.ambiguity_ratio",
                             lo=0.0, hi=1.0, open_lo=True),
        amplitude_power=_num(_get(b, "amplitude_power", "bootstrap"), "bootstrap.amplitude_power",
                             lo=0.0, hi=2.0),
    )
    return CalibrationSettings(fit=fit, bootstrap=boot, comb=comb, extended=extended)


@functools.lru_cache(maxsize=8)
def _cached_settings(preset: str) -> CalibrationSettings:
    return _parse_settings(load_yaml("calibration.yaml"), preset)


def load_calibration_settings(
    preset: str = "flight",
    override: Mapping[str, Any] | None = None,
    *,
    path: str | None = None,
) -> CalibrationSettings:
    """Load and validate ``configs/calibration.yaml`` for one preset.

    Parameters
    ----------
    preset : str
        ``"flight"`` (IDEX flight geometry) or ``"lab"`` (dust-accelerator
        captures), or any preset the file defines.
    override : mapping, optional
        Nested keys deep-merged over the file (e.g.
        ``{"bootstrap": {"tolerance_us": 0.02}}``).
    path : str, optional
        Another YAML file instead of the shipped one.

    Returns
    -------
    CalibrationSettings
        Immutable; the shipped file is parsed once per preset and cached.

    Raises
    ------
    ConfigError
        On a missing key, a value out of range, an unparsable ion formula or two
        comb lines closer than ``min_line_separation_u``.
    """
    if override is None and path is None:
        return _cached_settings(preset)
    raw = load_yaml(path or "calibration.yaml")
    if override is not None:
        raw = merge(raw, override)
    return _parse_settings(raw, preset)


# --------------------------------------------------------------------------- results


class BootstrapStatus(enum.StrEnum):
    """Outcome of :func:`bootstrap_calibration`."""

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
class BootstrapResult:
    """Result of :func:`bootstrap_calibration` for one spectrum.

    Attributes
    ----------
    status : BootstrapStatus
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

    status: BootstrapStatus
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
        return self.status is BootstrapStatus.CALIBRATED


def stack_coefficients(
    calibrations: Sequence[TOFMassCal | BootstrapResult | None], order: int | None = None
) -> NDArray:
    """Coefficient array ``(n_events, K+1)`` for :func:`~.tofmass.mass_axis`.

    Lower orders are zero-padded; unusable or missing calibrations give NaN rows.
    """
    cals = [c.calibration if isinstance(c, BootstrapResult) else c for c in calibrations]
    k = order if order is not None else max([c.order for c in cals if c is not None] or [1])
    out = np.full((len(cals), k + 1), np.nan)
    for n, cal in enumerate(cals):
        if cal is not None and cal.usable:
            if cal.order > k:
                raise CalibrationError(f"event {n}: order {cal.order} exceeds {k}")
            out[n] = 0.0
            out[n, : cal.order + 1] = cal.coefficients
    return out


# --------------------------------------------------------------------------- algorithm


@dataclass
class _Candidates:
    """Refined alignments, one per row (C candidates, P peaks)."""

    stretch: NDArray  # (C,) µs/sqrt(u)
    shift: NDArray  # (C,) µs
    ion: NDArray  # (C, P) matched comb index per peak, -1 if none
    score: NDArray  # (C,)
    explained: NDArray  # (C,)
    n_matched: NDArray  # (C,)


def _match(p: NDArray, q: NDArray, tol: float) -> tuple[NDArray, NDArray]:
    """Mutual nearest neighbours of peak times ``p`` and line times ``q`` within ``tol``."""
    if p.size == 0 or q.size == 0:
        return np.empty(0, int), np.empty(0, int)
    d = np.abs(p[:, None] - q[None, :])
    best_q = np.argmin(d, axis=1)
    best_p = np.argmin(d, axis=0)
    j = np.arange(p.size)
    ok = (best_p[best_q] == j) & (d[j, best_q] <= tol)
    return j[ok], best_q[ok]


def _linear_fit(s: NDArray, t: NDArray) -> tuple[float, float]:
    """Least-squares ``(t0, a)`` of ``t = t0 + a*s`` (NaN when s is constant)."""
    sm, tm = float(s.mean()), float(t.mean())
    ds = s - sm
    den = float(ds @ ds)
    if den <= 0:
        return math.nan, math.nan
    a = float(ds @ (t - tm)) / den
    return tm - a * sm, a


@dataclass(frozen=True)
class _CoarseGrid:
    """Event-independent part of the coarse search for one (settings, comb)."""

    stretches: NDArray  # (R,) trial stretches, µs/sqrt(u)
    origin: float  # time of bin 0, µs
    n_fft: int  # length of the (circular) time grid
    kernel: NDArray  # (n_fft//2+1,) Gaussian smoothing in the Fourier domain
    t0_axis: NDArray  # (n_lag,) shift of each lag, µs
    first: int  # first lag inside the t0 range
    last: int  # one past the last lag inside the t0 range
    j0: NDArray  # (R, I) lower bin of each comb line per stretch
    w_lo: NDArray  # (R, I) comb weight on bin j0
    w_hi: NDArray  # (R, I) comb weight on bin j0 + 1


@functools.lru_cache(maxsize=8)
def _coarse_grid(
    cfg: BootstrapSettings, s_comb: tuple[float, ...], c_comb: tuple[float, ...]
) -> _CoarseGrid:
    sig = cfg.coarse_tolerance_us
    h = sig  # bin width: impulses are split linearly between bins, then smoothed by sig
    s = np.asarray(s_comb)
    c = np.asarray(c_comb)
    a_lo, a_hi = cfg.stretch_range
    t0_lo, t0_hi = cfg.t0_range_us
    da = sig / s[-1]
    stretches = np.arange(a_lo, a_hi + 0.5 * da, da)
    origin = t0_lo - 4.0 * sig
    n_lag = int(math.ceil((t0_hi - origin + 4.0 * sig) / h)) + 1
    n_comb = int(math.ceil(a_hi * s[-1] / h)) + 2
    n_fft = sfft.next_fast_len(n_lag + n_comb + int(8 * sig / h) + 2, real=True)
    freqs = sfft.rfftfreq(n_fft, d=h)
    kernel = np.exp(-0.5 * (2.0 * math.pi * freqs * sig) ** 2)
    t0_axis = origin + h * np.arange(n_lag)
    first = int(np.searchsorted(t0_axis, t0_lo))
    last = int(np.searchsorted(t0_axis, t0_hi, side="right"))
    y = stretches[:, None] * s[None, :] / h  # (R, I) bin positions of the comb
    j0 = np.floor(y).astype(np.int64)
    fr = y - j0
    grid = _CoarseGrid(
        stretches, origin, int(n_fft), kernel, t0_axis, first, last,
        np.ascontiguousarray(j0), np.ascontiguousarray(c * (1 - fr)),
        np.ascontiguousarray(c * fr),
    )
    for arr in (grid.stretches, grid.kernel, grid.t0_axis, grid.j0, grid.w_lo, grid.w_hi):
        arr.flags.writeable = False  # shared by every call: read-only
    return grid


@numba.njit(cache=True, nogil=True)
def _scan_rows(
    ms: NDArray, j0: NDArray, w_lo: NDArray, w_hi: NDArray, first: int, last: int, per_row: int
) -> tuple[NDArray, NDArray]:  # pragma: no cover - compiled
    """Correlation of every stretch row over lags ``first-1 .. last``; top local maxima.

    ``corr[L] = sum_i w_lo[i] ms[L + j0[i]] + w_hi[i] ms[L + j0[i] + 1]`` (indices
    modulo ``ms.size``): the smoothed measured train against the comb shifted by
    lag ``L``.  Returns the ``per_row`` largest local maxima per row (value, lag),
    ``-inf`` where a row has fewer.
    """
    n_rows, n_ions = j0.shape
    n = ms.size
    width = last - first + 2  # lags first-1 .. last: neighbours of first .. last-1
    vals = np.full((n_rows, per_row), -np.inf)
    lags = np.zeros((n_rows, per_row), dtype=np.int64)
    band = np.empty(width)
    for r in range(n_rows):
        band[:] = 0.0
        for i in range(n_ions):
            k0 = (first - 1 + j0[r, i]) % n
            wl = w_lo[r, i]
            wh = w_hi[r, i]
            if k0 + width + 1 <= n:
                lo = ms[k0 : k0 + width]  # views: lets the loop vectorise
                hi = ms[k0 + 1 : k0 + 1 + width]
                for m in range(width):
                    band[m] += wl * lo[m] + wh * hi[m]
            else:
                for m in range(width):
                    band[m] += wl * ms[(k0 + m) % n] + wh * ms[(k0 + m + 1) % n]
        for m in range(1, width - 1):
            v = band[m]
            if v > band[m - 1] and v >= band[m + 1] and v > vals[r, per_row - 1]:
                q = per_row - 1
                while q > 0 and v > vals[r, q - 1]:
                    vals[r, q] = vals[r, q - 1]
                    lags[r, q] = lags[r, q - 1]
                    q -= 1
                vals[r, q] = v
                lags[r, q] = first + m - 1
    return vals, lags


@numba.njit(cache=True, nogil=True)
def _pick_distinct(
    order: NDArray, row_of: NDArray, t0_of: NDArray, n_pos: int, n_max: int, t_near: float
) -> NDArray:  # pragma: no cover - compiled
    """Greedy best-first maxima, skipping any within 3 rows and ``t_near`` of a chosen one."""
    chosen = np.empty(n_max, dtype=np.int64)
    n_chosen = 0
    for n in range(n_pos):
        if n_chosen >= n_max:
            break
        near = False
        for c in range(n_chosen):
            k = chosen[c]
            if abs(row_of[k] - row_of[n]) <= 3 and abs(t0_of[k] - t0_of[n]) <= t_near:
                near = True  # same ridge as a better maximum
                break
        if not near:
            chosen[n_chosen] = n
            n_chosen += 1
    return chosen[:n_chosen]


def _coarse_candidates(
    p: NDArray, w: NDArray, s_comb: NDArray, c_comb: NDArray, cfg: BootstrapSettings
) -> tuple[NDArray, NDArray]:
    """FFT-smoothed cross-correlation over the (stretch, t0) box; best distinct maxima.

    The measured impulse train is smoothed once (FFT, Gaussian of the coarse
    tolerance); the correlation with the comb of every trial stretch at every
    shift is then a sum of the comb's few impulses over the smoothed train
    (compiled, with the local-maximum search fused in).  The event-independent
    comb geometry is cached per settings.

    Returns the stretches (µs/sqrt(u)) and shifts (µs) of up to
    ``cfg.n_candidates`` distinct local maxima, best first.
    """
    sig = cfg.coarse_tolerance_us
    h = sig
    g = _coarse_grid(cfg, tuple(map(float, s_comb)), tuple(map(float, c_comb)))
    n_fft = g.n_fft

    # Measured impulse train, linear split between neighbouring bins.
    x = (p - g.origin) / h
    keep = (x >= 0) & (x < n_fft - 1)
    x, wk = x[keep], w[keep]
    i0 = np.floor(x).astype(int)
    frac = x - i0
    meas = np.bincount(i0, wk * (1 - frac), n_fft) + np.bincount(i0 + 1, wk * frac, n_fft)
    ms = sfft.irfft(sfft.rfft(meas) * g.kernel, n=n_fft)

    per_row = 3  # local maxima kept per stretch row
    vals, lags = _scan_rows(ms, g.j0, g.w_lo, g.w_hi, g.first, g.last, per_row)
    flat_vals = vals.ravel()
    order = np.argsort(-flat_vals)
    row_of = order // per_row
    t0_of = g.t0_axis[lags.ravel()[order]]
    n_pos = int(np.count_nonzero(flat_vals > 0))
    sel = _pick_distinct(order, row_of, t0_of, n_pos, int(cfg.n_candidates), 3 * sig)
    return g.stretches[row_of[sel]], t0_of[sel]


@numba.njit(cache=True, nogil=True)
def _match_into(
    p: NDArray, a: float, t0: float, s_comb: NDArray, tol: float, d: NDArray,
    ion: NDArray, ok: NDArray,
) -> int:  # pragma: no cover - compiled
    """Mutual nearest neighbours of ``p`` and the comb ``t0 + a*s_comb`` within ``tol``.

    Fills ``ion`` (nearest comb line per peak) and ``ok`` (matched); returns the count.
    """
    n_p = p.size
    n_i = s_comb.size
    for j in range(n_p):
        for i in range(n_i):
            d[j, i] = abs(p[j] - (t0 + a * s_comb[i]))
    count = 0
    for j in range(n_p):
        bi = 0
        for i in range(1, n_i):
            if d[j, i] < d[j, bi]:
                bi = i
        bj = 0
        for jj in range(1, n_p):
            if d[jj, bi] < d[bj, bi]:
                bj = jj
        ion[j] = bi
        ok[j] = bj == j and d[j, bi] <= tol
        count += ok[j]
    return count


@numba.njit(cache=True, nogil=True)
def _refine_kernel(
    a_in: NDArray, t0_in: NDArray, p: NDArray, w: NDArray, s_comb: NDArray, c_comb: NDArray,
    tols: NDArray, tol: float, a_lo: float, a_hi: float,
) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray, NDArray]:  # pragma: no cover
    n_c = a_in.size
    n_p = p.size
    a = a_in.astype(np.float64)
    t0 = t0_in.astype(np.float64)
    ion_out = np.full((n_c, n_p), -1, dtype=np.int64)
    score = np.zeros(n_c)
    explained = np.zeros(n_c)
    n_matched = np.zeros(n_c, dtype=np.int64)
    d = np.empty((n_p, s_comb.size))
    ion = np.empty(n_p, dtype=np.int64)
    ok = np.empty(n_p, dtype=np.bool_)
    for c in range(n_c):
        alive = True
        for tol_k in tols:
            n = _match_into(p, a[c], t0[c], s_comb, tol_k, d, ion, ok)
            alive = alive and n >= 2
            nn = max(n, 1)
            sm = 0.0
            tm = 0.0
            for j in range(n_p):
                if ok[j]:
                    sm += s_comb[ion[j]]
                    tm += p[j]
            sm /= nn
            tm /= nn
            den = 0.0
            num = 0.0
            for j in range(n_p):
                if ok[j]:
                    dsj = s_comb[ion[j]] - sm
                    den += dsj * dsj
                    num += dsj * (p[j] - tm)
            a_new = num / den if den != 0.0 else (np.nan if num == 0.0 else np.inf)
            alive = alive and np.isfinite(a_new) and a_new >= 0.98 * a_lo and a_new <= 1.02 * a_hi
            if alive:
                a[c] = a_new
                t0[c] = tm - a_new * sm
        n = _match_into(p, a[c], t0[c], s_comb, tol, d, ion, ok)
        if not alive:
            continue  # no match, score 0, explained 0
        lo_t = t0[c] + a[c] * s_comb[0] - tol
        hi_t = t0[c] + a[c] * s_comb[-1] + tol
        sc = 0.0
        total = 0.0
        matched_w = 0.0
        for j in range(n_p):
            if p[j] >= lo_t and p[j] <= hi_t:
                total += w[j]
            if ok[j]:
                resid = p[j] - (t0[c] + a[c] * s_comb[ion[j]])
                q = resid / (0.5 * tol)
                sc += c_comb[ion[j]] * w[j] * np.exp(-0.5 * q * q)
                matched_w += w[j]
                ion_out[c, j] = ion[j]
        score[c] = sc
        n_matched[c] = n
        explained[c] = matched_w / max(total, 1e-300) if total > 0 else 0.0
    return a, t0, ion_out, score, explained, n_matched


def _refine(
    a: NDArray, t0: NDArray, p: NDArray, w: NDArray, s_comb: NDArray, c_comb: NDArray,
    cfg: BootstrapSettings,
) -> _Candidates:
    """Assign / refit all candidates with a shrinking tolerance (compiled, per candidate)."""
    a_lo, a_hi = cfg.stretch_range
    ratio = cfg.tolerance_us / cfg.coarse_tolerance_us
    tols = np.array([cfg.coarse_tolerance_us * ratio**f for f in (0.0, 0.5, 1.0, 1.0)])
    a_out, t0_out, ion, score, explained, n_matched = _refine_kernel(
        np.asarray(a, dtype=float), np.asarray(t0, dtype=float), np.ascontiguousarray(p),
        np.ascontiguousarray(w), np.ascontiguousarray(s_comb), np.ascontiguousarray(c_comb),
        tols, float(cfg.tolerance_us), float(a_lo), float(a_hi),
    )
    return _Candidates(a_out, t0_out, ion, score, explained, n_matched)


def _uncalibrated(reason: UncalibratedReason, message: str, **kw: Any) -> BootstrapResult:
    _log.debug("bootstrap: uncalibrated (%s): %s", reason.value, message)
    return BootstrapResult(BootstrapStatus.UNCALIBRATED, reason, message=message, **kw)


def bootstrap_calibration(
    peak_times_us: ArrayLike,
    amplitudes: ArrayLike | None = None,
    *,
    preset: str = "flight",
    settings: CalibrationSettings | None = None,
) -> BootstrapResult:
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
    BootstrapResult
        CALIBRATED with a :class:`TOFMassCal` and the assignments, or
        UNCALIBRATED with a :class:`UncalibratedReason`.

    Raises
    ------
    CalibrationError
        If the inputs are malformed (shape mismatch, non-finite values).
    """
    cfg_all = settings if settings is not None else load_calibration_settings(preset)
    cfg = cfg_all.bootstrap
    p = np.asarray(peak_times_us, dtype=float).ravel()
    if amplitudes is None:
        amp = np.ones_like(p)
    else:
        amp = np.asarray(amplitudes, dtype=float).ravel()
        if amp.shape != p.shape:
            raise CalibrationError(f"{p.size} peak times but {amp.size} amplitudes")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(amp))):
        raise CalibrationError("peak times and amplitudes must be finite")
    if p.size == 0:
        return _uncalibrated(UncalibratedReason.NO_LINES, "no peaks")
    if p.size == 1:
        return _uncalibrated(UncalibratedReason.ONE_LINE, "a single peak fixes only one parameter")
    amp = np.abs(amp)
    w = (amp / amp.max()) ** cfg.amplitude_power if amp.max() > 0 else np.ones_like(p)

    comb = cfg_all.comb
    m_comb = np.array([ion.mass_u for ion in comb])
    s_comb = np.sqrt(m_comb)
    c_comb = np.array([ion.weight for ion in comb])

    a_start, t0_start = _coarse_candidates(p, w, s_comb, c_comb, cfg)
    cands = _refine(a_start, t0_start, p, w, s_comb, c_comb, cfg)
    rank = np.lexsort((-cands.n_matched, -cands.score))
    if rank.size == 0 or cands.n_matched[rank[0]] < 2:
        return _uncalibrated(UncalibratedReason.OFF_COMB, "no alignment matches two comb lines")
    b = int(rank[0])
    n_best = int(cands.n_matched[b])
    best_score = float(cands.score[b])
    explained = float(cands.explained[b])
    info = dict(stretch=float(cands.stretch[b]), shift=float(cands.shift[b]), score=best_score,
                n_matched=n_best, explained_fraction=explained)
    if n_best < cfg.min_matches:
        return _uncalibrated(UncalibratedReason.OFF_COMB,
                             f"best alignment matches {n_best} comb lines", **info)
    if explained < cfg.min_explained_fraction:
        return _uncalibrated(UncalibratedReason.OFF_COMB,
                             f"comb explains {explained:.0%} of the peak weight", **info)
    if best_score < cfg.min_score:
        return _uncalibrated(UncalibratedReason.LOW_SCORE, f"score {best_score:.2f}", **info)
    best_ion = cands.ion[b]
    shared = ((cands.ion == best_ion[None, :]) & (best_ion[None, :] >= 0)).sum(axis=1)
    rivals = np.nonzero(
        (shared < 2)
        & (cands.n_matched >= n_best)
        & (cands.score >= cfg.ambiguity_ratio * best_score)
    )[0]
    if rivals.size:
        r = int(rivals[0])
        return _uncalibrated(
            UncalibratedReason.AMBIGUOUS,
            f"alignments a={cands.stretch[b]:.4f} and a={cands.stretch[r]:.4f} µs/sqrt(u) "
            f"score {best_score:.2f} and {cands.score[r]:.2f}",
            **info,
        )
    matched = best_ion >= 0
    best_peaks = np.nonzero(matched)[0]
    best_ions = best_ion[matched]

    # Reassignment with the growing polynomial over the extended line list.
    fit_cfg = cfg_all.fit
    ext = cfg_all.extended
    m_ext = np.array([ion.mass_u for ion in ext])
    comb_to_ext = np.searchsorted(m_ext, m_comb[best_ions])
    pj, ij = best_peaks, comb_to_ext
    weight = 1.0 / fit_cfg.timing_sigma_us**2
    cal: TOFMassCal | None = None
    for _ in range(cfg.max_iterations):
        cal = TOFMassCal.fit(
            p[pj], m_ext[ij], np.full(pj.size, weight),
            mass_range=fit_cfg.mass_range_u, max_order=fit_cfg.max_order,
            min_lines_for_order=fit_cfg.min_lines_for_order,
        )
        if not cal.usable:
            return _uncalibrated(UncalibratedReason.FIT_FAILED,
                                 f"polynomial fit {cal.status.value}", **info)
        new_pj, new_ij = _match(p, np.asarray(cal.time(m_ext)), cfg.tolerance_us)
        if new_pj.size < 2:
            break
        if np.array_equal(new_pj, pj) and np.array_equal(new_ij, ij):
            break
        pj, ij = new_pj, new_ij
    assert cal is not None
    # Report the linear (stretch, shift) of the final, larger line set.
    if pj.size >= 2:
        t0_lin, a_lin = _linear_fit(np.sqrt(m_ext[ij]), p[pj])
        if math.isfinite(a_lin):
            info["stretch"], info["shift"] = a_lin, t0_lin
    model_t = np.asarray(cal.time(m_ext[ij]))
    assignments = [
        Assignment(int(j), ext[i].label, float(ext[i].mass_u), float(p[j]), float(p[j] - tj))
        for j, i, tj in zip(pj, ij, model_t, strict=True)
    ]
    return BootstrapResult(
        BootstrapStatus.CALIBRATED, UncalibratedReason.NONE, cal, assignments,
        message=f"{len(assignments)} lines, order {cal.order}", **info,
    )


# --------------------------------------------------------------------------- synthetic data


def synthetic_peaks(
    rng: np.random.Generator,
    *,
    preset: str = "flight",
    n_ions: int | tuple[int, int] = (4, 10),
    n_spurious: int | tuple[int, int] = (0, 3),
    jitter_us: float = 0.001,
    stretch: float | None = None,
    t0: float | None = None,
    settings: CalibrationSettings | None = None,
) -> tuple[NDArray, NDArray, dict[str, Any]]:
    """Synthetic peak list for tests and benchmarks.

    Picks a stretch and t0 inside the preset's ranges (with 5 % margin), a random
    subset of comb ions and a few spurious peaks away from every comb line.

    Returns
    -------
    times_us : numpy.ndarray
        Peak centres, µs, shuffled.
    amplitudes : numpy.ndarray
        Peak amplitudes (arbitrary units).
    truth : dict
        ``stretch``, ``t0``, ``labels`` (per peak, None for spurious) and
        ``masses`` (per peak, NaN for spurious).
    """
    cfg = settings if settings is not None else load_calibration_settings(preset)
    comb = cfg.comb
    a_lo, a_hi = cfg.bootstrap.stretch_range
    t_lo, t_hi = cfg.bootstrap.t0_range_us
    a = stretch if stretch is not None else rng.uniform(a_lo + 0.05 * (a_hi - a_lo),
                                                        a_hi - 0.05 * (a_hi - a_lo))
    z = t0 if t0 is not None else rng.uniform(t_lo + 0.05 * (t_hi - t_lo),
                                              t_hi - 0.05 * (t_hi - t_lo))
    k = n_ions if isinstance(n_ions, int) else int(rng.integers(n_ions[0], n_ions[1] + 1))
    k = min(k, len(comb))
    n_sp = n_spurious if isinstance(n_spurious, int) else int(
        rng.integers(n_spurious[0], n_spurious[1] + 1))
    pick = rng.choice(len(comb), size=k, replace=False)
    masses = np.array([comb[i].mass_u for i in pick])
    labels: list[str | None] = [comb[i].label for i in pick]
    times = z + a * np.sqrt(masses) + rng.normal(0.0, jitter_us, k)
    amps = rng.uniform(0.2, 1.0, k) * np.array([comb[i].weight for i in pick])
    comb_t = z + a * np.sqrt([ion.mass_u for ion in comb])
    spurious: list[float] = []
    while len(spurious) < n_sp:
        ts = rng.uniform(comb_t[0], comb_t[-1])
        if np.min(np.abs(comb_t - ts)) > 0.05:
            spurious.append(ts)
    times = np.concatenate([times, spurious])
    amps = np.concatenate([amps, rng.uniform(0.05, 0.5, n_sp)])
    masses = np.concatenate([masses, np.full(n_sp, np.nan)])
    labels += [None] * n_sp
    order = rng.permutation(times.size)
    truth = {
        "stretch": a,
        "t0": z,
        "labels": [labels[i] for i in order],
        "masses": masses[order],
    }
    return times[order], amps[order], truth
