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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft

from idexdask._logging import get_logger
from idexdask.calibration.polynomial import fit_event, time_of_mass
from idexdask.calibration.settings import (  # the settings' home; names kept here too
    BootstrapSettings,
    CalibrationSettings,
    FitSettings,
    load_calibration_settings,
)
from idexdask.calibration.tofmass import STATUS_CODES, TOFMassCal, slope_grid
from idexdask.errors import CalibrationError
from idexdask.numerics import pairwise_sum

__all__ = [
    "FitSettings",
    "BootstrapSettings",
    "CalibrationSettings",
    "load_calibration_settings",
    "BootstrapStatus",
    "UncalibratedReason",
    "Assignment",
    "BootstrapResult",
    "BootstrapBatch",
    "bootstrap_calibration",
    "bootstrap_calibrations",
    "stack_coefficients",
    "synthetic_peaks",
]

_log = get_logger(__name__)

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



@numba.njit(cache=True, nogil=True)
def _event_weights(amp: NDArray, power: float, w: NDArray) -> None:  # pragma: no cover
    """Peak weights ``(|A| / max|A|) ** power`` (all 1 when every amplitude is 0)."""
    amax = 0.0
    for v in amp:
        amax = max(amax, abs(v))
    for j in range(amp.size):
        if amax <= 0:
            w[j] = 1.0
            continue
        x = abs(amp[j]) / amax
        # NumPy's scalar-power shortcuts, so the rounding is the same
        if power == 1.0:
            w[j] = x
        elif power == 0.5:
            w[j] = math.sqrt(x)
        elif power == 2.0:
            w[j] = x * x
        elif power == 0.0:
            w[j] = 1.0
        else:
            w[j] = x**power


@numba.njit(cache=True, nogil=True)
def _trains(
    p: NDArray, amp: NDArray, starts: NDArray, counts: NDArray, events: NDArray,
    origin: float, h: float, power: float, w: NDArray, meas: NDArray,
) -> None:  # pragma: no cover - compiled
    """Peak weights ``w`` and measured impulse trains ``meas[k]`` of ``events[k]``.

    Each peak is split linearly between its two neighbouring bins (the order of
    the sums follows ``numpy.bincount``).
    """
    n_fft = meas.shape[1]
    lo = np.empty(n_fft)
    hi = np.empty(n_fft)
    for k in range(events.size):
        e = events[k]
        s0 = starts[e]
        n = counts[e]
        _event_weights(amp[s0 : s0 + n], power, w[s0 : s0 + n])
        lo[:] = 0.0
        hi[:] = 0.0
        for j in range(s0, s0 + n):
            x = (p[j] - origin) / h
            if x >= 0 and x < n_fft - 1:
                i0 = int(math.floor(x))
                frac = x - i0
                lo[i0] += w[j] * (1 - frac)
                hi[i0 + 1] += w[j] * frac
        for i in range(n_fft):
            meas[k, i] = lo[i] + hi[i]


@numba.njit(cache=True, nogil=True)
def _scan_events(
    ms: NDArray, j0: NDArray, w_lo: NDArray, w_hi: NDArray, first: int, last: int, per_row: int
) -> tuple[NDArray, NDArray]:  # pragma: no cover - compiled
    """:func:`_scan_rows` of every smoothed train ``ms[k]``, flattened per event."""
    n_ev = ms.shape[0]
    n_rows = j0.shape[0]
    vals = np.empty((n_ev, n_rows * per_row))
    lags = np.empty((n_ev, n_rows * per_row), dtype=np.int64)
    for k in range(n_ev):
        v, g = _scan_rows(ms[k], j0, w_lo, w_hi, first, last, per_row)
        vals[k] = v.ravel()
        lags[k] = g.ravel()
    return vals, lags


