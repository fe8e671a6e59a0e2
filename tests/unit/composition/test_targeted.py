"""Targeted search for known species at calibrated times (composition.targeted)."""

from __future__ import annotations

import numpy as np

from idexdask.analysis.lineshapes import gaussian
from idexdask.composition.targeted import targeted_search

NOISE = 0.0025  # V, the scope captures' noise
WIDTH = 0.008  # µs
COEFF = np.array([-0.46, 0.515, 0.0, 0.0])  # t = t0 + a1*sqrt(m)


def _spectra(n_events: int, mg_area: float, seed: int):
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 4.0, 0.001)
    t_na = COEFF[0] + COEFF[1] * np.sqrt(23.0)
    t_mg = COEFF[0] + COEFF[1] * np.sqrt(24.0)
    clean = gaussian(t, 2e-3, t_na, WIDTH) + gaussian(t, mg_area, t_mg, WIDTH)
    signal = clean[None, :] + rng.normal(0.0, NOISE, (n_events, t.size))
    return t, signal, t_na


def _search(t, signal, t_na, calibrated):
    n = signal.shape[0]
    return targeted_search(
        t, signal, np.full_like(signal, NOISE),
        line_event=np.arange(n), line_center=np.full(n, t_na), line_sigma=np.full(n, WIDTH),
        line_gamma=np.full(n, np.nan), line_area=np.full(n, 2e-3),
        line_converged=np.ones(n, bool), coefficients=np.tile(COEFF, (n, 1)),
        calibrated=calibrated, masses=np.array([24.0, 28.0]),
    )  # fmt: skip


def test_weak_line_at_a_calibrated_mass_is_found():
    """A Mg line the blind detection missed (not in the line list; 4 noise sigmas
    high) stands ~6.7 sigma in the matched filter at its calibrated time (all 10
    events above 3: 3.7 sigma below the mean); no Si line: |significance| < 3
    (a 3-sigma excursion of the null has a 0.3 % chance per test, 10 events)."""
    # filter sigma: the Gaussian-plus-constant estimator's white-noise error,
    # ~1.8e-5 V µs for 1 ns samples, 8 ns width and 2.5 mV noise
    t, signal, t_na = _spectra(10, mg_area=1.2e-4, seed=1)
    res = _search(t, signal, t_na, np.ones(10, bool))
    assert np.all(res.detected[:, 0])
    assert 5.0 < np.median(res.significance[:, 0]) < 9.0
    # mean of 10 areas: standard error ~1.8e-5/sqrt(10) = 5 % of 1.2e-4; 15 % = 3 se
    np.testing.assert_allclose(np.mean(res.area[:, 0]), 1.2e-4, rtol=0.15)
    assert np.all(np.abs(res.significance[:, 1]) < 3.0)
    assert not res.detected[:, 1].any()
    # the measured uncertainty (never below the white-noise one) is the white-noise
    # one within its sampling scatter, white noise here: the null filters overlap,
    # ~15 independent positions over +-0.5 µs, a MAD spread good to ~25 %
    ratio = res.area_err / res.area_err_white
    assert np.all((ratio >= 1.0) & (ratio < 1.8))
    assert np.all(res.width == WIDTH)


def test_uncalibrated_events_are_not_searched():
    t, signal, t_na = _spectra(2, mg_area=8e-5, seed=2)
    res = _search(t, signal, t_na, np.array([True, False]))
    assert np.isfinite(res.significance[0]).all()
    assert np.isnan(res.significance[1]).all() and not res.detected[1].any()


