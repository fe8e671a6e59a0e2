"""The compiled screen of data maxima in lines' windows (idexdask.analysis.residual_screen)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d

from idexdask.analysis.residual_screen import window_maxima


def _reference(y, noise, event, index, left, right, reach, height_sigma):
    """The array formulation: each window cut out with ``reach`` samples more on
    both sides (NaN outside the record), its maximum filter (``-inf`` where not
    finite) and the filter of its non-finite mask; sorted unique positions."""
    n = y.shape[1]
    keys = []
    for e, i, lo, hi, h in zip(event, index, left, right, reach, strict=True):
        cols = np.arange(i - lo - h, i + hi + h + 1)
        inside = (cols >= 0) & (cols < n)
        block = np.where(inside, y[e, np.clip(cols, 0, n - 1)], np.nan)
        sig = np.where(inside, noise[e, np.clip(cols, 0, n - 1)], np.nan)
        finite = np.isfinite(block)
        padded = np.where(finite, block, -np.inf)
        wmax = maximum_filter1d(padded, 2 * h + 1, mode="nearest")
        gap = maximum_filter1d((~finite).view(np.uint8), 2 * h + 1, mode="nearest")
        core = slice(h, block.size - h)
        with np.errstate(invalid="ignore"):
            peak = ((padded[core] == wmax[core]) & (gap[core] == 0)
                    & (block[core] >= height_sigma * sig[core]))  # fmt: skip
        keys.extend(e * n + cols[core][peak])
    return np.unique(np.array(keys, dtype=np.int64))


@pytest.mark.parametrize("seed", range(6))
def test_window_maxima_equal_the_array_formulation(seed):
    """Quantised noise with lines (ties between neighbours), NaN and inf
    samples, windows that reach past both ends of the record, reaches of 1 to
    4 samples, noise with NaN and zeros: the same samples as the array
    formulation (comparisons only: the same positions exactly)."""
    rng = np.random.default_rng(seed)
    n_events, n = 3, 400
    y = np.round(rng.normal(0.0, 2.0, (n_events, n)))
    t = np.arange(n)
    for e in range(n_events):
        for c in rng.uniform(0, n, 6):
            y[e] += np.round(rng.uniform(5, 60) * np.exp(-0.5 * ((t - c) / rng.uniform(1, 6)) ** 2))
    y[rng.integers(0, n_events, 8), rng.integers(0, n, 8)] = np.nan
    y[rng.integers(0, n_events, 3), rng.integers(0, n, 3)] = np.inf
    noise = np.full((n_events, n), 2.0)
    noise[rng.integers(0, n_events, 10), rng.integers(0, n, 10)] = np.nan
    noise[rng.integers(0, n_events, 10), rng.integers(0, n, 10)] = 0.0
    m = 25
    event = rng.integers(0, n_events, m).astype(np.int64)
    index = np.concatenate([[0, n - 1, 2], rng.integers(0, n, m - 3)]).astype(np.int64)
    left = rng.integers(0, 40, m).astype(np.int64)
    right = rng.integers(0, 90, m).astype(np.int64)
    reach = rng.integers(1, 5, m).astype(np.int64)
    got = np.unique(window_maxima(y, noise, event, index, left, right, reach, 5.0))
    want = _reference(y, noise, event, index, left, right, reach, 5.0)
    assert want.size >= 5  # the case tests something
    np.testing.assert_array_equal(got, want)


def test_window_maxima_on_a_read_only_noise_view():
    """The noise a lab pack passes (one value per event, a read-only broadcast
    view): the same maxima as the same noise materialised."""
    rng = np.random.default_rng(7)
    y = np.round(rng.normal(0.0, 2.0, (2, 300)))
    y[0, 150] = 40.0
    y[1, 20:23] = [30.0, 31.0, 30.0]
    per_event = np.array([2.0, 3.0])
    view = np.broadcast_to(per_event[:, None], y.shape)
    args = (np.array([0, 1], dtype=np.int64), np.array([150, 21], dtype=np.int64),
            np.array([10, 10], dtype=np.int64), np.array([30, 30], dtype=np.int64),
            np.array([2, 2], dtype=np.int64), 5.0)  # fmt: skip
    got = window_maxima(y, view, *args)
    np.testing.assert_array_equal(got, window_maxima(y, np.ascontiguousarray(view), *args))
    assert {0 * 300 + 150, 1 * 300 + 21} <= set(got.tolist())
