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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.composition.matched_filter import filter_areas

__all__ = [
    "NULL_REACH_US",
    "TargetedSearch",
    "filter_areas",
    "searched_columns",
    "searched_times",
    "target_masses",
    "targeted_search",
    "targeted_search_reference",
    "targeted_variables",
]

_log = get_logger(__name__)

MAD_TO_SIGMA = 1.4826
NULL_REACH_US = 0.5
"""Reach of the null filter positions around a target time, µs."""


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


def _median(values: np.ndarray) -> float:
    """``numpy.median`` of finite values, without its generic machinery (~15 µs a call).

    The mean of the middle value or of the two middle values, computed as
    numpy's median computes it (their sum by ``numpy.add.reduce``, divided by
    the count): the same float.
    """
    ordered = np.sort(values)
    middle = ordered[(ordered.size - 1) // 2:ordered.size // 2 + 1]
    return float(np.add.reduce(middle) / middle.size)


def _line_profile(x: np.ndarray, area, center, sigma, gamma) -> np.ndarray:
    """One fitted line's profile on ``x`` (Gaussian where ``gamma`` is NaN; 0 where not finite)."""
    from idexdask.analysis.lineshapes import emg, gaussian

    with np.errstate(all="ignore"):
        prof = emg(x, area, center, sigma, gamma) if np.isfinite(gamma) \
            else gaussian(x, area, center, sigma)
        return np.where(np.isfinite(prof), prof, 0.0)


@dataclass
class _Target:
    """One target time of one event: its filter width, stretch and neighbour lines."""

    index: int
    time: float
    width: float
    part: slice
    lines: np.ndarray


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
    null_reach_us: float = NULL_REACH_US,
    null_positions: int = 60,
) -> TargetedSearch:
    """Matched-filter search for ``masses`` at each calibrated event's arrival times.

    Parameters
    ----------
    time, signal : numpy.ndarray
        Merged spectra: sample times (µs) and signal (n_events, n_samples);
        ``time`` may be (n_samples,).  Rows stay as given (a lab row holds
        500,000 samples): only the stretches around the target times are read.
    sigma : numpy.ndarray
        Per-sample noise sigma (n_events, n_samples), or one per event (n_events, 1).
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
        As :func:`targeted_search_reference` (the method in NumPy, one event and
        target at a time) but for a last bit where libm's and NumPy's ``exp``
        round apart; computed by the compiled
        :func:`~idexdask.composition.targeted_kernel.search_events`.
    """
    from idexdask.analysis.special import scipy_erfcx_address
    from idexdask.calibration.tofmass import time_axis
    from idexdask.composition.targeted_kernel import search_events

    n_events = signal.shape[0]
    masses = np.asarray(masses, dtype=float)
    shape = (n_events, masses.size)
    out = {k: np.full(shape, np.nan) for k in ("width", "area", "area_err", "area_err_white")}
    coefficients = np.asarray(coefficients, dtype=float)
    searched = np.asarray(calibrated, bool) & np.all(np.isfinite(coefficients), axis=1)
    target_time = np.full(shape, np.nan)
    if searched.any() and masses.size:
        # element by element the same arithmetic as one event at a time
        target_time[searched] = time_axis(coefficients[searched], masses)
        line_event = np.asarray(line_event, dtype=np.int64)
        lines = np.argsort(line_event, kind="stable")  # each event's lines in index order
        bounds = np.searchsorted(line_event[lines], np.arange(n_events + 1))
        center, width, gamma, area = (np.ascontiguousarray(v, dtype=float) for v in
                                      (line_center, line_sigma, line_gamma, line_area))
        good = np.asarray(line_converged, bool) & np.isfinite(width) & np.isfinite(center)
        noise = np.asarray(sigma)
        search_events(
            scipy_erfcx_address(), np.atleast_2d(np.asarray(time, dtype=float)),
            np.asarray(signal), noise if noise.ndim == 2 else noise[:, None], target_time,
            lines, bounds, center, width, gamma, area, np.ascontiguousarray(good),
            float(width_reach_us), float(null_reach_us), int(null_positions),
            out["width"], out["area"], out["area_err"], out["area_err_white"],
        )  # fmt: skip
    err = out["area_err"]
    with np.errstate(invalid="ignore", divide="ignore"):
        significance = np.where(err > 0, out["area"] / err, np.nan)
        detected = significance >= min_significance
    return TargetedSearch(time=np.where(np.isfinite(out["width"]), target_time, np.nan),
                          significance=significance, detected=detected,
                          min_significance=float(min_significance), **out)


