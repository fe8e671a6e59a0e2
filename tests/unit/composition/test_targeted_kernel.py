"""The compiled targeted search against its NumPy reference (composition.targeted_kernel)."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.lineshapes import emg, gaussian
from idexdask.composition.targeted import targeted_search, targeted_search_reference

# The kernel evaluates every expression of the reference in the same order; only
# exp may differ (libm against NumPy's CPU-specific SIMD exp, an ulp) in a
# neighbour's profile or a filter weight, which moves areas and errors by ~1e-15
# relative (3e-15 measured on the simulated campaign).  1e-9 relative (of the
# error, for areas near zero) still fails on any changed sample set, neighbour
# set, width or null position, each of which moves them by >= 1e-6.
RTOL = 1e-9
COEFF = np.array([-0.46, 0.515, 0.0, 0.0])  # t = t0 + a1*sqrt(m), µs
MASSES = np.array([23.0, 24.0, 25.0, 28.0, 39.0, 56.0, 200.0])


def _campaign(seed: int, n_events: int = 12, dt: float = 0.002):
    """Spectra with Gaussian and EMG lines near and between the targets, noise,
    short records, events without lines, a non-converged line, an uncalibrated event."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 5.0, dt)
    time = np.tile(t, (n_events, 1))
    signal = rng.normal(0.0, 1.0, time.shape)
    rows = []  # (event, centre, sigma, gamma, area, converged) of each line
    coeff = np.tile(COEFF, (n_events, 1))
    coeff[:, 0] += rng.normal(0.0, 0.01, n_events)
    for e in range(n_events):
        if e == 3:
            continue  # no lines: no width, not searched
        t_m = coeff[e, 0] + coeff[e, 1] * np.sqrt(MASSES)
        for k, c in enumerate(np.concatenate([t_m[:4], rng.uniform(0.5, 4.5, 6)])):
            c = c + rng.normal(0.0, 0.003)
            s = rng.uniform(0.004, 0.012)
            g = np.nan if k % 3 == 0 else rng.uniform(50.0, 400.0)
            a = rng.uniform(0.2, 2.0)
            signal[e] += (gaussian(t, a, c, s) if np.isnan(g) else emg(t, a, c, s, g)) / 0.01
            rows.append((e, c, s, g, a, k != 2))
    time[5, 1750:] = np.nan  # a short record, ending within the stretch of Fe (3.39 µs)
    time[6] += 0.0005  # another time row
    signal[7, 1200:1210] = np.nan  # missing samples
    calibrated = np.ones(n_events, bool)
    calibrated[8] = False
    ev, cen, sig, gam, area, conv = (np.array(v) for v in zip(*rows, strict=True))
    lines = dict(line_event=ev, line_center=cen, line_sigma=sig, line_gamma=gam,
                 line_area=area, line_converged=conv.astype(bool))
    return time, signal, lines, coeff, calibrated


def _assert_close(got, want):
    for name in ("time", "width", "area_err_white", "area_err", "area", "significance"):
        a, b = getattr(got, name), getattr(want, name)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        ok = ~np.isnan(b)
        scale = np.abs(want.area_err[ok]) if name == "area" else np.abs(b[ok])
        assert np.all(np.abs(a[ok] - b[ok]) <= RTOL * np.maximum(scale, 1e-300)), name
    np.testing.assert_array_equal(got.detected, want.detected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_search_equals_the_numpy_reference(seed):
    time, signal, lines, coeff, calibrated = _campaign(seed)
    noise = np.full(signal.shape, 0.01)
    noise[2, 900:950] = 0.0  # samples without a weight
    got = targeted_search(time, signal, noise, **lines, coefficients=coeff,
                          calibrated=calibrated, masses=MASSES)
    want = targeted_search_reference(time, signal, noise, **lines, coefficients=coeff,
                                     calibrated=calibrated, masses=MASSES)
    _assert_close(got, want)
    # what the cases are there for: searched targets, detections, no samples
    assert np.isfinite(want.significance).sum() > 40 and want.detected.sum() > 10
    assert np.isnan(want.significance[3]).all() and np.isnan(want.significance[8]).all()
    # mass 200 arrives after the record (6.8 µs): a width, no samples, no area
    assert np.isfinite(want.width[0, 6]) and np.isnan(want.area[:, 6]).all()
    assert np.isfinite(want.area[5, 5])


def test_per_event_noise_float32_spectra_and_one_time_row():
    """(E, 1) noise equals the same noise per sample; float32 spectra and one
    shared time row search what the reference searches in them."""
    time, signal, lines, coeff, calibrated = _campaign(4)
    shared, spectra = time[0], signal.astype(np.float32)
    noise = np.linspace(0.008, 0.012, signal.shape[0])
    per_sample = np.repeat(noise[:, None], signal.shape[1], axis=1)
    kwargs = dict(**lines, coefficients=coeff, calibrated=calibrated, masses=MASSES)
    got = targeted_search(shared, spectra, noise[:, None], **kwargs)
    _assert_close(got, targeted_search(shared, spectra, per_sample, **kwargs))
    _assert_close(got, targeted_search_reference(shared, spectra, per_sample, **kwargs))


def test_nothing_searched_without_calibration_or_targets():
    time, signal, lines, coeff, _ = _campaign(5)
    n = signal.shape[0]
    res = targeted_search(time, signal, np.ones_like(signal), **lines, coefficients=coeff,
                          calibrated=np.zeros(n, bool), masses=MASSES)
    assert np.isnan(res.area).all() and not res.detected.any()
    res = targeted_search(time, signal, np.ones_like(signal), **lines, coefficients=coeff,
                          calibrated=np.ones(n, bool), masses=np.zeros(0))
    assert res.area.shape == (n, 0)
