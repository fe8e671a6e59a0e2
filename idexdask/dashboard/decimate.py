"""Min-max decimation of a trace for display: every extreme kept, a few thousand points sent.

A plot a thousand pixels wide cannot show more than two values per pixel column:
the smallest and the largest.  Keeping, in each of ``bins`` equal runs of
samples, the sample of the run's minimum and the one of its maximum draws the
same picture as all samples (every TOF line's peak and every fill gap stays),
while a lab capture's 500,002 samples per channel become ~2 x ``bins``.  This is
the "min-max" choice of HoloViews' ``downsample1d``, written with NumPy so that
the event page can decimate without HoloViews' per-frame machinery (~20 ms per
trace) and without its optional ``tsdownsample`` dependency.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DISPLAY_BINS", "decimated", "minmax_indices"]

#: Runs of samples per trace: two points each, about the pixel width of a plot.
DISPLAY_BINS = 1000


def minmax_indices(values: np.ndarray, bins: int = DISPLAY_BINS) -> np.ndarray:
    """Sorted indices of each run's minimum and maximum (all indices for short traces).

    Parameters
    ----------
    values : numpy.ndarray
        1-D samples; a run holding NaN (fills) keeps its first NaN as well, so
        that a gap in the data stays a gap in the drawn line.
    bins : int
        Runs of equal length (the last one padded).

    Returns
    -------
    numpy.ndarray
        Indices into ``values``, increasing, at most ``3 * bins`` of them, with the
        first and the last sample always included.
    """
    values = np.asarray(values, dtype=float)
    n = values.size
    if n <= 2 * bins:
        return np.arange(n)
    per = -(-n // bins)
    low = np.full(per * bins, np.inf)
    high = np.full(per * bins, -np.inf)
    finite = np.isfinite(values)
    low[:n] = np.where(finite, values, np.inf)
    high[:n] = np.where(finite, values, -np.inf)
    base = np.arange(bins) * per
    gaps = np.zeros(per * bins, dtype=bool)
    gaps[:n] = ~finite
    gaps = gaps.reshape(bins, per)
    has_gap = gaps.any(axis=1)
    picked = np.concatenate([base + low.reshape(bins, per).argmin(axis=1),
                             base + high.reshape(bins, per).argmax(axis=1),
                             (base + gaps.argmax(axis=1))[has_gap], [0, n - 1]])
    return np.unique(picked[picked < n])


def decimated(x: np.ndarray, y: np.ndarray, x_range: tuple[float, float] | None = None,
              bins: int = DISPLAY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the samples to draw within ``x_range`` (all of the trace without one).

    ``x`` must increase.  One sample either side of the range is kept so that the
    line runs to the plot's edges.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    start, stop = 0, x.size
    if x_range is not None and x.size:
        start = max(int(np.searchsorted(x, x_range[0], side="left")) - 1, 0)
        stop = min(int(np.searchsorted(x, x_range[1], side="right")) + 1, x.size)
    keep = start + minmax_indices(y[start:stop], bins)
    return x[keep], y[keep]
