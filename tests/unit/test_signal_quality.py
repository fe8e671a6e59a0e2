"""Unit tests of idexdask.analysis.signal_quality on synthetic event datasets."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.signal_quality import (
    QualityStatus,
    detect_quantum,
    interpolated_mad,
    load_quality_config,
    long_runs,
    signal_quality,
)
from idexdask.errors import AnalysisError, ConfigError

FILL = 65535
RATE = 260.0  # MSPS


def dn_dataset(
    wave: np.ndarray, *, t0: float = -7.6, bits: int = 10, name: str = "TOF_High"
) -> xr.Dataset:
    """A read_l0-like dataset holding one high-rate uint16 channel."""
    wave = np.atleast_2d(wave)
    n_events, n = wave.shape
    t = t0 + np.arange(n) / RATE
    vmax = 2**bits - 1
    return xr.Dataset(
        {
            name: (
                ("epoch", "time_high_sample_rate_index"),
                wave.astype(np.uint16),
                {
                    "units": "DN",
                    "long_name": f"{name} waveform",
                    "FILLVAL": FILL,
                    "VALIDMIN": 0,
                    "VALIDMAX": vmax,
                    "adc_bits": bits,
                },
            ),
            "time_high_sample_rate": (
                ("epoch", "time_high_sample_rate_index"),
                np.tile(t, (n_events, 1)),
            ),
        },
        coords={"epoch": np.arange(n_events)},
    )


def noisy(
    rng: np.random.Generator, n_events: int, n: int, sigma: float, level: float = 512.0
) -> np.ndarray:
    return np.clip(np.round(level + rng.normal(0, sigma, (n_events, n))), 0, 1023)


def test_noise_sigma_recovered_dn():
    rng = np.random.default_rng(1)
    for sigma in (2.0, 5.0):
        q = signal_quality(dn_dataset(noisy(rng, 200, 2048, sigma)))
        est = q.tof_high_noise.values
        assert abs(np.median(est) / np.hypot(sigma, 1 / np.sqrt(12)) - 1) < 0.03
        assert np.all(q.tof_high_quality_status.values == QualityStatus.OK)
        assert abs(np.median(q.tof_high_baseline.values) - 512) <= 0.5


def test_noise_sigma_recovered_float_volts_with_time_variable():
    rng = np.random.default_rng(2)
    n = 3000
    t = -9.0 + np.arange(n) * 0.001 * 2  # 2 ns sampling, covers -7..-5
    x = (-0.05 + rng.normal(0, 0.003, (50, n))).astype(np.float32)
    ds = xr.Dataset(
        {
            "QD_1": (
                ("epoch", "s"),
                x,
                {"units": "V", "time_variable": "tt", "signal_polarity": -1},
            ),
            "tt": (("epoch", "s"), np.tile(t, (50, 1))),
        }
    )
    q = signal_quality(ds)
    assert abs(np.median(q.qd_1_noise.values) / 0.003 - 1) < 0.03
    assert q.qd_1_noise.attrs["units"] == "V"
    assert not q.qd_1_saturated.values.any()


def test_quiet_baseline_with_repeats_not_saturated():
    rng = np.random.default_rng(3)
    wave = noisy(rng, 20, 8192, 0.4)  # mostly 512, long runs of equal samples
    assert long_runs(wave == 512, 3).any()
    q = signal_quality(dn_dataset(wave))
    assert not q.tof_high_saturated.values.any()
    assert (q.tof_high_saturated_samples.values == 0).all()
    assert np.isnan(q.tof_high_saturation_start.values).all()


def test_clipped_peak_at_rail_is_saturated():
    rng = np.random.default_rng(4)
    wave = noisy(rng, 2, 8192, 2.0)
    wave[0, 4000:4010] = 1023
    wave[0, 3995:4000] = [600, 700, 800, 900, 1000]
    wave[1, 4000:4002] = 1023  # only 2 samples at the rail: not a run of 3 ...
    wave[1, 3999] = 1010  # ... and the extreme is not flat for 3 samples
    q = signal_quality(dn_dataset(wave))
    assert q.tof_high_saturated.values.tolist() == [True, False]
    assert q.tof_high_saturated_samples.values[0] == 10
    t = -7.6 + np.arange(8192) / RATE
    assert q.tof_high_saturation_start.values[0] == pytest.approx(t[4000])
    assert q.tof_high_saturation_stop.values[0] == pytest.approx(t[4009])


def test_flat_top_below_rail_far_from_baseline_is_saturated():
    rng = np.random.default_rng(5)
    wave = noisy(rng, 2, 8192, 2.0)
    wave[:, 5000:5006] = 800  # amplifier clipping at 800 DN, far below the 1023 rail
    wave[1, 5000:5006] = 520  # same shape but only ~4 sigma: not a clipped top
    wave[1, 5003] = 521
    q = signal_quality(dn_dataset(wave))
    assert q.tof_high_saturated.values.tolist() == [True, False]
    assert q.tof_high_saturated_samples.values[0] == 6


def test_low_rail_and_negative_polarity():
    rng = np.random.default_rng(6)
    wave = noisy(rng, 1, 8192, 2.0)
    wave[0, 6000:6004] = 0
    ds = dn_dataset(wave)
    assert bool(signal_quality(ds).tof_high_saturated.values[0])
    q = signal_quality(ds, {"polarity": {"TOF_High": -1}})
    assert q.tof_high_snr.values[0] > 100
    assert q.tof_high_snr.attrs["signal_polarity"] == -1


def test_bad_inputs_get_status_and_never_raise():
    rng = np.random.default_rng(7)
    n = 8192
    good = noisy(rng, 1, n, 2.0)[0]
    waves = np.stack(
        [
            good,
            np.full(n, 500),  # flat
            np.zeros(n),  # all zero
            np.full(n, 1023),  # all at rail
            np.where(np.arange(n) % 7 == 0, FILL, good),  # some fill
            np.full(n, FILL),  # no data
        ]
    )
    q = signal_quality(dn_dataset(waves))
    st = q.tof_high_quality_status.values.tolist()
    assert st == [
        QualityStatus.OK,
        QualityStatus.FLAT,
        QualityStatus.ALL_ZERO,
        QualityStatus.ALL_SATURATED,
        QualityStatus.MISSING_SAMPLES,
        QualityStatus.NO_DATA,
    ]
    assert q.tof_high_saturated.values.tolist() == [False, False, False, True, False, False]
    assert np.isnan(q.tof_high_snr.values[1:4]).all() and np.isfinite(q.tof_high_snr.values[4])
    assert q.quality_status.sel(channel="TOF_High").values.tolist() == st
    # NaN in float data
    x = np.where(np.arange(n) % 5 == 0, np.nan, good - 512.0)[None, :]
    ds = xr.Dataset(
        {
            "TOF_Low": (("epoch", "time_high_sample_rate_index"), x, {"units": "V"}),
            "time_high_sample_rate": (
                ("epoch", "time_high_sample_rate_index"),
                (-7.6 + np.arange(n) / RATE)[None],
            ),
        }
    )
    assert signal_quality(ds).tof_low_quality_status.values[0] == QualityStatus.MISSING_SAMPLES


def test_too_short_and_empty_and_uncovered():
    q = signal_quality(dn_dataset(np.array([[512, 513]])))
    assert q.tof_high_quality_status.values[0] == QualityStatus.TOO_SHORT
    assert np.isnan(q.tof_high_snr.values[0])
    q = signal_quality(dn_dataset(np.zeros((0, 8192))))
    assert q.sizes["epoch"] == 0 and "tof_high_snr" in q
    rng = np.random.default_rng(8)
    q = signal_quality(dn_dataset(noisy(rng, 3, 4096, 3.0), t0=-2.0))  # record starts after -7 µs
    assert (q.tof_high_quality_status.values == QualityStatus.BASELINE_FALLBACK).all()
    assert np.isfinite(q.tof_high_noise.values).all()


def test_scope_clipped_flag():
    rng = np.random.default_rng(9)
    n = 4000
    x = rng.normal(0, 0.002, (2, n))
    x[:, 3000:3040] = -0.5
    x = np.round(x / 1e-4) * 1e-4
    ds = xr.Dataset(
        {
            "TOF_High": (
                ("epoch", "time_high_sample_rate_index"),
                x.astype(np.float32),
                {"units": "V", "signal_polarity": -1},
            ),
            "time_high_sample_rate": (
                ("epoch", "time_high_sample_rate_index"),
                np.tile(-8 + np.arange(n) * 0.003, (2, 1)),
            ),
            "channel_clipped": (("epoch", "channel"), np.array([[True], [False]])),
        },
        coords={"channel": ["TOF_High"]},
    )
    q = signal_quality(ds)
    assert q.tof_high_saturated.values.tolist() == [True, True]  # flat top alone finds the 2nd
    assert q.tof_high_saturated_samples.values.tolist() == [40, 40]


def test_long_runs_matches_bruteforce():
    rng = np.random.default_rng(10)
    m = rng.random((50, 40)) < 0.6
    for k in (1, 2, 3, 5):
        got = long_runs(m, k)
        for r in range(m.shape[0]):
            exp = np.zeros(m.shape[1], bool)
            i = 0
            while i < m.shape[1]:
                if m[r, i]:
                    j = i
                    while j < m.shape[1] and m[r, j]:
                        j += 1
                    if j - i >= k:
                        exp[i:j] = True
                    i = j
                else:
                    i += 1
            assert (got[r] == exp).all()


def test_interpolated_mad_and_quantum():
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(0, 4.0, (20, 5000)))
    dev = np.abs(x - np.median(x, axis=1, keepdims=True))
    sig = 1.4826 * interpolated_mad(dev, 1.0)
    assert abs(np.median(sig) / np.hypot(4.0, 1 / np.sqrt(12)) - 1) < 0.02
    assert detect_quantum(x * 0.001) == pytest.approx(0.001, rel=1e-6)
    assert detect_quantum(rng.normal(size=100)) is None


def test_config_validation():
    cfg = load_quality_config()
    assert cfg["baseline_window_us"] == (-7.0, -5.0)
    assert cfg["saturation_min_run"] == 3
    for bad in (
        {"nope": 1},
        {"saturation_min_run": 0},
        {"baseline_window_us": [-5, -7]},
        {"polarity": {"TOF_High": 2}},
        {"noise": {"welch_nperseg": "x"}},
        {"quality": 3},
    ):
        with pytest.raises(ConfigError):
            load_quality_config(bad)
    assert load_quality_config({"quality": {"flat_top_sigma": 5}})["flat_top_sigma"] == 5.0
    with pytest.raises(AnalysisError):
        signal_quality(dn_dataset(np.zeros((1, 10))), channels=["nope"])
