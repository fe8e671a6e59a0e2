"""Noise estimates of quantised quiet baselines never collapse to zero (issue 19).

A 10/12-bit baseline that sits on one DN value with a few +-1 DN excursions has a
median absolute deviation of 0; a noise of 0 turned quiet channels into
``invalid_input`` and made every excursion infinitely significant.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from idexdask.analysis.impact import ImpactStatus
from idexdask.analysis.robust import baseline_sigma
from idexdask.analysis.signal_quality import signal_quality
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

FLOOR = 1.0 / math.sqrt(12.0)  # quantisation noise of a 1 DN step


def quiet(rng: np.random.Generator, shape: tuple[int, int], level: int, flip: float) -> np.ndarray:
    """A constant ``level`` with a fraction ``flip`` of samples at +-1 DN."""
    x = np.full(shape, level, dtype=np.uint16)
    hit = rng.random(shape) < flip
    return x + np.where(hit, rng.choice([-1, 1], shape), 0).astype(np.int32).astype(np.uint16)


def test_baseline_sigma_positive_on_quantised_quiet_rows():
    rng = np.random.default_rng(5)
    y = quiet(rng, (4, 400), 2048, 0.1).astype(float)
    y[0] = 2048.0  # perfectly constant
    t = np.linspace(-30.0, 60.0, 400)
    _, plain = baseline_sigma(y, t, -5.0)
    _, floored = baseline_sigma(y, t, -5.0, quantum=1.0)
    # the MAD collapses on every row; the std of the +-1 DN flips replaces it
    assert plain[0] == 0.0 and np.all(plain[1:] > 0)
    assert floored[0] == pytest.approx(FLOOR)
    # 10 % of samples at +-1 DN: std = sqrt(0.1) = 0.32 DN (binomial scatter of
    # ~100 baseline samples: +-0.1 DN), above the floor
    assert np.all(floored[1:] >= FLOOR) and np.all(floored[1:] < 0.6)


def test_signal_quality_noise_floored_at_quantisation():
    rng = np.random.default_rng(6)
    ev = simulate_events(3, seed=3).events
    for name in ("Target_High", "Target_Low", "Ion_Grid"):
        ev[name].values[:] = quiet(rng, ev[name].shape, 2048, 0.02)
    ev["Ion_Grid"].values[0] = 2048
    q = signal_quality(ev)
    for name in ("target_high", "target_low", "ion_grid"):
        noise = q[f"{name}_noise"].values
        assert np.all(noise >= FLOOR - 1e-12), name
    assert q["ion_grid_noise"].values[0] == pytest.approx(FLOOR)


def test_quiet_quantised_impact_channels_are_no_signal():
    rng = np.random.default_rng(7)
    ev = simulate_events(4, seed=4).events
    for name in ("Target_High", "Target_Low", "Ion_Grid"):
        ev[name].values[:] = quiet(rng, ev[name].shape, 2048, 0.03)
    ev["Target_Low"].values[1] = 2048  # one perfectly constant trace
    out = analyze(ev)
    for name in ("target_high", "target_low", "ion_grid"):
        st = out[f"{name}_fit_status"].values
        assert np.all(st == ImpactStatus.NO_SIGNAL), (name, st)
