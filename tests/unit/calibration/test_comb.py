"""Comb bootstrap, ion masses and calibration settings."""

from __future__ import annotations

import numpy as np
import periodictable
import pytest

from idexdask.calibration import (
    ELECTRON_MASS_U,
    CombStatus,
    UncalibratedReason,
    comb_calibration,
    comb_calibrations,
    ion_mass,
    load_calibration_settings,
    mass_axis,
    parse_formula,
    stack_coefficients,
    synthetic_peaks,
)
from idexdask.errors import CalibrationError, ConfigError


@pytest.fixture(scope="module")
def flight():
    return load_calibration_settings("flight")


@pytest.fixture(scope="module")
def lab():
    return load_calibration_settings("lab")


# ----------------------------------------------------------------------------- ions


def test_ion_masses_from_periodictable():
    assert ELECTRON_MASS_U == pytest.approx(0.000548579909, rel=1e-9)
    assert ion_mass("Na") == pytest.approx(periodictable.Na[23].mass - ELECTRON_MASS_U, abs=1e-12)
    feo = periodictable.Fe[56].mass + periodictable.O[16].mass - ELECTRON_MASS_U
    assert ion_mass("FeO") == pytest.approx(feo, abs=1e-12)
    h3o = 3 * periodictable.H[1].mass + periodictable.O[16].mass - ELECTRON_MASS_U
    assert ion_mass("H3O+") == pytest.approx(h3o, abs=1e-12)
    assert ion_mass("24Mg") == pytest.approx(periodictable.Mg[24].mass - ELECTRON_MASS_U)
    assert ion_mass("Ca++") == pytest.approx((periodictable.Ca[40].mass - 2 * ELECTRON_MASS_U) / 2)
    assert [p.count for p in parse_formula("C2")] == [2]


@pytest.mark.parametrize("bad", ["", "Xx", "si", "3Na", "H0", "Fe(OH)"])
def test_bad_formula(bad):
    with pytest.raises(ConfigError):
        parse_formula(bad)


# ----------------------------------------------------------------------------- settings


def test_settings(flight, lab):
    assert flight.bootstrap.stretch_range[0] < 1.4 < 1.5 < flight.bootstrap.stretch_range[1]
    assert lab.bootstrap.stretch_range[0] <= 0.5 and lab.bootstrap.stretch_range[1] >= 2.0
    labels = {ion.label for ion in flight.extended}
    assert {"25Mg+", "26Mg+", "29Si+", "30Si+", "41K+", "54Fe+"} <= labels
    assert "Si+" in {ion.label for ion in flight.comb}
    assert list(flight.comb) == sorted(flight.comb, key=lambda ion: ion.mass_u)


@pytest.mark.parametrize(
    "override",
    [
        {"bootstrap": {"tolerance_us": -1.0}},
        {"bootstrap": {"tolerance_us": 1.0}},  # looser than the coarse tolerance
        {"bootstrap": {"min_matches": 1}},
        {"presets": {"flight": {"stretch_range": [1.6, 1.3]}}},
        {"presets": {"flight": {"no_such_key": 1}}},
        {"fit": {"max_order": "three"}},
        {"comb": [{"ion": "Si", "weight": 1.0}, {"ion": "CO", "weight": 0.5}]},  # isobars
        {"comb": [{"ion": "Qq", "weight": 1.0}]},
        {"comb": [{"ion": "Na", "weight": 0.0}]},
    ],
)
def test_invalid_settings_raise(override):
    with pytest.raises(ConfigError):
        load_calibration_settings("flight", override)


def test_unknown_preset():
    with pytest.raises(ConfigError):
        load_calibration_settings("mars")


# ----------------------------------------------------------------------------- bootstrap


def _check(result, times, truth, *, mass_tol=0.05):
    assert result.status is CombStatus.CALIBRATED, result.message
    assert result.stretch == pytest.approx(truth["stretch"], rel=1e-3)
    got = {a.peak_index: a.label for a in result.assignments}
    for j, label in enumerate(truth["labels"]):
        if label is not None:
            assert got.get(j) == label
            assert abs(result.calibration.mass(times[j]) - truth["masses"][j]) < mass_tol


