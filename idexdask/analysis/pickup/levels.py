"""Step 4 of the pickup analysis: baseline and plateau levels and the pulse height."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idexdask.analysis.pickup.edges import Derivative, Edges, Records
from idexdask.analysis.pickup.level_kernels import window_levels
from idexdask.analysis.pickup.settings import PickupSettings

__all__ = ["Levels", "pulse_levels"]

_NO_CODES = np.empty((0, 0), dtype=np.int16)  # window_levels: no recorded codes


@dataclass(frozen=True)
class Levels:
    """Baseline and plateau levels (along the polarity) and the pulse height."""

    baseline: np.ndarray  #: median of the baseline window, V
    height: np.ndarray  #: plateau median minus baseline, V
    height_err: np.ndarray  #: V
    snr: np.ndarray  #: height over its error


def pulse_levels(rec: Records, der: Derivative, edges: Edges, s: PickupSettings) -> Levels:
    """Step 4: plateau median over the baseline median, with their errors.

    Parameters
    ----------
    rec : Records
        Its ``status`` is updated in place: 4 where the baseline or plateau window
        is too short, 5 where the height is below ``threshold_sigma`` of its error
        (events still 0 only).
    der : Derivative
    edges : Edges
    s : PickupSettings

    Returns
    -------
    Levels
        Baseline, height and its error in V along the polarity; ``snr``
        dimensionless.
    """
    c_in, c_out = np.nan_to_num(edges.c_in), np.nan_to_num(edges.c_out)  # failed: 0
    guard = s.plateau_guard * (c_out - c_in)
    p_lo = np.ceil(c_in + guard).astype(np.int64)
    p_hi = np.floor(c_out - guard).astype(np.int64) + 1
    b_hi = np.floor(c_in - np.maximum(guard, edges.hw_in)).astype(np.int64)
    b_lo = b_hi - s.baseline
    short = (b_hi - np.maximum(b_lo, 0) < 2 * s.w) | (p_hi - p_lo < 4)
    rec.status[(rec.status == 0) & short] = 4
    b_lo = np.maximum(b_lo, 0)
    baseline, baseline_err = _window_stats(rec, der, b_lo, b_hi)
    plateau, plateau_err = _window_stats(rec, der, p_lo, p_hi)
    height = plateau - baseline
    height_err = np.hypot(plateau_err, baseline_err)
    with np.errstate(all="ignore"):
        snr = height / height_err
    rec.status[(rec.status == 0) & ~(snr >= s.threshold_sigma)] = 5
    return Levels(baseline=baseline, height=height, height_err=height_err, snr=snr)


def _window_stats(
    rec: Records, der: Derivative, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Median of the record's ``y[e, lo:hi]`` and its error, per event.

    The error is the MAD-scaled scatter of the ``w``-sample means that lie
    inside the window, over the square root of the number of such independent
    means (this follows noise correlated over less than ``w`` samples).  Windows
    shorter than ``2 w`` use the scatter of ``y`` itself, with one independent
    sample per ``w`` (conservative).  One compiled pass per window: the windows
    are a few per cent of a lab record, so statistics over slices, not
    full-length masks.  Records differentiated from the codes the reader kept
    (``der.exact`` with ``rec.codes``) take the window's median from those codes.
    """
    codes = rec.codes if rec.codes is not None and rec.signal.dtype == np.float32 else _NO_CODES
    return window_levels(rec.signal, rec.polarity, rec.fill, int(der.w),
                         np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64),
                         codes, der.exact, rec.gain, rec.offset)
