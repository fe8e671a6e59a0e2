"""Impact-charge model, its Jacobian, batched fits, rise time and velocity curves."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.impact import fit_impacts
from idexdask.analysis.impact_model import impact_model, rise_time_10_90
from idexdask.analysis.products import load_analysis_settings
from idexdask.analysis.signal_quality import signal_quality
from idexdask.analysis.velocity import PowerLawCurve, dust_mass, invert_rise_time
from idexdask.simulate import simulate_events
from tests.numerics import assert_kernel_matches, assert_same_fits


def test_jacobian_matches_finite_differences():
    m = impact_model()
    x = np.linspace(-5, 40, 300)[None, :].repeat(3, 0)
    p = np.array([[0.3, 2048.0, 500.0, 2.0, 80.0], [-1.0, 10.0, -40.0, 5.0, 300.0],
                  [2.0, 0.0, 1.0, 0.5, 20.0]])
    f, jac = m.jacobian(np, x, p)
    for j in range(5):
        h = 1e-6 * max(abs(p[0, j]), 1.0)
        pp, pm = p.copy(), p.copy()
        pp[:, j] += h
        pm[:, j] -= h
        fd = (m.evaluate(np, x, pp) - m.evaluate(np, x, pm)) / (2 * h)
        np.testing.assert_allclose(jac[:, j, :], fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


def test_rise_time_10_90_numeric():
    tr, td = np.array([1.0, 3.0]), np.array([100.0, 30.0])
    got = rise_time_10_90(tr, td)
    u = np.linspace(0, 50, 2_000_001)
    for k in range(2):
        g = (1 - np.exp(-u / tr[k])) * np.exp(-u / td[k])
        gm = g.max()
        t10 = u[np.argmax(g >= 0.1 * gm)]
        t90 = u[np.argmax(g >= 0.9 * gm)]
        assert abs(got[k] - (t90 - t10)) < 1e-4


@pytest.fixture(scope="module")
def fitted():
    s = simulate_events(200, seed=21)
    _, settings = load_analysis_settings()
    q = signal_quality(s.events)
    return s, {ch: fit_impacts(s.events, ch, q, settings["impact"])
               for ch in ("Target_High", "Target_Low", "Ion_Grid")}


@pytest.mark.parametrize("channel", ["Target_High", "Target_Low", "Ion_Grid"])
def test_impact_charge_recovered(fitted, channel):
    s, fits = fitted
    f = fits[channel]
    key = channel.lower()
    amp = s.truth[f"{key}_impact_amplitude"].values
    snr = amp / s.truth[f"{channel}_noise"].values
    ok = (f.status == 0) & (snr >= 20)
    assert ok.sum() > 50
    rel = f.params[ok, 2] / amp[ok] - 1
    assert abs(np.median(rel)) < 0.02
    assert np.mean(np.abs(rel) < 0.02) > 0.8
    dt0 = f.params[ok, 0] - s.truth[f"{key}_impact_time"].values[ok]
    assert abs(np.median(dt0)) < 0.05
    assert abs(np.median(f.redchi[ok]) - 1) < 0.2


def test_saturated_target_flagged(fitted):
    s, fits = fitted
    f = fits["Target_High"]
    clipped = (s.events.Target_High.values >= 4095).any(axis=1)
    assert clipped.any()
    assert np.all(f.status[clipped] == 6)


def test_velocity_curve_roundtrip_and_range():
    c = PowerLawCurve(1.27, -0.2, -2.1, -0.37, 5.3, 13.3, 13.3, (1.0, 100.0))
    v = np.array([1.5, 4.0, 9.0, 25.0, 60.0])
    got, st = invert_rise_time(c(v), c)
    np.testing.assert_allclose(got, v, rtol=1e-9)
    assert np.all(st == 0)
    got, st = invert_rise_time(np.array([100.0, -1.0, np.nan]), c)
    assert np.all(np.isnan(got)) and list(st) == [2, 1, 1]
    y = PowerLawCurve(0.06, 2.8, 5.9, 4.1, 13.0, 22.7, 8.2)
    assert dust_mass(2.0, 10.0, y) == pytest.approx(2e-12 / y(10.0))


@pytest.fixture(scope="module")
def engine_fits():
    """Target_Low of 120 events fitted with each ``fit_engine``."""
    s = simulate_events(120, seed=33)
    _, settings = load_analysis_settings()
    q = signal_quality(s.events)
    out = {}
    for engine in ("xp", "auto", "compiled"):
        cfg = {**settings["impact"], "fit_engine": engine}
        out[engine] = fit_impacts(s.events, "Target_Low", q, cfg)
    return out


@pytest.mark.numerics
def test_auto_engine_agrees_with_array_code(engine_fits):
    """The compiled residual/Jacobian pass (engine auto) reaches the xp engine's fits.

    Same iteration, exp evaluated by libm instead of NumPy's SIMD code: the
    tolerances of ``assert_same_fits`` (statuses identical, parameters within
    sqrt(ftol * samples) standard errors, fit_batch's default ftol).
    """
    xp_fit, auto = engine_fits["xp"], engine_fits["auto"]
    assert (xp_fit.status == 0).sum() > 60
    assert_same_fits(auto, xp_fit, n_points=512)
    assert np.array_equal(np.isnan(auto.params), np.isnan(xp_fit.params))


@pytest.mark.numerics
def test_compiled_engine_agrees_on_converged_fits(engine_fits):
    xp_fit, comp = engine_fits["xp"], engine_fits["compiled"]
    both = (xp_fit.status == 0) & (comp.status == 0)
    assert both.sum() > 60
    pull = np.abs(comp.params[both] - xp_fit.params[both]) / xp_fit.stderr[both]
    assert np.nanmax(pull) < 1e-3
    np.testing.assert_allclose(comp.chisq[both], xp_fit.chisq[both], rtol=1e-9)
    # statuses may differ only where the fit wanders (rounding decides where it stops)
    assert np.mean(comp.status == xp_fit.status) > 0.97


@pytest.mark.numerics
def test_impact_kernel_matches_array_jacobian():
    """The compiled impact kernel's residuals and Jacobian equal ``_evaluate_jac``'s
    within rounding (``assert_kernel_matches``)."""
    from idexdask.analysis.fitting import KERNEL_IMPACT
    from idexdask.analysis.fitting.compiled import residual_jacobian

    m = impact_model()
    x = np.linspace(-5, 40, 300)[None, :].repeat(3, 0)
    p = np.array([[0.3, 2048.0, 500.0, 2.0, 80.0], [-1.0, 10.0, -40.0, 5.0, 300.0],
                  [2.0, 0.0, 1.0, 0.5, 20.0]])
    y = np.random.default_rng(1).normal(0, 3, x.shape) + m.evaluate(np, x, p)
    w = np.random.default_rng(2).uniform(0.5, 2.0, x.shape)
    f, jac = m.jacobian(np, x, p)
    r_nb = np.empty_like(x)
    jac_nb = np.empty_like(jac)
    residual_jacobian(KERNEL_IMPACT, 0, x, y, w, True, p, r_nb, jac_nb)
    assert_kernel_matches(r_nb, jac_nb, w * (y - f), jac * w[:, None, :],
                          w * (np.abs(y) + np.abs(f)))
