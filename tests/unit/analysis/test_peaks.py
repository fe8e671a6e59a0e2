"""Peak finding, TOF gain merge and batched EMG line fits on simulated events."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from idexdask.analysis.peaks import detect_peaks
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

DT = 1.0 / 260.0  # µs per TOF sample


@pytest.fixture(scope="module")
def sim():
    s = simulate_events(150, seed=11)
    return s, analyze(s.events, {"analysis": {"calibration": {"enabled": False}}})


def _matched_isolated(s, out):
    tr = s.truth
    le, lc = tr.line_event.values, tr.line_center.values
    pe, pc = out.peak_event.values, out.peak_center.values
    rows = []
    for i in range(le.size):
        others = lc[(le == le[i]) & (np.arange(le.size) != i)]
        if others.size and np.min(np.abs(others - lc[i])) < 0.3:
            continue
        sel = np.nonzero(pe == le[i])[0]
        if sel.size == 0:
            continue
        j = sel[np.argmin(np.abs(pc[sel] - lc[i]))]
        if abs(pc[j] - lc[i]) < 0.02:
            rows.append((i, j))
    return np.array(rows)


def test_isolated_lines_recovered(sim):
    s, out = sim
    tr = s.truth
    rows = _matched_isolated(s, out)
    i, j = rows[:, 0], rows[:, 1]
    noise = tr.TOF_High_noise.values[tr.line_event.values[i]]
    snr = out.peak_height.values[j] / noise
    good = (snr >= 20) & (out.peak_status.values[j] == 0)
    assert good.sum() > 100
    dc = (out.peak_center.values[j] - tr.line_center.values[i])[good] / DT
    da = (out.peak_area.values[j] / tr.line_area.values[i] - 1)[good]
    # a tail is fitted where the line kept its EMG shape (LineShape.EMG): most
    # of them; the rest converged only as Gaussians (peak_gamma NaN)
    emg_shaped = out.peak_shape.values[j] == 0
    assert np.mean(emg_shaped[good]) > 0.9
    dg = (out.peak_gamma.values[j] / tr.line_gamma.values[i] - 1)[good & emg_shaped]
    # systematic accuracy (median): 0.1 sample, 2 % area, 10 % gamma
    assert abs(np.median(dc)) < 0.1
    assert abs(np.median(da)) < 0.02
    assert abs(np.median(dg)) < 0.10
    # and most individual lines
    assert np.mean(np.abs(da) < 0.05) > 0.8
    # every line with SNR >= 20 in the truth is found
    assert np.all(out.peak_manual.values == 0)


def test_gain_ratios_measured(sim):
    _, out = sim
    st = out.tof_gain_ratio_mid_status.values
    assert np.mean(st == 0) > 0.9
    assert abs(np.median(out.tof_gain_ratio_mid.values[st == 0]) / 10.0 - 1) < 0.02
    lo = out.tof_gain_ratio_low_status.values == 0
    assert abs(np.median(out.tof_gain_ratio_low.values[lo]) / 100.0 - 1) < 0.05
    assert np.all(out.tof_gain_ratio_high.values == 1.0)


def test_saturated_lines_use_lower_gain(sim):
    s, out = sim
    sat = out.tof_high_saturated.values
    assert sat.any()
    # the merged spectrum exceeds the high gain's range where it saturates
    comb = out.tof_combined.values
    assert np.nanmax(comb[sat]) > 1023 - 512


def test_single_search_matches_per_event():
    rng = np.random.default_rng(0)
    n_ev, n = 5, 2000
    t = np.broadcast_to(np.arange(n) * DT - 1.0, (n_ev, n))
    y = rng.normal(0, 1.0, (n_ev, n))
    for e in range(n_ev):
        for c in rng.uniform(0.5, 6.0, 4):
            y[e] += 30 * rng.uniform(0.2, 1) * np.exp(-0.5 * ((t[e] - c) / 0.01) ** 2)
    settings = dict(smooth_us=0.0, prominence_sigma=3.0, height_sigma=5.0, min_distance_us=0.0,
                    baseline_stop_us=0.0, max_peaks_per_event=100)
    cand, zsig = detect_peaks(y, t, np.ones(n_ev), settings)
    for e in range(n_ev):
        z = y[e] / zsig[e]
        ref, _ = find_peaks(z, height=5.0, prominence=3.0)
        np.testing.assert_array_equal(cand.index[cand.event == e], ref)


def _search_rows_ref(y, t, noise, settings, noise_scale):
    """The normalised search rows as whole-array NumPy/SciPy steps (the former code)."""
    from scipy.ndimage import uniform_filter1d

    from idexdask.analysis.robust import baseline_sigma

    n = y.shape[1]
    with np.errstate(all="ignore"):
        dt = np.nanmedian(np.diff(t, axis=1), axis=1)
    dt = np.where(np.isfinite(dt) & (dt > 0), dt, 1.0)
    width = np.clip(np.rint(settings["smooth_us"] / dt), 1, n // 4 + 1).astype(int)
    filled = np.where(np.isfinite(y), y, 0.0)
    smooth = np.empty_like(filled)
    for w in np.unique(width):
        rows = width == w
        smooth[rows] = uniform_filter1d(filled[rows], size=int(w), axis=1, mode="nearest")
    _, zsig = baseline_sigma(
        np.where(np.isfinite(y), smooth, np.nan), t, settings["baseline_stop_us"]
    )
    zsig = np.where(np.isfinite(zsig) & (zsig > 0), zsig, noise)
    usable = np.isfinite(zsig) & (zsig > 0) & np.any(np.isfinite(y), axis=1)
    z = smooth / np.where(usable, zsig, 1.0)[:, None]
    if noise_scale is not None:
        src = np.where(np.isfinite(noise_scale), noise_scale, 1.0)
        z = z / np.maximum(uniform_filter1d(src, 5, axis=1), 1.0)
    z[~usable] = 0.0
    return np.where(np.isfinite(y), z, 0.0), zsig, dt


@pytest.mark.numerics
@pytest.mark.parametrize("n", [3000, 30_000])
def test_compiled_search_rows_match_numpy(n):
    """detect_peaks' compiled row pass equals the whole-array formulation, bit for
    bit (30,000 samples: baselines long enough for the selection's bracketing path),
    and its peaks, found row by row (on the smoothed row where the relative noise
    is all one), are those of one search over the rows joined by wall samples."""
    from idexdask.analysis.peak_search import find_peaks as _find_peaks
    from idexdask.analysis.peaks import _WALL, _search_rows
    from idexdask.analysis.sample_step import sample_step

    rng = np.random.default_rng(3)
    n_events = 13
    t0 = -2.0 if n < 10_000 else -0.6 * n * DT  # the long rows: 18,000 pre-trigger samples
    t = np.tile(t0 + np.arange(n) * DT, (n_events, 1))
    t[1] = t0 + np.arange(n) * 2 * DT  # another sampling: another boxcar width
    # steps of DT but twice that where the step probe looks: the probe is not the
    # median, and the boxcar width it suggests is not the row's
    probed = np.arange(65) * (n - 2) // 64
    steps = np.full(n - 1, DT)
    steps[probed] = 2 * DT
    t[12] = t0 + np.concatenate([[0.0], np.cumsum(steps)])
    t[2, 7] = np.nan
    t[3] = 1.0 + np.arange(n) * DT  # no pre-trigger samples: first 10 %
    y = np.round(rng.normal(0, 3, (n_events, n)))
    y[:, 1500:1510] += 200.0
    y[:, 2200:2203] += rng.uniform(10.0, 60.0, (n_events, 1))  # a weaker line on its own
    y[10, 2600:2604] = np.nan  # a gap beside a line: zeros in the search
    y[10, 2605:2608] += 90.0
    y[4, ::3] = np.nan
    y[5] = np.nan  # nothing finite: unusable
    y[6] = 0.0  # zero sigma: the given noise is used
    y[7, :600] = np.nan  # no finite pre-trigger sample either
    y[8, 100] = np.inf
    noise = np.full(n_events, 2.0)
    noise[6] = 0.0  # ... and is not positive either: unusable
    sigma = np.broadcast_to(noise[:, None], y.shape).copy()
    sigma[[0, 4, 9], 1400:1600] *= 10.0  # a lower gain scaled up
    sigma[9, 200:210] = np.inf
    settings = {"smooth_us": 0.008, "baseline_stop_us": 0.0}
    dt = sample_step(t)
    for scale, den in ((None, None), (sigma, noise), (sigma / 2.0, None)):
        with np.errstate(all="ignore"):
            ns = None if scale is None else scale / (1.0 if den is None else den[:, None])
        z_ref, zsig_ref, dt_ref = _search_rows_ref(y, t, noise, settings, ns)
        rest = (0.0, n // 10, noise, np.zeros((1, 1)) if scale is None else scale,
                np.ones(n_events) if den is None else den, scale is not None,
                np.zeros(n_events),  # no quantisation floor: the reference has none
                5.0, 3.0)  # fmt: skip
        zrows = np.empty((n_events, n))
        no_formula = (False, np.empty((3, 0)), np.empty(0, dtype=np.int64), np.empty((1, 0)))
        found = np.full(n_events, np.nan)  # the steps, found in the search's own pass
        zsig, usable, pos, heights, proms = _search_rows(y, t, found, True, 0.008, *rest, zrows,
                                                        *no_formula)
        assert np.array_equal(dt, dt_ref)
        assert np.array_equal(found, dt)
        assert np.array_equal(zsig, zsig_ref, equal_nan=True)
        assert np.array_equal(zrows, z_ref)
        assert usable.tolist() == [r not in (5, 6) for r in range(n_events)]
        flat = np.concatenate([z_ref, np.full((n_events, 1), _WALL)], axis=1).ravel()
        ref = _find_peaks(flat, 5.0, 0.5 * _WALL, 3.0)
        assert ref[0].size > 2 * n_events
        for got, want in zip((pos, heights, proms), ref, strict=True):
            assert np.array_equal(got, want)
        # the production path: one row buffer, z never formed where it need not be
        # and with the steps given
        one_buffer = _search_rows(y, t, dt.copy(), False, 0.008, *rest, np.empty((1, n)),
                                  *no_formula)
        for got, want in zip(one_buffer, (zsig, usable, pos, heights, proms), strict=True):
            assert np.array_equal(got, want, equal_nan=True)
    assert len(set(np.clip(np.rint(0.008 / dt), 1, None))) == 2


def test_sample_step_is_the_median_step():
    """sample_step equals NumPy's nanmedian of the steps: on sampled axes (the
    probed step holds the middle ranks), on axes whose steps the probe misses
    (two steps in equal shares, random steps) and with NaN, for odd and even
    counts of steps."""
    from idexdask.analysis.sample_step import sample_step

    rng = np.random.default_rng(12)
    n = 4001
    rows = [
        -400.0 + np.arange(n) * 0.001,  # a lab axis: a few rounding variants of one step
        np.cumsum(np.where(np.arange(n) % 2, 1.0, 3.0)),  # two steps, half each: mean of both
        np.cumsum(rng.uniform(0.5, 1.5, n)),  # every step different
        np.cumsum(np.where(rng.random(n) < 0.45, 2.0, 1.0)),  # the probe may land on 2
        -2.0 + np.arange(n) * DT,
    ]
    t = np.array(rows)
    t[4, 100:900] = np.nan  # steps touching NaN are left out
    for cols in (n, n - 1):  # an even and an odd number of steps
        tt = t[:, :cols]
        ref = np.nanmedian(np.diff(tt, axis=1), axis=1)
        assert np.array_equal(sample_step(tt), ref)


def test_quiet_quantised_baseline_gets_a_floored_detection_sigma():
    """Issue 19: a quiet quantised baseline (a constant with rare +-1 DN) has a
    smoothed MAD of 0; the detection sigma is then the smoothed samples' standard
    deviation, never below the quantisation noise of the boxcar mean,
    q / sqrt(12 w), and a real line is still found at its usual significance."""
    from idexdask.analysis.peaks import detect_peaks

    rng = np.random.default_rng(5)
    n = 3000
    t = -2.0 + np.arange(n)[None, :] * DT
    y = np.zeros((2, n))
    y[0, rng.choice(n, 400, replace=False)] = rng.choice([-1.0, 1.0], 400)  # 13 %
    y[1, :] = 0.0  # perfectly flat: the standard deviation is 0 too
    y[:, 2000:2004] += 12.0  # a 12 DN line, 4 samples wide
    settings = {"smooth_us": 0.008, "baseline_stop_us": 0.0, "height_sigma": 5.0,
                "prominence_sigma": 3.0, "min_distance_us": 0.02, "max_peaks_per_event": 64}
    noise = np.full(2, 1.0 / np.sqrt(12.0))  # the raw noise, floored
    cand, zsig = detect_peaks(y, np.repeat(t, 2, axis=0), noise, settings, quantum=1.0)
    width = 2  # 0.008 µs at 260 MSPS
    assert np.all(zsig >= 1.0 / np.sqrt(12.0 * width))
    assert zsig[1] == pytest.approx(1.0 / np.sqrt(12.0 * width))
    assert zsig[0] > zsig[1]  # the +-1 samples: a standard deviation above the floor
    for e in range(2):
        assert np.any((cand.event == e) & (np.abs(cand.index - 2001) <= 2))


def test_uniform_row_matches_scipy():
    from scipy.ndimage import uniform_filter1d

    from idexdask.analysis.row_smoothing import uniform_row

    rng = np.random.default_rng(4)
    for trial in range(300):
        n = int(rng.integers(3, 400))
        w = int(rng.integers(1, n // 4 + 2))
        x = rng.normal(0, 10.0 ** rng.integers(-3, 4), n)
        if trial % 3 == 0:
            x = np.round(x)
        for mode in ("nearest", "reflect"):
            if mode == "reflect":
                w = min(w, 5, n)
            out = np.empty(n)
            uniform_row(x, w, mode == "nearest", np.empty(n + w), out)
            assert np.array_equal(out, uniform_filter1d(x, w, mode=mode)), (n, w, mode)


def test_compiled_find_peaks_matches_scipy():
    from idexdask.analysis.peak_search import find_peaks as _find_peaks
    from idexdask.analysis.peaks import _WALL

    rng = np.random.default_rng(5)
    for trial in range(60):
        n = int(rng.integers(3, 3000))
        x = rng.normal(0, 2.0, n)
        if trial % 2:
            x = np.round(x)  # plateaus of equal samples
        x[rng.integers(0, n, n // 50)] += rng.uniform(3, 40, n // 50)
        x[rng.integers(0, n, max(n // 200, 1))] = _WALL
        if trial % 5 == 0:
            x[rng.integers(0, n, 5)] = np.nan
        x[-3:] = 9.0  # a plateau at the end
        for hmin, pmin in ((3.0, 2.0), (0.0, 0.0), (-1.0, 5.0)):
            ref, props = find_peaks(x, height=(hmin, 0.5 * _WALL), prominence=pmin)
            idx, heights, proms = _find_peaks(x, hmin, 0.5 * _WALL, pmin)
            assert np.array_equal(idx, ref)
            assert np.array_equal(heights, props["peak_heights"])
            assert np.array_equal(proms, props["prominences"])


def test_compiled_find_peaks_long_walks_match_scipy():
    """Prominence walks that cross many blocks at once (noise maxima on the
    decaying tails of strong lines walk to the next higher line or a wall) give
    SciPy's prominences, also where a NaN or a wall sits in a block walked over."""
    from idexdask.analysis.peak_search import find_peaks as _find_peaks
    from idexdask.analysis.peaks import _WALL

    rng = np.random.default_rng(8)
    for trial in range(6):
        n = 60_000 + int(rng.integers(0, 200))
        x = rng.normal(0, 1.0, n)
        if trial % 2:
            x = np.round(x * 2.0) / 2.0
        for start in rng.integers(0, n - 100, 12):
            decay = np.exp(-np.arange(n - start) / rng.uniform(50, 5000))
            x[start:] += rng.uniform(20, 400) * decay
        x[rng.integers(0, n, 3)] = _WALL
        if trial >= 3:
            x[rng.integers(0, n, 4)] = np.nan
        for hmin, pmin in ((5.0, 3.0), (0.0, 0.0)):
            ref, props = find_peaks(x, height=(hmin, 0.5 * _WALL), prominence=pmin)
            idx, heights, proms = _find_peaks(x, hmin, 0.5 * _WALL, pmin)
            assert np.array_equal(idx, ref)
            assert np.array_equal(heights, props["peak_heights"])
            assert np.array_equal(proms, props["prominences"])


