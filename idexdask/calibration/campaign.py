"""Campaign-level mass calibration: one instrument shape, one shift per event.

Time-of-flight practice calibrates an instrument, not each spectrum: every event
recorded with one geometry and extraction voltage shares the stretch (and the
higher-order terms) of ``t = t0 + sum_k a_k sqrt(m)**k``; only the shift ``t0``
(the impact time relative to the trigger) changes from event to event.  A
spectrum with too few lines cannot be calibrated alone (two lines always fit a
stretch and a shift exactly), but with the shape known its lines fix the shift.

:func:`calibrate_campaign` works on the line lists of one group of events (one
input file, one lab run), the only data it needs (kilobytes per event):

1. **Stretch candidates.**  Every pair of lines of an event and every pair of
   comb ions implies a stretch ``(t_j - t_i) / (sqrt m_l - sqrt m_k)``; each
   event votes once per (log-spaced) stretch bin.  The true stretch is where
   many events agree.
2. **Joint score.**  For each candidate (refined on a fine grid around it), each
   event's best shift is found (the comb matched within the preset's
   ``tolerance_us``) and the events' scores are summed.  The best candidates
   are then ranked by the lines they match; a distinct rival matching within
   the preset's ``ambiguity_ratio`` as many leaves the group uncalibrated.
   Events of one group share their trigger, so their shifts must agree: an
   event's score counts only with its shift within ``shift_window_us`` of a
   common centre (at a chance alignment the shifts scatter).
3. **Anchors and weak events.**  With their shifts near that centre, events
   matching at least the preset's ``min_matches`` lines are anchors (at least
   one is needed); the others are accepted with ``min_event_matches`` lines.
4. **Joint fit.**  The shared terms ``a_1..a_K`` and every accepted event's
   ``t0`` are fitted together by linear least squares (order from the number of
   distinct masses, as for one event), lines reassigned with the full model and
   refitted (a few iterations); the shape must be monotonic over the mass range.
5. **Fallback.**  An event whose own bootstrap calibration matched more lines
   than the campaign solution gives it keeps its own calibration.

Nothing here depends on the order of the events or on other groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idexdask._logging import get_logger
from idexdask.calibration.comb_assign import assign_events
from idexdask.calibration.mass_axes import mass_axis
from idexdask.calibration.settings import CalibrationSettings
from idexdask.calibration.shift_search import EventLines, best_shifts, joint_shift_totals
from idexdask.calibration.tofmass import min_slope

__all__ = [
    "CampaignCalibration",
    "CampaignSettings",
    "GroupedCalibration",
    "calibrate_campaign",
    "calibrate_groups",
]

_log = get_logger(__name__)

METHOD_NONE = "none"
METHOD_CAMPAIGN = "campaign"
METHOD_EVENT = "event"
_BIN_REL = 0.002  # relative width of a stretch bin (votes), about 1/5 of a match window
_FINE = np.linspace(-1.0, 1.0, 5)  # refinement grid around a candidate, in bins
_N_ITER = 3
# Events that search and rank the shape candidates: the shape is shared, a few
# hundred line-rich events pin it, and the search then costs the same for a
# file of 500 or 50 000 events (every event still gets its shift and lines).
_SCAN_EVENTS = 100
# One shape must describe the events that calibrate on their own: each line the
# campaign assigns them must get the same mass (within 0.5 u) from their own
# calibration.  If more than a third disagree, the group does not share one
# geometry (a campaign mixing settings, or the simulator's per-event stretches)
# and stays with the events' own calibrations.
_MASS_TOL = 0.5
# Masses within this of the _MASS_TOL limit are checked with the event's own
# inversion (_own_disagree), u: a thousand times the batch's last-bit scatter.
_NEAR_TOL = 1e-9
_MAX_DISAGREE = 1.0 / 3.0


@dataclass(frozen=True)
class CampaignSettings:
    """The ``analysis.calibration.campaign`` section.

    Attributes
    ----------
    enabled : bool
    min_event_matches : int
        Lines an event must match, shift searched near the anchors', to be
        calibrated with the campaign's shape.
    shift_window_us : float
        Half-width of that shift search around the anchors' median shift, µs.
    """

    enabled: bool = True
    min_event_matches: int = 2
    shift_window_us: float = 0.25

    @classmethod
    def from_config(cls, section: Any) -> CampaignSettings:
        """From the configuration's ``analysis.calibration.campaign`` mapping."""
        section = section or {}
        return cls(
            enabled=bool(section.get("enabled", True)),
            min_event_matches=int(section.get("min_event_matches", 2)),
            shift_window_us=float(section.get("shift_window_us", 0.25)),
        )


