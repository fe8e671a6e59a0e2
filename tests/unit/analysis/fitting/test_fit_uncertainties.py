"""The fits' reported uncertainties are honest: errors against the simulator's truth,
divided by the reported 1-sigma, scatter like a unit Gaussian.

This is what makes the accuracy table in docs/analysis.md an information-limit
statement: where the pulls are N(0, 1), the p90 error is ~1.64 sigma and no
unbiased estimator does better on the same data.
"""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.analysis.robust import MAD_TO_SIGMA
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

DT_US = 1.0 / 260.0


@pytest.fixture(scope="module")
def fitted():
    sim = simulate_events(160, seed=21)
    out = analyze(sim.events, {"analysis": {"calibration": {"enabled": False}}})
    return sim, out


def _isolated_line_pulls(sim, out, min_snr: float) -> tuple[np.ndarray, np.ndarray]:
    truth = sim.truth
    line_event, line_center = truth.line_event.values, truth.line_center.values
    peak_event, peak_center = out.peak_event.values, out.peak_center.values
    raw_high = sim.events.TOF_High.values
    times = sim.events.time_high_sample_rate.values
    centre_pulls, area_pulls = [], []
    for i in range(line_event.size):
        same_event = (line_event == line_event[i]) & (np.arange(line_event.size) != i)
        if np.any(np.abs(line_center[same_event] - line_center[i]) < 0.3):
            continue  # not isolated
        candidates = np.nonzero(peak_event == line_event[i])[0]
        if candidates.size == 0:
            continue
        j = candidates[np.argmin(np.abs(peak_center[candidates] - line_center[i]))]
        if abs(peak_center[j] - line_center[i]) > 0.02 or out.peak_status.values[j] > 2:
            continue
        snr = out.peak_height.values[j] / truth.TOF_High_noise.values[line_event[i]]
        window = (times[line_event[i]] >= out.peak_window_start.values[j]) & (
            times[line_event[i]] <= out.peak_window_stop.values[j]
        )
        window_raw = raw_high[line_event[i]][window]
        if snr < min_snr or np.any((window_raw == 0) | (window_raw == 1023)):
            continue  # low SNR, or measured in a lower gain
        centre_pulls.append((peak_center[j] - line_center[i]) / out.peak_center_err.values[j])
        area_pulls.append(
            (out.peak_area.values[j] - truth.line_area.values[i]) / out.peak_area_err.values[j]
        )
    return np.asarray(centre_pulls), np.asarray(area_pulls)


def _assert_unit_gaussian(pulls: np.ndarray, what: str) -> None:
    pulls = pulls[np.isfinite(pulls)]
    assert pulls.size >= 60, f"{what}: only {pulls.size} pulls"
    # robust width (1.4826 MAD) and the p90 of |pull| (1.64 for a unit Gaussian)
    width = MAD_TO_SIGMA * np.median(np.abs(pulls - np.median(pulls)))
    p90 = np.percentile(np.abs(pulls), 90)
    assert 0.75 < width < 1.3, f"{what}: pull width {width:.2f}"
    assert 1.2 < p90 < 2.2, f"{what}: |pull| p90 {p90:.2f}"
    assert abs(np.median(pulls)) < 0.25, f"{what}: biased, median pull {np.median(pulls):.2f}"


def test_line_centre_and_area_uncertainties_are_honest(fitted):
    sim, out = fitted
    centre, area = _isolated_line_pulls(sim, out, min_snr=20.0)
    _assert_unit_gaussian(centre, "line centre")
    _assert_unit_gaussian(area, "line area")


def test_impact_charge_uncertainties_are_honest(fitted):
    sim, out = fitted
    pulls = []
    for channel in ("Target_High", "Target_Low", "Ion_Grid"):
        key = channel.lower()
        amplitude = sim.truth[f"{key}_impact_amplitude"].values
        snr = amplitude / sim.truth[f"{channel}_noise"].values
        fit = out[f"{key}_fit_parameters"].values[:, 2]
        sigma = out[f"{key}_fit_parameter_errors"].values[:, 2]
        ok = (out[f"{key}_fit_status"].values <= 2) & (snr >= 20) & (sigma > 0)
        pulls.append((np.abs(fit[ok]) - amplitude[ok]) / sigma[ok])
    _assert_unit_gaussian(np.concatenate(pulls), "impact amplitude")