def targeted_search_reference(
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
    null_reach_us: float = NULL_REACH_US,
    null_positions: int = 60,
) -> TargetedSearch:
    """:func:`targeted_search` in NumPy, one event and target at a time: the
    reference the compiled search is tested against.

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
    t_all = np.broadcast_to(np.asarray(time), signal.shape)
    good = np.asarray(line_converged, bool) & np.isfinite(line_sigma) & np.isfinite(line_center)
    lines = (line_area, line_center, line_sigma, line_gamma)
    for e in np.flatnonzero(np.asarray(calibrated, bool)):
        coeff = np.asarray(coefficients[e], dtype=float)
        if not np.all(np.isfinite(coeff)):
            continue
        # rows stay as given (a lab row holds 500,000 samples): only the stretch
        # around the target times is read and converted
        x, y, noise_row = t_all[e], signal[e], sigma[e]
        mine = np.flatnonzero(line_event == e)
        tm = np.asarray(time_axis(coeff, masses), dtype=float)
        targets = _event_targets(x, tm, mine, good, lines, width_reach_us, null_reach_us)
        if not targets:
            continue
        # the samples of every target's stretch, converted once; each neighbour
        # line's profile computed once over the stretches of the targets it reaches
        start = min(t.part.start for t in targets)
        stop = max(t.part.stop for t in targets)
        xs_all = np.asarray(x[start:stop], dtype=float)
        ys_all = np.asarray(y[start:stop], dtype=float)
        with np.errstate(divide="ignore"):
            ws_all = 1.0 / np.asarray(noise_row[start:stop], dtype=float)
        profiles = _neighbour_profiles(xs_all, start, targets, lines)
        for target in targets:
            t_m, width = target.time, target.width
            inner = slice(target.part.start - start, target.part.stop - start)
            xs, ws = xs_all[inner], ws_all[inner]
            total = np.zeros_like(xs)
            for line in target.lines:
                first, values = profiles[line]
                total += values[inner.start - first:inner.stop - first]
            resid = ys_all[inner] - total
            # the null: the same filter away from t_m and from every fitted line
            centres = np.linspace(t_m - null_reach_us, t_m + null_reach_us, null_positions)
            keep = np.abs(centres - t_m) > 6.0 * width
            if mine.size:
                dist = np.abs(centres[:, None] - line_center[mine][None, :])
                keep &= np.all(~(dist <= 6.0 * width), axis=1)
            areas, errs = filter_areas(xs, resid, ws, np.append(t_m, centres[keep]), width)
            area, err_white = float(areas[0]), float(errs[0])
            null = areas[1:][np.isfinite(areas[1:])]
            err = MAD_TO_SIGMA * _median(np.abs(null - _median(null))) \
                if null.size >= 10 else math.nan
            err = max(err, err_white) if np.isfinite(err) else err
            j = target.index
            out["time"][e, j] = t_m
            out["width"][e, j] = width
            out["area"][e, j] = area
            out["area_err"][e, j] = err
            out["area_err_white"][e, j] = err_white
            out["significance"][e, j] = area / err if err > 0 else math.nan
    with np.errstate(invalid="ignore"):
        detected = out["significance"] >= min_significance
    return TargetedSearch(**out, detected=detected, min_significance=float(min_significance))


def _event_targets(x: np.ndarray, tm: np.ndarray, mine: np.ndarray, good: np.ndarray,
                   lines: tuple[np.ndarray, ...], width_reach_us: float,
                   null_reach_us: float) -> list[_Target]:
    """The searched targets of one event (steps 1-3 of the method): width, stretch, neighbours.

    ``x`` is the event's time row, ``tm`` its target times, ``mine`` its lines
    (indices into ``lines``: area, centre, sigma, tail rate) and ``good`` the
    converged lines of every event.
    """
    line_area, line_center, line_sigma, line_gamma = lines
    widths_all = line_sigma[mine[good[mine]]]
    targets = []
    for j, t_m in enumerate(tm):
        if not np.isfinite(t_m):
            continue
        near = mine[good[mine] & (np.abs(line_center[mine] - t_m) <= width_reach_us)]
        width = _median(line_sigma[near] if near.size else widths_all) \
            if (near.size or widths_all.size) else math.nan
        if not (np.isfinite(width) and width > 0):
            continue
        # neighbours out, a line at t_m itself stays: it is the signal looked for
        sub = mine[np.isfinite(line_area[mine])
                   & (np.abs(line_center[mine] - t_m) > 3.0 * width)]  # fmt: skip
        reach = null_reach_us + 4.0 * width
        # the time axis is increasing (NaN after a short record sorts last)
        part = slice(int(np.searchsorted(x, t_m - reach, side="left")),
                     int(np.searchsorted(x, t_m + reach, side="right")))
        # lines whose profile reaches the stretch: a line ending more than
        # 30 (sigma + tail) before it, or starting 30 sigma after it, adds
        # less than exp(-30) of its height there
        if part.stop > part.start:
            tail = np.where(np.isfinite(line_gamma[sub]), 1.0 / line_gamma[sub], 0.0)
            extent = 30.0 * (line_sigma[sub] + tail)
            first, last = float(x[part.start]), float(x[part.stop - 1])
            sub = sub[(line_center[sub] > first - extent)
                      & (line_center[sub] < last + 30.0 * line_sigma[sub])]  # fmt: skip
        targets.append(_Target(j, float(t_m), width, part, sub))
    return targets


def _neighbour_profiles(xs: np.ndarray, start: int, targets: Sequence[_Target],
                        lines: tuple[np.ndarray, ...]) -> dict[int, tuple[int, np.ndarray]]:
    """Each neighbour line's profile over the stretches of the targets it reaches.

    ``xs`` holds the times from sample ``start`` on.  Returns, per line, the
    first sample (relative to ``start``) of its profile and the profile.
    """
    line_area, line_center, line_sigma, line_gamma = lines
    reach: dict[int, list[int]] = {}
    for target in targets:
        for line in target.lines.tolist():
            lo, hi = target.part.start - start, target.part.stop - start
            span = reach.setdefault(line, [lo, hi])
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
    return {line: (lo, _line_profile(xs[lo:hi], line_area[line], line_center[line],
                                     line_sigma[line], line_gamma[line]))
            for line, (lo, hi) in reach.items()}


def searched_columns(time: xr.Variable | xr.DataArray, low: float, high: float,
                     stride: int = 256) -> slice:
    """Columns of the time rows ``time`` (``(n_samples,)`` or ``(n_events,
    n_samples)``, µs) that hold every time in [``low``, ``high``].

    Each row increases (NaN after a short record sorts last), as the targeted
    search requires: the columns run from after the last sample below ``low``
    to the first sample above ``high`` (or NaN) in every row, so that a
    ``searchsorted`` of a time in the range finds the same sample in these
    columns as in the whole row
    (:func:`searched_times`).  Read on a grid of
    every ``stride``-th column (a few thousand times of a lab row, formed from
    a formula axis's terms), the range is exact up to ``stride`` samples more
    on either side.
    """
    n = int(time.shape[-1])
    if n == 0:
        return slice(0, 0)
    grid = np.unique(np.append(np.arange(0, n, stride), n - 1))
    x = np.atleast_2d(np.asarray(time[..., grid].values, dtype=float))
    below = np.sum(x < low, axis=1) - 1  # per row: the last grid column before ``low``
    above = np.sum(x <= high, axis=1)  # per row: the first grid column after ``high``
    first = int(np.min(np.where(below >= 0, grid[np.maximum(below, 0)] + 1, 0)))
    last = int(np.max(np.where(above < grid.size, grid[np.minimum(above, grid.size - 1)], n)))
    return slice(first, max(first, last))


def searched_times(
    line_event: np.ndarray,
    line_center: np.ndarray,
    line_sigma: np.ndarray,
    line_converged: np.ndarray,
    coefficients: np.ndarray,
    calibrated: np.ndarray,
    masses: np.ndarray,
    *,
    null_reach_us: float = NULL_REACH_US,
) -> tuple[float, float] | None:
    """Times that bound every sample :func:`targeted_search` reads, µs.

    With the same arguments (and ``null_reach_us``), :func:`targeted_search`
    reads each event's spectrum only within ``t_m +- (null_reach_us + 4 width)``
    of its target times, and its filter width is the median sigma of some of
    the event's converged lines, so never above the largest of them.  A caller
    holding long spectra (a lab row: 500,000 samples) can pass the samples of
    this range and the first sample on either side of it (each row's
    ``searchsorted`` then finds the same samples) instead of whole rows.

    Returns
    -------
    (float, float) or None
        The lowest and highest time searched; None where no event is searched.
    """
    from idexdask.calibration.tofmass import time_axis

    masses = np.asarray(masses, dtype=float)
    coefficients = np.asarray(coefficients, dtype=float)
    calibrated = np.asarray(calibrated, bool)
    good = np.asarray(line_converged, bool) & np.isfinite(line_sigma) & np.isfinite(line_center)
    # every event at once: each event's widest good line, its target times
    # (time_axis works row by row, the same values as one event at a time)
    events = np.asarray(line_event)[good]
    widest = np.full(calibrated.size, -np.inf)
    np.maximum.at(widest, events, np.asarray(line_sigma, dtype=float)[good])
    has_lines = np.zeros(calibrated.size, bool)
    has_lines[events] = True
    rows = np.flatnonzero(calibrated & has_lines & np.all(np.isfinite(coefficients), axis=1))
    if not rows.size or not masses.size:
        return None
    tm = np.asarray(time_axis(coefficients[rows], np.broadcast_to(masses, (rows.size,
                                                                            masses.size))),
                    dtype=float).reshape(rows.size, masses.size)
    finite = np.isfinite(tm)
    searched = finite.any(axis=1)
    if not searched.any():
        return None
    reach = null_reach_us + 4.0 * widest[rows[searched]]
    earliest = np.where(finite, tm, np.inf)[searched].min(axis=1)
    latest = np.where(finite, tm, -np.inf)[searched].max(axis=1)
    return float(np.min(earliest - reach)), float(np.max(latest + reach))


def target_masses(species: Sequence[str]) -> np.ndarray:
    """Ion masses of the targeted species (singly charged where no charge is written), u."""
    from idexdask.calibration.ions import ion_mass

    return np.array([ion_mass(s if s.endswith("+") else s + "+") for s in map(str, species)],
                    dtype=float)


def targeted_variables(
    time: np.ndarray,
    signal: np.ndarray,
    noise: np.ndarray,
    lines: Mapping[str, np.ndarray],
    coefficients: np.ndarray,
    calibrated: np.ndarray,
    species: Sequence[str],
    *,
    min_significance: float,
    unit: str,
) -> dict[str, xr.Variable]:
    """The targeted-search products of a batch of events (:func:`targeted_search`).

    Parameters
    ----------
    time, signal : numpy.ndarray
        The merged TOF spectra (``tof_combined``) and their times, µs
        ((n_events, n_samples); ``time`` may be (n_samples,)).
    noise : numpy.ndarray
        Noise sigma of each spectrum (n_events,), its units (the high gain's
        baseline noise, ``tof_high_noise``).
    lines : mapping of str to numpy.ndarray
        The flat line list: ``peak_event``, ``peak_center``, ``peak_sigma``,
        ``peak_gamma``, ``peak_area``, ``peak_status``.
    coefficients, calibrated : numpy.ndarray
        ``mass_calibration`` (n_events, order + 1) and which events are calibrated.
    species : sequence of str
        Ions searched for (``Na``, ``24Mg``, ``28Si``: formulas of
        :func:`idexdask.calibration.ions.ion_mass`, singly charged).
    min_significance : float
        Threshold of ``targeted_detected``, sigmas.
    unit : str
        Signal units of the spectra.

    Returns
    -------
    dict of str to xarray.Variable
        ``targeted_species`` (the coordinate), ``targeted_mass`` and, per
        event and species, ``targeted_time``, ``targeted_width``,
        ``targeted_area``, ``targeted_area_err``, ``targeted_significance``,
        ``targeted_detected`` (docs/products.md).  NaN (False) for an
        uncalibrated event.
    """
    names = [str(s) for s in species]
    masses = target_masses(names)
    n_events = int(np.shape(signal)[0])
    if n_events and names:
        noise = np.asarray(noise, dtype=float)
        res = targeted_search(
            time, signal, noise[:, None],
            lines["peak_event"], lines["peak_center"], lines["peak_sigma"],
            lines["peak_gamma"], lines["peak_area"], np.asarray(lines["peak_status"]) == 0,
            coefficients, calibrated, masses, min_significance=min_significance,
        )  # fmt: skip
        values = {k: getattr(res, k) for k in ("time", "width", "area", "area_err",
                                               "significance", "detected")}  # fmt: skip
    else:
        shape = (n_events, len(names))
        values = {k: np.full(shape, np.nan) for k in ("time", "width", "area", "area_err",
                                                      "significance")}  # fmt: skip
        values["detected"] = np.zeros(shape, bool)
    dims = ("epoch", "targeted_species")
    spec = {
        "time": ("us", "calibrated arrival time of the species"),
        "width": ("us", "Gaussian sigma of the matched filter (the event's line width there)"),
        "area": (f"{unit} us", "matched-filter line area at the calibrated time, merged "
                 "spectrum with the event's other fitted lines removed"),
        "area_err": (f"{unit} us", "1-sigma uncertainty of targeted_area, measured by the "
                     "same filter at empty positions within 0.5 us (never below white noise)"),
        "significance": ("1", "targeted_area / targeted_area_err"),
        "detected": ("1", f"targeted_significance >= {min_significance:g} (a targeted "
                     "detection at a stated threshold, apart from the blind line list)"),
    }
    out = {
        "targeted_species": xr.Variable(("targeted_species",), np.array(names, dtype=str),
                                        attrs={"long_name": "ions of the targeted search"}),
        "targeted_mass": xr.Variable(("targeted_species",), masses,
                                     attrs={"units": "u", "long_name": "ion mass"}),
    }
    for key, (units, long_name) in spec.items():
        attrs = {"units": units, "long_name": long_name}
        if key == "detected":
            attrs["min_significance"] = float(min_significance)
        out[f"targeted_{key}"] = xr.Variable(dims, values[key], attrs=attrs)
    return out
