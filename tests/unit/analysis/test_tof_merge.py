"""merge_gains (one compiled pass per event) against a plain NumPy statement of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.products import load_analysis_settings
from idexdask.analysis.robust import MAD_TO_SIGMA, baseline_sigma
from idexdask.analysis.signal_quality import channel_arrays, signal_quality
from idexdask.analysis.signal_quality.dataset import FormulaTimes
from idexdask.analysis.tof import (
    TOF_CHANNELS,
    GainRatioStatus,
    MergeBuffers,
    channel_polarity,
    channel_time,
    merge_gains,
    saturation_mask,
    tof_lines,
)
from idexdask.simulate import simulate_events


def _ratio_ref(h, lo, ok, thresh, sig_l):
    """Origin slope of lo on h over the overlap, one clipping pass (row by row, NumPy)."""
    slope = np.empty(h.shape[0])
    count = np.zeros(h.shape[0], dtype=np.int64)
    with np.errstate(all="ignore"):
        for r in range(h.shape[0]):
            sel = ok[r] & (h[r] > thresh[r])
            hs = np.where(sel, h[r], 0.0)
            b = np.sum(hs * np.where(sel, lo[r], 0.0)) / np.sum(hs * hs)
            resid = lo[r] - b * h[r]
            rs = resid[sel & ~np.isnan(resid)]
            spread = MAD_TO_SIGMA * np.median(np.abs(rs - np.median(rs))) if rs.size else np.nan
            lim = np.nan if np.isnan(spread) or np.isnan(sig_l[r]) else 4 * max(spread, sig_l[r])
            s2 = sel & (np.abs(resid) <= lim)
            hs = np.where(s2, h[r], 0.0)
            slope[r] = np.sum(hs * np.where(s2, lo[r], 0.0)) / np.sum(hs * hs)
            count[r] = s2.sum()
    return slope, count


def _merge_ref(ds, quality, settings):
    """The merge as whole-array NumPy steps (the formulation the kernel replaced)."""
    present = [c for c in TOF_CHANNELS if c in ds.data_vars]
    n_events = ds[present[0]].shape[0]
    t = channel_time(ds, present[0])
    ys, sats, sigs = [], [], []
    for name in present:
        x = np.asarray(channel_arrays(ds, name)[0], dtype=float)
        pol = channel_polarity(ds, name, settings) or 1
        base, sig = baseline_sigma(x, t, float(settings["baseline_stop_us"]))
        q = (
            np.asarray(quality[f"{name.lower()}_noise"].values, dtype=float)
            if quality is not None
            else np.full(n_events, np.nan)
        )
        sigs.append(np.where(np.isfinite(q) & (q > 0), q, sig))
        sats.append(
            saturation_mask(ds, name, x, t, quality, pol, int(settings["saturation_guard"]))
        )
        ys.append(pol * (x - base[:, None]))
    signal = ys[0].copy()
    sigma = np.broadcast_to(sigs[0][:, None], signal.shape).copy()
    source = np.where(np.isfinite(signal) & ~sats[0], np.int8(0), np.int8(-1))
    signal[source < 0] = np.nan
    ratios = {present[0]: np.ones(n_events)}
    status = {present[0]: np.zeros(n_events, np.int8)}
    overlap = {present[0]: np.zeros(n_events, np.int32)}
    k = float(settings["overlap_sigma"])
    for j in range(1, len(present)):
        hi, lo = present[j - 1], present[j]
        nom = float(settings["nominal_gain"][lo]) / float(settings["nominal_gain"][hi])
        ok = ~sats[j - 1] & ~sats[j] & np.isfinite(ys[j - 1]) & np.isfinite(ys[j])
        thresh = np.maximum(k * sigs[j - 1], k * sigs[j] * nom)
        slope, n = _ratio_ref(ys[j - 1], ys[j], ok, thresh, sigs[j])
        with np.errstate(all="ignore"):
            ratio = 1.0 / slope
        good = (n >= int(settings["min_overlap_samples"])) & np.isfinite(ratio) & (ratio > 0)
        st = np.where(good, 0, 1).astype(np.int8)
        ratios[lo] = ratios[hi] * np.where(good, ratio, nom)
        status[lo] = np.maximum(st, status[hi] if j > 1 else st).astype(np.int8)
        overlap[lo] = n.astype(np.int32)
        fill = (source < 0) & ~sats[j] & np.isfinite(ys[j])
        np.multiply(ys[j], ratios[lo][:, None], out=signal, where=fill)
        np.copyto(sigma, (sigs[j] * ratios[lo])[:, None], where=fill)
        source[fill] = j
    return signal, sigma, source, ratios, status, overlap, sigs[0]


def _check(ds, settings, quality="compute"):
    if quality == "compute":
        quality = signal_quality(ds)
    m = merge_gains(ds, quality, settings)
    signal, sigma, source, ratios, status, overlap, noise = _merge_ref(ds, quality, settings)
    assert np.array_equal(m.signal, signal, equal_nan=True)
    assert np.array_equal(m.sigma, sigma, equal_nan=True)
    assert np.array_equal(m.source, source) and m.source.dtype == np.int8
    assert np.array_equal(m.noise, noise, equal_nan=True)
    for name in ratios:
        assert np.array_equal(m.ratios[name], ratios[name], equal_nan=True), name
        assert np.array_equal(m.ratio_status[name], status[name]), name
        assert m.ratio_status[name].dtype == np.int8
        assert np.array_equal(m.overlap[name], overlap[name]), name
        assert m.overlap[name].dtype == np.int32
    for name in set(TOF_CHANNELS) - set(ratios):
        assert (m.ratio_status[name] == GainRatioStatus.ABSENT).all()
    assert m.single is None
    # the float32 copy formed in the merge's pass: NumPy's cast of the merged
    # spectrum (one correctly rounded conversion per value: the same bits on
    # any machine), the rest of the merge unchanged (the same code)
    both = merge_gains(ds, quality, settings, single=True)
    assert both.single.dtype == np.float32 and both.single.shape == m.signal.shape
    assert np.array_equal(both.single.view(np.int32), m.signal.astype(np.float32).view(np.int32))
    assert np.array_equal(both.signal, m.signal, equal_nan=True)
    assert np.array_equal(both.source, m.source)
    # into a caller's buffers that hold another merge's values (a larger pack's,
    # stale values everywhere): every sample is written, the rest is the same code
    kept = MergeBuffers()
    stale = kept.signal((m.signal.shape[0] + 1, m.signal.shape[1]))
    stale[::2] = np.nan
    stale[1::2] = 7.0
    reused = merge_gains(ds, quality, settings, single=True, buffers=kept)
    assert np.shares_memory(reused.signal, stale)
    assert reused.signal.shape == m.signal.shape and reused.signal.flags.c_contiguous
    assert np.array_equal(reused.signal, m.signal, equal_nan=True)
    assert np.array_equal(reused.single.view(np.int32), both.single.view(np.int32))
    assert np.array_equal(reused.source, m.source)
    return m


@pytest.fixture(scope="module")
def events() -> xr.Dataset:
    ev = simulate_events(24, seed=5).events
    for name in TOF_CHANNELS:
        ev[name].attrs.update({"FILLVAL": 65535, "VALIDMIN": 0, "VALIDMAX": 1023})
    return ev


@pytest.fixture(scope="module")
def settings() -> dict:
    return {**load_analysis_settings(None)[1]["tof"]}


def with_formula_axis(ev, start, step, count):
    """``ev`` with its high-rate time axis given by formula terms (start and step
    in s, count of samples with a time) instead of materialised times."""
    from idexdask.timeaxis import AxisTerms, uniform_axis_variable

    terms = AxisTerms.for_axis("time_high_sample_rate")
    dims = ("epoch", "time_high_sample_rate_index")
    n = ev.sizes["time_high_sample_rate_index"]
    return ev.assign({
        "time_high_sample_rate": uniform_axis_variable(
            dims, start, step, count, n, scale=1e6, terms=terms),
        terms.start: ("epoch", start), terms.step: ("epoch", step),
        terms.count: ("epoch", count),
    })


def as_scope_volts(events, n):
    """The first ``n`` events with their TOF gains as a scope records them:
    int16 codes (16 per DN, the 65535 fill as the code fill) decoded to float32
    volts with a gain and offset, the codes' scale in the encoding."""
    from idexdask.adccodes import code_encoding, decode_codes

    ev = events.isel(epoch=slice(0, n)).copy(deep=True)
    for name, gain in {"TOF_High": 6.25e-5, "TOF_Mid": 2.5e-5, "TOF_Low": 6.25e-6}.items():
        raw = ev[name].values.astype(np.int64)
        codes = np.where(raw == 65535, 32767, raw * 16 - 8000).astype(np.int16)
        volts = decode_codes(codes, gain, -1.685)
        ev[name] = (ev[name].dims, volts, {"units": "V", "vertical_gain": gain,
                                           "VALIDMAX": float(volts.max())})
        ev[name].encoding = code_encoding(gain, -1.685)
    return ev


