"""Peak finding, TOF gain merge and batched EMG line fits on simulated events."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from idexdask.analysis import analyze
from idexdask.analysis.peaks import detect_peaks
from idexdask.simulate import simulate_events

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
    dg = (out.peak_gamma.values[j] / tr.line_gamma.values[i] - 1)[good]
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
