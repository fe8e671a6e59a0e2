"""Issue 19 on the real files: honest noise floors, line fits, lab calibration."""

from __future__ import annotations

import numpy as np
import pytest

import idexdask
from idexdask.analysis.impact import ImpactStatus
from idexdask.workflow import analyze

GROUND_TEST = ("non_compressed_2023_102_14_22_26.pkts", "compressed_2023_102_14_24_55.pkts")


@pytest.mark.parametrize("name", GROUND_TEST)
def test_quiet_ground_test_channels_are_no_signal(name, l0_dir):
    """The 2023-04-12 target and ion-grid channels are pure noise (3 DN peak to
    peak, quantised): a positive noise and `no_signal`, never `invalid_input`."""
    out = analyze(idexdask.read_l0(l0_dir / name))
    for ch in ("target_high", "target_low", "ion_grid"):
        assert np.all(out[f"{ch}_noise"].values > 0), ch
        assert np.all(out[f"{ch}_fit_status"].values == ImpactStatus.NO_SIGNAL), ch


# ----------------------------------------------------------------- line fits

FLIGHT = "imap_idex_l0_raw_20231218_v001.pkts"


@pytest.fixture(scope="module")
def analysed_real(l0_dir, trc_dir):
    """The real files with ion lines, analysed with the default configuration."""
    return {
        "flight": analyze(idexdask.read_l0(l0_dir / FLIGHT)),
        "lab": analyze(idexdask.read_trc(trc_dir)),
    }


# Share of the lines >= 10 noise sigma that converge (bench/line_quality.py,
# docs/quality.md).  Issue 19 asks for 90 %; the scope captures reach it
# (23 of 23).  The flight file reaches 41 of 51 (80 %): the rest are detections
# on the long tails of saturated lines near 6 µs, whose single-EMG profile is
# shorter than the measured tail (their centre runs to the window edge,
# HIT_BOUND); the floor below guards what is reached, the gap is reported.
CONVERGED_SHARE = {"flight": 0.75, "lab": 0.90}


@pytest.mark.parametrize("which", ["flight", "lab"])
def test_significant_lines_converge(analysed_real, which):
    from bench.line_quality import significant_lines

    out = analysed_real[which]
    sig, dt = significant_lines(out)
    st = out["peak_status"].values
    conv = sig & (st == 0)
    assert sig.sum() >= 20
    assert conv.sum() / sig.sum() >= CONVERGED_SHARE[which]
    # converged significant lines are wider than one sample: ion lines, not spikes
    assert np.all(out["peak_sigma"].values[conv] > dt[conv])
    # reduced chi-square: centred near 1 (noise weights right, model adequate
    # for most lines); a few strong lines sit above (their shape is richer than
    # an EMG), none far below (which would mean an overestimated noise)
    redchi = out["peak_redchi"].values[conv]
    assert 0.7 <= np.median(redchi) <= 2.5
    assert np.percentile(redchi, 10) >= 0.5


@pytest.mark.parametrize("which", ["flight", "lab"])
def test_local_maxima_have_converged_lines(analysed_real, which):
    """Local maxima >= 10 sigma of the raw TOF trace (outside saturated runs)
    have a converged line whose maximum lies within 3 samples."""
    from bench.line_quality import unmatched_maxima

    total, missed, where = unmatched_maxima(analysed_real[which])
    assert total >= 15
    # flight: 3 of 19 are left (two on broad Gaussian bumps 4 samples from their
    # line's maximum, one beside a HIT_BOUND tail line); lab: 4 of 28
    assert missed / total <= 0.2, where


# ------------------------------------------------------- campaign calibration


def check_lab_calibration(out) -> None:
    """All three peridot impacts calibrated with one shape, shifts within tens of ns."""
    import json

    assert list(out["mass_calibration_status"].values) == ["calibrated"] * 3
    assert list(out["mass_calibration_method"].values) == ["campaign"] * 3
    coeffs = out["mass_calibration"].values
    # one shared shape: identical higher terms, per-event shift only
    np.testing.assert_array_equal(coeffs[1:, 1:], coeffs[:1, 1:].repeat(2, axis=0))
    shifts = coeffs[:, 0]
    assert np.ptp(shifts) < 0.03  # µs: the trigger jitter is ~10 ns
    groups = json.loads(out["mass_calibration"].attrs["campaign_calibration"])
    (summary,) = groups.values()
    assert summary["calibrated"] and summary["events"] == [0, 1, 2]
    # the stretch of docs/lab-captures.md's joint scan, 0.515 µs/sqrt(u)
    assert abs(summary["stretch_us_per_sqrt_u"] - 0.515) < 0.005
    assert summary["rms_residual_ns"] < 6.0
    species = [set(out["peak_species"].values[out["peak_event"].values == e]) for e in range(3)]
    for found in species:
        assert {"H", "Na"} <= found
    # Mg and Si: in impacts 3 and 6; impact 1 shows no line above the noise at
    # their times (docs/lab-captures.md)
    for found in species[1:]:
        assert "24Mg" in found
    assert "28Si" in species[2]


def test_lab_captures_calibrated_by_campaign(analysed_real):
    check_lab_calibration(analysed_real["lab"])