def _assert_same_lines(merged, reference) -> None:
    """The line search and fits give the same lines on both merged spectra
    (the same values into the same code: compared exactly)."""
    peaks = {**load_analysis_settings(None)[1]["peaks"], "fit_device": "cpu"}
    got, want = tof_lines(merged, peaks), tof_lines(reference, peaks)
    assert got[0].size > 0
    for field in ("event", "index", "prominence"):
        assert np.array_equal(getattr(got[0], field), getattr(want[0], field))
    for field in ("center", "sigma", "area", "status"):
        assert np.array_equal(getattr(got[1], field), getattr(want[1], field), equal_nan=True)
    assert np.array_equal(got[2], want[2], equal_nan=True)


@pytest.mark.numerics
def test_merge_matches_numpy_statement(events, settings):
    ev = events.copy(deep=True)
    hi = ev["TOF_High"].values
    hi[3, 2500:2600] = 1023  # a long rail run in the high gain: filled from the lower gains
    hi[4, 100:110] = 65535  # missing samples
    ev["TOF_Mid"].values[4, 2500:2520] = 65535
    ev["TOF_Mid"].values[4, 100:105] = 65535  # missing in every gain: NaN, source -1
    ev["TOF_Low"].values[4, 100:105] = 65535
    ev["TOF_Low"].values[5, :] = 65535  # a dead low gain
    ev["TOF_High"].values[6, :3000] = 65535  # no pre-trigger baseline: first 10 % used
    hi[7, 2400:2500] = 1023  # high and mid gains at the rail: the low gain fills in
    ev["TOF_Mid"].values[7, 2420:2480] = 1023
    m = _check(ev, settings)
    assert (m.source == 1).any() and (m.source == 2).any() and (m.source < 0).any()
    assert (m.ratio_status["TOF_Mid"] == GainRatioStatus.MEASURED).any()
    _check(ev, settings, quality=None)
    _check(ev, {**settings, "saturation_guard": 0, "min_overlap_samples": 1})
    _check(ev.drop_vars("TOF_Mid"), settings)  # high/low directly
    _check(ev.drop_vars(["TOF_Mid", "TOF_Low"]), settings)


