"""Compiled line assignment of the campaign calibration's joint fit.

:func:`idexdask.calibration.campaign` refits a group's shared shape a few times;
each time every accepted event's lines are matched to the comb (or the extended
list) at that event's shift: each comb ion takes its nearest line within the
match tolerance, and a line claimed by two ions goes to the closer one (to the
earlier ion at equal distances).  Done per event in NumPy (:func:`assign`, kept
as the reference the tests compare against), a lab group of 384 impacts made
~1,500 calls of a dozen small array operations per run of the campaign step;
:func:`assign_events` does every event of one refit in one call, with the same
distances (``|(t0 + T(s)) - t|``, the model's times computed once for the comb,
the shift added per event as the NumPy code adds it) and the same choices.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["assign", "assign_events"]


def assign(t: np.ndarray, model_t: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Comb lines (index) matched by a line within ``tol`` (each line used once).

    Parameters
    ----------
    t : numpy.ndarray
        The event's line times, µs.
    model_t : numpy.ndarray
        The comb's times at the event's shift, µs.
    tol : float
        Match tolerance, µs.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Matched comb indices (ascending) and the index of the line each took.
    """
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    d = np.abs(model_t[:, None] - t[None, :])  # (n_comb, n_lines)
    k_best = np.argmin(d, axis=1)
    ok = d[np.arange(model_t.size), k_best] <= tol
    comb = np.nonzero(ok)[0]
    line = k_best[ok]
    # a line claimed by two comb ions goes to the closer one
    keep = []
    seen: set[int] = set()
    for i in np.argsort(d[comb, line], kind="stable"):
        if int(line[i]) not in seen:
            seen.add(int(line[i]))
            keep.append(i)
    keep_idx = np.sort(np.array(keep, dtype=np.int64))
    return comb[keep_idx], line[keep_idx]


@numba.njit(cache=True, nogil=True)
def assign_events(t, offsets, events, t0, model_rel, tol):  # pragma: no cover - compiled
    """:func:`assign` for each of ``events``, at its shift ``t0[e]``, in one call.

    Parameters
    ----------
    t : numpy.ndarray of float64
        Line times of every event, µs, event ``e``'s in ``t[offsets[e]:offsets[e + 1]]``.
    offsets : numpy.ndarray of int64
    events : numpy.ndarray of int64
        The events to match, in the order of the output.
    t0 : numpy.ndarray of float64
        Each event's shift, µs (indexed by event).
    model_rel : numpy.ndarray of float64
        The comb's times without shift, µs: event ``e``'s model is ``t0[e] + model_rel``.
    tol : float
        Match tolerance, µs.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        For every match, event by event in the order of ``events`` and by comb
        index within one: its event, comb index and the line's index into ``t``.
    """
    n_comb = model_rel.size
    total = 0
    for e in events:
        total += min(n_comb, offsets[e + 1] - offsets[e])
    out_event = np.empty(total, np.int64)
    out_comb = np.empty(total, np.int64)
    out_line = np.empty(total, np.int64)
    best_line = np.empty(n_comb, np.int64)
    best_d = np.empty(n_comb)
    at = 0
    for e in events:
        a, b = offsets[e], offsets[e + 1]
        if b <= a:
            continue
        for k in range(n_comb):
            model = t0[e] + model_rel[k]
            j_best = a
            d_best = abs(model - t[a])
            if not np.isnan(d_best):
                for j in range(a + 1, b):
                    d = abs(model - t[j])
                    if np.isnan(d):  # numpy.argmin: the first NaN
                        j_best, d_best = j, d
                        break
                    if d < d_best:
                        j_best, d_best = j, d
            best_line[k] = j_best
            best_d[k] = d_best
        for k in range(n_comb):
            if not best_d[k] <= tol:
                continue
            # kept unless an ion claims the same line from closer (or as close, earlier)
            kept = True
            for other in range(n_comb):
                if (other != k and best_line[other] == best_line[k] and best_d[other] <= tol
                        and (best_d[other] < best_d[k]
                             or (best_d[other] == best_d[k] and other < k))):
                    kept = False
                    break
            if kept:
                out_event[at] = e
                out_comb[at] = k
                out_line[at] = best_line[k]
                at += 1
    return out_event[:at], out_comb[:at], out_line[:at]