def test_flight_synthetic_spectra(flight):
    rng = np.random.default_rng(20240917)
    for _ in range(25):
        times, amps, truth = synthetic_peaks(
            rng, settings=flight, n_ions=(4, 12), n_spurious=(0, 3), jitter_us=0.001
        )
        _check(comb_calibration(times, amps, settings=flight), times, truth)


def test_lab_synthetic_spectra(lab):
    rng = np.random.default_rng(7)
    for _ in range(8):
        times, amps, truth = synthetic_peaks(
            rng, settings=lab, stretch=rng.uniform(0.5, 2.0), n_ions=(6, 12),
            n_spurious=(0, 2), jitter_us=0.001,
        )
        _check(comb_calibration(times, amps, settings=lab), times, truth)


def test_never_wrong_when_calibrated(flight):
    """A calibrated answer is a right answer: refusals are allowed, wrong labels are not."""
    rng = np.random.default_rng(99)
    n_ok = 0
    for _ in range(40):
        times, amps, truth = synthetic_peaks(rng, settings=flight, n_ions=(4, 8))
        res = comb_calibration(times, amps, settings=flight)
        if res.calibrated:
            _check(res, times, truth)
            n_ok += 1
    assert n_ok >= 36


def test_no_lines_one_line(flight):
    res = comb_calibration([], settings=flight)
    assert res.status is CombStatus.UNCALIBRATED
    assert res.reason is UncalibratedReason.NO_LINES and res.calibration is None
    res = comb_calibration([7.3], [1.0], settings=flight)
    assert res.reason is UncalibratedReason.ONE_LINE


def test_two_lines_are_not_enough(flight):
    a, t0 = 1.45, 0.3
    t = t0 + a * np.sqrt([ion_mass("Na"), ion_mass("K")])
    res = comb_calibration(t, settings=flight)
    assert res.status is CombStatus.UNCALIBRATED
    assert res.reason is UncalibratedReason.OFF_COMB


def test_lines_off_the_comb(flight):
    rng = np.random.default_rng(5)
    reasons = []
    for _ in range(30):
        t = rng.uniform(1.0, 13.0, 6)  # random peak times: no comb structure
        res = comb_calibration(t, rng.uniform(0.2, 1.0, 6), settings=flight)
        reasons.append(res.reason)
        assert res.calibrated or res.calibration is None
    assert sum(r is not UncalibratedReason.NONE for r in reasons) >= 27
    # evenly spaced peaks are not a sqrt(m) comb at all
    res = comb_calibration(np.arange(2.0, 14.0, 1.0), settings=flight)
    assert res.status is CombStatus.UNCALIBRATED


def test_stack_coefficients_feed_mass_axis(flight):
    rng = np.random.default_rng(3)
    results = []
    for _ in range(3):
        times, amps, _ = synthetic_peaks(rng, settings=flight, n_ions=8)
        results.append(comb_calibration(times, amps, settings=flight))
    results.append(comb_calibration([], settings=flight))
    coef = stack_coefficients(results)
    t = np.linspace(0.0, 20.0, 500)
    m = mass_axis(coef, t, flight.fit.mass_range_u)
    for i in range(3):
        np.testing.assert_allclose(m[i], results[i].calibration.mass(t), rtol=1e-12)
    assert np.all(np.isnan(m[3]))


# ----------------------------------------------------------------------------- batched


