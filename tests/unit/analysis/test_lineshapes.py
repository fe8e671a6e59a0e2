"""Line shapes: normalisation, numerics at sharp tails, moments, tail signs, lmfit models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate
from scipy.special import erfc

from idexdask.analysis import xp as xpmod
from idexdask.analysis.lineshapes import (
    GAMMA_MAX,
    double_emg,
    double_emg_model,
    emg,
    emg_model,
    gaussian,
    gaussian_model,
    hyper_emg,
    hyper_emg_model,
    voigt,
    voigt_model,
)

CENTER = 7.3  # µs
SHAPES = {
    "gaussian": (gaussian, {"sigma": 0.01}),
    "emg": (emg, {"sigma": 0.01, "gamma": 100.0}),
    "emg_sharp": (emg, {"sigma": 0.1, "gamma": 1e3}),
    "emg_slow": (emg, {"sigma": 0.005, "gamma": 5.0}),
    "double_emg": (
        double_emg,
        {"sigma": 0.01, "gamma1": 150.0, "gamma2": 20.0, "fraction": 0.7},
    ),
    "hyper_emg": (
        hyper_emg,
        {"sigma": 0.01, "gamma_left": 300.0, "gamma_right": 80.0, "fraction_left": 0.2},
    ),
    "voigt": (voigt, {"sigma": 0.01, "gamma": 0.004}),
}


def _integral(f, center: float, width: float) -> float:
    """Integral over the real line, the peak region resolved explicitly."""
    a, b = center - 60 * width, center + 60 * width
    core = integrate.quad(f, a, b, points=[center], limit=500, epsabs=0, epsrel=1e-12)[0]
    left = integrate.quad(f, -np.inf, a, limit=500, epsabs=1e-14)[0]
    right = integrate.quad(f, b, np.inf, limit=500, epsabs=1e-14)[0]
    return core + left + right


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_area_normalised(name):
    func, kw = SHAPES[name]
    amplitude = 2.5
    rates = [v for k, v in kw.items() if k.startswith("gamma")]
    width = kw["sigma"] if name in ("gaussian", "voigt") else max(kw["sigma"], 1 / min(rates))
    area = _integral(lambda t: float(func(t, amplitude, CENTER, **kw)), CENTER, width)
    assert area == pytest.approx(amplitude, rel=1e-6)


def _emg_by_convolution(x: float, sigma: float, gamma: float) -> float:
    """EMG (unit area, centre 0) as the Gaussian-exponential convolution, by quadrature."""

    def integrand(s: float) -> float:
        return (
            gamma
            * math.exp(-gamma * s)
            * math.exp(-0.5 * ((x - s) / sigma) ** 2)
            / (sigma * math.sqrt(2 * math.pi))
        )

    upper = 60.0 / gamma
    return integrate.quad(
        integrand, 0.0, upper, points=[min(max(x, 0.0), upper)], limit=500, epsabs=0, epsrel=1e-13
    )[0]


@pytest.mark.numerics
def test_emg_large_gamma_sigma_matches_convolution():
    sigma, gamma = 0.1, 1e3  # gamma*sigma = 100: the naive formula overflows
    xs = np.linspace(-0.5, 0.6, 23)
    got = emg(xs, 1.0, 0.0, sigma, gamma)
    assert np.all(np.isfinite(got))
    try:
        import mpmath  # noqa: PLC0415

        mpmath.mp.dps = 50
        ref = [
            float(
                gamma
                / 2
                * mpmath.exp(gamma / 2 * (gamma * sigma**2 - 2 * t))
                * mpmath.erfc((gamma * sigma**2 - t) / (mpmath.sqrt(2) * sigma))
            )
            for t in xs
        ]
    except ImportError:
        ref = [_emg_by_convolution(float(t), sigma, gamma) for t in xs]
    assert_allclose(got, ref, rtol=1e-9, atol=1e-300)


@pytest.mark.numerics
def test_emg_matches_naive_form_where_finite():
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.1, 0.3, 2000)
    sigma = rng.uniform(0.002, 0.05, 2000)
    gamma = rng.uniform(1.0, 300.0, 2000)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        naive = (
            gamma
            / 2
            * np.exp(gamma / 2 * (gamma * sigma**2 - 2 * x))
            * erfc((gamma * sigma**2 - x) / (np.sqrt(2) * sigma))
        )
    ok = np.isfinite(naive) & (naive > 1e-250)
    assert ok.sum() > 1000
    assert_allclose(emg(x, 1.0, 0.0, sigma, gamma)[ok], naive[ok], rtol=1e-10)


def test_emg_never_nan_across_extremes():
    x = np.linspace(-50, 50, 10001)
    for sigma, gamma in [(1e-4, 1e4), (0.5, 1e4), (1e-3, 1e-3), (10.0, 100.0)]:
        y = emg(x, 1.0, 0.0, sigma, gamma)
        assert np.all(np.isfinite(y)) and np.all(y >= 0)


@pytest.mark.parametrize(("sigma", "gamma"), [(0.01, 100.0), (0.02, 50.0), (0.005, 150.0)])
def test_emg_moments(sigma, gamma):
    width = max(sigma, 1 / gamma)

    def moment(k):
        return _integral(
            lambda t: float(emg(t, 1.0, CENTER, sigma, gamma)) * (t - CENTER) ** k, CENTER, width
        )

    mean = moment(1)
    var = moment(2) - mean**2
    assert CENTER + mean == pytest.approx(CENTER + 1 / gamma, rel=1e-9)
    assert mean == pytest.approx(1 / gamma, rel=1e-7)
    assert var == pytest.approx(sigma**2 + 1 / gamma**2, rel=1e-7)


def test_hyper_emg_tail_signs():
    sigma, gl, gr = 0.005, 50.0, 400.0

    def mass_before_center(**kw):
        def f(t):
            return float(hyper_emg(t, 1.0, CENTER, sigma, **kw))

        lo = CENTER - 2.0
        return (
            integrate.quad(f, -np.inf, lo)[0]
            + integrate.quad(f, lo, CENTER, points=[CENTER - 0.05], limit=500, epsrel=1e-12)[0]
        )

    # the left tail puts its mass before the centre, the right tail after it
    left = mass_before_center(gamma_left=gl, gamma_right=gr, fraction_left=1.0)
    right = mass_before_center(gamma_left=gr, gamma_right=gl, fraction_left=0.0)
    assert left > 0.9 and right < 0.1
    # equal rates: the two tails are mirror images of each other
    assert left == pytest.approx(1.0 - right, rel=1e-9)
    # mean = center + (1-f)/gamma_right - f/gamma_left
    f = 0.3
    mean = _integral(
        lambda t: float(hyper_emg(t, 1.0, CENTER, sigma, gl, gr, f)) * t, CENTER, 1 / gl
    )
    assert mean == pytest.approx(CENTER + (1 - f) / gr - f / gl, rel=1e-9)
    # the pure right-tailed case is the EMG itself, the left one its mirror image
    t = np.linspace(CENTER - 0.1, CENTER + 0.1, 101)
    assert_allclose(hyper_emg(t, 1.0, CENTER, sigma, gl, gr, 0.0), emg(t, 1.0, CENTER, sigma, gr))
    assert_allclose(
        hyper_emg(t, 1.0, CENTER, sigma, gl, gr, 1.0), emg(2 * CENTER - t, 1.0, CENTER, sigma, gl)
    )


def test_double_emg_is_weighted_sum():
    t = np.linspace(CENTER - 0.05, CENTER + 0.2, 301)
    got = double_emg(t, 3.0, CENTER, 0.01, 150.0, 20.0, 0.7)
    want = 0.7 * emg(t, 3.0, CENTER, 0.01, 150.0) + 0.3 * emg(t, 3.0, CENTER, 0.01, 20.0)
    assert_allclose(got, want, rtol=1e-13)


def test_voigt_gamma_is_lorentzian_hwhm():
    gamma = 0.01
    peak = voigt(CENTER, 1.0, CENTER, 1e-9, gamma)
    assert peak == pytest.approx(1 / (math.pi * gamma), rel=1e-6)
    half = voigt(CENTER + gamma, 1.0, CENTER, 1e-9, gamma)
    assert half == pytest.approx(peak / 2, rel=1e-6)
    # with no Lorentzian part it is the Gaussian
    t = np.linspace(CENTER - 0.05, CENTER + 0.05, 11)
    assert_allclose(voigt(t, 2.0, CENTER, 0.01, 0.0), gaussian(t, 2.0, CENTER, 0.01), rtol=1e-12)


def test_broadcasting_over_fits():
    x = np.linspace(0, 0.2, 50)[None, :] + np.array([[1.0], [2.0], [3.0]])
    centers = np.array([[1.05], [2.05], [3.05]])
    y = emg(x, 1.0, centers, 0.01, 100.0)
    assert y.shape == (3, 50)
    assert_allclose(y[1], emg(x[1], 1.0, 2.05, 0.01, 100.0))


def test_namespace_is_numpy_for_host_arrays():
    assert xpmod.get_namespace(np.zeros(3), 1.0, None) is np
    assert isinstance(emg(np.zeros(3), 1.0, 0.0, 0.01, 100.0), np.ndarray)


@pytest.mark.gpu
def test_cupy_matches_numpy():
    import cupy  # deselected where no GPU exists (make test); run by make test-gpu
    t = np.linspace(CENTER - 0.05, CENTER + 0.2, 301)
    for name in ("gaussian", "emg", "emg_sharp", "double_emg", "hyper_emg"):
        func, kw = SHAPES[name]
        got = func(cupy.asarray(t), 2.0, CENTER, **kw)
        assert xpmod.is_cupy(got)
        assert_allclose(cupy.asnumpy(got), func(t, 2.0, CENTER, **kw), rtol=1e-12, atol=1e-300)


# ----------------------------------------------------------------------------- lmfit models


def test_model_factories_parameters_and_bounds():
    params = emg_model(prefix="p1_").make_params()
    assert set(params) == {"p1_amplitude", "p1_center", "p1_sigma", "p1_gamma"}
    assert params["p1_sigma"].min > 0
    assert (params["p1_gamma"].min, params["p1_gamma"].max) == (0.0, GAMMA_MAX)
    assert set(gaussian_model().make_params()) == {"amplitude", "center", "sigma"}
    assert "fraction" in double_emg_model().make_params()
    hp = hyper_emg_model().make_params()
    assert (hp["fraction_left"].min, hp["fraction_left"].max) == (0.0, 1.0)
    assert voigt_model().make_params()["gamma"].min == 0.0


def test_emg_model_fits_idex_like_tail():
    """gamma ~ 100/µs: lmfit's ExponentialGaussianModel gives NaN there, ours fits it."""
    import lmfit  # noqa: PLC0415

    rng = np.random.default_rng(11)
    t = 12.0 + np.arange(80) / 260.0
    truth = {"amplitude": 3.0, "center": 12.06, "sigma": 0.012, "gamma": 110.0}
    y = emg(t, **truth) + 512.0 + rng.normal(0, 2.0, t.size)
    model = emg_model() + lmfit.models.ConstantModel()
    params = model.make_params(amplitude=2.5, center=12.058, sigma=0.01, gamma=90.0, c=510.0)
    res = model.fit(y, params, x=t)
    assert res.success
    for name, value in truth.items():
        assert abs(res.params[name].value - value) < 5 * res.params[name].stderr


