"""Steps 1 and 2 of the pickup analysis: the records along the pulse polarity,
their smoothed derivative and the entry and exit edges it shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from idexdask.adccodes import CODE_FILL
from idexdask.analysis.pickup.centroid_kernels import edge_centroids
from idexdask.analysis.pickup.histogram_kernels import histogram_derivative_rows
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


_NO_CODES = np.empty((0, 0), dtype=np.int16)  # recorded_derivative_rows: find the codes


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
    gain: np.ndarray  #: per event, V per ADC code of the samples (NaN: not known)
    offset: np.ndarray  #: per event, V: ``signal = gain * code - offset`` (NaN: not known)
    codes: np.ndarray | None = None  #: int16 (events, samples): the codes ``signal`` was
    #: decoded from (``CODE_FILL`` where NaN), if the reader kept them
    volts: Callable[[], np.ndarray] | None = None  #: where not None, ``signal`` is an
    #: unwritten stand-in of the volts' shape and dtype, and this gives the volts of
    #: ``codes`` (decoded when called: :meth:`decoded`); the passes read a record
    #: differentiated from its codes (``Derivative.exact``) from ``codes`` alone

    def decoded(self) -> Records:
        """These records with ``signal`` holding the volts (decoded now, if pending).

        Raises
        ------
        AnalysisError
            If the volts given are not float32 of the codes' shape.
        """
        if self.volts is None:
            return self
        volts = np.asarray(self.volts())
        if volts.shape != self.signal.shape or volts.dtype != np.float32:
            raise AnalysisError(f"the volts {volts.shape} {volts.dtype} are not those of "
                                f"codes {self.signal.shape}")
        return dataclasses.replace(self, signal=volts, volts=None)

    def values(self, e: int, a: int, b: int) -> np.ndarray:
        """Samples ``a:b`` of event ``e`` along the polarity, non-finite ones filled."""
        y = np.array(self.signal[e, a:b], dtype=np.float64)
        y[~np.isfinite(y)] = self.fill[e]
        return self.polarity * y


@dataclass(frozen=True)
class Derivative:
    """Running means and the smoothed derivative of the records, from their
    cumulative sums (the values are formed on demand, for the few windows read).

    Records exactly on their ADC codes (``exact``) are differentiated from the
    codes' integer sums (:mod:`~idexdask.analysis.pickup.code_kernels`); the
    others from float64 sums of their values, kept at ``checkpoints``."""

    records: Records  #: the records summed
    exact: np.ndarray  #: bool per event: derivative formed from the ADC codes
    checkpoints: np.ndarray  #: (events, samples // CHUNK + 1): sums of the first q CHUNK
    #: samples of the events not ``exact`` (NaN for those)
    w: int  #: samples per running mean
    sigma: np.ndarray  #: MAD-scaled noise of the derivative per event
    i_in: np.ndarray  #: index of the derivative's maximum (the entry edge)
    i_out: np.ndarray  #: index of its minimum in the exit search range (0 if empty)
    window_in: np.ndarray  #: (events, 2 h + 1): derivative at ``clip(i_in - h ... i_in + h)``
    #: (events from the codes: where the entry's centroid reads it, the run above
    #: half height and the values ending it where the peak is positive; 0 elsewhere)
    window_out: np.ndarray  #: the same around ``i_out``

    @property
    def samples(self) -> int:
        """Samples per record."""
        return int(self.records.signal.shape[1])

    def cumsum(self, e: int, a: int, b: int) -> np.ndarray:
        """``cs[a:b]``: sums of the first ``i`` samples of event ``e`` along the
        polarity, for ``i`` in ``a:b`` (``0 <= a <= b <= samples + 1``), V; an
        event differentiated in floats (``exact[e]`` False)."""
        rec = self.records
        return cumsum_span(rec.signal[e], rec.polarity, float(rec.fill[e]),
                           self.checkpoints[e], int(a), int(b))

    def means(self, e: int, a: int, b: int) -> np.ndarray:
        """Means of ``y[i : i + w]`` for ``i`` in ``a:b`` of event ``e`` (NaN past the
        end); an event differentiated in floats (``exact[e]`` False)."""
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
    start_us: np.ndarray, interval_us: np.ndarray,
    signal_v: np.ndarray | Callable[[], np.ndarray], s: PickupSettings,
    gain: np.ndarray | None = None, offset: np.ndarray | None = None,
    codes: np.ndarray | None = None,
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
    signal_v : numpy.ndarray, (events, samples), or callable
        Amplifier output, V, any float dtype (kept as given, not copied); or a
        function returning the float32 volts of ``codes``, called only if some
        record is not differentiated from its codes (:attr:`Records.volts`).
    s : PickupSettings
    gain, offset : numpy.ndarray, (events,), optional
        The ADC scale of each record, ``signal_v = gain * code - offset`` (V per
        code, V; a scope's ``vertical_gain`` and ``vertical_offset``), rounded to
        ``signal_v``'s dtype; NaN or None: not known.
    codes : numpy.ndarray of int16, (events, samples), optional
        The codes ``signal_v`` was decoded from with that scale
        (:class:`idexdask.adccodes.RecordedCodes`; ``CODE_FILL`` where NaN);
        ignored unless of ``signal_v``'s shape and dtype int16.

    Returns
    -------
    Records
        ``fill`` 0 and ``status`` 0 for every event.
    """
    volts = None
    if callable(signal_v):
        if codes is not None and codes.ndim == 2 and codes.dtype == np.int16:
            # a stand-in never written nor read: every pass reads the codes of a
            # record on them, and the volts replace it before any other is read
            volts, signal_v = signal_v, np.empty(codes.shape, np.float32)
            signal_v.flags.writeable = False  # read-only, as the reader's volts
        else:
            signal_v = np.asarray(signal_v())
    n_ev = signal_v.shape[0]

    def per_event(values: np.ndarray | None) -> np.ndarray:
        if values is None:
            return np.full(n_ev, np.nan)
        return np.ascontiguousarray(np.broadcast_to(np.asarray(values, np.float64), (n_ev,)))

    return Records(signal=signal_v, polarity=float(s.polarity), fill=np.zeros(n_ev),
                   t0=np.broadcast_to(start_us, (n_ev,)),
                   dt=np.broadcast_to(interval_us, (n_ev,)), status=np.zeros(n_ev, np.int8),
                   gain=per_event(gain), offset=per_event(offset),
                   codes=(np.ascontiguousarray(codes) if codes is not None
                          and codes.shape == signal_v.shape and codes.dtype == np.int16
                          else None), volts=volts)


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
    Records exactly on their ADC codes are differentiated in integers
    (:func:`~idexdask.analysis.pickup.code_kernels.recorded_derivative_rows`:
    the recorded codes where ``rec.codes`` has them, else found), the
    others (no scale known, values between codes, missing samples, a zero MAD)
    from float64 sums of their values.  Records with non-finite samples get
    their ``fill`` and ``status`` (see :func:`read_records`) and a second pass.

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
    search = (int(w), int(s.min_transit), int(s.max_transit), int(s.edge_half))
    checkpoints = np.full((n_ev, n // CHUNK + 1), np.nan)
    exact = np.zeros(n_ev, dtype=bool)
    if rec.signal.dtype in (np.float32, np.float64) and np.isfinite(rec.gain).any():
        recorded = rec.codes if rec.codes is not None else _NO_CODES
        exact, mad, i_in, i_out, window_in, window_out = histogram_derivative_rows(
            rec.signal, recorded, CODE_FILL, rec.signal.dtype == np.float32, rec.polarity,
            rec.gain, rec.offset, *search)
    else:
        mad = np.full(n_ev, np.nan)
        i_in = np.zeros(n_ev, dtype=np.int64)
        i_out = np.zeros(n_ev, dtype=np.int64)
        window_in = np.zeros((n_ev, 2 * s.edge_half + 1))
        window_out = np.zeros((n_ev, 2 * s.edge_half + 1))
    rest = np.nonzero(~exact)[0]
    if rest.size:  # the float pass: sums of the values
        rec = rec.decoded()
        signal = rec.signal if rest.size == n_ev else np.ascontiguousarray(rec.signal[rest])
        part = np.empty((rest.size, n // CHUNK + 1))
        *found, missing = derivative_rows(signal, rec.polarity, rec.fill[rest], *search, part)
        gaps = np.nonzero(missing)[0]
        if gaps.size:  # their missing samples read as the median of the others: again
            _fill_missing(rec, rest[gaps], missing[gaps], s)
            redo = np.empty((gaps.size, n // CHUNK + 1))
            again = derivative_rows(np.ascontiguousarray(signal[gaps]), rec.polarity,
                                    rec.fill[rest[gaps]], *search, redo)
            part[gaps] = redo
            for whole, values in zip(found, again[:5], strict=True):
                whole[gaps] = values
        checkpoints[rest] = part
        for whole, values in zip((mad, i_in, i_out, window_in, window_out), found, strict=True):
            whole[rest] = values
    sigma = MAD_TO_SIGMA * mad
    der = Derivative(records=rec, exact=exact, checkpoints=checkpoints, w=w, sigma=sigma,
                     i_in=i_in, i_out=i_out, window_in=window_in, window_out=window_out)
    if not np.all(sigma > 0):
        der = dataclasses.replace(der, records=rec.decoded())
        # a quiet quantised trace can have a zero MAD: its derivative's standard
        # deviation then (zero only for a constant trace, which has no pulse);
        # such records are differentiated in floats (recorded_derivative_rows)
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
