"""Compiled kernels of the comb alignment search (:mod:`idexdask.calibration.comb`).

The event-independent coarse grid (:func:`coarse_grid`), the peaks of each
event rasterised as weighted impulse trains (:func:`impulse_trains`), the local
maxima of their smoothed cross-correlation with the comb over every stretch and
shift (:func:`scan_events`), then per event the refinement, credibility gates
and reassignment with the polynomial fit (:func:`finish_events`).  The method is
described in :mod:`idexdask.calibration.comb`; the arrays these kernels fill are
those of :class:`~idexdask.calibration.comb.CombBatch`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft

from idexdask.calibration.polynomial import fit_event, time_of_mass
from idexdask.calibration.settings import BootstrapSettings
from idexdask.numerics import pairwise_sum

__all__ = ["CoarseGrid", "coarse_grid", "finish_events", "impulse_trains", "scan_events"]


@dataclass(frozen=True)
class CoarseGrid:
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
def coarse_grid(
    cfg: BootstrapSettings, s_comb: tuple[float, ...], c_comb: tuple[float, ...]
) -> CoarseGrid:
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
    grid = CoarseGrid(
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
def impulse_trains(
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
def scan_events(
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
def finish_events(
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
    """Refine, gate and reassign every event of ``events``.

    Writes each event's reason code (index into
    :class:`~idexdask.calibration.comb.UncalibratedReason`, 0: calibrated) and its
    results into the output arrays, as :class:`~idexdask.calibration.comb.CombBatch`
    holds them.
    """
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
        # linear (stretch, shift) of the final line set, as CombResult.stretch and shift are defined
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