@dataclass
class CampaignCalibration:
    """Result of :func:`calibrate_campaign` for one group of events.

    Attributes
    ----------
    calibrated : bool
        Whether a shared shape was found.
    reason : str
        Why not (``none`` when calibrated): ``no_lines``, ``no_candidate``,
        ``ambiguous``, ``no_anchor``, ``not_monotonic``, ``inconsistent`` (the
        events' own calibrations do not share the shape).
    shape : numpy.ndarray
        Shared ``[a_1, a_2, a_3]`` (µs/u**(k/2)), zero above the order; NaN if
        not calibrated.
    shape_err : numpy.ndarray
        Their 1-sigma errors (from the residual scatter; NaN above the order).
    order : int
    stretch : float
        Linear stretch of the joint scan, µs/sqrt(u).
    coefficients : numpy.ndarray, shape (E, 4)
        Per-event ``[t0, a_1, a_2, a_3]`` of the calibration each event ends
        with (campaign or its own), NaN rows for uncalibrated events.
    method : numpy.ndarray of str, shape (E,)
        ``campaign``, ``event`` (own bootstrap kept) or ``none``.
    n_matched : numpy.ndarray of int, shape (E,)
        Lines matched with the campaign shape.
    anchors : numpy.ndarray of int
        Events that matched ``min_matches`` lines on their own at the stretch.
    line_event, line_time_us, line_mass_u, line_residual_us : numpy.ndarray
        The lines of the joint fit and their residuals (µs).
    rms_residual_us : float
    score, rival_score : float
        Joint score of the stretch and of its best distinct rival.
    """

    calibrated: bool
    reason: str
    shape: np.ndarray
    order: int
    stretch: float
    coefficients: np.ndarray
    method: np.ndarray
    n_matched: np.ndarray
    anchors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    line_event: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    line_time_us: np.ndarray = field(default_factory=lambda: np.zeros(0))
    line_mass_u: np.ndarray = field(default_factory=lambda: np.zeros(0))
    line_residual_us: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rms_residual_us: float = math.nan
    score: float = math.nan
    rival_score: float = math.nan
    shape_err: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (for store attributes and logs)."""
        return {
            "calibrated": bool(self.calibrated),
            "reason": self.reason,
            "order": int(self.order),
            "stretch_us_per_sqrt_u": _num(self.stretch),
            "shape": [_num(v) for v in self.shape],
            "shape_err": [_num(v) for v in self.shape_err],
            "events_campaign": int(np.sum(self.method == METHOD_CAMPAIGN)),
            "events_own": int(np.sum(self.method == METHOD_EVENT)),
            "anchors": [int(e) for e in self.anchors],
            "lines": int(self.line_event.size),
            "rms_residual_ns": _num(1e3 * self.rms_residual_us),
            "score": _num(self.score),
            "rival_score": _num(self.rival_score),
        }


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _uncalibrated(reason: str, n_events: int, own: np.ndarray | None, **extra: Any
                  ) -> CampaignCalibration:
    coeffs = np.full((n_events, 4), np.nan)
    method = np.full(n_events, METHOD_NONE, dtype=object)
    if own is not None:
        ok = np.all(np.isfinite(own[:, :2]), axis=1)
        coeffs[ok] = np.nan_to_num(own[ok])
        method[ok] = METHOD_EVENT
    return CampaignCalibration(
        calibrated=False, reason=reason, shape=np.full(3, np.nan), order=0,
        stretch=float(extra.pop("stretch", math.nan)), coefficients=coeffs,
        method=method.astype(str), n_matched=np.zeros(n_events, np.int64), **extra,
    )


def _event_lists(event: np.ndarray, center: np.ndarray, area: np.ndarray, n_events: int,
                 power: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per event: sorted line times (µs) and amplitude weights ``(A/Amax)**power``."""
    out = []
    order = np.lexsort((center, event))
    event, center, area = event[order], center[order], area[order]
    bounds = np.searchsorted(event, np.arange(n_events + 1))
    for e in range(n_events):
        t = center[bounds[e]:bounds[e + 1]]
        a = area[bounds[e]:bounds[e + 1]]
        w = (a / a.max()) ** power if a.size else a
        out.append((t, w))
    return out