def test_sigma_of_a_merge_that_uses_only_the_first_gain(events, settings):
    """No sample from a lower gain: the per-sample noise is the first gain's,
    a read-only view of one value per row (no per-sample array written), and
    the lines found and fitted are those of the same sigma given as a plain
    per-sample array (the relative noise sigma / noise is exactly 1 either way:
    the same search, so the same values)."""
    first_only = ~(merge_gains(events, signal_quality(events), settings).source > 0).any(axis=1)
    assert first_only.sum() >= 4  # the simulated events: most never saturate the high gain
    ev = events.isel(epoch=np.flatnonzero(first_only)[:8])
    m = _check(ev, settings)
    assert not (m.source > 0).any() and not m.sigma_varies
    assert not m.sigma.flags.writeable
    # no unusable sample either: every source 0, no source array written
    assert not (m.source < 0).any()
    assert not m.source.flags.writeable and m.source.dtype == np.int8
    assert np.array_equal(m.sigma, np.repeat(m.noise[:, None], m.signal.shape[1], axis=1),
                          equal_nan=True)
    plain = dataclasses.replace(m, sigma=np.array(m.sigma), sigma_varies=True)
    _assert_same_lines(m, plain)
    # one saturated run in the high gain: that row's samples there come from a
    # lower gain, with its noise; the pack's sigma is then a per-sample array
    ev = ev.copy(deep=True)
    ev["TOF_High"].values[2, 2500:2600] = 1023
    m = _check(ev, settings)
    assert m.sigma_varies and m.sigma.flags.writeable and (m.source[2] > 0).any()
    assert m.source.flags.writeable and (np.delete(m.source, 2, axis=0) == 0).all()
    assert not (np.delete(m.source, 2, axis=0) > 0).any()


