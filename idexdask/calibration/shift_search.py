"""Compiled shift search of the campaign calibration (:mod:`idexdask.calibration.campaign`).

For a fixed calibration shape every event of a group needs its shift ``t0``:
each line-minus-comb time difference inside the allowed range is a candidate,
scored by the comb lines it predicts within the match tolerance (Gaussian match
quality x ion weight x peak weight).  The campaign stage asks this of every
scanned event for each of ~40 candidate shapes and of every event of the group
for the adopted ones, so it runs here, over all events in one call, instead of
a NumPy expression per event (whose per-call overhead was most of the campaign
step's cost on flight files of 1,000 events).

The candidates, their order and the nearest-line rule are those of the NumPy
expression (:func:`shift_scores`, kept as the reference the tests compare
against); each candidate's score is summed over the comb in NumPy's pairwise
order (:func:`~idexdask.numerics.pairwise_sum`), so the only difference is the
last-ulp one between libm's ``exp`` and NumPy's SIMD ``exp``.

The lines of a group are passed flat: ``t`` (µs, sorted within each event),
``w`` (peak weights) and ``offsets`` (event ``e`` owns ``t[offsets[e]:offsets[e+1]]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from idexdask.numerics import pairwise_sum

__all__ = ["EventLines", "ShiftChoice", "best_shifts", "joint_shift_totals", "shift_scores"]


@dataclass(frozen=True)
class EventLines:
    """The lines of a group of events, flat (see the module docstring).

    Attributes
    ----------
    t : numpy.ndarray of float64
        Line times, µs, sorted within each event.
    w : numpy.ndarray of float64
        Peak weights of the lines.
    offsets : numpy.ndarray of int64, shape (E + 1,)
        Event ``e``'s lines are ``offsets[e]:offsets[e + 1]``.
    """

    t: np.ndarray
    w: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, lines: list[tuple[np.ndarray, np.ndarray]]) -> EventLines:
        """From per-event ``(t, w)`` pairs."""
        sizes = np.array([t.size for t, _ in lines], dtype=np.int64)
        offsets = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        t = np.concatenate([t for t, _ in lines]) if lines else np.zeros(0)
        w = np.concatenate([w for _, w in lines]) if lines else np.zeros(0)
        return cls(np.ascontiguousarray(t, dtype=np.float64),
                   np.ascontiguousarray(w, dtype=np.float64), offsets)

    @property
    def n_events(self) -> int:
        return int(self.offsets.size - 1)


@dataclass(frozen=True)
class ShiftChoice:
    """Each event's best shift for one shape.

    Attributes
    ----------
    score : numpy.ndarray, shape (E,)
        Score of the best candidate (0 where the event has none).
    t0 : numpy.ndarray, shape (E,)
        Its shift, µs (NaN where the event has no candidate).
    matched : numpy.ndarray of int64, shape (E,)
        Comb lines it matched within the tolerance.
    """

    score: np.ndarray
    t0: np.ndarray
    matched: np.ndarray


def shift_scores(t: np.ndarray, w: np.ndarray, predicted_rel: np.ndarray, wk: np.ndarray,
                 tol: float, t0_lo: float, t0_hi: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate shift of one event for a fixed shape (NumPy reference).

    Parameters
    ----------
    t, w : numpy.ndarray
        The event's sorted line times (µs) and peak weights.
    predicted_rel : numpy.ndarray
        The comb's times without shift, µs.
    wk : numpy.ndarray
        The comb ions' weights.
    tol : float
        Match tolerance, µs.
    t0_lo, t0_hi : float
        Range of the shifts tried, µs.

    Returns
    -------
    tuple of numpy.ndarray
        Candidate shifts (µs), their scores and their matched comb lines.
    """
    empty = np.zeros(0)
    if t.size == 0:
        return empty, empty, empty.astype(np.int64)
    cand = (t[:, None] - predicted_rel[None, :]).ravel()
    cand = cand[(cand >= t0_lo) & (cand <= t0_hi)]
    if cand.size == 0:
        return empty, empty, empty.astype(np.int64)
    pred = cand[:, None] + predicted_rel[None, :]  # (n_cand, n_comb)
    pos = np.clip(np.searchsorted(t, pred), 1, max(t.size - 1, 1))
    if t.size > 1:
        d_left = np.abs(pred - t[pos - 1])
        d_right = np.abs(pred - t[pos])
        nearest = np.where(d_left <= d_right, pos - 1, pos)
        dist = np.minimum(d_left, d_right)
    else:
        nearest = np.zeros(pred.shape, np.int64)
        dist = np.abs(pred - t[0])
    hit = dist <= tol
    quality = np.exp(-0.5 * (dist / tol) ** 2) * hit
    score = (quality * wk[None, :] * w[nearest]).sum(axis=1)
    return cand, score, hit.sum(axis=1)