def test_targeted_variables_products_and_config():
    """The products of a batch: per event and species, NaN and not detected for an
    uncalibrated event; species from the configuration, validated on load."""
    import pytest

    from idexdask.composition import composition_settings
    from idexdask.composition.targeted import targeted_variables
    from idexdask.errors import ConfigError

    t, signal, t_na = _spectra(3, mg_area=1.2e-4, seed=2)
    lines = {"peak_event": np.arange(3), "peak_center": np.full(3, t_na),
             "peak_sigma": np.full(3, WIDTH), "peak_gamma": np.full(3, np.nan),
             "peak_area": np.full(3, 2e-3), "peak_status": np.zeros(3, np.int8)}  # fmt: skip
    calibrated = np.array([True, False, True])
    out = targeted_variables(t, signal, np.full(3, NOISE), lines, np.tile(COEFF, (3, 1)),
                             calibrated, ["24Mg", "28Si"], min_significance=3.0,
                             unit="V")  # fmt: skip
    assert list(out["targeted_species"].values) == ["24Mg", "28Si"]
    assert out["targeted_area"].dims == ("epoch", "targeted_species")
    sig = out["targeted_significance"].values
    assert np.all(np.isnan(sig[1])) and not out["targeted_detected"].values[1].any()
    assert out["targeted_detected"].values[[0, 2], 0].all()
    assert out["targeted_area"].attrs["units"] == "V us"
    settings = composition_settings({"targeted_species": ["Na", "24Mg"]})
    assert settings.targeted_species == ("Na", "24Mg")
    with pytest.raises(ConfigError):
        from idexdask.config import load_config

        load_config({"composition": {"targeted_species": ["Xx"]}})


def test_filter_areas_equal_a_direct_least_squares():
    """The gathered normal equations give each centre's weighted least-squares
    (Gaussian + constant over +-4 widths) solution: numpy.linalg.lstsq on the same
    samples agrees to rounding (rtol 1e-9: two summation orders of ~70 terms)."""
    from idexdask.composition.targeted import filter_areas

    rng = np.random.default_rng(5)
    x = np.arange(0.0, 1.0, 0.001)
    y = rng.normal(0.0, NOISE, x.size) + gaussian(x, 1e-4, 0.5, WIDTH)
    w = np.full(x.size, 1.0 / NOISE)
    w[100:110] = np.nan  # unusable samples are left out
    centres = np.array([0.5, 0.1, 0.03, 0.9995])
    area, err = filter_areas(x, y, w, centres, WIDTH)
    for c, a, e in zip(centres, area, err, strict=True):
        sel = (np.abs(x - c) <= 4 * WIDTH) & np.isfinite(w)
        u = (x[sel] - c) / WIDTH
        design = np.stack([np.exp(-0.5 * u * u) / (WIDTH * np.sqrt(2 * np.pi)),
                           np.ones(u.size)], axis=1) * w[sel, None]  # fmt: skip
        coef = np.linalg.lstsq(design, y[sel] * w[sel], rcond=None)[0]
        cov = np.linalg.inv(design.T @ design)
        np.testing.assert_allclose([a, e], [coef[0], np.sqrt(cov[0, 0])], rtol=1e-9)


def test_searched_times_bound_every_sample_read():
    """Spectra cut to searched_times's range (and one sample either side) give the
    search's every product bit for bit (the same code on the same samples): a
    campaign reads ~2,500 of a lab row's 500,000 samples this way."""
    from idexdask.composition.targeted import searched_times

    t, signal, t_na = _spectra(4, mg_area=1.2e-4, seed=3)
    t = np.concatenate([t - 4.0, t, t + 4.0])  # a long row: 12,000 samples
    signal = np.concatenate([signal[:, ::-1], signal, signal[:, ::-1]], axis=1)
    n = signal.shape[0]
    # a second, wider line in one event: the bound takes each event's widest
    line_event = np.append(np.arange(n), 2)
    line_center, line_sigma = np.append(np.full(n, t_na), 1.2), np.append(np.full(n, WIDTH), 0.05)
    coefficients = np.tile(COEFF, (n, 1))
    coefficients[1, 0] += 0.3  # another event's calibration moves its windows
    calibrated, masses = np.array([True, True, True, False]), np.array([24.0, 28.0])
    lines = dict(line_event=line_event, line_center=line_center, line_sigma=line_sigma,
                 line_gamma=np.full(n + 1, np.nan), line_area=np.full(n + 1, 2e-3),
                 line_converged=np.ones(n + 1, bool))  # fmt: skip
    low, high = searched_times(line_event, line_center, line_sigma, lines["line_converged"],
                               coefficients, calibrated, masses)  # fmt: skip
    first = int(np.searchsorted(t, low, side="left")) - 1
    last = int(np.searchsorted(t, high, side="right")) + 1
    assert 0 < first and last < t.size and last - first < t.size // 4
    full = targeted_search(t, signal, np.full_like(signal, NOISE), **lines,
                           coefficients=coefficients, calibrated=calibrated, masses=masses)
    cut = targeted_search(t[first:last], signal[:, first:last],
                          np.full((n, last - first), NOISE), **lines,
                          coefficients=coefficients, calibrated=calibrated, masses=masses)
    assert np.isfinite(full.area[:3]).all()
    for name in ("time", "width", "area", "area_err", "area_err_white", "significance"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(full, name))
    assert searched_times(line_event, line_center, line_sigma, lines["line_converged"],
                          coefficients, np.zeros(n, bool), masses) is None


