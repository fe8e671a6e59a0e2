"""Unit tests of idexdask.analysis.signal_quality on synthetic event datasets."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.analysis.signal_quality import (
    QualityStatus,
    detect_quantum,
    interpolated_mad,
    load_quality_config,
    long_runs,
    signal_quality,
)
from idexdask.analysis.signal_quality.products import channel_quality
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
    sig = MAD_TO_SIGMA * interpolated_mad(dev, 1.0)
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


def _both_paths(ds: xr.Dataset, name: str, config: dict | None = None) -> None:
    """The compiled NumPy passes give exactly the array-namespace results."""
    cfg = load_quality_config(config)
    fast = channel_quality(ds, name, cfg)
    ref = channel_quality(ds, name, cfg, compiled=False)
    assert (fast.window, fast.polarity, fast.rails, fast.quantum) == (
        ref.window, ref.polarity, ref.rails, ref.quantum)
    assert fast.products.keys() == ref.products.keys()
    for key in ref.products:
        a, b = np.asarray(fast.products[key]), np.asarray(ref.products[key])
        assert a.dtype == b.dtype, key
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (key, a, b)


def _mixed_dn_waves(rng: np.random.Generator, n: int) -> np.ndarray:
    good = noisy(rng, 12, n, 2.0)
    waves = good.copy()
    waves[1] = 500  # flat
    waves[2] = 0  # all zero
    waves[3] = 1023  # all at the rail
    waves[4, ::7] = FILL  # some fill
    waves[5] = FILL  # no data
    waves[6, 3000:3010] = 1023  # rail run
    waves[6, 4000:4002] = 1023  # too short a rail run
    waves[7, 5000:5020] = 900  # flat top below the rail
    waves[7, 6000:6004] = 900  # a second one at the same extreme
    waves[8, :] = 512  # quiet baseline: MAD 0, std 0 ...
    waves[8, 4000:4100] = 700  # ... then a pulse
    waves[9, :600] = FILL  # nothing valid in the window nor the fallback head
    waves[10, 100:300] = 0  # low rail run
    waves[11, 2000:2003] = 40  # negative excursion
    return waves


@pytest.mark.parametrize("polarity", [1, -1, 0])
def test_compiled_path_matches_array_namespace_dn(polarity):
    rng = np.random.default_rng(21)
    ds = dn_dataset(_mixed_dn_waves(rng, 8192))
    _both_paths(ds, "TOF_High", {"polarity": {"TOF_High": polarity}})
    # record starting after the window: fallback to the head of the trace
    _both_paths(dn_dataset(_mixed_dn_waves(rng, 4096), t0=-2.0), "TOF_High")
    # one shared 1-D time axis, and no time axis at all
    ds1 = dn_dataset(_mixed_dn_waves(rng, 2048))
    ds1["time_high_sample_rate"] = ("time_high_sample_rate_index", -7.6 + np.arange(2048) / RATE)
    _both_paths(ds1, "TOF_High")
    _both_paths(ds1.drop_vars("time_high_sample_rate"), "TOF_High")
    # no rails documented, no fill
    ds2 = dn_dataset(_mixed_dn_waves(rng, 2048))
    ds2["TOF_High"].attrs = {"units": "DN"}
    _both_paths(ds2, "TOF_High", {"flat_top_min_run": 2, "saturation_min_run": 1})


def test_compiled_path_matches_array_namespace_float():
    rng = np.random.default_rng(22)
    n = 3000
    x = np.round(rng.normal(0, 0.002, (6, n)) / 1e-4) * 1e-4
    x[1, ::5] = np.nan
    x[2, 2000:2030] = -0.3  # clipped negative
    x[3] = 0.01  # flat
    x[4, :] = np.nan
    x[5, 1000:1010] = 0.2
    x[0, 300:1100] = 0.0  # a constant baseline window
    t = np.tile(-8 + np.arange(n) * 0.003, (6, 1))
    t[0, 10] = np.nan
    for dtype in (np.float32, np.float64):
        ds = xr.Dataset(
            {
                "TOF_High": (
                    ("epoch", "time_high_sample_rate_index"),
                    x.astype(dtype),
                    {"units": "V", "signal_polarity": 0, "FILLVAL": 0.2},
                ),
                "time_high_sample_rate": (("epoch", "time_high_sample_rate_index"), t),
            }
        )
        _both_paths(ds, "TOF_High")
        # continuous values: no quantum detected; row 0 has MAD 0 (std used instead)
        jitter = rng.normal(0, 1e-7, (6, n))
        jitter[0] = 0.0
        jitter[0, 400:1000:9] = 3e-4
        ds["TOF_High"] = ds["TOF_High"] + jitter.astype(dtype)
        _both_paths(ds, "TOF_High")
        std_used = channel_quality(ds, "TOF_High", load_quality_config()).products["noise"][0]
        assert 0 < std_used < 1e-3


def test_compiled_path_block_edges_and_signed_zeros():
    """Scope-like float32 rows without missing samples: extremes taken from the
    one-pass block extremes and the maximum's samples found block by block (512
    samples, those whose extreme reaches the maximum) give
    the array code's results; flat tops that start, end or stop at block edges and
    at the end of the row, and extremes of -0.0 and 0.0 (left to the compiled pass)."""
    rng = np.random.default_rng(24)
    n = 12 * 512 + 37
    o = 7 * 512  # the features after the baseline window (times from -8 us, 3 ns apart)
    x = (np.round(rng.normal(0, 0.002, (9, n)) / 1e-4) * 1e-4).astype(np.float32)
    x[0, o + 500:o + 530] = -0.25  # a flat top across a block edge
    x[1, o + 512:o + 1024] = -0.25  # exactly one block
    x[2, o + 1020:o + 1024] = -0.25  # a run too short for a flat top, ending at an edge
    x[2, o + 1536:o + 1548] = -0.25  # ... and one long enough, starting at one
    x[3, n - 20:] = -0.25  # up to the last sample
    x[4, o + 100:o + 140] = -0.25  # two flat tops at the same extreme
    x[4, o + 1500:o + 1600] = -0.25
    x[5] = np.abs(x[5])  # minimum 0 ...
    x[5, ::3] = -0.0  # ... as both zeros
    x[6] = -np.abs(x[6])
    x[6, 1::4] = 0.0  # maximum 0 as both zeros
    x[7, o + 700] = np.float32(-0.25)  # a single sample at the extreme
    x[8] = 0.0  # flat at zero
    t = np.tile(-8 + np.arange(n) * 0.003, (9, 1))
    ds = xr.Dataset({
        "TOF_High": (("epoch", "time_high_sample_rate_index"), x,
                     {"units": "V", "signal_polarity": -1}),
        "time_high_sample_rate": (("epoch", "time_high_sample_rate_index"), t),
    })
    for top_run in (2, 5, 64):
        _both_paths(ds, "TOF_High", {"flat_top_min_run": top_run})
    ds["TOF_High"].attrs["signal_polarity"] = 0
    _both_paths(ds, "TOF_High")
    saturated = channel_quality(ds, "TOF_High", load_quality_config()).products
    assert saturated["saturated_samples"][1] == 512 and saturated["saturated_samples"][3] == 20


def test_compiled_path_with_scope_clipping_flags(trc_dir):
    """Real captures: the compiled passes, with the events the scope flagged clipped
    (TOF_Low of impact 6) redone by the array code, equal the array code throughout."""
    from idexdask.io.trc import read_trc

    ds = read_trc(trc_dir)
    assert ds["channel_clipped"].values.any()
    for name in ("TOF_High", "TOF_Low", "QD_1", "QD_2"):
        _both_paths(ds, name)


def test_lazy_volts_read_as_their_codes(trc_dir):
    """Real captures read as a campaign reads them (codes kept, the QD channels'
    volts left undecoded): the compiled passes read the recorded codes as the
    volts they decode to, never decoding the lazy volts, and every product
    equals that of the plain read (the same values, the same arithmetic)."""
    from idexdask.adccodes import RECORDED_CODES_KEY
    from idexdask.analysis.signal_quality import quality_variables
    from idexdask.io.trc import read_trc

    lazy = read_trc(trc_dir, keep_codes=True, lazy_volts=("QD_1", "QD_2"))
    cfg = load_quality_config()
    got = quality_variables(lazy, cfg, channel_dim="quality_channel")
    for name in ("QD_1", "QD_2"):
        assert lazy.variables[name].encoding[RECORDED_CODES_KEY].volts is None, name
    want = quality_variables(read_trc(trc_dir), cfg, channel_dim="quality_channel")
    assert set(got) == set(want)
    for key in want:
        a, b = np.asarray(got[key].values), np.asarray(want[key].values)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), key


def test_compiled_path_on_formula_time_axes():
    """A time axis given by formula (start, step, count per event) is located by
    bisection, never materialised: the same products as the array code, which
    materialises it; including records shorter than the axis, a record starting
    inside or after the window, one with no record, a falling axis and
    events the scope flagged clipped."""
    from idexdask.analysis.signal_quality.dataset import FormulaTimes
    from idexdask.timeaxis import AxisTerms, uniform_axis_variable

    rng = np.random.default_rng(23)
    n = 4000
    x = (np.round(rng.normal(0, 0.002, (7, n)) / 1e-4) * 1e-4).astype(np.float32)
    x[1, 2500:2530] = -0.3  # clipped flat top
    x[2, 3000:] = np.nan  # shorter record
    x[3, 1200:1203] = 0.05
    x[5] = np.nan  # no record
    start = np.array([-8e-6, -8e-6, -8e-6, -6e-6, -4e-6, -8e-6, 8e-6])
    step = np.array([1e-9, 1e-9, 1e-9, 1e-9, 1e-9, 1e-9, -1e-9]) * 3
    count = np.array([n, n, 3000, n, n, 0, n])
    terms = AxisTerms.for_axis("time_high_sample_rate")
    dims = ("epoch", "time_high_sample_rate_index")
    ds = xr.Dataset({
        "TOF_High": (dims, x, {"units": "V", "signal_polarity": -1, "vertical_gain": 1e-4}),
        "time_high_sample_rate": uniform_axis_variable(
            dims, start, step, count, n, scale=1e6, terms=terms),
        terms.start: ("epoch", start),
        terms.step: ("epoch", step),
        terms.count: ("epoch", count),
        "channel_clipped": (("epoch", "channel"), np.array([[0], [1], [0], [0], [0], [0], [1]],
                                                           bool)),
    }, coords={"channel": ["TOF_High"]})
    axis = FormulaTimes(start, step, count, 1e6, n)
    times = ds["time_high_sample_rate"].values
    # the same roundings as the lazy axis: equal to the last bit
    assert np.array_equal(axis.columns(0, n), times, equal_nan=True)
    idx = np.array([0, 17, 2999, 3999, 5, 0, 100])
    assert np.array_equal(axis.at(idx), times[np.arange(7), idx], equal_nan=True)
    for polarity in (-1, 0, 1):
        _both_paths(ds, "TOF_High", {"polarity": {"TOF_High": polarity}})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16, np.int64])
def test_row_extremes_are_numpys(dtype):
    """The one-pass extremes of rows and of their 512-sample blocks (floats ordered
    by their bits as integers) are NumPy's ``max``/``min``; a row holding NaN or an
    infinity gets a non-finite extreme (so its extremes are not used)."""
    from idexdask.analysis.signal_quality.host_path import row_extremes
    from idexdask.analysis.signal_quality.kernels import EXTREME_BLOCK

    rng = np.random.default_rng(31)
    n = 5 * EXTREME_BLOCK + 77
    if np.dtype(dtype).kind == "f":
        x = (rng.normal(size=(6, n)) * 100).astype(dtype)
        x[1, 5] = np.nan
        x[2, 700] = -np.nan  # a NaN with the sign bit set
        x[3, 3] = np.inf
        x[4, n - 1] = -np.inf
        x[5] = -np.abs(x[5]) - 1
    else:
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -30000), min(info.max, 30000), size=(6, n)).astype(dtype)
    found = row_extremes(x)
    with np.errstate(invalid="ignore"):
        high, low = x.max(axis=1).astype(float), x.min(axis=1).astype(float)
        blocks = [x[:, k:k + EXTREME_BLOCK] for k in range(0, n, EXTREME_BLOCK)]
        block_high = np.stack([b.max(axis=1) for b in blocks], axis=1).astype(float)
        block_low = np.stack([b.min(axis=1) for b in blocks], axis=1).astype(float)
    finite = np.isfinite(high) & np.isfinite(low)
    assert np.array_equal(np.isfinite(found.high) & np.isfinite(found.low), finite)
    assert np.array_equal(found.high[finite], high[finite])
    assert np.array_equal(found.low[finite], low[finite])
    assert np.array_equal(found.block_high[finite], block_high[finite])
    assert np.array_equal(found.block_low[finite], block_low[finite])
    if np.dtype(dtype).kind == "f":
        assert finite.tolist() == [True, False, False, False, False, True]


def test_block_extremes_from_the_recorded_codes():
    """Volts the reader decoded from int16 codes (RecordedCodes in the encoding):
    the whole-trace extremes read from the codes (half the bytes) decode to the
    values' own, so every product equals that of the same volts without codes;
    fill codes (NaN), a run at the top code and a flat top included."""
    from idexdask.adccodes import RECORDED_CODES_KEY, CodeScale, RecordedCodes, code_encoding
    from idexdask.analysis.signal_quality import quality_variables
    from idexdask.analysis.signal_quality.host_path import row_extremes
    from idexdask.simulate import simulate_events

    ev = simulate_events(6, seed=9).events
    scale = CodeScale(6.25e-5, -1.685)
    with_codes = ev.copy()
    for name in ("TOF_High", "TOF_Low"):
        raw = ev[name].values.astype(np.int64)
        codes = np.clip(raw * 16 - 8000, -32768, 32752).astype(np.int16)
        codes[1, 100:140] = 32767  # missing samples: the fill code, NaN
        codes[2, 3000:3050] = 32752  # a run at the scope's top code
        codes[3, :] = codes[3, 0]  # flat
        volts = scale.decode(codes)
        for ds, keep in ((ev, False), (with_codes, True)):
            ds[name] = (ev[name].dims, volts.copy() if not keep else volts,
                        {"units": "V", "vertical_gain": 6.25e-5})
            enc = code_encoding(6.25e-5, -1.685)
            if keep:
                enc[RECORDED_CODES_KEY] = RecordedCodes(volts, codes, scale)
            ds[name].encoding = enc
        recorded = with_codes[name].encoding[RECORDED_CODES_KEY]
        assert recorded.codes_of(np.asarray(with_codes[name].data), scale) is codes or \
            np.shares_memory(recorded.codes_of(np.asarray(with_codes[name].data), scale), codes)
        found = row_extremes(volts, codes, scale)
        plain = row_extremes(volts.copy())
        for field in ("high", "low", "block_high", "block_low"):
            assert np.array_equal(getattr(found, field), getattr(plain, field), equal_nan=True)
    cfg = load_quality_config()
    got = quality_variables(with_codes, cfg, channel_dim="quality_channel")
    want = quality_variables(ev, cfg, channel_dim="quality_channel")
    assert set(got) == set(want)
    for key in want:
        a, b = np.asarray(got[key].values), np.asarray(want[key].values)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), key