def test_profiles_vanish_only_where_every_value_is_plus_zero():
    """Lines around a window of 300 samples (1 ns): sigma 1-20 ns, tails of
    0.5-30 ns or none, centres from far before to far after it.  Every line
    reported has ``emg``/``gaussian`` exactly +0 at every sample of the window
    (checked on the window's own times and the ends); lines near it are never
    reported; both sides and both shapes are reported somewhere (the check
    tests something)."""
    from idexdask.analysis.lineshapes import profiles_vanish

    rng = np.random.default_rng(3)
    x = 10.0 + np.arange(300) * 1e-3  # µs
    m = 4000
    area = rng.uniform(0.0, 5.0, m)
    center = rng.uniform(5.0, 16.0, m)
    sigma = rng.uniform(1e-3, 20e-3, m)
    gamma = np.where(rng.random(m) < 0.3, np.nan, 1.0 / rng.uniform(0.5e-3, 30e-3, m))
    far = profiles_vanish(float(x[0]), float(x[-1]), area, center, sigma, gamma)
    # one interval per line: the same answers
    np.testing.assert_array_equal(
        profiles_vanish(np.full(m, x[0]), np.full(m, x[-1]), area, center, sigma, gamma), far)
    tail = np.isfinite(gamma)
    with np.errstate(all="ignore"):
        prof = np.where(tail[:, None],
                        emg(x[None, :], area[:, None], center[:, None], sigma[:, None],
                            np.where(tail, gamma, 1.0)[:, None]),
                        gaussian(x[None, :], area[:, None], center[:, None], sigma[:, None]))
    assert np.all(prof[far] == 0.0) and not np.any(np.signbit(prof[far]))
    after, before = far & (center > x[-1]), far & (center < x[0])
    assert (after & tail).sum() > 10 and (after & ~tail).sum() > 10
    assert (before & tail).sum() > 10 and (before & ~tail).sum() > 10
    # within 30 sigma of the window: never (their Gaussian cores still reach it)
    near = (center > x[0] - 30 * sigma) & (center < x[-1] + 30 * sigma)
    assert not np.any(far & near)
    # a long tail reaches far: an EMG before the window with a tail a tenth of the
    # distance is not reported, its Gaussian twin is
    args = (float(x[0]), float(x[-1]), [1.0, 1.0], [9.0, 9.0], [2e-3, 2e-3])
    np.testing.assert_array_equal(profiles_vanish(*args, [1.0 / 0.1, np.nan]), [False, True])


def test_profiles_vanish_reports_nothing_it_cannot_vouch_for():
    """A negative area (its +0 would be -0), a non-positive or NaN sigma, a
    non-positive tail rate, a NaN interval end: never reported."""
    from idexdask.analysis.lineshapes import profiles_vanish

    far = dict(center=[20.0] * 4, sigma=[1e-3, 0.0, np.nan, 1e-3], gamma=[np.nan] * 3 + [-5.0])
    got = profiles_vanish(10.0, 10.3, [-1.0, 1.0, 1.0, 1.0], **far)
    np.testing.assert_array_equal(got, [False] * 4)
    np.testing.assert_array_equal(
        profiles_vanish(10.0, np.nan, [1.0], [20.0], [1e-3], [np.nan]), [False])
    np.testing.assert_array_equal(
        profiles_vanish(10.0, 10.3, [1.0], [20.0], [1e-3], [np.nan]), [True])