def _same_result(a, b):
    """Two CombResults are equal field by field (NaN == NaN), bit for bit."""
    for f in ("status", "reason", "message", "score", "n_matched", "explained_fraction",
              "assignments"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("stretch", "shift"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert (a.calibration is None) == (b.calibration is None)
    if a.calibration is not None:
        for f in ("coefficients", "covariance", "line_times_us", "line_masses_u", "residual_u"):
            np.testing.assert_array_equal(getattr(a.calibration, f), getattr(b.calibration, f))
        assert a.calibration.status is b.calibration.status
        assert a.calibration.requested_order == b.calibration.requested_order


def _spectra(rng, settings, n):
    out = []
    for k in range(n):
        if k % 4 == 3:  # junk: no comb structure, any number of peaks (0 and 1 included)
            m = int(rng.integers(0, 10))
            out.append((np.sort(rng.uniform(0.5, 15.0, m)), rng.uniform(0.0, 1.0, m)))
        else:
            t, a, _ = synthetic_peaks(rng, settings=settings, n_ions=(2, 12), n_spurious=(0, 3))
            out.append((t, a))
    return out


@pytest.mark.parametrize("preset", ["flight", "lab"])
def test_batch_equals_one_event_at_a_time(preset):
    settings = load_calibration_settings(preset)
    rng = np.random.default_rng(41)
    spectra = _spectra(rng, settings, 60)
    spectra += [
        (np.array([]), np.array([])),  # no lines
        (np.array([7.3]), np.array([1.0])),  # one line
        (np.array([3.0, 7.3]), np.array([0.0, 0.0])),  # all-zero amplitudes
        (np.arange(2.0, 14.0, 1.0), np.ones(12)),  # evenly spaced: off the comb
    ]
    times = np.concatenate([t for t, _ in spectra])
    amps = np.concatenate([a for _, a in spectra])
    offsets = np.cumsum([0] + [t.size for t, _ in spectra])
    batch = comb_calibrations(times, amps, offsets, settings=settings)
    singles = [comb_calibration(t, a, settings=settings) for t, a in spectra]
    assert sum(r.calibrated for r in singles) >= 20  # the comparison covers both outcomes
    assert len({r.reason for r in singles}) >= 4
    for e, single in enumerate(singles):
        _same_result(batch.result(e), single)
        assert batch.calibrated[e] == single.calibrated
        assert batch.status[e] == single.status.value
        assert batch.reason[e] == single.reason.value
        sl = slice(offsets[e], offsets[e + 1])
        got = {int(j): settings.extended[i].label
               for j, i in enumerate(batch.peak_line[sl]) if i >= 0}
        assert got == {a.peak_index: a.label for a in single.assignments}
    np.testing.assert_array_equal(batch.stacked(3), stack_coefficients(singles, order=3))
    # a batch of blocks gives what one block gives (blocks of the coarse search)
    half = offsets[30]
    first = comb_calibrations(times[:half], amps[:half], offsets[:31], settings=settings)
    np.testing.assert_array_equal(first.coefficients, batch.coefficients[:30])


def test_batch_non_finite_event_is_flagged_not_raised(flight):
    rng = np.random.default_rng(8)
    t1, a1, _ = synthetic_peaks(rng, settings=flight, n_ions=8, n_spurious=0)
    t2 = t1.copy()
    t2[2] = np.nan
    batch = comb_calibrations(
        np.concatenate([t1, t2, t1]), np.concatenate([a1, a1, a1]),
        [0, t1.size, 2 * t1.size, 3 * t1.size], settings=flight,
    )
    assert list(batch.reason) == ["none", "error", "none"]
    assert list(batch.calibrated) == [True, False, True]
    assert np.all(np.isnan(batch.stacked(3)[1]))
    np.testing.assert_array_equal(batch.coefficients[0], batch.coefficients[2])
    with pytest.raises(CalibrationError):
        batch.result(1)
    with pytest.raises(CalibrationError):
        comb_calibration(t2, a1, settings=flight)


def test_batch_input_checks(flight):
    with pytest.raises(CalibrationError):
        comb_calibrations([1.0, 2.0], [1.0], [0, 2], settings=flight)
    for bad in ([0, 3], [1, 2], [0, 2, 1, 2], [0.0, 2.0]):
        with pytest.raises(CalibrationError):
            comb_calibrations([1.0, 2.0], None, bad, settings=flight)
    empty = comb_calibrations([], None, [0], settings=flight)
    assert empty.stacked(3).shape == (0, 4)
    none = comb_calibrations([], None, [0, 0, 0], settings=flight)
    assert list(none.reason) == ["no_lines", "no_lines"]
