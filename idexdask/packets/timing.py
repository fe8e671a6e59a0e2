"""Event epoch and sample time axes from the event header fields.

All functions are vectorised over events.

Epoch
    The FPGA stamps each event with MET = (TIMESEC1 << 16) + TIMESEC2 seconds plus
    TIMESUBS ticks of 20 µs since 2010-01-01T00:00:00 UTC.  ``epoch`` is stored as
    TT2000 nanoseconds, computed in exact integer arithmetic: TT2000 of the MET
    epoch plus MET in ns.  (The official pipeline goes through SPICE and float64;
    it agrees to well under 1 µs.)

Sample times
    The high-rate (260 Msps) and low-rate (4.0625 Msps) records start before the
    trigger.  BLOCKS bits 16-19 count high-rate pre-trigger blocks (512 samples),
    bits 6-11 low-rate pre-trigger blocks (8 samples).  The high-rate trigger also
    carries a delay of SAMPDELAY samples, picked by the first set bit of TRIGID
    (bit 0 high gain: SAMPDELAY bits 0-9; bit 1 low gain: bits 20-29; bit 2 mid
    gain: bits 10-19; none: high gain).  Sample ``i`` lies at ``i*dt - T`` µs with
    ``T_low = 8*(N_low + 1)/4.0625`` and ``T_high = (512*(N_high + 1) - (delay - 1))/260``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from idexdask.compat.lazy import lazy_variable
from idexdask.packets.layout import (
    HIGH_RATE_BLOCK,
    HIGH_RATE_MSPS,
    LOW_RATE_BLOCK,
    LOW_RATE_MSPS,
)

__all__ = [
    "MET_EPOCH_TT2000_NS",
    "SUBSECOND_TICK_NS",
    "epoch_from_header",
    "met_seconds",
    "pretrigger_times",
    "sample_times",
    "sample_times_variable",
]

MET_EPOCH_TT2000_NS = 315_576_066_184_000_000
"""TT2000 (ns since J2000 TT) of the MET epoch 2010-01-01T00:00:00 UTC.

Derived with ``cdflib.cdfepoch.compute_tt2000([2010, 1, 1, 0, 0, 0, 0, 0, 0])``; it
includes the 34 leap seconds (TAI-UTC) then in force and TT-TAI = 32.184 s.
"""

SUBSECOND_TICK_NS = 20_000
"""One TIMESUBS tick: 20 µs."""


def met_seconds(timesec1, timesec2, timesubs) -> np.ndarray:
    """Mission elapsed time in seconds (float64) since 2010-01-01T00:00:00 UTC.

    Parameters
    ----------
    timesec1, timesec2 : array_like of int
        Upper and lower 16 bits of the whole-second MET counter.
    timesubs : array_like of int
        Sub-second ticks of 20 µs.

    Returns
    -------
    numpy.ndarray of float64
        MET, s.
    """
    whole = (np.asarray(timesec1, dtype=np.int64) << 16) + np.asarray(timesec2, dtype=np.int64)
    return whole + 20e-6 * np.asarray(timesubs, dtype=np.float64)


def epoch_from_header(timesec1, timesec2, timesubs) -> np.ndarray:
    """Event epoch as TT2000 nanoseconds (int64), exact.

    Parameters
    ----------
    timesec1, timesec2 : array_like of int
        Upper and lower 16 bits of the whole-second MET counter.
    timesubs : array_like of int
        Sub-second ticks of 20 µs.

    Returns
    -------
    numpy.ndarray of int64
        TT2000 ns.  Leap seconds after 2017 are not needed: none has been added.
    """
    whole = (np.asarray(timesec1, dtype=np.int64) << 16) + np.asarray(timesec2, dtype=np.int64)
    return (
        MET_EPOCH_TT2000_NS
        + whole * 1_000_000_000
        + np.asarray(timesubs, dtype=np.int64) * SUBSECOND_TICK_NS
    )


def trigger_delay_samples(trigid, sampdelay) -> np.ndarray:
    """High-rate trigger delay in samples, chosen by the gain stage that triggered."""
    trigid = np.asarray(trigid, dtype=np.int64)
    sampdelay = np.asarray(sampdelay, dtype=np.int64)
    high = sampdelay & 0x3FF
    mid = (sampdelay >> 10) & 0x3FF
    low = (sampdelay >> 20) & 0x3FF
    return np.where(trigid & 1, high, np.where(trigid & 2, low, np.where(trigid & 4, mid, high)))


def pretrigger_times(blocks, trigid, sampdelay) -> tuple[np.ndarray, np.ndarray]:
    """Time from the first sample to the trigger, µs, for both rates.

    Parameters
    ----------
    blocks : array_like of int
        The BLOCKS header field (pre-trigger block counts).
    trigid : array_like of int
        The TRIGID header field (which gain stage triggered).
    sampdelay : array_like of int
        The SAMPDELAY header field (trigger delays of the three gain stages).

    Returns
    -------
    t_high, t_low : numpy.ndarray of float64
        Pre-trigger duration of the high-rate and low-rate records, µs.
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    n_low = (blocks >> 6) & 0x3F
    n_high = (blocks >> 16) & 0xF
    delay = trigger_delay_samples(trigid, sampdelay)
    t_low = LOW_RATE_BLOCK * (n_low + 1) / LOW_RATE_MSPS
    t_high = (HIGH_RATE_BLOCK * (n_high + 1) - (delay - 1)) / HIGH_RATE_MSPS
    return t_high.astype(np.float64), t_low.astype(np.float64)


