"""Steps 1 and 2 of the pickup analysis: the records along the pulse polarity,
their smoothed derivative and the entry and exit edges it shows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from idexdask.analysis.pickup.centroid_kernels import edge_centroids
from idexdask.analysis.pickup.kernels import (
    CHUNK,
    cumsum_span,
    derivative_rows,
)
from idexdask.analysis.pickup.settings import PickupSettings
from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.errors import AnalysisError

__all__ = [
    "Derivative",
    "Edges",
    "Records",
    "as_2d",
    "find_edges",
    "read_records",
    "smoothed_derivative",
]


def as_2d(a: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``a`` as an array of shape (events, samples): a 1-D ``a`` is one event.

    Raises
    ------
    AnalysisError
        If ``a`` (named ``name`` in the message) has more than two dimensions.
    """
    arr = np.asarray(a, dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AnalysisError(f"{name} must be 1-D or 2-D (events, samples), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class Records:
    """The records as given, and how they read as pulses positive along the polarity."""

    signal: np.ndarray  #: (events, samples), V, as given (NaN: missing)
    polarity: float  #: ±1
    fill: np.ndarray  #: per event, the value of its non-finite samples (their median)
    t0: np.ndarray  #: time of each event's first sample, µs
    dt: np.ndarray  #: each event's sampling interval, µs
    status: np.ndarray  #: int8, 1 where too few finite samples

    def values(self, e: int, a: int, b: int) -> np.ndarray:
        """Samples ``a:b`` of event ``e`` along the polarity, non-finite ones filled."""
        y = np.array(self.signal[e, a:b], dtype=np.float64)
        y[~np.isfinite(y)] = self.fill[e]
        return self.polarity * y


@dataclass(frozen=True)
class Derivative:
    """Running means and the smoothed derivative of the records, from their
    cumulative sums (the values are formed on demand, for the few windows read)."""

    records: Records  #: the records summed
    checkpoints: np.ndarray  #: (events, samples // CHUNK + 1): sums of the first q CHUNK samples
    w: int  #: samples per running mean
    sigma: np.ndarray  #: MAD-scaled noise of the derivative per event
    i_in: np.ndarray  #: index of the derivative's maximum (the entry edge)
    i_out: np.ndarray  #: index of its minimum in the exit search range (0 if empty)
    window_in: np.ndarray  #: (events, 2 h + 1): derivative at ``clip(i_in - h ... i_in + h)``
    window_out: np.ndarray  #: the same around ``i_out``

    @property
    def samples(self) -> int:
        """Samples per record."""
        return int(self.records.signal.shape[1])

    def cumsum(self, e: int, a: int, b: int) -> np.ndarray:
        """``cs[a:b]``: sums of the first ``i`` samples of event ``e`` along the
        polarity, for ``i`` in ``a:b`` (``0 <= a <= b <= samples + 1``), V."""
        rec = self.records
        return cumsum_span(rec.signal[e], rec.polarity, float(rec.fill[e]),
                           self.checkpoints[e], int(a), int(b))

    def means(self, e: int, a: int, b: int) -> np.ndarray:
        """Means of ``y[i : i + w]`` for ``i`` in ``a:b`` of event ``e`` (NaN past the end)."""
        n = self.samples
        stop = max(min(b, n - self.w + 1), a)
        out = np.full(max(b - a, 0), np.nan)
        cs = self.cumsum(e, a, stop + self.w) if stop > a else np.empty(0)
        out[: stop - a] = (cs[self.w : stop - a + self.w] - cs[: stop - a]) / self.w
        return out


@dataclass(frozen=True)
class Edges:
    """Entry and exit edges: derivative peaks and their centroids (sample indices)."""

    peak_in: np.ndarray  #: derivative at the entry peak, V, along the polarity
    peak_out: np.ndarray  #: minus the derivative at the exit peak, V
    c_in: np.ndarray  #: fractional sample index of the entry's 50 % point
    c_out: np.ndarray
    hw_in: np.ndarray  #: half-width of the derivative peaks, samples
    hw_out: np.ndarray


def read_records(
    start_us: np.ndarray, interval_us: np.ndarray, signal_v: np.ndarray, s: PickupSettings
) -> Records:
    """Step 1: the records as given, their missing samples not yet known.

    The derivative's pass (:func:`smoothed_derivative`) reads every sample: it
    counts the non-finite ones and sets ``fill`` and ``status`` of the events
    that have them (no separate pass over the records for a case that lab
    captures rarely show).

    Parameters
    ----------
    start_us, interval_us : numpy.ndarray, (events,)
        Time of each record's first sample and its sampling interval, µs.
    signal_v : numpy.ndarray, (events, samples)
        Amplifier output, V, any float dtype (kept as given, not copied).
    s : PickupSettings

    Returns
    -------
    Records
        ``fill`` 0 and ``status`` 0 for every event.
    """
    n_ev = signal_v.shape[0]
    return Records(signal=signal_v, polarity=float(s.polarity), fill=np.zeros(n_ev),
                   t0=np.broadcast_to(start_us, (n_ev,)),
                   dt=np.broadcast_to(interval_us, (n_ev,)), status=np.zeros(n_ev, np.int8))


def _fill_missing(rec: Records, events: np.ndarray, missing: np.ndarray, s: PickupSettings) -> None:
    """Set ``fill`` (the median of the finite samples, 0 if none) of ``events``,
    whose ``missing`` samples are not finite, and ``status`` 1 where fewer than
    ``4 w`` samples are finite."""
    n = rec.signal.shape[1]
    for e, k in zip(events, missing, strict=True):
        y = np.asarray(rec.signal[e], dtype=np.float64)
        good = y[np.isfinite(y)]
        rec.fill[e] = np.median(good) if good.size else 0.0
        if n - k < 4 * s.w:
            rec.status[e] = 1


def smoothed_derivative(rec: Records, s: PickupSettings) -> Derivative:
    """Step 2a: the running means' sums, the derivative's noise and its edge peaks.

    One compiled pass per record makes the sums; the derivative's values come
    from them as needed (its median and MAD, the edge searches and windows).
    Records with non-finite samples get their ``fill`` and ``status`` (see
    :func:`read_records`) and a second pass.

    Parameters
    ----------
    rec : Records
        Its ``fill`` and ``status`` are set in place for events with non-finite
        samples: ``fill`` their median, ``status`` 1 for fewer than ``4 w``
        finite samples.
    s : PickupSettings

    Returns
    -------
    Derivative
        ``sigma`` (V) is the MAD-scaled noise of the derivative, else its standard
        deviation where the MAD is 0, floored at the smallest positive float.
    """
    n_ev, n = rec.signal.shape
    w = s.w
    checkpoints = np.empty((n_ev, n // CHUNK + 1))
    mad, i_in, i_out, window_in, window_out, missing = derivative_rows(
        rec.signal, rec.polarity, rec.fill, int(w), int(s.min_transit), int(s.max_transit),
        int(s.edge_half), checkpoints)
    gaps = np.nonzero(missing)[0]
    if gaps.size:  # their missing samples read as the median of the others: again
        _fill_missing(rec, gaps, missing[gaps], s)
        redo = np.empty((gaps.size, n // CHUNK + 1))
        again = derivative_rows(
            np.ascontiguousarray(rec.signal[gaps]), rec.polarity, rec.fill[gaps], int(w),
            int(s.min_transit), int(s.max_transit), int(s.edge_half), redo)
        checkpoints[gaps] = redo
        for whole, part in zip((mad, i_in, i_out, window_in, window_out), again[:5],
                               strict=True):
            whole[gaps] = part
    der = Derivative(records=rec, checkpoints=checkpoints, w=w, sigma=MAD_TO_SIGMA * mad,
                     i_in=i_in, i_out=i_out, window_in=window_in, window_out=window_out)
    sigma = MAD_TO_SIGMA * mad
    if not np.all(sigma > 0):
        # a quiet quantised trace can have a zero MAD: its derivative's standard
        # deviation then (zero only for a constant trace, which has no pulse)
        for e in np.nonzero(~(sigma > 0))[0]:
            cumsum = der.cumsum(e, 0, n + 1)
            mean = (cumsum[w:] - cumsum[:-w]) / w  # mean_fwd[0 : n - w + 1]
            core = mean[w:] - mean[:-w]  # d[w : n - w + 1]
            sigma[e] = np.std(core) if core.size else np.nan
    sigma = np.where(sigma > 0, sigma, np.finfo(float).tiny)
    return dataclasses.replace(der, sigma=sigma)


def find_edges(der: Derivative, s: PickupSettings, status: np.ndarray) -> Edges:
    """Step 2b: entry = the derivative's maximum, exit = its minimum in the transit range.

    Parameters
    ----------
    der : Derivative
    s : PickupSettings
    status : numpy.ndarray, (events,), int8
        Updated in place: 2 where the entry peak is below ``threshold_sigma``
        noise sigmas, 3 where the exit peak is (events still 0 only).

    Returns
    -------
    Edges
        Peak heights (V, along the polarity), centroids and half-widths (samples).
    """
    half = s.edge_half
    peak_in = der.window_in[:, half]
    status[(status == 0) & (peak_in < s.threshold_sigma * der.sigma)] = 2
    peak_out = -der.window_out[:, half]
    status[(status == 0) & ~(peak_out >= s.threshold_sigma * der.sigma)] = 3
    n = der.samples
    c_in, hw_in = _edge_centroid(der.window_in, der.i_in, n, half, +1.0)
    c_out, hw_out = _edge_centroid(der.window_out, der.i_out, n, half, -1.0)
    return Edges(peak_in=peak_in, peak_out=peak_out, c_in=c_in, c_out=c_out,
                 hw_in=hw_in, hw_out=hw_out)


def _edge_centroid(
    window: np.ndarray, peak_idx: np.ndarray, n: int, half: int, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (fractional sample index) of the part of a peak above half height,
    and the peak's half-width in samples (:func:`edge_centroids`).

    ``window[e]`` is the derivative at ``clip(peak_idx[e] - half ... + half, 0, n - 1)``.
    """
    return edge_centroids(window, np.asarray(peak_idx, dtype=np.int64), int(n), int(half),
                          float(sign))
