"""Second lines found where the fitted lines leave a data maximum unexplained.

The detection (:mod:`idexdask.analysis.peaks`) runs on a smoothed spectrum and
keeps peaks at least ``min_distance_us`` apart, so a narrow line on the flank
or the flat top of a broader one, a few samples from its mode, is not
separated.  After the fits, a TOF-MS analyst looks at the residuals: a local
maximum of the data that no fitted line accounts for is a line the search
missed.  :func:`add_residual_lines` does that:

* **Where.**  Local maxima of the spectrum (the highest sample within
  ``min_distance_us``, every sample there usable) inside the window of a
  converged line, at least ``height_sigma`` noise sigmas high, with no
  converged line's maximum within :data:`MODE_MATCH_SAMPLES` samples and no
  unconverged detection there (a failed fit is the blends' business).
* **Test.**  The lines there (the nearest, those whose fits span the maximum
  and those whose profiles reach it with 2 noise sigmas: the *hosts*) are
  fitted jointly (a blend of :mod:`idexdask.analysis.blends`: one constant,
  the event's other lines removed, each centre within its own window).  Where
  that fit converges and its residual, smoothed with the detection's boxcar,
  reaches the detection's prominence threshold (``prominence_sigma``
  smoothed-baseline sigmas) within :data:`MODE_MATCH_SAMPLES` samples of the
  maximum, the blend is fitted again with one more Gaussian line started
  there (centre within ``min_distance_us`` of it).  Same window, fitter and
  convergence criteria; a fit that does not converge from its start is
  repeated from the data's maxima (:meth:`Blend.from_peaks`), the better
  kept.  The second line is kept where that fit converges, the F-test of its
  3 parameters gives ``p <= residual_max_pvalue``, and the new line and every
  host are significant and wider than a spike.
* **Result.**  A kept line is a new row of the candidates and the fits (its
  ``prominence`` the smoothed residual's height in smoothed-baseline sigmas),
  its hosts take the joint fit's values.  Nothing else changes; maxima that
  fail the test keep their fits as they are.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from idexdask._logging import get_logger
from idexdask.analysis.blends import (
    MAX_BLEND_LINES,
    Blend,
    better_fit,
    fit_blend_group,
    line_profiles,
    multi_line_model,
    prepare_blend,
)
from idexdask.analysis.fitting import BatchFitResult, FitStatus
from idexdask.analysis.line_fits import LineFits, classify_lines, line_heights
from idexdask.analysis.line_status import SIGMA_MIN_SAMPLES, LineShape, LineStatus
from idexdask.analysis.lineshapes import emg, gaussian
from idexdask.analysis.peaks import PeakCandidates
from idexdask.analysis.residual_screen import window_maxima

__all__ = ["MODE_MATCH_SAMPLES", "ResidualTest", "add_residual_lines", "line_modes"]

_log = get_logger(__name__)

MODE_MATCH_SAMPLES = 3
"""A fitted line whose maximum lies within this many samples of a data maximum
accounts for it (issue 19's matching distance)."""
_MODE_GRID = 24  # points of each grid on which an EMG's mode is taken


def line_modes(area: np.ndarray, center: np.ndarray, sigma: np.ndarray,
               gamma: np.ndarray) -> np.ndarray:
    """Time of each line's maximum, µs (its centre for a Gaussian, ``gamma`` NaN).

    An EMG peaks after its Gaussian centre, within 4 sigma or 1.5/gamma: the
    highest of 24 points over each span, then of 24 points within one step of
    the coarser grid around it (a resolution of 2/23 of that step).
    """
    c = np.asarray(center, dtype=float)
    tail = np.isfinite(gamma)
    out = c.copy()
    if not tail.any():
        return out
    a, cc, s, g = (np.asarray(v, dtype=float)[tail][:, None] for v in (area, center, sigma, gamma))
    grid = np.linspace(-1.0, 4.0, _MODE_GRID)[None, :]
    x = np.concatenate([cc + grid * s, cc + (grid + 1.0) / (3.3 * g)], axis=1)
    rows = np.arange(x.shape[0])
    best = x[rows, np.argmax(_profiles_rows(x, a, cc, s, g), axis=1)][:, None]
    coarse = np.maximum(s, 1.0 / (3.3 * g)) * (5.0 / (_MODE_GRID - 1))
    fine = best + coarse * np.linspace(-1.0, 1.0, _MODE_GRID)[None, :]
    prof = _profiles_rows(fine, a, cc, s, g)
    top = fine[rows, np.argmax(prof, axis=1)]
    out[tail] = np.where(prof.max(axis=1) > 0, top, c[tail])
    return out


def _profiles_rows(x: np.ndarray, a: np.ndarray, c: np.ndarray, s: np.ndarray,
                       g: np.ndarray) -> np.ndarray:
    """EMG profiles on per-row times ``x`` (rows, points), 0 where not finite."""
    from idexdask.analysis.lineshapes import emg

    with np.errstate(all="ignore"):
        prof = emg(x, a, c, s, g)
    return np.where(np.isfinite(prof), prof, 0.0)


@dataclass
class ResidualTest:
    """One data maximum tested for a second line.

    Attributes
    ----------
    event, index : int
        The maximum: event and sample.
    time : float
        Its time, µs.
    residual_sigma : float
        Residual there, smoothed with the detection's boxcar, in smoothed-
        baseline sigmas: of the hosts' joint fit, or the screen's excess over
        the fitted lines where that fit did not converge.
    hosts : numpy.ndarray
        Rows (of the fits given) of the lines fitted with it.
    chisq_one, chisq_two : float
        Chi-square of the hosts alone and with the second line (NaN unfitted).
    pvalue : float
        F-test of the second line's 3 parameters (NaN unless both converged).
    kept : bool
        Whether the second line was added.
    """

    event: int
    index: int
    time: float
    residual_sigma: float
    hosts: np.ndarray
    chisq_one: float = math.nan
    chisq_two: float = math.nan
    pvalue: float = math.nan
    kept: bool = False


def add_residual_lines(
    y: np.ndarray,
    t: Any,
    noise: np.ndarray,
    cand: PeakCandidates,
    fits: LineFits,
    zsig: np.ndarray,
    settings: Mapping[str, Any],
    step: np.ndarray,
    tests: list[ResidualTest] | None = None,
) -> tuple[PeakCandidates, LineFits]:
    """Add the second lines the residuals of the fits call for (see the module docstring).

    Parameters
    ----------
    y, t : numpy.ndarray
        Merged spectra and their times (n_events, n_samples), signal units
        and µs (``t`` may be a formula axis indexed like the times).
    noise : numpy.ndarray
        Noise sigma per sample (n_events, n_samples).
    cand, fits : PeakCandidates, LineFits
        The lines found and fitted (single-line and blend fits).
    zsig : numpy.ndarray
        Smoothed-baseline sigma per event (the detection's threshold unit).
    settings : mapping
        The ``peaks`` section (``height_sigma``, ``smooth_us``,
        ``min_distance_us``, ``window_left_us``, ``window_right_us``,
        ``baseline_stop_us``, ``residual_lines``, ``residual_max_pvalue``,
        ``max_iterations``, ``min_line_snr``).
    step : numpy.ndarray
        Sample step per event, µs.
    tests : list, optional
        Receives a :class:`ResidualTest` per maximum past the mode check
        (diagnostics): those the screen stops carry only its excess
        (``residual_sigma``, no hosts).

    Returns
    -------
    PeakCandidates, LineFits
        With the kept second lines inserted in (event, sample) order.
    """
    if not settings.get("residual_lines", True) or cand.size == 0:
        return cand, fits
    screened = _unexplained_maxima(y, t, noise, cand, fits, zsig, settings, step)
    if tests is not None:  # the maxima the fitted lines as they stand explain
        tests.extend(ResidualTest(event=m.event, index=m.index, time=m.time,
                                  residual_sigma=m.residual_sigma, hosts=np.zeros(0, np.int64))
                     for m in screened if m.residual_sigma < float(settings["prominence_sigma"]))
    found = [m for m in screened if m.residual_sigma >= float(settings["prominence_sigma"])]
    if not found:
        return cand, fits
    trials = [_trial(m, y, t, noise, cand, fits, settings, step) for m in found]
    trials = [tr for tr in trials if tr is not None]
    _fit_trials(trials, zsig, settings)
    accepted = _accept(trials, step, settings)
    if tests is not None:
        tests.extend(tr.test for tr in trials)
    if not accepted:
        return cand, fits
    _log.info("residual test: %d second lines added of %d maxima tested", len(accepted),
              len(trials))  # fmt: skip
    return _apply(accepted, cand, fits)


@dataclass
class _Maximum:
    event: int
    index: int
    residual_sigma: float
    time: float  # of the maximum's sample, µs


@dataclass
class _Trial:
    """One maximum's two joint fits: the hosts alone (``one``) and with the new line."""

    test: ResidualTest
    new_row: int  # row of the new line in the extended arrays
    near: np.ndarray  # rows of the fits given that the extended arrays hold, in order
    two: Blend
    one: Blend
    fit_two: tuple[BatchFitResult, int] | None = None
    fit_one: tuple[BatchFitResult, int] | None = None


def _unexplained_maxima(
    y: np.ndarray, t: Any, noise: np.ndarray, cand: PeakCandidates, fits: LineFits,
    zsig: np.ndarray, settings: Mapping[str, Any], step: np.ndarray,
) -> list[_Maximum]:
    """Data maxima inside converged lines' windows that no converged line accounts
    for, each with its excess over the fitted lines (:func:`_event_residual`)
    in smoothed-baseline sigmas."""
    conv = np.flatnonzero((fits.status == FitStatus.CONVERGED) & ~cand.manual)
    if conv.size == 0:
        return []
    n = y.shape[1]
    ev = cand.event
    dt = step[ev[conv]]
    left = np.rint(float(settings["window_left_us"]) / dt).astype(np.int64)
    right = np.rint(float(settings["window_right_us"]) / dt).astype(np.int64)
    h = np.maximum(np.rint(float(settings["min_distance_us"]) / dt).astype(np.int64), 1)
    # the highest sample within +-h, every sample there usable, in a window
    key = np.unique(window_maxima(np.asarray(y, dtype=float), np.asarray(noise, dtype=float),
                                  ev[conv], cand.index[conv], left, right, h,
                                  float(settings["height_sigma"])))  # a maximum in several windows
    if key.size == 0:
        return []
    e, i = key // n, key % n
    te = t[e, i]  # the maxima's times, formed once
    after = te > float(settings.get("baseline_stop_us", 0.0))
    e, i, te = e[after], i[after], te[after]
    if e.size == 0:
        return []
    # no converged line's maximum within MODE_MATCH_SAMPLES samples, and no
    # unconverged detection there (its own failure, the blends' business)
    mine = conv[np.isin(ev[conv], e)]
    modes = line_modes(fits.area[mine], fits.center[mine], fits.sigma[mine], fits.gamma[mine])
    explained = _any_within(e, te, ev[mine], modes, MODE_MATCH_SAMPLES * step[e])
    failed = np.flatnonzero(fits.status != FitStatus.CONVERGED)
    explained |= _any_within(e, i, ev[failed], cand.index[failed],
                             np.full(e.size, MODE_MATCH_SAMPLES))
    e, i, te = e[~explained], i[~explained], te[~explained]
    lobe = _ringing(e, i, y, noise, settings, step)
    e, i, te = e[~lobe], i[~lobe], te[~lobe]
    if e.size == 0:
        return []
    # the fitted lines as they stand explain it: not refitted
    excess = _event_residual(e, i, y, t, cand, fits, settings, step) / zsig[e]
    return [_Maximum(int(a), int(b), float(x), float(tm))
            for a, b, x, tm in zip(e, i, excess, te, strict=True)]


def _any_within(event: np.ndarray, x: np.ndarray, line_event: np.ndarray,
                line_x: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Whether each point ``x`` of ``event`` has a line of the same event within
    ``tol`` (``|line_x - x| <= tol``), comparing each point with its own event's
    lines only: a pack holds thousands of maxima and of lines, whose full
    cross product would take hundreds of MB."""
    order = np.argsort(line_event, kind="stable")
    events, xs = line_event[order], line_x[order]
    lo = np.searchsorted(events, event, side="left")
    counts = np.searchsorted(events, event, side="right") - lo
    point = np.repeat(np.arange(event.size), counts)
    pos = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    hit = np.abs(xs[pos] - x[point]) <= tol[point]
    return np.bincount(point[hit], minlength=event.size) > 0


def _ringing(e: np.ndarray, i: np.ndarray, y: np.ndarray, noise: np.ndarray,
             settings: Mapping[str, Any], step: np.ndarray) -> np.ndarray:
    """Maxima that are one lobe of an oscillation (the criterion of
    :func:`idexdask.analysis.tof.classify_ringing`: a negative excursion of
    ``ringing_sigma`` noise sigmas and half their height within
    ``window_left_us``): no ion line is looked for there."""
    threshold = float(settings.get("ringing_sigma", 0.0))
    if not threshold > 0 or e.size == 0:
        return np.zeros(e.size, bool)
    n = y.shape[1]
    reach = np.rint(float(settings["window_left_us"]) / step[e]).astype(np.int64)
    off = np.arange(-int(reach.max()), int(reach.max()) + 1)
    cols = i[:, None] + off[None, :]
    inside = (np.abs(off)[None, :] <= reach[:, None]) & (cols >= 0) & (cols < n)
    cols = np.clip(cols, 0, n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = y[e[:, None], cols] / noise[e[:, None], cols]
        trough = np.min(np.where(inside & np.isfinite(z), z, np.inf), axis=1)
        peak = y[e, i] / noise[e, i]
        return (trough <= -threshold) & (-trough >= 0.5 * peak)


def _event_residual(e: np.ndarray, i: np.ndarray, y: np.ndarray, t: Any,
                    cand: PeakCandidates, fits: LineFits, settings: Mapping[str, Any],
                    step: np.ndarray) -> np.ndarray:
    """Highest excess within ``MODE_MATCH_SAMPLES`` of sample ``i`` of event ``e``
    (one per maximum) over the event's fitted lines (the data minus the highest
    line profile at each sample and the nearest line's constant), smoothed with
    the detection's boxcar, signal units.

    A screen before the joint fits, not their test: lines fitted on windows of
    their own overlap (a weak line's fit takes up part of its neighbour's
    tail), so their sum counts some signal twice; the highest profile never
    does, and never exceeds the joint model.  Where even this excess stays
    below the detection's threshold, the lines as they stand explain the
    maximum and no joint fit is spent on it.
    """
    n = y.shape[1]
    w = np.maximum(np.rint(float(settings["smooth_us"]) / step[e]).astype(np.int64), 1)
    wmax = int(w.max())
    half = MODE_MATCH_SAMPLES + wmax
    cols = np.clip(i[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
    x = t[e[:, None], cols]
    # the lines of each maximum's event (rows padded with a line of area 0)
    # the lines within a fit window's reach of the maximum (farther ones' tails
    # are far below the noise there)
    reach = np.rint((float(settings["window_left_us"]) + float(settings["window_right_us"]))
                    / step[e]).astype(np.int64)  # fmt: skip
    usable = np.isfinite(fits.area) & np.isfinite(fits.center) & np.isfinite(fits.sigma)
    lines = [np.flatnonzero((cand.event == a) & usable & (np.abs(cand.index - b) <= r))
             for a, b, r in zip(e, i, reach, strict=True)]  # fmt: skip
    depth = max(max(len(v) for v in lines), 1)
    idx = np.zeros((e.size, depth), dtype=np.int64)
    present = np.zeros((e.size, depth), dtype=bool)
    for r, v in enumerate(lines):
        idx[r, : v.size] = v
        present[r, : v.size] = True
    a, c, s, g = (getattr(fits, f)[idx][:, :, None] for f in ("area", "center", "sigma", "gamma"))
    with np.errstate(all="ignore"):
        prof = np.where(np.isfinite(g), emg(x[:, None, :], a, c, s, np.nan_to_num(g, nan=1.0)),
                        gaussian(x[:, None, :], a, c, s))
    prof = np.where(np.isfinite(prof) & present[:, :, None], prof, 0.0)
    model = prof.max(axis=1)
    dist = np.where(present, np.abs(cand.index[idx] - i[:, None]), np.iinfo(np.int64).max)
    nearest = idx[np.arange(e.size), np.argmin(dist, axis=1)]
    offset = np.where(present.any(axis=1), np.nan_to_num(fits.offset[nearest]), 0.0)
    resid = np.nan_to_num(y[e[:, None], cols] - model - offset[:, None])
    # boxcar of w samples centred as numpy.convolve(mode="same") centres it
    csum = np.concatenate([np.zeros((e.size, 1)), np.cumsum(resid, axis=1)], axis=1)
    j = np.arange(-MODE_MATCH_SAMPLES, MODE_MATCH_SAMPLES + 1)[None, :] + half
    lo = j - w[:, None] // 2
    smooth = (csum[np.arange(e.size)[:, None], lo + w[:, None]]
              - csum[np.arange(e.size)[:, None], lo]) / w[:, None]
    return smooth.max(axis=1)


def _extended(cand: PeakCandidates, fits: LineFits, e: int, i: int, time: float
              ) -> tuple[np.ndarray, np.ndarray, LineFits, int]:
    """Events, peak samples and fits with one more row at sample ``i`` of event ``e``
    (at ``time``, µs).

    The new row is a converged Gaussian centred there (so :func:`prepare_blend`
    starts it from its values, which the caller sets) and returns its row.
    """
    key = cand.event * (int(cand.index.max()) + i + 2) + cand.index
    p = int(np.searchsorted(key, e * (int(cand.index.max()) + i + 2) + i))
    event = np.insert(cand.event, p, e)
    index = np.insert(cand.index, p, i)
    cols = {}
    for f in dataclasses.fields(LineFits):
        v = getattr(fits, f.name)
        fill = (FitStatus.CONVERGED if f.name == "status" else LineShape.GAUSSIAN
                if f.name == "shape" else False if v.dtype == bool else np.nan)
        cols[f.name] = np.insert(v, p, fill)
    cols["center"][p] = time
    return event, index, LineFits(**cols), p


def _trial(m: _Maximum, y: np.ndarray, t: Any, noise: np.ndarray, cand: PeakCandidates,
           fits: LineFits, settings: Mapping[str, Any], step: np.ndarray) -> _Trial | None:
    """The blend of the lines whose windows hold maximum ``m``, with and without a line there."""
    e, i = m.event, m.index
    d = float(step[e])
    left = int(round(float(settings["window_left_us"]) / d))
    right = int(round(float(settings["window_right_us"]) / d))
    # the event's lines near the maximum only: a line further than twice a
    # window's reach neither cuts the blend's window nor reaches it (its
    # profile there is below 1e-20 of its height for the instrument's tails)
    near = np.flatnonzero((cand.event == e) & (np.abs(cand.index - i) <= 2 * (left + right)))
    sub = LineFits(**{f.name: getattr(fits, f.name)[near] for f in dataclasses.fields(LineFits)})
    event, index, ext, p = _extended(cand.take(near), sub, e, i, m.time)
    same = np.arange(event.size)
    holds = same[same != p]
    if holds.size == 0:
        return None
    # the hosts: the nearest line, the lines whose fits (single or joint) span
    # the maximum, and every line whose fitted profile reaches it with at least
    # 2 noise sigmas (a tail it sits on)
    tc = m.time
    ok = np.isfinite(ext.area[holds]) & np.isfinite(ext.center[holds])
    prof = line_profiles(np.array([tc]), ext.area[holds], ext.center[holds], ext.sigma[holds],
                         ext.gamma[holds])[:, 0]  # fmt: skip
    nearest = holds == holds[np.argmin(np.abs(index[holds] - i))]
    spans = (ext.window_start[holds] <= tc) & (ext.window_stop[holds] >= tc)
    holds = holds[nearest | (ok & (spans | (prof >= 2.0 * float(noise[e, i]))))]
    order = holds[np.argsort(np.abs(index[holds] - i), kind="stable")][: MAX_BLEND_LINES - 1]
    lo, hi = int(min(order.min(), p)), int(max(order.max(), p))
    rows = np.arange(lo, hi + 1)
    manual = np.insert(cand.manual[near], p, False)
    kept = rows[rows != p]
    test = ResidualTest(event=e, index=i, time=tc, residual_sigma=m.residual_sigma,
                        hosts=near[np.where(kept > p, kept - 1, kept)])
    if rows.size > MAX_BLEND_LINES or manual[rows].any():
        return _Trial(test, p, near, None, None)  # type: ignore[arg-type]
    # the new line's start: the data's excess over the hosts' profiles at the maximum
    h = max(int(round(float(settings["min_distance_us"]) / d)), 1)
    s0 = 1.5 * d
    ext.sigma[p] = s0
    ext.area[p] = 1.0  # replaced below, once the blend's data are formed
    n_ev = np.full(event.size, 1, dtype=np.int64)
    left_a, right_a = n_ev * left, n_ev * right
    refit = np.zeros(event.size, bool)
    blend = prepare_blend(rows, y, t, noise, event, index, left_a, right_a, ext, refit, step,
                          settings)
    k = int(np.flatnonzero(blend.rows == p)[0])
    hosts_model = np.zeros(blend.x.size)
    for j, shape in enumerate(blend.shapes):
        if j == k:
            continue
        a, c, s, g = blend.start[j]
        hosts_model += line_profiles(blend.x, [a], [c], [s], [g if shape == "emg" else np.nan])[0]
    at = int(np.argmin(np.abs(blend.x - tc)))
    excess = max(float(blend.y[at] - hosts_model[at]), float(np.nanmedian(blend.sigma)))
    blend.start[k, :3] = [excess * s0 * math.sqrt(2.0 * math.pi), tc, s0]
    blend.lo[k, 1] = max(float(blend.x[0]), tc - h * d)
    blend.hi[k, 1] = min(float(blend.x[-1]), tc + h * d)
    blend.lo[k, 2] = SIGMA_MIN_SAMPLES * d
    blend.initial = blend.start.copy()
    keep = np.arange(blend.rows.size) != k
    one = dataclasses.replace(blend, rows=blend.rows[keep], shapes=[s for j, s in
                              enumerate(blend.shapes) if j != k], start=blend.start[keep],
                              lo=blend.lo[keep], hi=blend.hi[keep], target=blend.target[keep],
                              forced=blend.forced[keep], initial=blend.initial[keep],
                              at_peaks=blend.at_peaks[keep])  # fmt: skip
    return _Trial(test, p, near, blend, one)


def _fit_trials(trials: list[_Trial], zsig: np.ndarray, settings: Mapping[str, Any]) -> None:
    """The joint fits of every trial, batched by model and width class: the hosts
    alone, then, where their residual at the maximum reaches the detection
    threshold, with the second line."""
    _fit_batches([(tr, "one") for tr in trials if tr.one is not None], settings)
    second = []
    for tr in trials:
        if tr.fit_one is None:
            continue
        res, r = tr.fit_one
        if res.status[r] != FitStatus.CONVERGED:
            continue
        tr.test.residual_sigma = _residual_at(tr, settings) / float(zsig[tr.test.event])
        if tr.test.residual_sigma >= float(settings["prominence_sigma"]):
            second.append((tr, "two"))
    _fit_batches(second, settings)


def _fit_batches(jobs: list[tuple[_Trial, str]], settings: Mapping[str, Any]) -> None:
    """Fit the blends named by ``jobs``, as prepared; those that do not converge
    again from the data's maxima (:meth:`Blend.from_peaks`: a blend on a strong
    line's tail can have two minima), keeping the better (:func:`better_fit`)."""
    _fit_starts([(tr, which, getattr(tr, which)) for tr, which in jobs], settings)
    again = []
    for tr, which in jobs:
        res, r = getattr(tr, f"fit_{which}")
        if res.status[r] != FitStatus.CONVERGED:
            again.append((tr, which, getattr(tr, which).from_peaks()))
    _fit_starts(again, settings)


def _fit_starts(tries: list[tuple[_Trial, str, Blend]], settings: Mapping[str, Any]) -> None:
    """One batch per model and width class; each result kept where it is better."""
    device = str(settings.get("fit_device", "cpu"))
    groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
    for k, (_, _, b) in enumerate(tries):
        groups.setdefault((tuple(b.shapes), (b.x.size + 15) // 16 * 16), []).append(k)
    for (shapes, width), members in groups.items():
        res = fit_blend_group(device, shapes, [tries[k][2] for k in members], width, settings)
        for r, k in enumerate(members):
            tr, which, _ = tries[k]
            best = getattr(tr, f"fit_{which}")
            if best is None or better_fit(res, r, *best):
                setattr(tr, f"fit_{which}", (res, r))


def _residual_at(tr: _Trial, settings: Mapping[str, Any]) -> float:
    """Highest residual of the hosts' joint fit within ``MODE_MATCH_SAMPLES`` samples
    of the maximum, smoothed with the detection's boxcar, signal units."""
    res, r = tr.fit_one
    b = tr.one
    model = multi_line_model(tuple(b.shapes)).evaluate(np, b.x[None, :], res.params[r][None, :])[0]
    resid = b.y - model
    w = max(int(round(float(settings["smooth_us"]) / b.dt)), 1)
    if w > 1:
        resid = np.convolve(np.nan_to_num(resid), np.full(w, 1.0 / w), mode="same")
    i = int(np.argmin(np.abs(b.x - tr.test.time)))
    part = resid[max(i - MODE_MATCH_SAMPLES, 0): i + MODE_MATCH_SAMPLES + 1]
    return float(np.max(part)) if part.size else -math.inf


def _accept(trials: list[_Trial], step: np.ndarray, settings: Mapping[str, Any]
            ) -> list[_Trial]:
    """The trials whose second line passes the test; one per set of hosts (the highest)."""
    from scipy.special import fdtrc

    limit = float(settings.get("residual_max_pvalue", 1e-3))
    passed = []
    for tr in trials:
        if tr.fit_one is None or tr.fit_two is None:
            continue
        (r1, q1), (r2, q2) = tr.fit_one, tr.fit_two
        tr.test.chisq_one, tr.test.chisq_two = float(r1.chisq[q1]), float(r2.chisq[q2])
        if r1.status[q1] != FitStatus.CONVERGED or r2.status[q2] != FitStatus.CONVERGED:
            continue
        npar = r2.params.shape[1]
        ndof = int(np.sum(np.isfinite(tr.two.y) & np.isfinite(tr.two.sigma))) - npar
        drop = tr.test.chisq_one - tr.test.chisq_two
        if ndof <= 0 or not drop > 0:
            continue
        tr.test.pvalue = float(fdtrc(3, ndof, (drop / 3.0) / (tr.test.chisq_two / ndof)))
        if tr.test.pvalue > limit or not _lines_hold(tr, step, settings):
            continue
        passed.append(tr)
    passed.sort(key=lambda tr: -tr.test.residual_sigma)
    used: set[tuple[int, int]] = set()
    out = []
    for tr in passed:
        hosts = {(tr.test.event, int(h)) for h in tr.test.hosts}
        if hosts & used:
            continue
        used |= hosts
        tr.test.kept = True
        out.append(tr)
    return out


def _joint_values(tr: _Trial) -> dict[str, np.ndarray]:
    """The two-line fit's values per blend line (blend order), as LineFits columns."""
    res, r = tr.fit_two
    b = tr.two
    vals: dict[str, list[float]] = {k: [] for k in ("area", "center", "sigma", "gamma",
                                                   "area_err", "center_err")}
    j = 0
    for shape in b.shapes:
        vals["area"].append(res.params[r, j])
        vals["center"].append(res.params[r, j + 1])
        vals["sigma"].append(res.params[r, j + 2])
        vals["gamma"].append(res.params[r, j + 3] if shape == "emg" else np.nan)
        vals["area_err"].append(res.stderr[r, j])
        vals["center_err"].append(res.stderr[r, j + 1])
        j += 4 if shape == "emg" else 3
    out = {k: np.array(v, dtype=float) for k, v in vals.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        h = line_heights(out["area"], out["center"], out["sigma"], out["gamma"])
        gauss = ~np.isfinite(out["gamma"])
        out["height"] = np.where(gauss, out["area"] / (out["sigma"] * math.sqrt(2 * math.pi)), h)
    return out


def _lines_hold(tr: _Trial, step: np.ndarray, settings: Mapping[str, Any]) -> bool:
    """Whether every line of the two-line fit is a significant line wider than a spike."""
    v = _joint_values(tr)
    e = tr.test.event
    d = float(step[e])
    m = v["area"].size
    pos = np.clip(np.searchsorted(tr.two.x, v["center"]), 1, tr.two.x.size - 1)
    pair = np.stack([pos - 1, pos], axis=1)
    status = np.zeros(m, np.int8)
    classify_lines(status, v["height"], v["sigma"], np.full(m, SIGMA_MIN_SAMPLES * d),
                   tr.two.sigma[pair], tr.two.x[pair], v["center"], settings)
    return bool(np.all(status == LineStatus.CONVERGED))


def _apply(accepted: list[_Trial], cand: PeakCandidates, fits: LineFits
           ) -> tuple[PeakCandidates, LineFits]:
    """Insert the kept lines and give their hosts the joint fit's values."""
    cols = {f.name: getattr(fits, f.name).copy() for f in dataclasses.fields(LineFits)}
    added: dict[str, list] = {k: [] for k in cols}
    for tr in accepted:
        v = _joint_values(tr)
        res, r = tr.fit_two
        b = tr.two
        for j, ext_row in enumerate(b.rows):
            row = {"center": v["center"][j], "center_err": v["center_err"][j],
                   "sigma": v["sigma"][j], "gamma": v["gamma"][j], "area": v["area"][j],
                   "area_err": v["area_err"][j], "height": v["height"][j],
                   "offset": res.params[r, -1], "chisq": res.chisq[r], "redchi": res.redchi[r],
                   "status": LineStatus.CONVERGED, "window_start": b.x[0],
                   "window_stop": b.x[-1],
                   "shape": LineShape.EMG if b.shapes[j] == "emg" else LineShape.GAUSSIAN,
                   "mode_centred": bool(b.forced[j])}  # fmt: skip
            if ext_row == tr.new_row:
                for k, val in row.items():
                    added[k].append(val)
                continue
            old = int(tr.near[ext_row if ext_row < tr.new_row else ext_row - 1])
            for k, val in row.items():
                cols[k][old] = val
    n_new = len(accepted)
    # automatic windows (NaN), as the detections'
    cand_new = PeakCandidates(
        event=np.array([tr.test.event for tr in accepted], dtype=np.int64),
        index=np.array([tr.test.index for tr in accepted], dtype=np.int64),
        prominence=np.array([tr.test.residual_sigma for tr in accepted], dtype=float),
        manual=np.zeros(n_new, bool), window_start=np.full(n_new, np.nan),
        window_stop=np.full(n_new, np.nan), center_guess=np.full(n_new, np.nan),
    )  # fmt: skip
    joined = PeakCandidates(*(np.concatenate([getattr(cand, f), getattr(cand_new, f)])
                              for f in PeakCandidates.__dataclass_fields__))  # fmt: skip
    order = np.lexsort((joined.index, joined.event))
    out = {k: np.concatenate([col, np.array(added[k], dtype=col.dtype)])[order]
           for k, col in cols.items()}
    return joined.take(order), LineFits(**out)