def test_find_peaks_scaled_is_find_peaks_of_the_quotient():
    """Peaks of ``raw / div`` found on ``raw`` (block extremes divided once) are
    those of the formed quotient: quantised rows with plateaus, NaN, and
    divisors that round neighbouring values onto one quotient."""
    from idexdask.analysis.peak_search import find_peaks as _find_peaks
    from idexdask.analysis.peak_search import find_peaks_scaled as _find_peaks_scaled
    from idexdask.analysis.peaks import _WALL

    rng = np.random.default_rng(17)
    for trial in range(40):
        n = int(rng.integers(3, 20_000))
        raw = rng.normal(0, 2.0, n)
        if trial % 2:
            raw = np.round(raw * 4.0) / 4.0
        raw[rng.integers(0, n, max(n // 100, 1))] += rng.uniform(5, 80, max(n // 100, 1))
        if trial % 3 == 0:
            raw[rng.integers(0, n, 4)] = np.nan
        div = float(rng.choice([1.0, 0.3, 3.0 + 1e-15, 7.1e-3, 1e300]))
        with np.errstate(all="ignore"):
            x = raw / div
        for hmin, pmin in ((5.0, 3.0), (0.0, 0.0), (-1.0, 2.0)):
            got = _find_peaks_scaled(raw, div, hmin, 0.5 * _WALL, pmin)
            want = _find_peaks(x, hmin, 0.5 * _WALL, pmin)
            for g, w in zip(got, want, strict=True):
                assert np.array_equal(g, w), (trial, div, hmin)


@pytest.mark.numerics
def test_line_heights_equal_emg_on_the_grid():
    """The compiled line maximum is emg() on the same grids, within rounding,
    for sharp and wide tails, lines near the gamma bounds, and NaN fits.

    Both evaluate the same closed form on the same grid points; they differ in
    exp/erfcx (libm in the kernel, NumPy's CPU-dependent SIMD code in emg()),
    an ulp or two each, and a few correctly rounded operations: 8 ulp relative
    bounds it (observed: up to ~2).  The maximum is taken over the same points,
    so only its value, not its position, can move.
    """
    from idexdask.analysis.line_fits import _HEIGHT_GRID, line_heights
    from idexdask.analysis.lineshapes import emg

    rng = np.random.default_rng(11)
    n = 400
    area = rng.lognormal(0.0, 2.0, n)
    center = rng.uniform(0.5, 9.0, n)
    sigma = rng.uniform(4e-4, 0.02, n)
    gamma = np.exp(rng.uniform(np.log(2.0), np.log(1e4), n))
    area[:3], sigma[3], gamma[4] = np.nan, np.nan, 1e4  # failed fits; a line at the bound
    got = line_heights(area, center, sigma, gamma)

    grid = np.linspace(-1.0, 4.0, _HEIGHT_GRID)
    a, c, s, g = (v[:, None] for v in (area, center, sigma, gamma))
    with np.errstate(all="ignore"):
        tg = np.concatenate([c + grid * s, c + (grid + 1.0) / (3.3 * g)], axis=1)
        prof = emg(tg, a, c, s, g)
        expected = np.nanmax(np.where(np.isfinite(prof), prof, -np.inf), axis=1)
    expected = np.where(np.isfinite(expected), expected, np.nan)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=8 * np.finfo(float).eps, atol=0)
    assert np.isnan(got[:4]).all() and np.isfinite(got[4:]).all()


def _one_window_spectrum(line, n=2048, noise=2.0, seed=0):
    """One event: a quantised spectrum at 260 MSPS holding ``line(t)`` plus noise."""
    rng = np.random.default_rng(seed)
    t = -1.0 + np.arange(n) / 260.0
    y = np.round(line(t) + rng.normal(0, noise, n))
    return t[None, :], y[None, :]


def _fit_one(t, y, noise=2.0):
    from idexdask.analysis.line_fits import fit_lines
    from idexdask.analysis.peaks import detect_peaks
    from idexdask.analysis.products import load_analysis_settings

    settings = load_analysis_settings()[1]["peaks"]
    cand, _ = detect_peaks(y, t, np.array([noise]), settings)
    return cand, fit_lines(y, t, np.array([noise]), cand, settings)


def test_lines_without_tail_converge():
    """Lines without a tail (Gaussians 1-4 samples wide): the fit converges,
    either as an EMG with a tail under two samples or, where the EMG's tail
    collapsed, as a Gaussian that says so (issue 19: the Gaussian limit must be
    reachable; before, such fits ran gamma to its bound)."""
    from idexdask.analysis.line_status import LineShape, LineStatus
    from idexdask.analysis.lineshapes import gaussian

    shapes = []
    for seed in range(4):
        for width in (0.004, 0.008, 0.015):
            t, y = _one_window_spectrum(lambda t, w=width: gaussian(t, 2.0, 1.5, w), seed=seed)
            _, fits = _fit_one(t, y)
            k = int(np.argmin(np.abs(fits.center - 1.5)))
            assert fits.status[k] == LineStatus.CONVERGED, (seed, width)
            shapes.append(fits.shape[k])
            if fits.shape[k] == LineShape.GAUSSIAN:
                assert np.isnan(fits.gamma[k])
            else:  # a short tail: under two samples (3.85 ns each)
                assert 1.0 / fits.gamma[k] < 2 / 260.0
            # centre within two samples, width within 15 % (the EMG shares the
            # width between its core and its short tail)
            assert abs(fits.center[k] - 1.5) < 2 / 260.0
            assert abs(fits.sigma[k] / width - 1) < 0.15
    assert LineShape.GAUSSIAN in shapes  # the fallback is exercised


def test_spikes_and_weak_lines_get_their_own_status():
    """A single-sample spike is narrower than the sampling resolves: SPIKE;
    both it and a real line are kept (never dropped)."""
    from idexdask.analysis.line_status import SIGMA_MIN_SAMPLES, LineStatus
    from idexdask.analysis.lineshapes import emg

    t, y = _one_window_spectrum(lambda t: emg(t, 3.0, 2.0, 0.01, 80.0))
    i = int(np.argmin(np.abs(t[0] - 3.0)))
    y[0, i] += 300.0  # one sample, 150 sigma
    cand, fits = _fit_one(t, y)
    k_spike = int(np.argmin(np.abs(fits.center - t[0, i])))
    k_line = int(np.argmin(np.abs(fits.center - 2.0)))
    assert fits.status[k_spike] == LineStatus.SPIKE
    assert fits.sigma[k_spike] <= SIGMA_MIN_SAMPLES / 260.0 * 1.001
    assert fits.status[k_line] == LineStatus.CONVERGED
    assert cand.size == fits.status.size


def test_formula_times_search_equals_materialised_times():
    """detect_peaks on a formula time axis (times formed where the search reads
    them, a row written only for the rare paths) finds the peaks, sigmas and
    steps it finds on the materialised axis: the same times (formula_row's
    product, sum and product, correctly rounded), the same counts.  Rows: a lab
    axis, one whose count ends early (NaN times), one without a pre-trigger
    sample (the sigma from the first samples), and one with NaN data (the
    general smoothing path)."""
    from idexdask.analysis.signal_quality.dataset import FormulaTimes

    rng = np.random.default_rng(21)
    n, n_events = 40_000, 4
    start = np.array([-4e-5, -4e-5, 1e-6, -3e-5])
    step = np.array([1e-9, 1e-9, 1e-9, 2e-9])
    count = np.array([n, n - 5000, n, n])
    axis = FormulaTimes(start=start, step=step, count=count, scale=1e6, n_samples=n)
    times = np.asarray(axis)  # the materialised axis (FormulaTimes.columns)
    y = np.round(rng.normal(0.0, 3.0, (n_events, n))) * 0.01
    y[:, 36_000:36_006] += 2.0
    y[:, 38_000:38_003] += rng.uniform(0.3, 0.8, (n_events, 1))
    y[3, ::7] = np.nan
    settings = {"smooth_us": 0.008, "baseline_stop_us": 0.0, "height_sigma": 5.0,
                "prominence_sigma": 3.0, "min_distance_us": 0.01, "max_peaks_per_event": 50}
    noise = np.full(n_events, 0.03)
    got_step, want_step = np.empty(n_events), np.empty(n_events)
    got, got_sigma = detect_peaks(y, axis, noise, settings, quantum=0.01, step_out=got_step)
    want, want_sigma = detect_peaks(y, times, noise, settings, quantum=0.01, step_out=want_step)
    assert got.size >= 2 * n_events
    for field in ("event", "index", "prominence"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field
    assert np.array_equal(got_sigma, want_sigma)
    assert np.array_equal(got_step, want_step)
