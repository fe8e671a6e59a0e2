"""Peak finding on the time-of-flight spectra of many events at once.

* **Noise scale.**  Each event's spectrum is lightly smoothed (boxcar of
  ``smooth_us``) and divided by the robust sigma (1.4826 x MAD) of the smoothed
  pre-trigger baseline, so one prominence threshold in sigma units applies to
  every event whatever its noise or unit (DN or V).
* **Detection.**  Each event's normalised spectrum is searched as soon as it
  is formed, in one row buffer reused from event to event (in cache while it
  is searched), by a compiled equivalent of :func:`scipy.signal.find_peaks`
  with height and prominence limits (the same peaks).  The peaks are those of
  one search over all events concatenated with a "wall" sample far above any
  signal between them (the ends of a row stop a prominence walk as a wall
  does), and are numbered by their position in that concatenation.

The peaks found (:class:`PeakCandidates`) are fitted by
:func:`idexdask.analysis.line_fits.fit_lines`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from idexdask._logging import get_logger
from idexdask.analysis.peak_search import (
    PROM_BLOCK,
    find_peaks,
    find_peaks_in_blocks,
    find_peaks_scaled,
    grown,
)
from idexdask.analysis.row_smoothing import (
    row_sigma,
    scale_at,
    smooth_formula_row,
    smooth_row,
    write_times,
)
from idexdask.analysis.sample_step import (
    STEP_PROBES,
    boxcar_width,
    gathered_median_step,
    probe_step,
    probe_step_formula,
    sample_step,
    step_is_median,
    usable_step,
)
from idexdask.analysis.signal_quality.dataset import FormulaTimes

__all__ = ["PeakCandidates", "detect_peaks"]

_log = get_logger(__name__)

_WALL = 1e300  # separator sample between events in the concatenated search array


@dataclass
class PeakCandidates:
    """Peaks found in a batch of spectra (one row per peak, sorted by event, time).

    Attributes
    ----------
    event : numpy.ndarray
        Event index of each peak (n_peaks,), int64.
    index : numpy.ndarray
        Sample index of the peak maximum (n_peaks,), int64.
    prominence : numpy.ndarray
        Prominence in units of the event's smoothed-baseline sigma (n_peaks,).
    manual : numpy.ndarray
        True for peaks added or edited by a manual override (n_peaks,).
    window_start, window_stop : numpy.ndarray
        Fit window, µs; NaN for "automatic" (n_peaks,).
    center_guess : numpy.ndarray
        Starting centre, µs; NaN for "the peak sample's time" (n_peaks,).
    """

    event: np.ndarray
    index: np.ndarray
    prominence: np.ndarray
    manual: np.ndarray
    window_start: np.ndarray
    window_stop: np.ndarray
    center_guess: np.ndarray

    @property
    def size(self) -> int:
        """Number of peaks."""
        return int(self.event.size)

    def take(self, keep: np.ndarray) -> PeakCandidates:
        """The peaks selected by ``keep`` (index array or boolean mask)."""
        return PeakCandidates(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @staticmethod
    def concatenate(parts: list[PeakCandidates]) -> PeakCandidates:
        """Join candidate lists and sort them by (event, index)."""
        fields = PeakCandidates.__dataclass_fields__
        joined = PeakCandidates(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))
        order = np.lexsort((joined.index, joined.event))
        return joined.take(order)


def _empty_candidates() -> PeakCandidates:
    i = np.zeros(0, dtype=np.int64)
    f = np.zeros(0)
    return PeakCandidates(i, i.copy(), f, np.zeros(0, bool), f.copy(), f.copy(), f.copy())


@numba.njit(cache=True, nogil=True)
def _select_by_distance_kernel(position, order, distance):  # pragma: no cover - compiled
    n = position.size
    keep = np.ones(n, dtype=np.bool_)
    for k in range(n):
        i = order[k]
        if not keep[i]:
            continue
        j = i - 1
        while j >= 0 and position[i] - position[j] < distance:
            keep[j] = False
            j -= 1
        j = i + 1
        while j < n and position[j] - position[i] < distance:
            keep[j] = False
            j += 1
    return keep


def _select_by_distance(position: np.ndarray, height: np.ndarray, distance: int) -> np.ndarray:
    """Peaks at least ``distance`` samples apart, higher first, ties to the earlier.

    ``position`` is sorted ascending (as ``find_peaks`` returns it); events are
    separated by wall samples, so a peak is only ever removed by one of its own
    event.  Returns a boolean mask.
    """
    if distance <= 1 or position.size < 2:
        return np.ones(position.size, dtype=bool)
    order = np.lexsort((position, -height))  # height descending, then position
    return _select_by_distance_kernel(position.astype(np.int64), order, int(distance))


def detect_peaks(
    y: np.ndarray,
    t: np.ndarray | FormulaTimes,
    noise: np.ndarray,
    settings: Mapping[str, Any],
    noise_scale: np.ndarray | None = None,
    *,
    scale_den: np.ndarray | None = None,
    step: np.ndarray | None = None,
    quantum: float | np.ndarray = 0.0,
    step_out: np.ndarray | None = None,
) -> tuple[PeakCandidates, np.ndarray]:
    """Find the lines of every spectrum with a noise-scaled prominence threshold.

    Parameters
    ----------
    y : numpy.ndarray
        Baseline-subtracted, positive-going spectra (n_events, n_samples), NaN
        where missing or unusable.
    t : numpy.ndarray or FormulaTimes
        Sample times (n_events, n_samples), µs; an axis given by formula is
        searched without being materialised (each row formed in one buffer).
    noise : numpy.ndarray
        Not used for the threshold (the smoothed baseline's own sigma is), kept
        for events whose pre-trigger part is unusable: its value replaces a NaN
        or zero smoothed sigma (n_events,).
    noise_scale : numpy.ndarray, optional
        Relative noise of each sample (n_events, n_samples), 1 on the baseline's
        gain: where a merged spectrum uses a lower gain scaled up, its noise is
        that much larger and so is the prominence a peak needs there.
    scale_den : numpy.ndarray, optional
        Per-event divisor of ``noise_scale`` (n_events,): the relative noise is
        then ``noise_scale / scale_den[:, None]``, computed row by row (e.g. the
        merged spectrum's ``sigma`` and ``noise``, with no (n_events, n_samples)
        quotient materialised).
    settings : mapping
        The ``peaks`` section of the analysis settings: ``smooth_us``,
        ``prominence_sigma``, ``height_sigma``, ``min_distance_us``,
        ``baseline_stop_us``, ``max_peaks_per_event``.
    step : numpy.ndarray, optional
        :func:`sample_step` of ``t`` (n_events,), µs, when the caller has it;
        computed otherwise, in the search's own pass over each time row.
    quantum : float or numpy.ndarray
        Quantisation step of ``y`` (per event or one for all; 0 when unknown):
        the smoothed baseline's sigma is never below the quantisation noise of
        a ``w``-sample boxcar mean, ``quantum / sqrt(12 w)``, and where its MAD
        collapses (a quiet quantised baseline) its standard deviation is used,
        the rules of :func:`~idexdask.analysis.robust.baseline_sigma`.
    step_out : numpy.ndarray, optional
        Receives the sample step of each event (n_events,), µs: ``step``, or
        :func:`sample_step` of ``t`` as the search found it.

    Returns
    -------
    candidates : PeakCandidates
        Peaks sorted by event and time.
    zsigma : numpy.ndarray
        Robust sigma of the smoothed baseline per event (n_events,), signal units.
    """
    n_events, n = y.shape
    if n_events == 0 or n < 3:
        if step_out is not None:
            t = np.broadcast_to(np.asarray(t, dtype=float), y.shape)
            step_out[:] = sample_step(t) if step is None else step
        return _empty_candidates(), np.full(n_events, np.nan)
    y = np.asarray(y, dtype=float)
    formula = isinstance(t, FormulaTimes) and t.shape == y.shape
    if formula:  # each row's times formed when it is searched, in one buffer
        terms = np.stack([t.start, t.step, np.full(n_events, t.scale)])
        counts = np.asarray(t.count, dtype=np.int64)
        tbuf = np.empty((1, n))
        t = np.broadcast_to(tbuf, tbuf.shape)  # read-only, as the materialised path's
    else:
        t = np.broadcast_to(np.asarray(t, dtype=float), y.shape)
        terms, counts, tbuf = np.empty((3, 0)), np.empty(0, dtype=np.int64), np.empty((1, 0))
    find_steps = step is None
    dt = np.full(n_events, np.nan) if find_steps else np.array(step, dtype=float)
    noise = np.broadcast_to(np.asarray(noise, dtype=float), (n_events,))
    if noise_scale is None:
        num, den = np.zeros((1, 1)), np.ones(1)
    else:
        num = np.broadcast_to(np.asarray(noise_scale, dtype=float), y.shape)
        den = np.ones(n_events) if scale_den is None else np.asarray(scale_den, dtype=float)
    q = np.broadcast_to(np.abs(np.asarray(quantum, dtype=float)), (n_events,))
    q = np.where(np.isfinite(q), q, 0.0)
    # one search per event, on a row buffer reused from event to event (in cache
    # while it is searched); peaks at positions r * (n + 1) + i, as in one search
    # over [z_0, WALL, z_1, WALL, ...]
    zsig, usable, idx, heights, proms = _search_rows(
        y, t, dt, find_steps, float(settings["smooth_us"]), float(settings["baseline_stop_us"]),
        max(int(0.1 * n), 1), noise, num, den, noise_scale is not None, q,
        float(settings["height_sigma"]), float(settings["prominence_sigma"]), np.empty((1, n)),
        formula, terms, counts, tbuf,
    )  # fmt: skip
    if step_out is not None:
        step_out[:] = dt
    distance = max(int(np.rint(settings["min_distance_us"] / float(np.nanmedian(dt)))), 1)
    props = {"peak_heights": heights, "prominences": proms}
    # scipy's own `distance` selection orders equal heights with an unstable sort,
    # so which of two equal samples survives depended on the batch's length;
    # quantised spectra tie often.  Select with ties going to the earlier sample.
    kept = _select_by_distance(idx, props["peak_heights"], distance)
    idx = idx[kept]
    props = {key: value[kept] for key, value in props.items()}
    event = idx // (n + 1)
    index = idx % (n + 1)
    prom = props["prominences"]
    keep = (index < n) & usable[event]
    event, index, prom = event[keep], index[keep], prom[keep]
    # at most max_peaks_per_event per event, the most prominent
    cap = int(settings["max_peaks_per_event"])
    order = np.lexsort((-prom, event))
    rank = np.arange(order.size) - np.searchsorted(event[order], event[order], side="left")
    chosen = np.sort(order[rank < cap])
    if chosen.size < event.size:
        _log.info("peak cap: kept %d of %d peaks (%d per event)", chosen.size, event.size, cap)
    event, index, prom = event[chosen], index[chosen], prom[chosen]
    m = event.size
    cand = PeakCandidates(
        event=event.astype(np.int64),
        index=index.astype(np.int64),
        prominence=prom.astype(float),
        manual=np.zeros(m, bool),
        window_start=np.full(m, np.nan),
        window_stop=np.full(m, np.nan),
        center_guess=np.full(m, np.nan),
    )
    return cand, zsig



@numba.njit(cache=True, nogil=True, error_model="numpy")
def _search_rows(
    y: np.ndarray,
    t: np.ndarray,
    steps: np.ndarray,
    find_steps: bool,
    smooth_us: float,
    stop_us: float,
    n_first: int,
    noise: np.ndarray,
    num: np.ndarray,
    den: np.ndarray,
    has_scale: bool,
    quantum: np.ndarray,
    hmin: float,
    pmin: float,
    zrows: np.ndarray,
    formula: bool,
    terms: np.ndarray,
    counts: np.ndarray,
    tbuf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # pragma: no cover - compiled
    """The normalised search rows of :func:`detect_peaks` and their peaks, one event at a time.

    ``steps``: each row's :func:`sample_step`, µs; with ``find_steps`` it is
    written here, the probed step's counts
    (:func:`~idexdask.analysis.sample_step.step_is_median`) made in the boxcar's
    pass over the row (the time row read once), and the row
    smoothed again in the rare case where the probe was not the median and
    the boxcar's width differs.  The boxcar spans ``clip(rint(smooth_us /
    step), 1, n // 4 + 1)`` samples; the sigma floor of a quantised row is
    ``quantum / sqrt(12 width)`` (``quantum`` 0 for none).

    Per row: NaN -> 0, boxcar of ``width`` (``mode="nearest"``), robust sigma of
    the smoothed pre-trigger samples (``t < stop_us`` and ``y`` finite; the
    first ``n_first`` samples when fewer than 16; their standard deviation
    where the MAD is 0; at least the floor), replaced by ``noise`` when not
    positive; ``z = smooth / sigma``, divided by ``max(boxcar5(scale), 1)``
    where the relative noise ``scale = num / den`` (non-finite -> 1) is not all
    one; 0 where ``y`` is not finite or the row is unusable.  Row ``r`` is
    smoothed into ``zrows[r]`` when ``zrows`` has a row per event (which then
    receives ``z``), else into ``zrows[0]`` (one buffer, reused); its peaks
    (:func:`~idexdask.analysis.peak_search.find_peaks` of ``z``, heights in
    ``[hmin, _WALL / 2]``, prominences of at least ``pmin``) are found at
    once, while it is in cache, and where the relative noise is all one on
    the smoothed row itself (``z`` not formed:
    :func:`~idexdask.analysis.peak_search.find_peaks_scaled`).  The ends of a
    row stop a prominence walk as a wall sample between rows would, so the
    peaks are those of one search over
    ``[z_0, WALL, z_1, WALL, ...]``; they are returned at those positions,
    ``r * (n + 1) + i``.  Returns the sigma per row, whether the row is usable,
    and the peaks' positions, heights and prominences.

    With ``formula`` the times come from a formula axis (``terms``: start,
    step and scale per event, (3, rows); ``counts``: its sample counts), formed
    where they are read
    (:func:`~idexdask.analysis.row_smoothing.smooth_formula_row`,
    :func:`~idexdask.analysis.row_smoothing.count_formula_times`,
    :func:`~idexdask.analysis.sample_step.probe_step_formula`) with the
    roundings of :func:`~idexdask.analysis.peak_search.formula_row`; a row is
    written to ``tbuf[0]`` and read as ``t[0]`` (a read-only view of ``tbuf``,
    so that both paths read one array type) only where a rare path reads a
    whole time row (a step the probe misses, pre-trigger samples that are not
    the row's first ones).
    """
    rows, n = y.shape
    zsig = np.empty(rows)
    usable = np.zeros(rows, dtype=np.bool_)
    vals = np.empty(n)
    scratch = np.empty(n)
    own_rows = zrows.shape[0] == rows
    pos = np.empty(64, dtype=np.int64)
    heights = np.empty(64)
    proms = np.empty(64)
    m = 0
    probe = np.empty(STEP_PROBES)
    bmax = np.empty((n + PROM_BLOCK - 1) // PROM_BLOCK)
    bmin = np.empty_like(bmax)
    no_formula = np.empty(0)
    for r in range(rows):
        out = zrows[r] if own_rows else zrows[0]  # the smoothed row first, then z in place
        numr = num[r] if has_scale else num[0, :0]
        d = den[r] if has_scale else 1.0
        yr = y[r]
        if formula:
            # the times are formed where they are read (smooth_row,
            # probe_step_formula); the row buffer is written only for the rare
            # paths that read a whole time row
            ft = np.array([terms[0, r], terms[1, r], np.float64(counts[r]), terms[2, r]])
            tr = t[0]
            written = False
            pivot = probe_step_formula(ft[0], ft[1], counts[r], ft[3], n, probe) \
                if find_steps else np.nan
        else:
            ft = no_formula
            tr = t[r]
            written = True
            pivot = probe_step(tr, probe) if find_steps else np.nan
        if find_steps and pivot != pivot:
            written = written or write_times(ft, counts[r], tbuf)
            steps[r] = usable_step(gathered_median_step(tr))
        w = boxcar_width(smooth_us, usable_step(pivot) if pivot == pivot else steps[r], n)
        blocks, k, varying, below, equal, valid = smooth_formula_row(
            yr, w, stop_us, numr, d, out, pivot, ft, bmax, bmin
        ) if formula else (False, 0, False, 0, 0, 0)
        n_fin, prefix = n, True
        if not blocks:  # the general passes
            n_fin, k, prefix, varying, below, equal, valid = smooth_row(
                yr, tr, w, stop_us, numr, d, out, pivot, ft
            )
        if pivot == pivot:
            found, value = step_is_median(pivot, below, equal, valid)
            if not found:
                written = written or write_times(ft, counts[r], tbuf)
            steps[r] = usable_step(value if found else gathered_median_step(tr))
            if boxcar_width(smooth_us, steps[r], n) != w:  # smoothed with the wrong width
                w = boxcar_width(smooth_us, steps[r], n)
                blocks, k, varying, _, _, _ = smooth_formula_row(
                    yr, w, stop_us, numr, d, out, np.nan, ft, bmax, bmin
                ) if formula else (False, 0, False, 0, 0, 0)
                n_fin, prefix = n, True
                if not blocks:
                    n_fin, k, prefix, varying, _, _, _ = smooth_row(
                        yr, tr, w, stop_us, numr, d, out, np.nan, ft
                    )
        if k >= 16 and not prefix:  # row_sigma reads the time row
            written = written or write_times(ft, counts[r], tbuf)
        zs = row_sigma(out, yr, tr, stop_us, n_first, k, prefix, vals, scratch,
                        quantum[r] / np.sqrt(12.0 * w))  # fmt: skip
        if not (np.isfinite(zs) and zs > 0):
            zs = noise[r]
        ok = np.isfinite(zs) and zs > 0 and n_fin > 0
        zsig[r] = zs
        usable[r] = ok
        if not ok:  # z = 0 everywhere: no local maximum
            if own_rows:
                out[:] = 0.0
            continue
        if varying:
            # boxcar of 5 (mode="reflect") of the relative noise, by uniform_row's
            # running sum; the last five values in a ring, each quotient formed once
            d = den[r]
            ring = np.empty(5)
            acc = 0.0
            for i in range(5):
                ring[i] = scale_at(numr, d, i - 2)
                acc += ring[i]
            for j in range(n):
                if j > 0:
                    new = scale_at(numr, d, j + 2)
                    acc += new - ring[(j - 1) % 5]
                    ring[(j - 1) % 5] = new
                z = out[j] / zs
                if not acc <= 5.0:  # s = acc / 5 > 1 (or NaN); else z / 1 = z
                    z = z / (acc / 5)
                out[j] = z if yr[j] - yr[j] == 0.0 else 0.0
            idx, h, p = find_peaks(out, hmin, 0.5 * _WALL, pmin)
        else:
            # z = smooth / sigma: searched as such, never formed (but for zrows)
            if n_fin < n:
                for j in range(n):
                    if not yr[j] - yr[j] == 0.0:
                        out[j] = 0.0
            if blocks:  # the blocks' extremes formed with the smoothed row
                idx, h, p = find_peaks_in_blocks(out, zs, hmin, 0.5 * _WALL, pmin, bmax, bmin)
            else:
                idx, h, p = find_peaks_scaled(out, zs, hmin, 0.5 * _WALL, pmin)
            if own_rows:
                for j in range(n):
                    out[j] = out[j] / zs
        if m + idx.size > pos.shape[0]:
            size = max(2 * pos.shape[0], m + idx.size)
            pos = grown(pos, m, size)
            heights = grown(heights, m, size)
            proms = grown(proms, m, size)
        base = r * (n + 1)
        for i in range(idx.size):
            pos[m] = base + idx[i]
            heights[m] = h[i]
            proms[m] = p[i]
            m += 1
    return zsig, usable, pos[:m], heights[:m], proms[:m]
