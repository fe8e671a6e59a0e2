"""TOFMassCal: fitting, order control, exact inversion, storage, vectorised axis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idexdask.calibration import (
    CalibrationStatus,
    MassFlag,
    TOFMassCal,
    adaptive_order,
    mass_axis,
    min_slope,
    time_axis,
)
from idexdask.errors import CalibrationError

MASSES = np.array([1.007, 12.0, 15.99, 22.99, 23.98, 27.98, 38.96, 39.96, 55.93, 71.93])


def _times(coef, m):
    return np.polynomial.polynomial.polyval(np.sqrt(m), coef)


@pytest.mark.parametrize(
    ("coef", "n_lines"),
    [
        ([0.3, 1.45], 2),
        ([-0.2, 1.41, 0.004], 4),
        ([0.1, 1.47, 0.003, -0.0001], 8),
    ],
)
def test_exact_recovery(coef, n_lines):
    m = MASSES[:n_lines]
    cal = TOFMassCal.fit(_times(coef, m), m)
    assert cal.status is CalibrationStatus.CALIBRATED
    assert cal.order == len(coef) - 1
    np.testing.assert_allclose(cal.coefficients, coef, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cal.residual_us, 0.0, atol=1e-10)


def test_adaptive_order():
    assert [adaptive_order(n) for n in range(1, 9)] == [0, 1, 2, 2, 2, 3, 3, 3]
    assert adaptive_order(10, max_order=2) == 2


def test_order_reduced_when_not_monotonic():
    # Strong negative cubic: dt/ds < 0 near sqrt(300) u; the cubic must be refused.
    coef = [0.1, 1.5, 0.05, -0.01]
    assert min_slope(coef, np.sqrt(0.5), np.sqrt(300.0)) <= 0
    cal = TOFMassCal.fit(_times(coef, MASSES), MASSES, order=3)
    assert cal.status is CalibrationStatus.REDUCED_ORDER
    assert cal.order < 3 and cal.requested_order == 3
    assert min_slope(cal.coefficients, np.sqrt(0.5), np.sqrt(300.0)) > 0


def test_min_slope_finds_interior_dip():
    # slope 1 - 0.2 s + 3 a3 s^2 is positive at both ends of the range; its minimum
    # at s = 0.1/(3 a3) ~ 10 is -0.042 for a3 = 0.0032 and +0.074 for a3 = 0.0036.
    coef = [0.0, 1.0, -0.1, 0.0032]
    assert min_slope(coef, 0.7, 17.3) < 0
    assert min_slope([0.0, 1.0, -0.1, 0.0036], 0.7, 17.3) > 0


def test_unusable_statuses():
    assert TOFMassCal.fit([5.0], [23.0]).status is CalibrationStatus.TOO_FEW_LINES
    assert TOFMassCal.fit([5.0, 5.1], [23.0, 23.0]).status is CalibrationStatus.TOO_FEW_LINES
    bad = TOFMassCal.fit([8.0, 5.0, 3.0], [12.0, 23.0, 39.0])  # time falls with mass
    assert bad.status is CalibrationStatus.NON_MONOTONIC
    assert not bad.usable
    with pytest.raises(CalibrationError):
        bad.mass(5.0)


def test_malformed_input_raises():
    with pytest.raises(CalibrationError):
        TOFMassCal.fit([1.0, 2.0], [1.0])
    with pytest.raises(CalibrationError):
        TOFMassCal.fit([1.0, np.nan], [1.0, 4.0])
    with pytest.raises(CalibrationError):
        TOFMassCal.fit([1.0, 2.0], [1.0, 400.0])  # outside the mass range
    with pytest.raises(CalibrationError):
        TOFMassCal.fit([1.0, 2.0], [1.0, 4.0], weights=[1.0, 0.0])


def test_residual_units():
    coef = [0.2, 1.45, 0.002]
    m = MASSES[:6]
    t = _times(coef, m)
    t[3] += 0.004  # one line late by 4 ns
    cal = TOFMassCal.fit(t, m, order=2)
    np.testing.assert_allclose(cal.residual_ppm, 1e6 * cal.residual_u / m)
    # residual_u = (dm/dt) * residual_us at each line, dm/dt = 2 s / (dt/ds)
    s = np.sqrt(m)
    slope = np.polynomial.polynomial.polyval(s, np.polynomial.polynomial.polyder(cal.coefficients))
    expected_u = 2 * s / slope * cal.residual_us
    np.testing.assert_allclose(cal.residual_u, expected_u, rtol=1e-3, atol=1e-9)
    assert np.argmax(np.abs(cal.residual_us)) == 3
    assert abs(cal.residual_us[3]) < 0.004


def test_flags_and_clipping():
    cal = TOFMassCal.fit(_times([0.5, 1.45], MASSES), MASSES, order=1)
    t_max = cal.time(300.0)
    m, f = cal.mass(np.array([0.0, 0.5, 0.9, 10.0, t_max + 1.0, np.nan]), return_flags=True)
    assert m[0] == 0.0 and f[0] == MassFlag.BEFORE_T0
    assert m[1] < 1e-12 and f[1] == MassFlag.BELOW_RANGE  # ~t0: bridge start
    assert 0 < m[2] < 0.5 and f[2] == MassFlag.BELOW_RANGE
    assert f[3] == MassFlag.OK
    assert m[4] == 300.0 and f[4] == MassFlag.ABOVE_RANGE
    assert np.isnan(m[5]) and f[5] == MassFlag.INVALID
    assert isinstance(cal.mass(10.0), float)


coef_strategy = st.tuples(
    st.floats(-3.0, 3.0),  # t0, µs
    st.floats(0.3, 3.0),  # a1, µs/sqrt(u)
    st.floats(-0.01, 0.01),  # a2
    st.floats(-2e-4, 2e-4),  # a3
)


@settings(max_examples=60, deadline=None)
@given(coef=coef_strategy, frac=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_round_trip_property(coef, frac):
    c = np.array(coef)
    if min_slope(c, np.sqrt(0.5), np.sqrt(300.0)) <= 1e-3 * c[1]:
        return  # not a valid calibration: fit() would never produce it
    cal = TOFMassCal(c)
    m = 0.5 + np.asarray(frac) * (300.0 - 0.5)
    np.testing.assert_allclose(cal.mass(cal.time(m)), m, rtol=1e-9, atol=0)
    t_lo, t_hi = cal.time(0.5), cal.time(300.0)
    t = t_lo + np.asarray(frac) * (t_hi - t_lo)
    np.testing.assert_allclose(cal.time(cal.mass(t)), t, rtol=1e-9, atol=1e-12)


def test_round_trip_below_range_bridge():
    cal = TOFMassCal(np.array([0.3, 1.45, 0.002]))
    m = np.linspace(0.0, 0.5, 11)
    np.testing.assert_allclose(cal.mass(cal.time(m)), m, rtol=1e-9, atol=1e-15)


def test_dict_round_trip():
    m = MASSES[:7]
    cal = TOFMassCal.fit(_times([0.1, 1.47, 0.003, -0.0001], m) + 1e-4 * np.arange(7), m)
    data = json.loads(json.dumps(cal.to_dict()))
    back = TOFMassCal.from_dict(data)
    np.testing.assert_array_equal(back.coefficients, cal.coefficients)
    assert back.status is cal.status and back.order == cal.order
    np.testing.assert_allclose(back.covariance, cal.covariance)
    with pytest.raises(CalibrationError):
        TOFMassCal.from_dict({**data, "order": 5})


def test_mass_axis_broadcasts_over_events():
    t = np.linspace(-1.0, 30.0, 2001)
    cals = [
        TOFMassCal(np.array([0.3, 1.45])),
        TOFMassCal(np.array([-0.2, 1.41, 0.004])),
        TOFMassCal(np.array([0.1, 1.47, 0.003, -0.0001])),
    ]
    coef = np.zeros((4, 4))
    for i, c in enumerate(cals):
        coef[i, : c.order + 1] = c.coefficients
    coef[3] = np.nan  # uncalibrated event
    m, f = mass_axis(coef, t, return_flags=True)
    assert m.shape == (4, t.size)
    for i, c in enumerate(cals):
        np.testing.assert_allclose(m[i], c.mass(t), rtol=1e-12)
    assert np.all(np.isnan(m[3])) and np.all(f[3] == MassFlag.INVALID)
    # per-event time arrays
    t2 = np.stack([t + i for i in range(4)])
    m2 = mass_axis(coef, t2)
    np.testing.assert_allclose(m2[1], cals[1].mass(t + 1), rtol=1e-12)
    np.testing.assert_allclose(time_axis(coef[:3], [23.0])[:, 0], [c.time(23.0) for c in cals])


# ----------------------------------------------------------------------------- compiled kernels


@pytest.mark.numerics
def test_compiled_fit_equals_numpy_fit():
    """The kernel of the batched bootstrap reproduces TOFMassCal.fit: the same
    statuses and orders, and the same coefficients and covariance to rounding.

    Both solve the same weighted normal equations, but TOFMassCal.fit goes
    through NumPy's linear algebra, whose rounding depends on the NumPy release
    and the CPU, and a cubic's normal equations amplify an ulp by their
    condition number: with NumPy 2.5 the coefficients differ by up to 4e-10
    relative, 5e-11 of their standard errors (2.4: bit for bit).  The bound,
    1e-8 standard errors (and 1e-8 s_i s_j for the covariance), leaves 200x of
    margin and is far below anything a calibration could notice.
    """
    from idexdask.calibration.polynomial import fit_event
    from idexdask.calibration.tofmass import STATUS_CODES, slope_grid

    rng = np.random.default_rng(12)
    mass_range = (0.5, 300.0)
    grid = slope_grid(mass_range)
    s_min, s_max = np.sqrt(mass_range)
    min_lines = np.array([2, 3, 6])
    seen = set()
    for trial in range(400):
        n = int(rng.integers(1, 14))
        m = rng.choice(MASSES, n, replace=True) if trial % 5 == 0 else rng.choice(
            np.linspace(1.0, 250.0, 400), n, replace=False)
        noise = 0.3 if trial % 3 == 0 else 0.002  # noisy lines: reduced / non-monotonic fits
        t = 0.1 + 1.45 * np.sqrt(m) + rng.normal(0.0, noise, n)
        absolute = trial % 2 == 0
        w = np.full(n, 2.5e5) if absolute else np.ones(n)
        ref = TOFMassCal.fit(t, m, w if absolute else None, mass_range=mass_range,
                             max_order=3, min_lines_for_order=(2, 3, 6))
        coef = np.empty(4)
        cov = np.empty((4, 4))
        code, order, requested = fit_event(np.sqrt(m), m, t, w, absolute, 3, min_lines,
                                           s_min, s_max, grid, coef, cov)
        assert STATUS_CODES[code] is ref.status
        assert requested == ref.requested_order
        seen.add(ref.status)
        if ref.usable:
            assert order == ref.order
            k = order + 1
            sigma = np.sqrt(np.abs(np.diag(ref.covariance)))
            scale = np.where(np.isfinite(sigma), sigma, np.abs(ref.coefficients))
            assert np.all(np.abs(coef[:k] - ref.coefficients) <= 1e-8 * scale)
            assert np.all(coef[k:] == 0.0)
            np.testing.assert_array_equal(np.isnan(cov[:k, :k]), np.isnan(ref.covariance))
            finite = ~np.isnan(ref.covariance)
            bound = 1e-8 * np.outer(scale, scale)
            assert np.all(np.abs(cov[:k, :k] - ref.covariance)[finite] <= bound[finite])
        else:
            assert np.all(np.isnan(coef))
    assert {CalibrationStatus.CALIBRATED, CalibrationStatus.TOO_FEW_LINES} <= seen
    assert len(seen) >= 3


@pytest.mark.numerics
def test_compiled_min_slope_time_and_sum():
    from idexdask.calibration.polynomial import min_slope_on_grid, time_of_mass
    from idexdask.calibration.tofmass import slope_grid
    from idexdask.numerics import pairwise_sum

    rng = np.random.default_rng(3)
    grid = slope_grid((0.5, 300.0))
    s_lo, s_hi = grid[0], grid[-1]
    for _ in range(300):
        k = int(rng.integers(1, 6))
        c = rng.normal(0.0, 1.0, k + 1) * 10.0 ** -rng.uniform(0, 4, k + 1)
        got, want = min_slope_on_grid(c, s_lo, s_hi, grid), min_slope(c, s_lo, s_hi)
        if k <= 3:  # up to the shipped fit.max_order: the same LAPACK calls, bit for bit
            assert got == want
        else:  # complex roots of higher orders go through another solver: rounding only
            assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
            assert (got > 0) == (want > 0)
        for m in (0.1, 0.5, 7.0, 56.0, 400.0):
            assert time_of_mass(c, k, np.sqrt(m), s_lo) == time_axis(c, m)
    assert min_slope_on_grid(np.array([0.0, np.nan]), s_lo, s_hi, grid) == -np.inf
    for n in (0, 1, 7, 8, 9, 100, 128, 129, 1000, 4321):
        a = rng.normal(size=n) * 10.0 ** rng.uniform(-6, 6, n)
        assert pairwise_sum(a, 0, n) == a.sum()  # NumPy's pairwise rounding