def _stretch_votes(lines: list[tuple[np.ndarray, np.ndarray]], s: np.ndarray, wk: np.ndarray,
                   lo: float, hi: float, min_dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Stretch bins (log-spaced) and each bin's vote, one vote per event and bin."""
    edges = np.exp(np.arange(math.log(lo), math.log(hi) + _BIN_REL, _BIN_REL))
    votes = np.zeros(edges.size)
    ds = s[None, :] - s[:, None]
    kk, ll = np.nonzero(ds > 0)
    ds_kl = ds[kk, ll]
    w_kl = wk[kk] * wk[ll]
    for t, w in lines:
        if t.size < 2:
            continue
        dt = t[None, :] - t[:, None]
        ii, jj = np.nonzero(dt >= min_dt)
        if ii.size == 0:
            continue
        a = dt[ii, jj][:, None] / ds_kl[None, :]
        v = (w[ii] * w[jj])[:, None] * w_kl[None, :]
        inside = (a >= lo) & (a < hi)
        b = np.floor(np.log(a[inside] / lo) / _BIN_REL).astype(np.int64)
        best = np.zeros(edges.size)
        np.maximum.at(best, b, v[inside])
        votes += best
    # a true stretch spreads over neighbouring bins (timing errors): smooth
    kernel = np.array([0.5, 1.0, 0.5])
    return edges, np.convolve(votes, kernel, mode="same")


def _joint_score(lines: EventLines, predicted_rel: np.ndarray,
                 wk: np.ndarray, tol: float, t0_lo: float, t0_hi: float, half: float
                 ) -> tuple[float, float]:
    """Joint score of a shape: the events' best scores with their shifts within
    ``half`` of one common centre, at the best centre.  Returns (score, centre).

    Events of one group share their trigger: at the true shape their shifts
    agree (within the trigger jitter), at a chance alignment they scatter.
    """
    step = half / 4.0
    n_bins = max(int(math.ceil((t0_hi - t0_lo) / step)) + 1, 1)
    total = joint_shift_totals(lines, predicted_rel, wk, tol, t0_lo, t0_hi, step, n_bins)
    i = int(np.argmax(total))
    return float(total[i]), t0_lo + (i + 0.5) * step


def _own_disagree(own: np.ndarray, jf: _JointFit) -> float:
    """Share of the events calibrated on their own that the campaign's shape does
    not describe: not matched by it, or given another mass (by more than
    ``_MASS_TOL`` u) for a line the campaign assigned them.

    The masses of every such event's lines come from one :func:`mass_axis` call
    (an event's lines per row, NaN after them).  Its inversion brackets each
    time in a table searched for all rows at once, whose keys round with the
    row's place in the batch, so a mass may end a last bit or two (< 1e-12 u)
    from the event's own call: an event with a line within ``_NEAR_TOL`` of the
    ``_MASS_TOL`` limit is decided by its own call, so the answer is the same.
    """
    ev_a, t_a, m_a, _ = jf.rows
    ok = np.nonzero(np.all(np.isfinite(own[:, :2]), axis=1))[0]
    if ok.size == 0:
        return 0.0
    counts = np.bincount(ev_a, minlength=own.shape[0])[ok]
    rows = ok[counts > 0]
    disagree = int(np.sum(counts == 0))  # not matched by the campaign's shape
    if rows.size == 0:
        return disagree / ok.size
    mine_lines = np.flatnonzero(np.isin(ev_a, rows))
    row = np.searchsorted(rows, ev_a[mine_lines])
    order = np.argsort(row, kind="stable")  # each event's lines in their order
    mine_lines, row = mine_lines[order], row[order]
    column = np.arange(row.size) - np.searchsorted(row, np.arange(rows.size))[row]
    times = np.full((rows.size, int(counts.max())), np.nan)
    times[row, column] = t_a[mine_lines]
    expected = np.full(times.shape, np.nan)
    expected[row, column] = m_a[mine_lines]
    filled = np.zeros(times.shape, bool)
    filled[row, column] = True
    with np.errstate(invalid="ignore"):
        diff = np.abs(mass_axis(np.nan_to_num(own[rows]), times) - expected)
        apart = (filled & ~(diff <= _MASS_TOL)).any(axis=1)
        near = (filled & (np.abs(diff - _MASS_TOL) <= _NEAR_TOL)).any(axis=1)
    for r in np.flatnonzero(near):
        sel = ev_a == rows[r]
        mine = mass_axis(np.nan_to_num(own[[rows[r]]]), t_a[sel][None, :])[0]
        apart[r] = bool(np.any(~(np.abs(mine - m_a[sel]) <= _MASS_TOL)))
    return (disagree + int(apart.sum())) / ok.size


def _centred(v: np.ndarray, col: np.ndarray, per_event: np.ndarray) -> np.ndarray:
    """``v`` minus its mean over each event's lines (``col``: the event of each
    line, ``per_event``: lines per event): the per-event shifts drop out."""
    return v - (np.bincount(col, weights=v, minlength=per_event.size) / per_event)[col]


def _scan_events(lines: list[tuple[np.ndarray, np.ndarray]], area: np.ndarray,
                 event: np.ndarray, limit: int, own: np.ndarray | None = None) -> list[int]:
    """The events that search the shape: all, or ``limit`` of them in event order.

    Those that calibrate on their own (``own``: finite ``t0`` and stretch) come
    first, then the richest in lines (most lines, then largest total area).  An
    event that calibrates alone is the surest anchor of the shared shape; ranked
    by lines only, the scan of a lab campaign of 300 replicated impacts held 100
    copies of one impact that does not calibrate alone, no shape anchored, and
    the whole group stayed uncalibrated (96 impacts, all scanned, calibrate).
    """
    n = len(lines)
    if n <= limit:
        return list(range(n))
    counts = np.array([t.size for t, _ in lines])
    total = np.bincount(event, weights=area, minlength=n)
    keys: tuple[np.ndarray, ...] = (-total, -counts)
    if own is not None:
        keys = (*keys, ~np.all(np.isfinite(own[:, :2]), axis=1))
    order = np.lexsort(keys)[:limit]
    return sorted(int(e) for e in order)


def _order_for(n_masses: int, thresholds: tuple[int, ...], max_order: int) -> int:
    order = 0
    for k, need in enumerate(thresholds, start=1):
        if n_masses >= need:
            order = k
    return min(order, max_order)


@dataclass
class _JointFit:
    """One candidate's joint fit: shape, order, shifts, anchors, lines and residuals."""

    shape: np.ndarray
    order: int
    t0: np.ndarray
    anchors: np.ndarray
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    n_lines: int
    rms: float
    score: float
    shape_err: np.ndarray


def _joint_fit(
    lines: list[tuple[np.ndarray, np.ndarray]],
    stretch: float,
    centre: float,
    s: np.ndarray,
    wk: np.ndarray,
    s_ext: np.ndarray,
    w_ext: np.ndarray,
    settings: CalibrationSettings,
    options: CampaignSettings,
) -> _JointFit | None:
    """Shifts near ``centre`` at ``stretch``, then the joint least squares.

    Each event's shift is searched within ``shift_window_us`` of the common
    centre; events matching the preset's ``min_matches`` lines are anchors (None
    without one), the others are accepted with ``min_event_matches``.  The
    shared ``a_1..a_K`` and the accepted events' ``t0`` are then fitted by
    linear least squares, lines reassigned from the extended list with the
    fitted model, and refitted (``_N_ITER`` times).
    """
    boot, fit = settings.bootstrap, settings.fit
    tol = boot.tolerance_us
    t0_lo, t0_hi = boot.t0_range_us
    half = options.shift_window_us
    n_events = len(lines)
    # the scan's centre is good to a window (its plateau): anchors are found
    # within twice the window, the shifts then searched around their median
    flat = EventLines.from_lists(lines)
    for width in (2.0 * half, half):
        choice = best_shifts(flat, stretch * s, wk, tol,
                             np.full(n_events, max(t0_lo, centre - width)),
                             np.full(n_events, min(t0_hi, centre + width)))
        shifts, n_match = choice.t0, choice.matched
        anchors = np.nonzero(n_match >= boot.min_matches)[0]
        if anchors.size == 0:
            return None
        centre = float(np.median(shifts[anchors]))
    is_anchor = np.isin(np.arange(n_events), anchors)
    accepted = n_match >= options.min_event_matches
    shape = np.array([stretch, 0.0, 0.0])
    t0_e = np.where(accepted, shifts, np.nan)
    comb_s, comb_w = s, wk
    rows = None
    order_k = 1
    for _ in range(_N_ITER):
        if not accepted.any():
            return None
        # every accepted event's lines matched to the comb at its shift (assign_events)
        model_rel = sum(shape[k] * comb_s ** (k + 1) for k in range(3))
        ev_a, k_idx, l_idx = assign_events(flat.t, flat.offsets, np.nonzero(accepted)[0], t0_e,
                                           np.asarray(model_rel, dtype=np.float64), tol)
        t_a = flat.t[l_idx]
        m_a = comb_s[k_idx] ** 2
        w_a = comb_w[k_idx] * flat.w[l_idx]
        counts = np.bincount(ev_a, minlength=n_events)
        accepted &= counts >= np.where(is_anchor, 1, options.min_event_matches)
        keep = accepted[ev_a]
        ev_a, t_a, m_a, w_a = ev_a[keep], t_a[keep], m_a[keep], w_a[keep]
        order_k = max(_order_for(np.unique(np.round(m_a, 3)).size, fit.min_lines_for_order,
                                 min(fit.max_order, 3)), 1)
        used = np.unique(ev_a)
        if ev_a.size < used.size + order_k + 1:
            break
        col = np.searchsorted(used, ev_a)
        n_used = used.size
        per_event = np.bincount(col, minlength=n_used).astype(float)
        s_lo, s_hi = (math.sqrt(m) for m in fit.mass_range_u)

        tc = _centred(t_a, col, per_event)
        while True:  # the highest order whose t(sqrt m) rises over the mass range
            powers = np.stack([np.sqrt(m_a) ** (k + 1) for k in range(order_k)], axis=1)
            xc = np.stack([_centred(powers[:, k], col, per_event) for k in range(order_k)],
                          axis=1)
            # fixed effects: the shared terms from the within-event variation,
            # the same solution as the least squares with one column per shift
            coef, *_ = np.linalg.lstsq(xc, tc, rcond=None)
            if order_k == 1 or min_slope(np.concatenate([[0.0], coef]), s_lo, s_hi) > 0:
                break
            order_k -= 1
        t0_used = (np.bincount(col, weights=t_a - powers @ coef, minlength=n_used) / per_event)
        t0_e = np.full(n_events, np.nan)
        t0_e[used] = t0_used
        shape = np.zeros(3)
        shape[:order_k] = coef
        rows = (ev_a, t_a, m_a, t_a - t0_used[col] - powers @ coef)
        score = float(np.sum(w_a * np.exp(-0.5 * (rows[3] / tol) ** 2)))
        # 1-sigma errors of the shared terms from the scatter of the residuals
        dof = ev_a.size - n_used - order_k
        shape_err = np.full(3, np.nan)
        if dof > 0:
            var = float(np.sum(rows[3] ** 2)) / dof
            try:
                shape_err[:order_k] = np.sqrt(np.diag(var * np.linalg.inv(xc.T @ xc)))
            except np.linalg.LinAlgError:
                pass
        comb_s, comb_w = s_ext, w_ext  # reassignment stage: the extended list
    if rows is None:
        return None
    resid = rows[3]
    return _JointFit(shape=shape, order=order_k, t0=t0_e, anchors=anchors, rows=rows,
                     n_lines=int(resid.size), rms=float(np.sqrt(np.mean(resid**2))),
                     score=score, shape_err=shape_err)


def calibrate_campaign(
    event: np.ndarray,
    center_us: np.ndarray,
    area: np.ndarray,
    n_events: int,
    settings: CalibrationSettings,
    options: CampaignSettings | None = None,
    *,
    own: np.ndarray | None = None,
    own_matches: np.ndarray | None = None,
) -> CampaignCalibration:
    """Calibrate a group of events with one shared shape and a shift per event.

    Parameters
    ----------
    event : numpy.ndarray of int
        Event (0 .. n_events-1) of each usable line.
    center_us, area : numpy.ndarray
        Line centres (µs) and areas (> 0) of those lines.
    n_events : int
    settings : CalibrationSettings
        The preset (comb, stretch and shift ranges, tolerance, gates).
    options : CampaignSettings, optional
    own : numpy.ndarray, shape (E, 4), optional
        Each event's own (bootstrap) calibration ``[t0, a1, a2, a3]``, NaN rows
        where it has none.
    own_matches : numpy.ndarray of int, shape (E,), optional
        Lines each own calibration matched.

    Returns
    -------
    CampaignCalibration
        Never raises on data: an uncalibrated result says why, and keeps the
        events' own calibrations.
    """
    options = options or CampaignSettings()
    boot = settings.bootstrap
    event = np.asarray(event, dtype=np.int64)
    center_us = np.asarray(center_us, dtype=float)
    area = np.asarray(area, dtype=float)
    good = np.isfinite(center_us) & np.isfinite(area) & (area > 0)
    event, center_us, area = event[good], center_us[good], area[good]
    if own is not None:
        own = np.asarray(own, dtype=float)
    own_n = (np.zeros(n_events, np.int64) if own_matches is None
             else np.asarray(own_matches, dtype=np.int64))
    lines = _event_lists(event, center_us, area, n_events, boot.amplitude_power)
    if sum(t.size for t, _ in lines) < boot.min_matches:
        return _uncalibrated("no_lines", n_events, own)
    comb = settings.comb
    s = np.sqrt(np.array([ion.mass_u for ion in comb]))
    wk = np.array([ion.weight for ion in comb])
    tol = boot.tolerance_us
    t0_lo, t0_hi = boot.t0_range_us
    lo, hi = boot.stretch_range

    # 1. stretch candidates from the events' pairwise votes
    scan = _scan_events(lines, area, event, _SCAN_EVENTS, own)
    lines_all, lines = lines, [lines[e] for e in scan]
    edges, votes = _stretch_votes(lines, s, wk, lo, hi, min_dt=20.0 * tol)
    if not np.any(votes > 0):
        return _uncalibrated("no_candidate", n_events, own)
    peaks = np.nonzero((votes > 0) & (votes >= np.roll(votes, 1)) & (votes >= np.roll(votes, -1)))
    order = peaks[0][np.argsort(-votes[peaks[0]])][: max(boot.n_candidates // 2, 8)]
    scan_lines = EventLines.from_lists(lines)

    # 2. joint score of each candidate, refined on a fine grid
    half = options.shift_window_us
    scored = []
    for b in order:
        grid = edges[b] * np.exp((0.5 + _FINE) * _BIN_REL)
        vals = [_joint_score(scan_lines, float(a) * s, wk, tol, t0_lo, t0_hi, half)
                for a in grid]
        j = int(np.argmax([v[0] for v in vals]))
        scored.append((vals[j][0], float(grid[j]), vals[j][1]))
    scored.sort(reverse=True)
    # 3-4. the best candidates fitted jointly and scored on the lines they match
    # (comb, then the extended list: isotopes, metals) in events whose shifts
    # agree: ion weight x peak weight x match quality, the bootstrap's score.
    # A distinct rival (stretch 2 % away) scoring within the ambiguity ratio
    # leaves the group uncalibrated.
    ext = settings.extended
    s_ext = np.sqrt(np.array([ion.mass_u for ion in ext]))
    w_ext = np.array([ion.weight for ion in ext])
    fits = []
    for _, a, cen in scored[: max(boot.n_candidates // 2, 4)]:
        jf = _joint_fit(lines, a, cen, s, wk, s_ext, w_ext, settings, options)
        if jf is not None:
            fits.append((jf.score, a, jf))
    if not fits:
        return _uncalibrated("no_anchor", n_events, own, stretch=float(scored[0][1]),
                             score=float(scored[0][0]))
    fits.sort(key=lambda f: f[0], reverse=True)
    best_score, stretch, jf = fits[0]
    if len(scan) < n_events:  # the adopted candidate over every event
        jf = _joint_fit(lines_all, stretch, float(np.median(jf.t0[np.isfinite(jf.t0)])), s, wk,
                        s_ext, w_ext, settings, options)
        if jf is None:
            return _uncalibrated("no_anchor", n_events, own, stretch=stretch,
                                 score=best_score, rival_score=0.0)
    rival = max((f[0] for f in fits[1:] if abs(f[1] / stretch - 1.0) > 0.02), default=0.0)
    if rival >= boot.ambiguity_ratio * best_score:
        return _uncalibrated("ambiguous", n_events, own, stretch=stretch,
                             score=best_score, rival_score=rival)
    fit = settings.fit
    s_lo, s_hi = (math.sqrt(m) for m in fit.mass_range_u)
    if not min_slope(np.concatenate([[0.0], jf.shape[: jf.order]]), s_lo, s_hi) > 0:
        return _uncalibrated("not_monotonic", n_events, own, stretch=stretch,
                             score=best_score, rival_score=rival)
    if own is not None and _own_disagree(own, jf) > _MAX_DISAGREE:
        return _uncalibrated("inconsistent", n_events, own, stretch=stretch,
                             score=best_score, rival_score=rival)
    shape, order_k, t0_e, anchors = jf.shape, jf.order, jf.t0, jf.anchors
    ev_a, t_a, m_a, resid = jf.rows
    counts = np.bincount(ev_a, minlength=n_events)

    # 5. per event: the campaign's calibration, or its own where that matched more
    coeffs = np.full((n_events, 4), np.nan)
    method = np.full(n_events, METHOD_NONE, dtype=object)
    camp = np.isfinite(t0_e) & (counts > 0)
    coeffs[camp, 0] = t0_e[camp]
    coeffs[camp, 1:] = shape
    method[camp] = METHOD_CAMPAIGN
    if own is not None:
        own_ok = np.all(np.isfinite(own[:, :2]), axis=1)
        prefer_own = own_ok & (~camp | (own_n > counts))
        coeffs[prefer_own] = np.nan_to_num(own[prefer_own])
        method[prefer_own] = METHOD_EVENT
    result = CampaignCalibration(
        calibrated=True, reason="none", shape=shape, order=order_k, stretch=stretch,
        coefficients=coeffs, method=method.astype(str), n_matched=counts, anchors=anchors,
        line_event=ev_a, line_time_us=t_a, line_mass_u=m_a, line_residual_us=resid,
        rms_residual_us=float(np.sqrt(np.mean(resid**2))) if resid.size else math.nan,
        score=best_score, rival_score=rival, shape_err=jf.shape_err,
    )
    _log.info("campaign calibration: stretch %.5f us/sqrt(u), order %d, %d events "
              "(%d anchors), rms %.2f ns", stretch, order_k, int(camp.sum()), anchors.size,
              1e3 * result.rms_residual_us)
    return result


@dataclass
class GroupedCalibration:
    """:func:`calibrate_groups` over every group of a batch of events.

    Attributes
    ----------
    coefficients : numpy.ndarray, shape (E, 4)
        ``[t0, a_1, a_2, a_3]`` per event (NaN rows: uncalibrated).
    method : numpy.ndarray of str, shape (E,)
        ``campaign``, ``event`` or ``none``.
    residual_us : numpy.ndarray, shape (N,)
        Residual of each input line in its group's joint fit (NaN if unused), µs.
    groups : dict
        ``{group: CampaignCalibration.summary() plus "events"}``.
    """

    coefficients: np.ndarray
    method: np.ndarray
    residual_us: np.ndarray
    groups: dict[str, dict[str, Any]]


def calibrate_groups(
    event: np.ndarray,
    center_us: np.ndarray,
    area: np.ndarray,
    usable: np.ndarray,
    group: np.ndarray,
    settings: CalibrationSettings,
    options: CampaignSettings,
    own: np.ndarray,
    own_matches: np.ndarray,
) -> GroupedCalibration:
    """:func:`calibrate_campaign` for each group of events (one input file, one lab run).

    Parameters
    ----------
    event, center_us, area : numpy.ndarray, shape (N,)
        The lines of all events (event index, centre µs, area).
    usable : numpy.ndarray of bool, shape (N,)
        Lines good enough to calibrate on.
    group : numpy.ndarray, shape (E,)
        Group label of each event.
    settings, options
        Preset and campaign settings.
    own, own_matches : numpy.ndarray, shapes (E, 4) and (E,)
        The events' own calibrations and the lines they matched.

    Returns
    -------
    GroupedCalibration
        Each event's calibration; without ``options.enabled``, the events' own.
    """
    n_events = int(group.size)
    coeffs = np.array(own, dtype=float, copy=True)
    method = np.where(np.all(np.isfinite(coeffs[:, :2]), axis=1), METHOD_EVENT, METHOD_NONE)
    method = method.astype(object)  # room for "campaign"
    residual = np.full(np.asarray(event).size, np.nan)
    summaries: dict[str, dict[str, Any]] = {}
    if not options.enabled or n_events == 0:
        return GroupedCalibration(coeffs, method.astype(str), residual, summaries)
    event = np.asarray(event, dtype=np.int64)
    for label in np.unique(group):
        members = np.nonzero(group == label)[0]
        local = np.full(n_events, -1, np.int64)
        local[members] = np.arange(members.size)
        sel = np.nonzero(usable & (local[event] >= 0))[0]
        res = calibrate_campaign(
            local[event[sel]], center_us[sel], area[sel], members.size, settings, options,
            own=own[members], own_matches=own_matches[members],
        )
        coeffs[members] = res.coefficients
        method[members] = res.method
        if res.calibrated:
            # residuals back onto the input lines (same event, same centre)
            key = {(int(e), float(t)): r for e, t, r in
                   zip(res.line_event, res.line_time_us, res.line_residual_us, strict=True)}
            for i in sel:
                r = key.get((int(local[event[i]]), float(center_us[i])))
                if r is not None:
                    residual[i] = r
        summary = res.summary()
        summary["events"] = [int(e) for e in members[np.asarray(res.method) == METHOD_CAMPAIGN]]
        summary["anchors"] = [int(members[e]) for e in res.anchors]
        summaries[str(label)] = summary
    return GroupedCalibration(coeffs, np.asarray(method).astype(str), residual, summaries)