@numba.njit(cache=True, nogil=True)
def _match_lines(p: NDArray, q: NDArray, tol: float, line: NDArray) -> int:  # pragma: no cover
    """Mutual nearest neighbours of peaks ``p`` and line times ``q`` within ``tol``.

    ``line[j]`` is the matched line of peak j, or -1; returns the number matched.
    """
    n_p = p.size
    n_q = q.size
    count = 0
    for j in range(n_p):
        line[j] = -1
        if n_q == 0:
            continue
        bi = 0
        for i in range(1, n_q):
            if abs(p[j] - q[i]) < abs(p[j] - q[bi]):
                bi = i
        bj = 0
        for jj in range(1, n_p):
            if abs(p[jj] - q[bi]) < abs(p[bj] - q[bi]):
                bj = jj
        if bj == j and abs(p[j] - q[bi]) <= tol:
            line[j] = bi
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _finish_events(
    p: NDArray, w: NDArray, starts: NDArray, counts: NDArray, events: NDArray,
    order: NDArray, vals: NDArray, lags: NDArray, stretches: NDArray, t0_axis: NDArray,
    per_row: int, n_cand: int, t_near: float,
    s_comb: NDArray, c_comb: NDArray, tols: NDArray, tol: float, a_lo: float, a_hi: float,
    min_matches: int, min_score: float, min_explained: float, ambiguity: float,
    comb_to_ext: NDArray, s_ext: NDArray, m_ext: NDArray, line_weight: float, max_iter: int,
    max_order: int, min_lines: NDArray, s_min: float, s_max: float, sgrid: NDArray,
    reason: NDArray, rival_stretch: NDArray, rival_score: NDArray, fit_status: NDArray,
    stretch: NDArray, shift: NDArray, score: NDArray, n_matched: NDArray, explained: NDArray,
    coef: NDArray, cov: NDArray,
    cal_order: NDArray, requested: NDArray, peak_line: NDArray, fit_line: NDArray,
) -> None:  # pragma: no cover - compiled
    """Refine, gate and reassign every event of ``events`` (codes: :data:`_REASONS`)."""
    n_ext = s_ext.size
    q = np.empty(n_ext)
    cf = np.empty(coef.shape[1])
    cv = np.empty((coef.shape[1], coef.shape[1]))
    for k in range(events.size):
        e = events[k]
        s0 = starts[e]
        n = counts[e]
        pe = np.ascontiguousarray(p[s0 : s0 + n])
        we = np.ascontiguousarray(w[s0 : s0 + n])
        # best distinct coarse maxima, then the shrinking-tolerance refinement
        ordk = order[k]
        n_pos = 0
        for v in vals[k]:
            n_pos += v > 0
        row_of = ordk // per_row
        t0_of = t0_axis[lags[k][ordk]]
        sel = _pick_distinct(ordk, row_of, t0_of, n_pos, n_cand, t_near)
        a_c, t0_c, ion, sc, ex, nm = _refine_kernel(
            stretches[row_of[sel]], t0_of[sel], pe, we, s_comb, c_comb, tols, tol, a_lo, a_hi
        )
        # best: highest score, then most matches, then first (numpy.lexsort order)
        b = -1
        for c in range(sc.size):
            if b < 0 or sc[c] > sc[b] or (sc[c] == sc[b] and nm[c] > nm[b]):
                b = c
        if b < 0 or nm[b] < 2:
            reason[e] = 3  # OFF_COMB, no alignment at all
            continue
        stretch[e] = a_c[b]
        shift[e] = t0_c[b]
        score[e] = sc[b]
        n_matched[e] = nm[b]
        explained[e] = ex[b]
        if nm[b] < min_matches or ex[b] < min_explained:
            reason[e] = 3
            continue
        if sc[b] < min_score:
            reason[e] = 4
            continue
        r_found = -1
        for c in range(sc.size):
            shared = 0
            for j in range(n):
                shared += ion[c, j] == ion[b, j] and ion[b, j] >= 0
            if shared < 2 and nm[c] >= nm[b] and sc[c] >= ambiguity * sc[b]:
                r_found = c
                break
        if r_found >= 0:
            reason[e] = 5  # AMBIGUOUS
            rival_stretch[e] = a_c[r_found]
            rival_score[e] = sc[r_found]
            continue
        # reassignment over the extended list with the growing polynomial
        cur = np.full(n, -1, dtype=np.int64)
        for j in range(n):
            if ion[b, j] >= 0:
                cur[j] = comb_to_ext[ion[b, j]]
        new = np.empty(n, dtype=np.int64)
        failed = False
        k_fit = 0
        for _ in range(max_iter):
            n_l = 0
            for j in range(n):
                n_l += cur[j] >= 0
            tt = np.empty(n_l)
            ss = np.empty(n_l)
            mm = np.empty(n_l)
            i = 0
            for j in range(n):
                if cur[j] >= 0:
                    tt[i] = pe[j]
                    ss[i] = s_ext[cur[j]]
                    mm[i] = m_ext[cur[j]]
                    i += 1
            st, k_fit, req = fit_event(
                ss, mm, tt, np.full(n_l, line_weight), True, max_order, min_lines,
                s_min, s_max, sgrid, cf, cv,
            )
            usable = st <= 1
            for v in cf:
                usable = usable and np.isfinite(v)
            fit_status[e] = st
            requested[e] = req
            if not usable:
                failed = True
                break
            for j in range(n):
                fit_line[s0 + j] = cur[j]
            for i in range(n_ext):
                q[i] = time_of_mass(cf, k_fit, s_ext[i], s_min)
            n_new = _match_lines(pe, q, tol, new)
            if n_new < 2:
                break
            same = True
            for j in range(n):
                same = same and new[j] == cur[j]
            if same:
                break
            cur[:] = new
        if failed:
            reason[e] = 6
            for j in range(n):
                fit_line[s0 + j] = -1
            continue
        reason[e] = 0
        coef[e] = cf
        cov[e] = cv
        cal_order[e] = k_fit
        # linear (stretch, shift) of the final line set, as _linear_fit did in NumPy
        n_l = 0
        for j in range(n):
            if cur[j] >= 0:
                peak_line[s0 + j] = cur[j]
                n_l += 1
        if n_l >= 2:
            sl = np.empty(n_l)
            tl = np.empty(n_l)
            i = 0
            for j in range(n):
                if cur[j] >= 0:
                    sl[i] = s_ext[cur[j]]
                    tl[i] = pe[j]
                    i += 1
            sm = pairwise_sum(sl, 0, n_l) / n_l
            tm = pairwise_sum(tl, 0, n_l) / n_l
            ds = sl - sm
            den = np.dot(ds, ds)  # BLAS ddot, like ``ds @ ds``
            if den > 0:
                a_lin = np.dot(ds, tl - tm) / den
                if np.isfinite(a_lin):
                    stretch[e] = a_lin
                    shift[e] = tm - a_lin * sm


