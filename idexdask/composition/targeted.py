"""Targeted search for known species at their calibrated arrival times.

Line detection is blind: a line must rise ``height_sigma`` smoothed-noise
sigmas above the baseline anywhere in the spectrum.  Once an event is mass
calibrated, a species expected in the sample (e.g. Mg, Na, Si in olivine) has
a *known* arrival time, and looking at that one time needs a far smaller
significance than a search over every sample (no look-elsewhere penalty): the
usual practice of TOF-SIMS and impact-ionisation work is a stated lower
threshold (e.g. 3 sigma) for a known species at a calibrated mass, reported
as such.

Method, per calibrated event and target mass ``m``:

1. ``t_m`` from the event's calibration (:func:`~idexdask.calibration.tofmass.time_axis`).
2. The line width at ``t_m``: the median Gaussian sigma of the event's
   converged lines within ``width_reach_us`` of ``t_m`` (all its converged
   lines when none are that close).
3. The residual spectrum: the merged spectrum minus the fitted profiles of the
   event's lines farther than 3 widths from ``t_m`` (the neighbours; a line at
   ``t_m`` itself stays, it is the signal looked for).
4. A matched filter: the least-squares amplitude of a unit-area Gaussian of
   that width centred at ``t_m`` plus a constant, over ``+-4`` widths, weighted
   by the per-sample noise.  Its amplitude is the line's area.
5. Its uncertainty *measured*, not assumed: the same filter is applied at
   ``null_positions`` times spread over ``+-null_reach_us`` around ``t_m``
   (more than 6 widths away from it and from the event's fitted lines, so no
   filter window reaches a line's core) on the residual; the robust spread
   (1.4826 MAD) of those amplitudes, never below the white-noise error, is the
   uncertainty (it includes correlated noise and unmodelled weak structure,
   which a white-noise error would not).
6. ``significance = area / area_err``; ``detected`` where it reaches
   ``min_significance`` (3 by default) -- a targeted detection at a stated
   threshold, never mixed with the blind line list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from idexdask._logging import get_logger

__all__ = ["TargetedSearch", "targeted_search"]

_log = get_logger(__name__)

MAD_TO_SIGMA = 1.4826


@dataclass
class TargetedSearch:
    """Matched-filter amplitudes at the calibrated times of the target masses.

    All arrays are (n_events, n_targets); NaN where the event is not calibrated.

    Attributes
    ----------
    time : numpy.ndarray
        Calibrated arrival time of each target mass, µs.
    width : numpy.ndarray
        Gaussian sigma used for the filter, µs.
    area, area_err : numpy.ndarray
        Line area at that time and its measured 1-sigma uncertainty (signal units·µs).
    area_err_white : numpy.ndarray
        The uncertainty white noise of the per-sample sigma would give (for comparison).
    significance : numpy.ndarray
        ``area / area_err``.
    detected : numpy.ndarray
        ``significance >= min_significance`` (bool).
    min_significance : float
        The threshold used.
    """

    time: np.ndarray
    width: np.ndarray
    area: np.ndarray
    area_err: np.ndarray
    area_err_white: np.ndarray
    significance: np.ndarray
    detected: np.ndarray
    min_significance: float


def _profiles(x: np.ndarray, area, center, sigma, gamma) -> np.ndarray:
    """Sum of the fitted line profiles on ``x`` (Gaussian where ``gamma`` is NaN)."""
    from idexdask.analysis.lineshapes import emg, gaussian

    total = np.zeros_like(x)
    with np.errstate(all="ignore"):
        for a, c, s, g in zip(area, center, sigma, gamma, strict=True):
            prof = emg(x, a, c, s, g) if np.isfinite(g) else gaussian(x, a, c, s)
            total += np.where(np.isfinite(prof), prof, 0.0)
    return total


def _filter(x: np.ndarray, y: np.ndarray, w: np.ndarray, center: float, width: float
            ) -> tuple[float, float]:
    """Weighted least-squares area of a unit-area Gaussian at ``center`` plus a constant.

    Returns the area and its white-noise standard error (NaN with too few samples).
    """
    sel = np.abs(x - center) <= 4.0 * width
    sel &= np.isfinite(y) & np.isfinite(w) & (w > 0)
    if sel.sum() < 6:
        return math.nan, math.nan
    u = (x[sel] - center) / width
    design = np.stack([np.exp(-0.5 * u * u) / (width * math.sqrt(2.0 * math.pi)),
                       np.ones(u.size)], axis=1)  # fmt: skip
    wa = design * w[sel, None]
    wb = y[sel] * w[sel]
    normal = wa.T @ wa
    try:
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return math.nan, math.nan
    coef = cov @ (wa.T @ wb)
    return float(coef[0]), float(math.sqrt(max(cov[0, 0], 0.0)))


def targeted_search(
    time: np.ndarray,
    signal: np.ndarray,
    sigma: np.ndarray,
    line_event: np.ndarray,
    line_center: np.ndarray,
    line_sigma: np.ndarray,
    line_gamma: np.ndarray,
    line_area: np.ndarray,
    line_converged: np.ndarray,
    coefficients: np.ndarray,
    calibrated: np.ndarray,
    masses: np.ndarray,
    *,
    min_significance: float = 3.0,
    width_reach_us: float = 0.5,
    null_reach_us: float = 0.5,
    null_positions: int = 60,
) -> TargetedSearch:
    """Matched-filter search for ``masses`` at each calibrated event's arrival times.

    Parameters
    ----------
    time, signal, sigma : numpy.ndarray
        Merged spectra: sample times (µs), signal and per-sample noise sigma
        (n_events, n_samples); ``time`` may be (n_samples,).
    line_event, line_center, line_sigma, line_gamma, line_area : numpy.ndarray
        The fitted lines (``peak_*`` products): event index, centre (µs),
        Gaussian sigma (µs), tail rate (1/µs, NaN for a Gaussian), area.
    line_converged : numpy.ndarray
        Lines whose fit converged (bool): their widths set the filter's.
    coefficients : numpy.ndarray
        Mass calibration per event (n_events, order + 1), ``mass_calibration``.
    calibrated : numpy.ndarray
        Events with a usable calibration (bool).
    masses : numpy.ndarray
        Target ion masses, u (n_targets,).
    min_significance : float
        Threshold of a targeted detection, sigmas.
    width_reach_us, null_reach_us : float
        Reach of the width estimate and of the null positions around ``t_m``, µs.
    null_positions : int
        Filter positions that measure the uncertainty.

    Returns
    -------
    TargetedSearch
    """
    from idexdask.calibration.tofmass import time_axis

    n_events = signal.shape[0]
    masses = np.asarray(masses, dtype=float)
    shape = (n_events, masses.size)
    out = {k: np.full(shape, np.nan) for k in ("time", "width", "area", "area_err",
                                               "area_err_white", "significance")}  # fmt: skip
    t_all = np.broadcast_to(np.asarray(time, dtype=float), signal.shape)
    good = np.asarray(line_converged, bool) & np.isfinite(line_sigma) & np.isfinite(line_center)
    for e in np.flatnonzero(np.asarray(calibrated, bool)):
        coeff = np.asarray(coefficients[e], dtype=float)
        if not np.all(np.isfinite(coeff)):
            continue
        x, y = t_all[e], np.asarray(signal[e], dtype=float)
        with np.errstate(divide="ignore"):
            w = 1.0 / np.asarray(sigma[e], dtype=float)
        mine = np.flatnonzero(line_event == e)
        widths_all = line_sigma[mine[good[mine]]]
        tm = np.asarray(time_axis(coeff, masses), dtype=float)
        for j, t_m in enumerate(tm):
            if not np.isfinite(t_m):
                continue
            near = mine[good[mine] & (np.abs(line_center[mine] - t_m) <= width_reach_us)]
            width = float(np.median(line_sigma[near] if near.size else widths_all)) \
                if (near.size or widths_all.size) else math.nan
            if not (np.isfinite(width) and width > 0):
                continue
            # neighbours out, a line at t_m itself stays: it is the signal looked for
            sub = mine[np.isfinite(line_area[mine])
                       & (np.abs(line_center[mine] - t_m) > 3.0 * width)]  # fmt: skip
            part = np.abs(x - t_m) <= null_reach_us + 4.0 * width
            xs = x[part]
            resid = y[part] - _profiles(xs, line_area[sub], line_center[sub], line_sigma[sub],
                                        line_gamma[sub])  # fmt: skip
            area, err_white = _filter(xs, resid, w[part], t_m, width)
            # the null: the same filter away from t_m and from every fitted line
            centres = np.linspace(t_m - null_reach_us, t_m + null_reach_us, null_positions)
            keep = np.abs(centres - t_m) > 6.0 * width
            if mine.size:
                dist = np.abs(centres[:, None] - line_center[mine][None, :])
                keep &= np.all(~(dist <= 6.0 * width), axis=1)
            null = np.array([_filter(xs, resid, w[part], c, width)[0] for c in centres[keep]])
            null = null[np.isfinite(null)]
            err = MAD_TO_SIGMA * float(np.median(np.abs(null - np.median(null)))) \
                if null.size >= 10 else math.nan
            err = max(err, err_white) if np.isfinite(err) else err
            out["time"][e, j] = t_m
            out["width"][e, j] = width
            out["area"][e, j] = area
            out["area_err"][e, j] = err
            out["area_err_white"][e, j] = err_white
            out["significance"][e, j] = area / err if err > 0 else math.nan
    with np.errstate(invalid="ignore"):
        detected = out["significance"] >= min_significance
    return TargetedSearch(**out, detected=detected, min_significance=float(min_significance))