def test_searched_times_is_the_bound_of_each_event():
    """All events at once give the bound that each event's own target times and
    widest good line give (rtol 1e-15: the same elementwise expressions; two
    codes, so a tolerance, not bit identity).  Events that are uncalibrated,
    have a NaN coefficient, no good line or only lines that did not converge
    take no part; a negative mass (a NaN target time) is left out."""
    from idexdask.calibration.tofmass import time_axis
    from idexdask.composition.targeted import searched_times

    rng = np.random.default_rng(11)
    n = 40
    coefficients = np.tile(COEFF, (n, 1)) + rng.normal(0.0, 0.05, (n, COEFF.size))
    coefficients[3, 1] = np.nan
    calibrated = rng.random(n) < 0.8
    line_event = rng.integers(0, n - 2, 300)  # the last two events have no line
    line_center = rng.uniform(1.0, 10.0, line_event.size)
    line_sigma = rng.uniform(0.005, 0.05, line_event.size)
    line_sigma[::17] = np.nan
    converged = rng.random(line_event.size) < 0.9
    converged[line_event == 7] = False
    calibrated[[7, n - 1]] = True
    masses = np.array([-1.0, 1.0, 23.985, 39.96, 55.93])
    expected_low, expected_high = np.inf, -np.inf
    for e in range(n):
        mine = (line_event == e) & converged & np.isfinite(line_sigma)
        if not calibrated[e] or not np.isfinite(coefficients[e]).all() or not mine.any():
            continue
        tm = time_axis(coefficients[e], masses)
        tm = tm[np.isfinite(tm)]
        reach = 0.5 + 4.0 * line_sigma[mine].max()
        expected_low = min(expected_low, tm.min() - reach)
        expected_high = max(expected_high, tm.max() + reach)
    bound = searched_times(line_event, line_center, line_sigma, converged, coefficients,
                           calibrated, masses, null_reach_us=0.5)
    np.testing.assert_allclose(bound, (expected_low, expected_high), rtol=1e-15)
    assert searched_times(line_event, line_center, line_sigma, converged, coefficients,
                          calibrated, masses[:0]) is None


def test_median_is_numpys():
    """The search's median (the middle values' mean, as numpy.median forms it)
    equals numpy.median on odd and even counts, signed zeros included (rtol
    1e-15: one rounding of the final division, the rule for two implementations;
    the sum and the division are the same operations)."""
    from idexdask.composition.targeted import _median

    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 11, 57, 60):
        values = rng.normal(0.0, 1e-4, n)
        np.testing.assert_allclose(_median(values), np.median(values), rtol=1e-15, atol=0)
    for values in ([-0.0], [0.0, -0.0], [-0.0, -0.0, 1.0]):
        assert np.signbit(_median(np.array(values))) == np.signbit(np.median(values))