def test_merge_float_negative_going(events, settings):
    ev = events.copy(deep=True)
    for name in TOF_CHANNELS:
        x = -(ev[name].values.astype(np.float32) - 500.0) * 1e-3
        x[1, 50:60] = np.nan
        x[2, 3000:3010] = np.inf
        ev[name] = (ev[name].dims, x, {"units": "V", "signal_polarity": -1, "VALIDMIN": -0.5})
    ev["TOF_High"].values[3, 2500:2600] = -0.5
    m = _check(ev, settings)
    assert (m.source == 1).any()


def test_merge_on_a_formula_time_axis(events, settings):
    """A time axis given by formula: the baseline samples of a rising row are
    located by bisection (the axis is not scanned), a falling row is scanned;
    either way the merge is the NumPy statement's, as on the materialised axis."""
    from idexdask.analysis.signal_quality.kernels import formula_count_below

    ev = events.isel(epoch=slice(0, 6)).copy(deep=True)
    ev["TOF_High"].values[1, 2500:2600] = 1023  # a saturation interval located on the times
    n = ev.sizes["time_high_sample_rate_index"]
    dt = 1 / 260.0  # µs per sample, as the simulated axis
    start = np.array([-7.6, -7.6, -3.0, 1.0, -7.6, -7.6]) * 1e-6
    step = np.array([dt, dt, dt, dt, dt, -dt]) * 1e-6
    count = np.array([n, n - 500, n, n, 0, n])  # a shorter record, no record
    formula = with_formula_axis(ev, start, step, count)
    times = formula["time_high_sample_rate"].values
    stop = float(settings["baseline_stop_us"])
    counts = formula_count_below(start, step, count, 1e6, n, stop)
    rising = np.arange(6) != 5
    # rising rows: the samples below the stop are the first ones, as many as counted
    assert np.array_equal(counts[rising], (times[rising] < stop).sum(axis=1))
    assert counts[5] == -1  # falling: scanned
    assert counts[3] == 0 and counts[4] == 0  # starts after the stop; no samples
    m = _check(formula, settings)
    axis = formula["time_high_sample_rate"]
    materialised = formula.assign(time_high_sample_rate=(axis.dims, times))
    m2 = _check(materialised, settings)
    assert np.array_equal(m.signal, m2.signal, equal_nan=True)
    assert np.array_equal(m.noise, m2.noise, equal_nan=True)
    assert np.array_equal(m.source, m2.source)
    # the merged spectrum keeps the formula: its times are the axis's values
    assert isinstance(m.time, FormulaTimes) and isinstance(m2.time, np.ndarray)
    assert np.array_equal(np.asarray(m.time), times, equal_nan=True)
    # the line search and fits read the same times from the formula as from the
    # materialised axis (same values into the same code: the same lines)
    _assert_same_lines(m, m2)


