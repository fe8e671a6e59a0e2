"""The compiled shift search against its NumPy reference (calibration.shift_search)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d

from idexdask.calibration.shift_search import (
    EventLines,
    best_shifts,
    joint_shift_totals,
    shift_scores,
)

# Scores are sums of exp() terms: the kernel calls libm's exp, NumPy may call
# its SIMD exp; the two differ by at most a few ulp, so the sums agree to ~1e-15
# relative.  1e-12 leaves room for the sums' few terms and fails on any real
# difference (a missed or extra match changes a score by >= 1e-3 relative).
RTOL = 1e-12


def _events(rng: np.random.Generator, n_events: int, stretch: float, rel: np.ndarray):
    """Events holding part of the comb at a random shift, plus random lines."""
    lines = []
    for e in range(n_events):
        if e % 7 == 3:
            lines.append((np.zeros(0), np.zeros(0)))  # an event without lines
            continue
        t0 = rng.uniform(-0.6, -0.4)
        keep = rng.random(rel.size) < 0.6
        t = np.concatenate([t0 + stretch * rel[keep] + rng.normal(0, 0.002, keep.sum()),
                            rng.uniform(0.0, 8.0, rng.integers(0, 12))])
        t.sort()
        a = rng.uniform(0.1, 10.0, t.size)
        lines.append((t, (a / a.max()) ** 0.5 if a.size else a))
    return lines


@pytest.fixture
def comb():
    s = np.sqrt(np.array([1.0, 12.0, 16.0, 23.0, 24.0, 27.0, 28.0, 39.0, 40.0, 56.0]))
    wk = np.linspace(1.0, 0.4, s.size)
    return s, wk


def test_best_shifts_equal_the_numpy_reference(comb):
    s, wk = comb
    rng = np.random.default_rng(5)
    lines = _events(rng, 60, 0.5, s)
    flat = EventLines.from_lists(lines)
    lo = np.full(flat.n_events, -0.8)
    hi = np.full(flat.n_events, -0.2)
    lo[::5], hi[::5] = -0.55, -0.45  # per-event ranges
    got = best_shifts(flat, 0.5 * s, wk, 0.006, lo, hi)
    n_with = 0
    for e, (t, w) in enumerate(lines):
        cand, score, matched = shift_scores(t, w, 0.5 * s, wk, 0.006, lo[e], hi[e])
        if cand.size == 0:
            assert got.score[e] == 0.0 and np.isnan(got.t0[e]) and got.matched[e] == 0
            continue
        n_with += 1
        i = int(np.argmax(score))
        assert got.t0[e] == cand[i]  # a candidate is a difference of inputs: exact
        assert got.matched[e] == matched[i]
        np.testing.assert_allclose(got.score[e], score[i], rtol=RTOL)
    assert n_with >= 40


def test_joint_totals_equal_the_numpy_reference(comb):
    s, wk = comb
    rng = np.random.default_rng(9)
    lines = _events(rng, 40, 0.515, s)
    flat = EventLines.from_lists(lines)
    t0_lo, t0_hi, step = -1.0, 0.0, 0.01 / 4
    n_bins = int(np.ceil((t0_hi - t0_lo) / step)) + 1
    want = np.zeros(n_bins)
    for t, w in lines:
        cand, score, _ = shift_scores(t, w, 0.515 * s, wk, 0.006, t0_lo, t0_hi)
        if cand.size == 0:
            continue
        best = np.zeros(n_bins)
        np.maximum.at(best, np.clip(((cand - t0_lo) / step).astype(np.int64), 0, n_bins - 1),
                      score)
        want += maximum_filter1d(best, size=9, mode="constant")
    got = joint_shift_totals(flat, 0.515 * s, wk, 0.006, t0_lo, t0_hi, step, n_bins)
    assert want.max() > 5.0  # the events agree on a shift
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0.0)
    assert int(np.argmax(got)) == int(np.argmax(want))


def test_event_lines_round_trip():
    lines = [(np.array([1.0, 2.0]), np.array([0.5, 1.0])), (np.zeros(0), np.zeros(0)),
             (np.array([3.0]), np.array([1.0]))]
    flat = EventLines.from_lists(lines)
    assert flat.n_events == 3
    assert flat.offsets.tolist() == [0, 2, 2, 3]
    assert flat.t.tolist() == [1.0, 2.0, 3.0]
