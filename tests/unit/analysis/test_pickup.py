"""Charge pickup analysis on synthetic trapezoid pulses with known speed and charge."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.pickup import (
    STATUS_MEANINGS,
    load_scope_config,
    pickup_charge_speed,
    pickup_from_dataset,
    pickup_two_detectors,
)
from idexdask.errors import AnalysisError

DT_US = 0.01
T = -400 + DT_US * np.arange(50_001)  # µs, -400..100
L = 0.20  # m
K = 1e12  # V/C


def trapezoid(t_in, t_out, height, rise=1.0, t=T):
    """Rises linearly over ``rise`` µs centred on t_in, falls likewise at t_out."""
    up = np.clip((t - t_in) / rise + 0.5, 0, 1)
    down = np.clip((t - t_out) / rise + 0.5, 0, 1)
    return height * (up - down)


def noise(rng, shape, white=2e-3, red=0.5e-3, corr_us=1.0):
    """White noise plus a random walk-ish red component (filtered over corr_us)."""
    w = rng.normal(0, white, shape)
    k = int(corr_us / DT_US)
    r = rng.normal(0, 1, shape)
    kernel = np.ones(k) / np.sqrt(k)
    r = np.apply_along_axis(lambda x: np.convolve(x, kernel, mode="same"), -1, r)
    return w + red * r


@pytest.fixture
def rng():
    return np.random.default_rng(20210113)


def _events(rng, speeds_kms, charges_fc, centres_us, polarity=-1, rise=1.0, **noise_kw):
    sig = []
    for v, q, c in zip(speeds_kms, charges_fc, centres_us, strict=True):
        transit = L / v * 1e3  # µs
        sig.append(polarity * trapezoid(c - transit / 2, c + transit / 2, q * 1e-15 * K, rise))
    sig = np.array(sig)
    return sig + noise(rng, sig.shape, **noise_kw)


QUIET = {"white": 1e-3, "red": 0.1e-3}  # V: lets 1 % accuracy be reached on 20 fC


def test_recovers_speed_and_charge_vectorised(rng):
    speeds = np.array([2.0, 5.0, 9.3, 20.0, 40.0])
    charges = np.array([30.0, 20.0, 25.0, 20.0, 40.0])
    centres = np.array([-250.0, -200.0, -200.0, -150.0, -100.0])
    y = _events(rng, speeds, charges, centres, **QUIET)
    res = pickup_charge_speed(T, y, tube_length_m=L, volts_per_coulomb=K)
    assert res.status.values.tolist() == [0] * 5
    np.testing.assert_allclose(res.speed.values, speeds, rtol=0.01)
    np.testing.assert_allclose(res.charge.values, charges, rtol=0.01)
    np.testing.assert_allclose(res.center_time.values, centres, atol=0.05)
    # error estimates are honest to a factor of a few
    dv = np.abs(res.speed.values - speeds)
    assert np.all(dv < 5 * res.speed_err.values + 1e-3)
    assert np.all(res.charge_err.values > 0)
    assert res.charge.attrs["calibration"] == "placeholder"


def test_positive_polarity_and_slow_edges(rng):
    y = _events(rng, [8.0], [20.0], [-200.0], polarity=+1, rise=6.0, **QUIET)
    res = pickup_charge_speed(T[None, :], y, polarity=+1, tube_length_m=L,
                              volts_per_coulomb=K)
    assert res.status.item() == 0
    assert res.speed.item() == pytest.approx(8.0, rel=0.01)
    assert res.charge.item() == pytest.approx(20.0, rel=0.01)


def test_lab_like_noise_within_reported_errors(rng):
    """Pulses of 6-15 mV in 2 mV white + red noise, like the peridot captures."""
    speeds = np.array([9.3, 9.5, 7.8] * 4)
    charges = np.array([6.0, 7.5, 15.5] * 4)
    centres = np.full(12, -200.0)
    y = _events(rng, speeds, charges, centres, rise=2.0)
    res = pickup_charge_speed(T, y, tube_length_m=L, volts_per_coulomb=K)
    assert (res.status.values == 0).all()
    zq = (res.charge.values - charges) / res.charge_err.values
    zv = (res.speed.values - speeds) / res.speed_err.values
    assert np.all(np.abs(zq) < 4) and np.all(np.abs(zv) < 4)
    np.testing.assert_allclose(res.speed.values, speeds, rtol=0.04)


def test_status_flags(rng):
    no_pulse = noise(rng, T.shape)
    missing = np.full(T.shape, np.nan)
    step_only = -trapezoid(-100, 1000, 0.02) + noise(rng, T.shape)
    at_start = -trapezoid(-395, -380, 0.02) + noise(rng, T.shape)
    res = pickup_charge_speed(T, np.array([no_pulse, missing, step_only, at_start]))
    names = [STATUS_MEANINGS[s] for s in res.status.values]
    assert names == ["no_pulse", "no_signal", "no_exit_edge", "truncated"]
    assert np.isnan(res.speed.values[:3]).all()
    assert np.isnan(res.charge.values).all()


def test_nan_padding_is_ignored(rng):
    y = _events(rng, [9.0], [8.0], [-200.0])
    y[:, -5000:] = np.nan
    res = pickup_charge_speed(T, y)
    assert res.status.item() == 0
    assert res.speed.item() == pytest.approx(9.0, rel=0.01)


def test_gaps_in_some_events_of_a_pack(rng):
    """Events with missing samples among complete ones (their pass is run again
    with their fill value): each gets the results it gets analysed alone."""
    y = _events(rng, [9.0, 7.0, 11.0], [8.0, 10.0, 9.0], [-200.0, -150.0, -250.0])
    y[1, -5000:] = np.nan
    y[2, :300] = np.nan
    pack = pickup_charge_speed(T, y)
    assert list(pack.status.values) == [0, 0, 0]
    for e in range(3):
        alone = pickup_charge_speed(T, y[e])
        for name in ("speed", "transit_time", "charge", "baseline", "snr", "status"):
            np.testing.assert_array_equal(pack[name].values[e], alone[name].values[0])


def test_two_detectors_time_of_flight(rng):
    speeds = np.array([3.0, 9.0, 15.0])
    sep = 0.5  # m, centre to centre
    c1 = np.array([-300.0, -250.0, -200.0])
    c2 = c1 + sep / speeds * 1e3
    q = np.array([20.0, 30.0, 25.0])
    y1 = _events(rng, speeds, q, c1, **QUIET)
    y2 = _events(rng, speeds, q, c2, **QUIET)
    res = pickup_two_detectors(T, y1, y2, separation_m=sep, tube_length_m=L,
                               volts_per_coulomb=K)
    np.testing.assert_allclose(res.speed_tof.values, speeds, rtol=0.01)
    np.testing.assert_allclose(res.speed_transit.values, speeds, rtol=0.01)
    np.testing.assert_allclose(res.implied_separation.values, sep, rtol=0.01)
    assert res.speeds_agree.values.all()
    np.testing.assert_allclose(res.qd2_charge.values, q, rtol=0.01)
    # without a separation: no TOF speed, but the implied separation
    res = pickup_two_detectors(T, y1, y2)
    assert np.isnan(res.speed_tof.values).all()
    assert not res.speeds_agree.values.any()
    np.testing.assert_allclose(res.delay_to_transit.values, sep / L, rtol=0.01)


def test_wrong_separation_disagrees(rng):
    y1 = _events(rng, [9.0], [10.0], [-250.0])
    y2 = _events(rng, [9.0], [10.0], [-250.0 + 0.5 / 9.0 * 1e3])
    res = pickup_two_detectors(T, y1, y2, separation_m=0.6)
    assert res.speed_ratio.item() == pytest.approx(1.2, rel=0.01)
    assert not res.speeds_agree.item()


def test_speed_to_target(rng):
    y = _events(rng, [9.0], [10.0], [-200.0])
    res = pickup_charge_speed(T, y, target_distance_m=1.8, impact_time_us=0.0)
    assert res.flight_to_impact.item() == pytest.approx(200.0, abs=0.05)
    assert res.speed_to_target.item() == pytest.approx(9.0, rel=0.01)
    assert res.flight_over_transit.item() == pytest.approx(1.8 / L, rel=0.01)


def test_bad_input():
    with pytest.raises(AnalysisError):
        pickup_charge_speed(T[:10], np.zeros((2, 20)))
    with pytest.raises(AnalysisError):
        pickup_charge_speed(T, np.zeros(T.shape), polarity=0)


def test_from_dataset_via_trc_files(tmp_path, rng):
    from idexdask.io.trc import read_trc, write_trc

    t_s = T * 1e-6
    gain = 5e-6
    for imp, (v, c) in enumerate([(9.0, -200.0), (6.0, -150.0)], start=1):
        y = _events(rng, [v], [10.0], [c])[0]
        for ch in (1, 4):
            raw = np.round(y / gain).astype(np.int16)
            write_trc(tmp_path / f"peridot_C{ch}_{imp:05d}.trc", raw,
                      horiz_interval=DT_US * 1e-6, horiz_offset=t_s[0],
                      vertical_gain=gain, wave_source=ch)
    (tmp_path / "peridot_settings.txt").write_text("QD 1\nTOF Low\nTOF High\nQD 2\n")
    ds = read_trc(tmp_path)
    res = pickup_from_dataset(ds)
    assert res.sizes["epoch"] == 2
    np.testing.assert_allclose(res.speed_transit.values, [9.0, 6.0], rtol=0.01)
    np.testing.assert_allclose(res.delay.values, 0.0, atol=0.05)
    assert res.impact_number.values.tolist() == [1, 2]
    # one detector only
    res1 = pickup_from_dataset(ds.drop_vars("QD_2"))
    np.testing.assert_allclose(res1.speed.values, [9.0, 6.0], rtol=0.01)
    with pytest.raises(AnalysisError):
        pickup_from_dataset(ds.drop_vars(["QD_1", "QD_2"]))


def test_scope_config_has_provenance():
    cfg = load_scope_config()
    p = cfg["pickup"]
    assert p["tube_length_m"] > 0
    assert isinstance(p["volts_per_coulomb"], float)
    assert p["calibration"] == "placeholder"
    assert cfg["channels"]["polarity"]["TOF_High"] == -1


def _capture(tmp_path, rng, qd_raw):
    """Two impacts: a TOF trace and the QD channels given by ``qd_raw(impact)``."""
    from idexdask.io.trc import write_trc

    gain = 5e-6
    for imp in (1, 2):
        tof = np.round(rng.normal(0, 2e-3, T.size) / gain).astype(np.int16)
        write_trc(tmp_path / f"peridot_C3_{imp:05d}.trc", tof, horiz_interval=DT_US * 1e-6,
                  horiz_offset=T[0] * 1e-6, vertical_gain=gain, wave_source=3)
        for ch, raw in qd_raw(imp, gain).items():
            write_trc(tmp_path / f"peridot_C{ch}_{imp:05d}.trc", raw,
                      horiz_interval=DT_US * 1e-6, horiz_offset=T[0] * 1e-6,
                      vertical_gain=gain, wave_source=ch)
    (tmp_path / "peridot_settings.txt").write_text("QD 1\nTOF Low\nTOF High\nQD 2\n")


def test_analyze_gives_qd_products_and_statuses(tmp_path, rng):
    """QD_1 flat, QD_2 carrying the pulse: statuses for QD_1, speed from QD_2."""
    from idexdask.analysis.pickup_products import QDStatus
    from idexdask.io.trc import read_trc
    from idexdask.workflow import analyze

    def qd(imp, gain):
        pulse = _events(rng, [9.0], [20.0], [-200.0], **QUIET)[0]
        return {1: np.full(T.size, 7, np.int16), 4: np.round(pulse / gain).astype(np.int16)}

    _capture(tmp_path, rng, qd)
    out = analyze(read_trc(tmp_path))
    assert out["qd1_status"].values.tolist() == [2, 2]  # no_pulse
    assert np.isnan(out["qd1_speed"].values).all()
    assert out["qd_status"].values.tolist() == [QDStatus.OK] * 2
    np.testing.assert_allclose(out["qd_speed"].values, 9.0, rtol=0.01)
    np.testing.assert_allclose(out["qd_charge"].values, 20.0, rtol=0.02)
    assert out["qd_charge_detector"].values.tolist() == ["QD_2", "QD_2"]


def test_qd_products_from_recorded_codes(tmp_path, rng):
    """A pack read that keeps its codes (read_trc(keep_codes=True), the
    pipeline's) gives the QD products of a read that does not (codes found from
    the volts): the same integer codes, the same arithmetic, the same values.
    The pack has an impact without QD_2 (a missing channel: fill codes) and a
    shorter QD_1 record (NaN padding)."""
    from idexdask.adccodes import RECORDED_CODES_KEY, RecordedCodes
    from idexdask.analysis import pickup_products as module
    from idexdask.io.trc import read_trc

    def qd(imp, gain):
        pulse = _events(rng, [9.0, 7.0], [20.0, 15.0], [-200.0, -180.0], **QUIET)
        raw = {1: np.round(pulse[0] / gain).astype(np.int16),
               4: np.round(pulse[1] / gain).astype(np.int16)}
        if imp == 2:
            del raw[4]
            raw[1] = raw[1][: T.size - 5000]
        return raw

    _capture(tmp_path, rng, qd)
    kept, plain = read_trc(tmp_path, keep_codes=True), read_trc(tmp_path)
    # the recorded path is the one taken (the codes reach the pickup pass)
    variable = kept.variables["QD_1"]
    assert isinstance(variable.encoding.get(RECORDED_CODES_KEY), RecordedCodes)
    gain, offset = module._adc_scale(kept, "QD_1")
    assert module._recorded_codes(variable, gain, offset) is not None
    assert module._recorded_codes(plain.variables["QD_1"], gain, offset) is None
    from_codes, from_volts = module.pickup_products(kept), module.pickup_products(plain)
    assert list(from_codes) == list(from_volts)
    for name, var in from_codes.items():
        np.testing.assert_array_equal(var.values, from_volts[name].values, err_msg=name)
    assert np.isfinite(from_codes["qd_speed"].values).all()
    # the QD volts left undecoded (a pipeline read): the records not on their
    # codes (the missing channel, the padding) have them decoded, the same values
    lazy = read_trc(tmp_path, keep_codes=True, lazy_volts=("QD_1", "QD_2"))
    from_lazy = module.pickup_products(lazy)
    for name, var in from_codes.items():
        np.testing.assert_array_equal(var.values, from_lazy[name].values, err_msg=name)


def test_qd_products_leave_lazy_volts_undecoded(tmp_path, rng):
    """A capture whose QD records are all on their codes: the pickup reads the
    codes the reader kept and never decodes the volts it left lazy, with the
    products of the decoded volts (the same integer codes and arithmetic)."""
    from idexdask.adccodes import RECORDED_CODES_KEY
    from idexdask.analysis.pickup_products import pickup_products
    from idexdask.io.trc import read_trc

    def qd(imp, gain):
        pulse = _events(rng, [9.0, 7.0], [20.0, 15.0], [-200.0, -180.0], **QUIET)
        return {1: np.round(pulse[0] / gain).astype(np.int16),
                4: np.round(pulse[1] / gain).astype(np.int16)}

    _capture(tmp_path, rng, qd)
    lazy = read_trc(tmp_path, keep_codes=True, lazy_volts=("QD_1", "QD_2"))
    from_lazy = pickup_products(lazy)
    for name in ("QD_1", "QD_2"):
        assert lazy.variables[name].encoding[RECORDED_CODES_KEY].volts is None, name
    from_volts = pickup_products(read_trc(tmp_path))
    assert list(from_lazy) == list(from_volts)
    for name, var in from_lazy.items():
        np.testing.assert_array_equal(var.values, from_volts[name].values, err_msg=name)
    assert np.isfinite(from_lazy["qd_speed"].values).all()


def test_analyze_capture_without_qd_channels(tmp_path, rng):
    """No QD channel at all: every product present, NaN, with a status."""
    from idexdask.analysis.pickup_products import QDStatus
    from idexdask.io.trc import read_trc
    from idexdask.workflow import analyze

    _capture(tmp_path, rng, lambda imp, gain: {})
    out = analyze(read_trc(tmp_path))
    assert out["qd_status"].values.tolist() == [QDStatus.NO_CHANNEL] * 2
    assert out["qd1_status"].values.tolist() == [1, 1]  # no_signal
    assert out["qd2_status"].values.tolist() == [1, 1]
    assert np.isnan(out["qd_speed"].values).all() and np.isnan(out["qd_charge"].values).all()
    assert out["qd_charge_detector"].values.tolist() == ["", ""]


def test_dust_mass_uses_the_pickup_speed_where_measured(rng):
    """Simulated IDEX events given QD channels: the dust mass takes the QD speed."""
    import xarray as xr

    from idexdask.analysis.products import load_analysis_settings
    from idexdask.analysis.velocity import PowerLawCurve, dust_mass
    from idexdask.simulate import simulate_events
    from idexdask.workflow import analyze

    events = simulate_events(4, seed=3).events
    n = events.sizes["epoch"]
    speeds = np.array([9.0, 6.0, 12.0, 20.0])
    qd = _events(rng, speeds, [20.0] * n, [-200.0] * n, **QUIET)
    qd[3] = np.nan  # no pickup signal: the rise-time speed stays
    events = events.assign(
        time_qd=(("epoch", "time_qd_index"), np.broadcast_to(T, (n, T.size)).copy()),
        QD_1=(("epoch", "time_qd_index"), qd, {"time_variable": "time_qd",
                                                 "signal_polarity": -1}),
    )
    out = analyze(events)
    np.testing.assert_allclose(out["qd_speed"].values[:3], speeds[:3], rtol=0.01)
    assert np.isnan(out["qd_speed"].values[3])
    _, settings = load_analysis_settings()
    curve = PowerLawCurve.from_config(settings["velocity"]["yield_curve"])
    channel = out["impact_velocity_channel"].values
    source = out["dust_mass_velocity_source"].values
    checked = 0
    for e in range(3):
        if channel[e]:  # a usable target fit: its charge and the QD speed give the mass
            charge = out[f"{channel[e].lower()}_impact_charge"].values[e]
            assert source[e] == "pickup"
            assert out["dust_mass"].values[e] == pytest.approx(
                float(dust_mass(charge, out["qd_speed"].values[e], curve)), rel=1e-12)
            checked += 1
    assert checked >= 2
    assert source[3] in ("rise_time", "")
    assert isinstance(out, xr.Dataset)


def _array_derivative(y, fill, w):
    """The array formulas: sums of ``-y`` (non-finite read as ``fill``), running
    means and the derivative d (0 outside ``[w, n - w]``)."""
    rows, n = y.shape
    flipped = -np.where(np.isfinite(y), y.astype(np.float64), fill[:, None])
    cs = np.zeros((rows, n + 1))
    np.cumsum(flipped, axis=1, out=cs[:, 1:])
    mean_fwd = np.full((rows, n), np.nan)
    mean_fwd[:, : n - w + 1] = (cs[:, w:] - cs[:, : n - w + 1]) / w
    d = np.zeros((rows, n))
    d[:, w : n - w + 1] = mean_fwd[:, w : n - w + 1] - mean_fwd[:, : n - 2 * w + 1]
    return cs, d


def _check_derivative_pass(y, fill, w, half, min_transit, max_transit):
    """:func:`derivative_rows` against the array formulas (see the test below)."""
    from idexdask.analysis.pickup.kernels import CHUNK, cumsum_span, derivative_rows

    rows, n = y.shape
    cs, d = _array_derivative(y, fill, w)
    core = d[:, w : n - w + 1]
    checkpoints = np.empty((rows, n // CHUNK + 1))
    mad, i_in, i_out, win_in, win_out, missing = derivative_rows(
        y, -1.0, fill, w, min_transit, max_transit, half, checkpoints)
    np.testing.assert_array_equal(missing, (~np.isfinite(y)).sum(axis=1))
    # the same operations in the same order; a tolerance of a few ulps of the running
    # sum (|sum| < ~1e4 here) for a NumPy whose accumulate would group the additions otherwise
    np.testing.assert_allclose(checkpoints, cs[:, : n + 1 : CHUNK], rtol=0, atol=1e-10)
    for e in range(rows):
        for a, b in ((0, n + 1), (CHUNK - 1, CHUNK + 2), (n - 5, n + 1), (7, 7)):
            a, b = min(a, n + 1), min(b, n + 1)
            span = cumsum_span(y[e], -1.0, fill[e], checkpoints[e], a, b)
            np.testing.assert_allclose(span, cs[e, a:b], rtol=0, atol=1e-10)
    expected_mad = np.median(np.abs(core - np.median(core, axis=1)[:, None]), axis=1)
    np.testing.assert_allclose(mad, expected_mad, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(i_in, np.argmax(d, axis=1))
    for e in range(rows):
        lo, hi = i_in[e] + min_transit, min(i_in[e] + max_transit + 1, n)
        assert i_out[e] == (lo + np.argmin(d[e, lo:hi]) if hi > lo else 0)
        for centre, window in ((i_in[e], win_in[e]), (i_out[e], win_out[e])):
            idx = np.clip(np.arange(centre - half, centre + half + 1), 0, n - 1)
            np.testing.assert_allclose(window, d[e, idx], rtol=0, atol=1e-12)
    return i_in, i_out


def test_derivative_pass_matches_the_array_formulas():
    """The compiled pass gives the array formulas' values: sequential float64 sums
    (kept at checkpoints, formed again for any span), the derivative's MAD
    (numpy's median of |d - median|), its first maximum, its first minimum in
    the exit range and the windows around both."""
    rng = np.random.default_rng(4)
    n, w, half, min_transit, max_transit = 5000, 37, 20, 50, 900
    y = rng.normal(size=(3, n)).astype(np.float32)
    y[1, 1000:1400] -= 8.0  # a negative-going pulse: entry and exit edges
    y[2, 10:20] = np.nan  # read as the event's fill value
    fill = np.array([0.0, 0.0, 0.25])
    i_in, i_out = _check_derivative_pass(y, fill, w, half, min_transit, max_transit)
    assert i_in[1] == pytest.approx(1000, abs=w)
    assert i_out[1] == pytest.approx(1400, abs=w)


@pytest.mark.parametrize("n, w", [(3 * 4096, 5), (20_000, 5000), (9000, 4200), (30_001, 40)])
def test_derivative_pass_chunks_blocks_and_ties(n, w):
    """Records across several chunks (a multiple of the chunk, a kernel longer than
    a chunk), extremes repeated in later blocks and at the ends of the exit
    range: the first index as numpy.argmax/argmin gives it."""
    from idexdask.analysis.pickup.kernels import BLOCK

    rng = np.random.default_rng(n + w)
    y = np.round(rng.normal(size=(4, n)) * 2).astype(np.float32)  # coarse codes: ties
    y[1, n // 3 : n // 2] -= 40.0
    y[1, 2 * n // 3 :] -= 40.0  # a second entry edge as high as the first
    y[2, BLOCK : BLOCK + 3 * w] = np.nan  # missing samples inside a chunk
    y[3, n // 4 :] += 25.0  # exit search range starting on the largest value
    fill = np.array([0.0, 0.0, -1.5, 0.0])
    _check_derivative_pass(y, fill, w, 2 * w, 3, n // 2)


def test_derivative_pass_non_finite_derivative():
    """Sums that overflow (a float64 record of huge values) give non-finite
    derivative values: the edge searches take numpy's order (NaN first)."""
    n, w = 3000, 10
    y = np.zeros((1, n))
    y[0, 1500:] = -1e308  # the sums overflow to inf, their differences NaN
    with np.errstate(over="ignore", invalid="ignore"):
        _check_derivative_pass(y, np.zeros(1), w, 5, 3, 800)