def test_formula_times_index_as_the_materialised_axis():
    """FormulaTimes forms only the times indexed, each as the materialised axis holds it
    (the same expression: equal values), for the indexing forms the analysis uses."""
    from idexdask.timeaxis import UniformAxisArray

    start = np.array([-7.6e-6, 1e-7, -3e-6])
    step = np.array([1e-9, 2.5e-10, 1e-9])
    count = np.array([1000, 700, 0])
    axis = FormulaTimes(start=start, step=step, count=count, scale=1e6, n_samples=1000)
    whole = UniformAxisArray(start, step, count, 1000, 1e6).compute((slice(None), slice(None)))
    assert axis.shape == whole.shape and axis.ndim == 2
    assert np.array_equal(np.asarray(axis), whole, equal_nan=True)
    rows = np.array([1, 0, 1, 2])
    cols = np.array([[0, 5, 699], [999, 3, 1], [700, 2, -1], [4, 5, 6]])
    assert np.array_equal(axis[rows[:, None], cols], whole[rows[:, None], cols], equal_nan=True)
    assert np.array_equal(axis[rows, rows], whole[rows, rows], equal_nan=True)
    assert np.array_equal(axis[np.array([2, 0])], whole[[2, 0]], equal_nan=True)
    assert np.array_equal(axis[1], whole[1], equal_nan=True)
    assert np.array_equal(axis[rows, 10:20], whole[rows, 10:20], equal_nan=True)
    assert np.array_equal(axis[0, ::-7], whole[0, ::-7], equal_nan=True)
    with pytest.raises(IndexError):
        axis[0, 1000]
    with pytest.raises(IndexError):
        axis[np.array([3]), 0]


def test_merge_of_scope_volts_read_through_their_codes(events, settings):
    """float32 volts that are the values of int16 codes (a scope capture, its code
    scale in the variable's encoding): the kernel takes each baseline's median and
    MAD from the codes' counts; a row with a sample off the codes is selected on
    its values.  Either way the merge is the NumPy statement's."""

    ev = as_scope_volts(events, 8)
    ev["TOF_High"].values[2, 100:110] = np.nan  # missing samples in the baseline
    ev["TOF_Mid"].values[3, 50] += np.float32(1e-6)  # off the codes: selected on values
    m = _check(ev, settings)
    assert (m.ratio_status["TOF_Mid"] == GainRatioStatus.MEASURED).any()
    assert np.isfinite(m.noise).all()


def test_formula_interval_is_the_samples_inside_the_times():
    """The saturation interval located by bisection on a formula axis holds
    exactly the samples whose materialised times lie in it (a rising row;
    a falling one is left to the kernel's comparison of its times)."""
    from idexdask.analysis.signal_quality.kernels import formula_interval
    from idexdask.timeaxis import UniformAxisArray

    n = 2000
    start = np.array([-7.6e-6, -7.6e-6, 1e-7, -3e-6, -3e-6, -3e-6, 0.0])
    step = np.array([1e-9, 1e-9, 2.5e-10, 1e-9, -1e-9, 1e-9, 0.0])
    count = np.array([n, 1500, n, 0, n, n, n])
    t0 = np.array([-7.0, -6.5, 0.1, -1.0, -4.0, np.nan, 0.0])
    t1 = np.array([-6.5, 2.0, 0.3, 1.0, -3.5, 1.0, 0.0])
    first, stop = formula_interval(start, step, count, 1e6, n, t0, t1)
    times = UniformAxisArray(start, step, count, n, 1e6).compute((slice(None), slice(None)))
    for r in range(start.size):
        inside = np.flatnonzero((times[r] >= t0[r]) & (times[r] <= t1[r]))
        if r == 4:  # falling: not located
            assert first[r] == -1 and stop[r] == -1
            continue
        assert np.array_equal(np.arange(first[r], stop[r]), inside), r
    assert stop[0] > first[0] > 0 and stop[1] == 1500  # a shorter record ends the interval
    assert stop[6] - first[6] == n  # a constant axis inside a point interval: every sample