def sample_times(pretrigger_us: np.ndarray, n_samples: int, rate_msps: float) -> np.ndarray:
    """Time of every sample relative to the trigger, µs.

    Parameters
    ----------
    pretrigger_us : numpy.ndarray
        Time from the first sample to the trigger of each event, µs.
    n_samples : int
        Samples per record.
    rate_msps : float
        Sample rate, Msps.

    Returns
    -------
    numpy.ndarray of float64
        Shape (events, n_samples), µs.
    """
    offsets = np.arange(n_samples, dtype=np.float64) / rate_msps
    pretrigger = np.asarray(pretrigger_us, dtype=np.float64)
    return offsets[np.newaxis, :] - pretrigger[:, np.newaxis]


class _SampleTimeArray:
    """(events, samples) time axis computed on access from per-event pre-trigger times.

    A decoded file's time axes hold 8 bytes per sample but only one number per
    event of information; materialising them dominated decoding time.  This is a
    source of :func:`idexdask.compat.lazy.lazy_variable`: indexing it returns
    exactly what :func:`sample_times` would, for the requested part only.
    """

    def __init__(self, pretrigger_us: np.ndarray, n_samples: int, rate_msps: float) -> None:
        self.pretrigger_us = np.asarray(pretrigger_us, dtype=np.float64)
        self.n_samples = int(n_samples)
        self.rate_msps = float(rate_msps)
        self.shape = (self.pretrigger_us.size, self.n_samples)
        self.dtype = np.dtype(np.float64)

    def compute(self, key: tuple) -> np.ndarray:
        """Times at the outer-indexing ``key`` (rows, columns), µs."""
        rows, columns = key
        offsets = np.arange(self.n_samples, dtype=np.float64)[columns] / self.rate_msps
        pretrigger = self.pretrigger_us[rows]
        if np.ndim(offsets) and np.ndim(pretrigger):
            return offsets[np.newaxis, :] - pretrigger[:, np.newaxis]
        return np.asarray(offsets - pretrigger)


def sample_times_variable(
    pretrigger_us: np.ndarray, n_samples: int, rate_msps: float, dims: tuple[str, str], attrs: dict
) -> xr.Variable:
    """A lazily evaluated :func:`sample_times` as an xarray variable (exact same values).

    Lazy where xarray's lazy indexing is usable (:mod:`idexdask.compat.lazy`),
    computed in full otherwise.

    Parameters
    ----------
    pretrigger_us, n_samples, rate_msps
        As for :func:`sample_times`.
    dims : tuple of str
        The variable's dimensions (events, samples).
    attrs : dict
        The variable's attributes.

    Returns
    -------
    xarray.Variable
        Float64 times, µs.
    """
    return lazy_variable(dims, _SampleTimeArray(pretrigger_us, n_samples, rate_msps), attrs=attrs)
