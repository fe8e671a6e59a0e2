"""Mass axes and line masses of calibration polynomials."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.calibration.mass_axes import MassFlag, line_masses, mass_axis, time_axis
from idexdask.errors import CalibrationError


def test_line_masses_nan_before_impact_and_beyond_range():
    """A line before t0 has no mass (NaN), although the mass axis there is 0."""
    c = np.array([[-0.5, 0.5, 0.0, 0.0]] * 4)
    t = np.array([-0.6, -0.5 + 0.5 * np.sqrt(23.0), -0.5 + 0.5 * np.sqrt(400.0), np.nan])
    axis, flags = mass_axis(c, t[:, None], return_flags=True)
    assert axis[0, 0] == 0.0 and flags[0, 0] == MassFlag.BEFORE_T0
    lm = line_masses(c, t, 0.010)
    assert np.isnan(lm.mass[0]) and np.isnan(lm.tolerance[0])
    assert lm.mass[1] == pytest.approx(23.0, rel=1e-9)
    assert np.isnan(lm.mass[2])  # beyond the 300 u range: clipped on the axis, no mass here
    assert np.isnan(lm.mass[3])


def test_line_mass_tolerance_is_the_time_tolerance_in_u():
    """dm/dt * tolerance: 2 sqrt(m) / a * dt for t = t0 + a sqrt(m), and the
    time tolerance around a line spans that mass window (second-order check
    against the exact inverse)."""
    c = np.array([[-0.46, 0.45, 0.017, -0.0011]] * 3)
    m = np.array([1.0, 23.0, 56.0])
    t = time_axis(c, m[:, None])[:, 0]
    lm = line_masses(c, t, 0.010)
    exact = mass_axis(c, (t + 0.010)[:, None])[:, 0] - m
    np.testing.assert_allclose(lm.tolerance, exact, rtol=0.02)  # curvature over 10 ns
    s = np.sqrt(m)
    slope = 0.45 + 2 * 0.017 * s - 3 * 0.0011 * s**2
    np.testing.assert_allclose(lm.tolerance, 2 * s / slope * 0.010, rtol=1e-6)
    with pytest.raises(CalibrationError):
        line_masses(c[:2], t, 0.01)