@pytest.mark.parametrize("pol", [1.0, -1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_overlap_samples_at_the_threshold(pol, dtype):
    """The blocks' float32 pre-test never drops a sample whose signal exceeds the
    threshold, even by one rounding: thresholds set at the signal of samples
    themselves (equal: left out) and just below them (in).  Nor do the blocks
    the first gain's pass marks (first_gain_row, which writes the row's signal:
    every value of a finite row, finite or not)."""
    from idexdask.analysis.gain_merge_kernels import first_gain_row, overlap_samples

    rng = np.random.default_rng(3)
    n = 5000
    xh = (rng.normal(size=n) * 300).astype(dtype)
    xl = (rng.normal(size=n) * 30).astype(dtype)
    base_h, base_l = 1.7, -0.3
    h = pol * (xh.astype(float) - base_h)
    sat = np.zeros(n, bool)
    idx, hv, lv = np.empty(n, np.int64), np.empty(n), np.empty(n)
    hits, out = np.empty(-(-n // 512), bool), np.empty(n)
    none, out32 = np.empty(0, np.float32), np.empty(n, np.float32)
    for thresh in (np.sort(h)[-7], np.nextafter(np.sort(h)[-40], -np.inf), np.nan, np.inf):
        want = np.flatnonzero(h > thresh)
        m = overlap_samples(xh, xl, np.nan, np.nan, base_h, base_l, pol, pol, sat, sat,
                            thresh, idx, hv, lv, np.empty(0, bool))
        assert np.array_equal(idx[:m], want)
        assert np.array_equal(hv[:m], h[want])
        assert first_gain_row(xh, np.nan, base_h, pol, thresh, hits, out, none)
        assert np.array_equal(out, h)
        out[:] = np.nan
        assert first_gain_row(xh, np.nan, base_h, pol, thresh, hits, out, out32)
        assert np.array_equal(out, h)
        assert np.array_equal(out32.view(np.int32), h.astype(np.float32).view(np.int32))
        assert hits.sum() == len(set(want // 512))  # only blocks holding a sample above
        m = overlap_samples(xh, xl, np.nan, np.nan, base_h, base_l, pol, pol, sat, sat,
                            thresh, idx, hv, lv, hits)
        assert np.array_equal(idx[:m], want)
        assert np.array_equal(hv[:m], h[want])
    if dtype != np.int16:
        xh[123] = np.nan
        assert not first_gain_row(xh, np.nan, base_h, pol, 0.0, hits, out, none)
    assert (h > np.sort(h)[-7]).sum() == 6  # the equal sample is not above


def test_merge_of_scope_volts_on_a_formula_axis(events, settings):
    """Scope-like volts on a rising formula axis (the lab path): where signal
    quality gives the noise, a baseline whose samples all lie within the
    clip's floor takes its level from one pass (no median: the clip keeps
    them all); a baseline with a far sample, or no quality, takes the median
    route.  Either way the merge is the NumPy statement's."""

    ev = as_scope_volts(events, 6)
    ev["TOF_High"].values[1, 40] = np.float32(3.5)  # a far baseline sample: median route
    ev["TOF_Low"].values[2, 30:40] = np.nan  # missing baseline samples
    n = ev.sizes["time_high_sample_rate_index"]
    dt = 1 / 260.0
    start = np.full(6, -7.6e-6)
    step = np.full(6, dt * 1e-6)
    count = np.full(6, n)
    formula = with_formula_axis(ev, start, step, count)
    quality = signal_quality(formula)
    assert np.isfinite(quality["tof_high_noise"].values).all()
    m = _check(formula, settings, quality=quality)
    assert np.isfinite(m.noise).all()
    _check(formula, settings, quality=None)  # no noise given: the MAD is needed