#: Reason codes of the compiled kernels: index into this tuple; -1 marks malformed input.
_REASONS: tuple[UncalibratedReason, ...] = tuple(UncalibratedReason)
_ERROR = -1
_PER_ROW = 3  # local maxima kept per stretch row of the coarse scan
_CHUNK = 256  # events per block of the coarse search (bounds the (events, n_fft) arrays)


@dataclass(frozen=True)
class _Tables:
    """Event-independent arrays of one :class:`CalibrationSettings`."""

    grid: _CoarseGrid
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
        grid=_coarse_grid(cfg, tuple(map(float, s_comb)), tuple(map(float, c_comb))),
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
class BootstrapBatch:
    """Result of :func:`bootstrap_calibrations` for many spectra (E events, N peaks).

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
        As in :class:`BootstrapResult` (µs/sqrt(u), µs, 1, 1, 1).
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
        """:class:`BootstrapStatus` values per event, ``str`` array (E,)."""
        return np.where(self.calibrated, BootstrapStatus.CALIBRATED.value,
                        BootstrapStatus.UNCALIBRATED.value)

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

    def result(self, e: int) -> BootstrapResult:
        """The :class:`BootstrapResult` of event ``e`` (what :func:`bootstrap_calibration` gives).

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
            _log.debug("bootstrap: uncalibrated (%s): %s", reason.value, message)
            return BootstrapResult(BootstrapStatus.UNCALIBRATED, reason, message=message, **info)
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
        return BootstrapResult(
            BootstrapStatus.CALIBRATED, UncalibratedReason.NONE, cal, assignments,
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


def bootstrap_calibrations(
    peak_times_us: ArrayLike,
    amplitudes: ArrayLike | None,
    offsets: ArrayLike,
    *,
    preset: str = "flight",
    settings: CalibrationSettings | None = None,
) -> BootstrapBatch:
    """Calibrate many spectra at once from their peak lists (batched :func:`bootstrap_calibration`).

    Same algorithm and results as :func:`bootstrap_calibration` event by event
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
    BootstrapBatch
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
    out = BootstrapBatch(
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
        _trains(p, amp, starts, counts, events, g.origin, cfg.coarse_tolerance_us,
                cfg.amplitude_power, w, meas)
        ms = sfft.irfft(sfft.rfft(meas, axis=-1) * g.kernel, n=g.n_fft, axis=-1)
        vals, lags = _scan_events(ms, g.j0, g.w_lo, g.w_hi, g.first, g.last, _PER_ROW)
        order = np.argsort(-vals, axis=1)  # row by row as numpy.argsort of one event
        _finish_events(
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

    See Also
    --------
    bootstrap_calibrations : many spectra at once, same results.
    """
    p = np.asarray(peak_times_us, dtype=float).ravel()
    batch = bootstrap_calibrations(
        p, amplitudes, np.array([0, p.size]), preset=preset, settings=settings
    )
    return batch.result(0)


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
