"""Unit tests of idexdask.analysis.noise: Gaussian fit, Welch PSD, autocorrelation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.histogram_fit import fit_gaussian_histogram
from idexdask.analysis.noise import noise_diagnostics
from idexdask.analysis.spectra import autocorrelation, welch_psd
from idexdask.errors import AnalysisError

RATE = 260.0


def dataset(x: np.ndarray, *, t0: float = -7.6, dn: bool = True) -> xr.Dataset:
    n_events, n = x.shape
    attrs = (
        {"units": "DN", "FILLVAL": 65535, "VALIDMIN": 0, "VALIDMAX": 1023} if dn else {"units": "V"}
    )
    data = x.astype(np.uint16) if dn else x
    return xr.Dataset(
        {
            "TOF_High": (("epoch", "time_high_sample_rate_index"), data, attrs),
            "time_high_sample_rate": (
                ("epoch", "time_high_sample_rate_index"),
                np.tile(t0 + np.arange(n) / RATE, (n_events, 1)),
            ),
        },
        coords={"epoch": np.arange(n_events)},
    )


def test_gaussian_fit_pulls_have_unit_width():
    rng = np.random.default_rng(20)
    true_mu, true_sigma = 512.3, 3.0
    x = np.round(true_mu + rng.normal(0, true_sigma, (200, 1024)))
    nd = noise_diagnostics(dataset(x), "TOF_High", window=None)
    assert nd.fit_ok.all()
    pull_mu = (nd.gauss_mean - true_mu) / nd.gauss_mean_err
    pull_sig = (nd.gauss_sigma - true_sigma) / nd.gauss_sigma_err
    for pull in (pull_mu, pull_sig):
        assert abs(float(pull.mean())) < 0.25
        assert 0.8 < float(pull.std()) < 1.2
    # free-normalisation Poisson fit: the area is the count, with Poisson error
    assert np.allclose(nd.gauss_amplitude, 1024, rtol=1e-3)
    assert np.allclose(nd.gauss_amplitude_err, 32, rtol=0.02)
    assert 0.85 < float(nd.reduced_chi2.median()) < 1.2
    # integer-aligned unit bins
    assert np.allclose(nd.bin_upper - nd.bin_lower, 1.0)
    assert np.allclose((nd.bin_lower + 0.5) % 1.0, 0.0)


def test_gaussian_fit_degenerate_histograms_do_not_raise():
    edges = np.arange(11.0)
    fit = fit_gaussian_histogram(np.r_[np.zeros(5), 100, np.zeros(4)], edges[:-1], edges[1:])
    assert not fit.ok and np.isnan(fit.sigma)
    fit = fit_gaussian_histogram(np.zeros(10), edges[:-1], edges[1:])
    assert not fit.ok


def test_white_noise_psd_flat_and_integrates_to_variance():
    rng = np.random.default_rng(21)
    sigma = 2.0
    x = rng.normal(0, sigma, (64, 4096))
    f, p = welch_psd(x, RATE, 256)
    assert f[-1] == pytest.approx(RATE / 2)
    level = 2 * sigma**2 / RATE  # one-sided, DN²/MHz
    mean_psd = p.mean(axis=0)
    assert np.allclose(mean_psd[2:-1], level, rtol=0.1)  # bin 1 loses power to the mean removal
    df = f[1] - f[0]
    assert np.allclose(p.sum(axis=1) * df, x.var(axis=1), rtol=0.05)


def test_autocorrelation_white_and_ar1():
    rng = np.random.default_rng(22)
    white = rng.normal(size=(50, 4096))
    acf = autocorrelation(white, 20)
    assert np.allclose(acf[:, 0], 1.0)
    assert np.abs(acf[:, 1:].mean(axis=0)).max() < 0.01
    rho = 0.7
    e = rng.normal(size=(50, 4096))
    ar = np.zeros_like(e)
    ar[:, 0] = e[:, 0] / np.sqrt(1 - rho**2)
    for i in range(1, e.shape[1]):
        ar[:, i] = rho * ar[:, i - 1] + e[:, i]
    acf = autocorrelation(ar, 10).mean(axis=0)
    assert np.allclose(acf, rho ** np.arange(11), atol=0.02)
    # FFT result equals the direct sum
    y = ar[0] - ar[0].mean()
    direct = np.array([np.dot(y[: len(y) - k], y[k:]) / (len(y) - k) for k in range(6)])
    assert np.allclose(autocorrelation(ar[:1], 5)[0], direct / direct[0])


def test_noise_diagnostics_dataset_layout_and_window():
    rng = np.random.default_rng(23)
    x = np.round(512 + rng.normal(0, 2.5, (5, 8192)))
    x[2, 200] = 65535  # a fill sample inside the window
    nd = noise_diagnostics(dataset(x), "TOF_High", nperseg=128, max_lag=32)
    assert set(nd.dims) == {"epoch", "frequency", "lag", "bin"}
    assert nd.sizes["frequency"] == 65 and nd.sizes["lag"] == 33
    assert nd.lag.values[1] == pytest.approx(1 / RATE)
    assert nd.attrs["window_us"] == [-7.0, -5.0]
    assert nd.attrs["sample_rate_mhz"] == pytest.approx(RATE)
    assert nd.n_samples.values.tolist() == [520, 520, 519, 520, 520]
    assert nd.psd.attrs["units"] == "DN^2/MHz"
    assert np.allclose(nd.gauss_sigma, 2.5, rtol=0.15)
    with pytest.raises(AnalysisError):
        noise_diagnostics(dataset(x), "TOF_High", window=(100.0, 200.0))


def test_noise_diagnostics_float_volts():
    rng = np.random.default_rng(24)
    x = rng.normal(0.01, 0.002, (4, 2048))
    nd = noise_diagnostics(dataset(x, dn=False), "TOF_High", window=None)
    assert nd.psd.attrs["units"] == "V^2/MHz"
    assert np.allclose(nd.gauss_sigma, 0.002, rtol=0.1)
    nan_event = x.copy()
    nan_event[1] = np.nan
    nd = noise_diagnostics(dataset(nan_event, dn=False), "TOF_High", window=None)
    assert not bool(nd.fit_ok[1]) and np.isnan(nd.psd[1]).all()