@numba.njit(cache=True, nogil=True)
def _candidate(t: np.ndarray, w: np.ndarray, a: int, b: int, cand: float,
               rel: np.ndarray, wk: np.ndarray, tol: float,
               terms: np.ndarray) -> tuple[float, int]:  # pragma: no cover - compiled
    """Score and matched comb lines of shift ``cand`` for the lines ``t[a:b]``."""
    n = b - a
    hi_pos = max(n - 1, 1)
    matched = 0
    for k in range(rel.size):
        p = cand + rel[k]
        if n > 1:
            pos = np.searchsorted(t[a:b], p)  # side="left", as the NumPy reference
            pos = min(max(pos, 1), hi_pos)
            d_left = abs(p - t[a + pos - 1])
            d_right = abs(p - t[a + pos])
            near = pos - 1 if d_left <= d_right else pos
            dist = min(d_left, d_right)
        else:
            near = 0
            dist = abs(p - t[a])
        if dist <= tol:
            q = math.exp(-0.5 * (dist / tol) ** 2)
            matched += 1
        else:
            q = 0.0
        terms[k] = q * wk[k] * w[a + near]
    return pairwise_sum(terms, 0, rel.size), matched


@numba.njit(cache=True, nogil=True)
def _best_shifts(t, w, offsets, rel, wk, tol, lo, hi,
                 score, t0, matched):  # pragma: no cover - compiled
    terms = np.empty(rel.size)
    for e in range(offsets.size - 1):
        a, b = offsets[e], offsets[e + 1]
        found = False
        for i in range(a, b):
            for k in range(rel.size):
                c = t[i] - rel[k]
                if not (c >= lo[e] and c <= hi[e]):
                    continue
                s, m = _candidate(t, w, a, b, c, rel, wk, tol, terms)
                if not found or s > score[e]:  # the first maximum, as argmax
                    score[e], t0[e], matched[e] = s, c, m
                    found = True


def best_shifts(lines: EventLines, predicted_rel: np.ndarray, wk: np.ndarray, tol: float,
                t0_lo: np.ndarray, t0_hi: np.ndarray) -> ShiftChoice:
    """Every event's best shift for one shape.

    Parameters
    ----------
    lines : EventLines
    predicted_rel, wk, tol
        As :func:`shift_scores`.
    t0_lo, t0_hi : numpy.ndarray, shape (E,)
        Each event's range of shifts, µs.

    Returns
    -------
    ShiftChoice
        As :func:`shift_scores` followed by the first argmax, per event.
    """
    n = lines.n_events
    score = np.zeros(n)
    t0 = np.full(n, np.nan)
    matched = np.zeros(n, dtype=np.int64)
    _best_shifts(lines.t, lines.w, lines.offsets, np.ascontiguousarray(predicted_rel, float),
                 np.ascontiguousarray(wk, float), float(tol),
                 np.ascontiguousarray(t0_lo, float), np.ascontiguousarray(t0_hi, float),
                 score, t0, matched)
    return ShiftChoice(score, t0, matched)


@numba.njit(cache=True, nogil=True)
def _joint_totals(t, w, offsets, rel, wk, tol, t0_lo, t0_hi, step, total
                  ):  # pragma: no cover - compiled
    n_bins = total.size
    best = np.zeros(n_bins)
    terms = np.empty(rel.size)
    for e in range(offsets.size - 1):
        a, b = offsets[e], offsets[e + 1]
        best[:] = 0.0
        any_cand = False
        for i in range(a, b):
            for k in range(rel.size):
                c = t[i] - rel[k]
                if not (c >= t0_lo and c <= t0_hi):
                    continue
                s, _ = _candidate(t, w, a, b, c, rel, wk, tol, terms)
                j = min(max(int((c - t0_lo) / step), 0), n_bins - 1)
                if s > best[j]:
                    best[j] = s
                any_cand = True
        if not any_cand:
            continue
        # maximum_filter1d(size=9, mode="constant"): the maximum over j-4 .. j+4
        for j in range(n_bins):
            m = 0.0
            for q in range(max(j - 4, 0), min(j + 5, n_bins)):
                if best[q] > m:
                    m = best[q]
            total[j] += m


def joint_shift_totals(lines: EventLines, predicted_rel: np.ndarray, wk: np.ndarray,
                       tol: float, t0_lo: float, t0_hi: float, step: float,
                       n_bins: int) -> np.ndarray:
    """Sum over events of each event's best score near each shift bin.

    Each event's candidates are binned by shift (``step`` µs from ``t0_lo``),
    the best score kept per bin and spread over +-4 bins (a maximum filter), and
    the events' results added: the shift where many events score well together.

    Parameters
    ----------
    lines : EventLines
    predicted_rel, wk, tol
        As :func:`best_shifts`.
    t0_lo, t0_hi : float
        Range of shifts, µs.
    step : float
        Bin width, µs.
    n_bins : int

    Returns
    -------
    numpy.ndarray, shape (n_bins,)
    """
    total = np.zeros(n_bins)
    _joint_totals(lines.t, lines.w, lines.offsets, np.ascontiguousarray(predicted_rel, float),
                  np.ascontiguousarray(wk, float), float(tol), float(t0_lo), float(t0_hi),
                  float(step), total)
    return total
