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
    """Every real file with science events, analysed with the default configuration
    (the 2024-12-06 and 2025-01-08 files hold housekeeping only)."""
    out = {"flight": analyze(idexdask.read_l0(l0_dir / FLIGHT)),
           "lab": analyze(idexdask.read_trc(trc_dir))}
    for name in GROUND_TEST:
        out[name] = analyze(idexdask.read_l0(l0_dir / name))
    return out


# Share of the lines >= 10 noise sigma that converge (bench/line_quality.py,
# docs/quality.md): issue 19 asks for 90 % on every file.
CONVERGED_SHARE = 0.90


@pytest.mark.parametrize("which", ["flight", "lab"])
def test_significant_lines_converge(analysed_real, which):
    from bench.line_quality import significant_lines
    from idexdask.analysis.line_status import LineStatus

    out = analysed_real[which]
    sig, dt = significant_lines(out)
    st = out["peak_status"].values
    sig &= st != LineStatus.RINGING  # not ion lines (test_ringing_is_bipolar)
    conv = sig & (st == 0)
    assert sig.sum() >= 20
    assert conv.sum() / sig.sum() >= CONVERGED_SHARE
    # converged significant lines are wider than one sample: ion lines, not
    # spikes.  A line's width is its standard deviation, sqrt(sigma**2 + tau**2)
    # for an EMG (tau = 1/gamma; a Gaussian's is sigma): a line with a sharp
    # rise and a long tail (flight event 9, 0.11 µs: Gaussian sigma 0.97
    # samples, tail 7.5 samples) is broad.  The Gaussian core itself stays above
    # half a sample (spikes end at SIGMA_MIN_SAMPLES, 0.3).
    sigma = out["peak_sigma"].values[conv]
    tau = np.nan_to_num(1.0 / out["peak_gamma"].values[conv], nan=0.0)
    assert np.all(np.hypot(sigma, tau) > dt[conv])
    assert np.all(sigma > 0.5 * dt[conv])
    # reduced chi-square: centred near 1 (noise weights right, model adequate
    # for most lines); a few strong lines sit above (their shape is richer than
    # an EMG), none far below (which would mean an overestimated noise)
    redchi = out["peak_redchi"].values[conv]
    assert 0.7 <= np.median(redchi) <= 2.5
    assert np.percentile(redchi, 10) >= 0.5


@pytest.mark.parametrize("which", ["flight", "lab", *GROUND_TEST])
def test_ringing_is_bipolar(analysed_real, which):
    """Detections classified `ringing` sit beside a negative excursion >= 10
    noise sigmas deep in the raw TOF_High trace (ion current is unipolar), and
    every >= 10 sigma detection of a file is either such ringing or a line that
    converged in >= 90 % of cases: on the 2023-04-12 ground-test files (noise
    captures, no ion lines) the >= 10 sigma detections are the +-30 DN
    oscillation near -0.9 µs of event 1, all ringing."""
    from bench.line_quality import raw_tof, significant_lines
    from idexdask.analysis.line_status import LineStatus

    out = analysed_real[which]
    y, t, noise, _ = raw_tof(out)
    st = out["peak_status"].values
    ring = np.flatnonzero(st == LineStatus.RINGING)
    for k in ring:
        e = int(out["peak_event"].values[k])
        c = out["peak_center"].values[k]
        near = np.abs(t[e] - c) <= 0.07  # window_left_us plus the centre's offset
        assert np.nanmin(y[e][near]) <= -9.5 * noise[e], (which, k)  # quantised trough
    sig, _ = significant_lines(out)
    lines = sig & (st != LineStatus.RINGING)
    if which in GROUND_TEST:
        assert sig.sum() >= 2 and lines.sum() == 0
    else:
        assert (sig & (st == 0)).sum() >= CONVERGED_SHARE * lines.sum()


@pytest.mark.parametrize("which", ["flight", "lab"])
def test_local_maxima_have_converged_lines(analysed_real, which):
    """Local maxima >= 10 sigma of the raw TOF trace (outside saturated runs)
    have a converged line whose maximum lies within 3 samples.

    Ringing maxima are counted apart: a maximum with a negative excursion of
    >= 10 sigma and half its height within 60 ns (the `ringing` criterion of
    the line statuses, on the raw trace) is a lobe of an electrical
    oscillation, not an ion line; it needs no converged line, but a detection
    classified `ringing` within those 60 ns.  Lab: one, impact 6 at 0.073 µs
    (beside the -0.25 V undershoot after its 2.6 V trigger line).

    Issue 19 asks for every ion-line maximum; not met (docs/quality.md, with
    the reason for each, from `bench/line_quality.py --maxima` and the
    residual test of `analysis.residual_lines`, which adds a line where the
    fitted lines leave a maximum unexplained at the detection's threshold and
    none of these passes).  Flight, 2 of
    19: event 0 at 5.950 µs, the top of a broad line where the data prefer a
    weak narrow second line (F-test p = 0.003, below the detection's threshold
    after its smoothing); event 10 at
    0.662 µs, a bump on the tail of its saturated line, whose blend fit does
    not converge.  Lab (1 ns samples, lines 8-15 samples wide), 3 of 27: flat
    tops of broad lines 3.3-6.5 samples from their fitted modes, where the raw
    maximum lands that far in 13-62 % of draws of the event's own noise, two
    of them with a narrow second line the detection does not separate.  The
    bound is what is reached, plus one flight line whose joint fit has two
    minima: event 8's maximum at 6.254 µs is matched with this machine's
    NumPy/SciPy and unmatched when the blend's start values or data differ in
    the last bits (NumPy 2.5 / SciPy 1.18 in `make test-newest`, or a 1e-14
    relative perturbation): then the fit stalls on its way and the weak line
    ends as a broad pedestal; a tolerance of one such line, not a loosened
    criterion.
    """
    from bench.line_quality import unmatched_maxima
    from idexdask.analysis.line_status import LineStatus

    out = analysed_real[which]
    check = unmatched_maxima(out)
    assert check.total >= 15
    assert len(check.unmatched) <= {"flight": 3, "lab": 3}[which], check.unmatched
    assert len(check.ringing) == {"flight": 0, "lab": 1}[which], check.ringing
    ring = out["peak_status"].values == LineStatus.RINGING
    for e, t in check.ringing:
        near = ring & (out["peak_event"].values == e)
        assert np.any(np.abs(out["peak_center"].values[near] - t) <= 0.06), (e, t)


@pytest.mark.parametrize("which", ["flight", "lab"])
def test_residual_lines_are_supported_lines(analysed_real, l0_dir, trc_dir, which):
    """The lines the residual test adds (analysis.peaks.residual_lines; the
    difference to an analysis without it) and the lines refitted with them are
    converged, significant lines wider than half a sample; every added line is
    a converged line more; events without an added line keep their lines
    exactly.  On the flight file the test adds lines at two shoulders on
    strong lines' tails (docs/quality.md); on the scope captures none (their
    unexplained maxima leave residuals below the detection's threshold)."""
    from bench.line_quality import raw_tof

    out = analysed_real[which]
    ds = idexdask.read_l0(l0_dir / FLIGHT) if which == "flight" else idexdask.read_trc(trc_dir)
    without = analyze(ds, {"analysis": {"peaks": {"residual_lines": False}}})
    ev, ev0 = out["peak_event"].values, without["peak_event"].values
    c, c0 = out["peak_center"].values, without["peak_center"].values
    added = np.array([not np.any((ev0 == e) & (c0 == x)) for e, x in zip(ev, c, strict=True)])
    assert out.sizes["peak"] >= without.sizes["peak"]
    new_lines = np.flatnonzero(added)
    grown = np.bincount(ev, minlength=out.sizes["epoch"]) - np.bincount(
        ev0, minlength=out.sizes["epoch"])
    assert grown.sum() == out.sizes["peak"] - without.sizes["peak"]
    if which == "lab":
        assert grown.sum() == 0 and new_lines.size == 0
        return
    assert grown.sum() >= 1
    assert np.all(grown[ev[new_lines]] > 0)  # lines change only where one is added
    y, t, noise, _ = raw_tof(out)
    st = out["peak_status"].values
    for k in new_lines:
        e = int(ev[k])
        assert st[k] == 0, k
        dt = float(np.nanmedian(np.diff(t[e])))
        assert out["peak_sigma"].values[k] > 0.5 * dt
        assert out["peak_height"].values[k] >= 3.0 * noise[e]
    st0 = without["peak_status"].values
    assert (st == 0).sum() >= (st0 == 0).sum() + grown.sum()
    # events with no line added keep their lines exactly
    for e in np.flatnonzero(grown == 0):
        np.testing.assert_array_equal(np.sort(c[ev == e]), np.sort(c0[ev0 == e]))


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
    # Mg and Si in the blind line list: Mg in impacts 3 and 6, a weak 28Si line
    # in 6; the targeted search (test_lab_targeted_search) says what the data
    # hold at their calibrated times in every impact (docs/lab-captures.md)
    for found in species[1:]:
        assert "24Mg" in found
    assert "28Si" in species[2]


def test_lab_captures_calibrated_by_campaign(analysed_real):
    check_lab_calibration(analysed_real["lab"])


def test_lab_species_within_calibration_tolerance(analysed_real):
    """A line is named only where its mass lies within the calibration's match
    tolerance (10 ns for lab_peridot) of the species' mass: the 1.216 u and
    1.280 u lines after the trigger line are not H+ (0.21-0.27 u off, 17-23 %),
    and lines before the impact (t < t0) have no mass (NaN, not 0)."""
    from idexdask.calibration.ions import ion_mass

    out = analysed_real["lab"]
    m = out["peak_mass"].values
    tol = out["peak_mass_tolerance"].values
    sp = out["peak_species"].values
    named = sp != ""
    assert named.sum() >= 15
    ref = np.array([ion_mass(s + "+") for s in sp[named]])
    assert np.all(np.abs(m[named] - ref) <= tol[named])
    # ~0.045 u at 1 u, ~0.2 u at 27 u (2 sqrt(m) / stretch * 10 ns)
    assert np.all((tol[named] > 0.03) & (tol[named] < 0.25))
    early = (m > 1.15) & (m < 1.35)
    assert early.sum() >= 3 and not np.any(sp[early] == "H")
    t0 = out["mass_calibration"].values[out["peak_event"].values, 0]
    before = out["peak_center"].values < t0
    assert before.sum() >= 1 and np.all(np.isnan(m[before]))


def test_lab_targeted_search(analysed_real):
    """Issue 19 asks for Mg, Na and Si in each peridot impact.  The targeted
    search of `analyze` (products targeted_*, composition.targeted: matched
    filter at the calibrated times, its uncertainty measured at empty
    positions, 3 sigma threshold from composition.targeted_min_significance,
    docs/lab-captures.md): Na in all three, Mg firm (>= 5 sigma) in impacts 3
    and 6 and at the threshold in impact 1 (3.0 sigma: the flag says detected,
    the docs say why it is not claimed), Si below 3 sigma in all three and
    consistent with nothing (|significance| < 2) in impacts 1 and 3.  The data
    do not hold the issue's expectation; this test pins what they hold."""
    out = analysed_real["lab"]
    species = list(out["targeted_species"].values)
    assert {"Na", "24Mg", "28Si"} <= set(species)
    sig = out["targeted_significance"].values
    det = out["targeted_detected"].values
    na, mg, si = (sig[:, species.index(s)] for s in ("Na", "24Mg", "28Si"))
    assert np.all(na >= 20.0)
    assert np.all(mg[1:] >= 5.0) and 2.5 < mg[0] < 3.5
    assert np.all(si < 3.0) and np.all(np.abs(si[:2]) < 2.0)
    threshold = out["targeted_detected"].attrs["min_significance"]
    np.testing.assert_array_equal(det, sig >= threshold)
    assert det[:, species.index("Na")].all() and not det[:, species.index("28Si")].any()
    # the measured uncertainty is never below the white-noise one: its width is
    # the event's line width there (7-13 ns on the scope captures)
    err = out["targeted_area_err"].values
    area = out["targeted_area"].values
    assert np.all(np.isfinite(err) & (err > 0)) and np.all(np.isfinite(area))
    np.testing.assert_allclose(sig, area / err)
    width = out["targeted_width"].values
    assert np.all((width > 0.006) & (width < 0.013))
    # the calibrated times are those of each event's mass calibration
    from idexdask.calibration.mass_axes import time_axis

    t = time_axis(out["mass_calibration"].values, np.broadcast_to(
        out["targeted_mass"].values, sig.shape))
    np.testing.assert_allclose(out["targeted_time"].values, t, rtol=0, atol=1e-12)


def test_flight_targeted_search_is_empty_without_calibration(analysed_real):
    """No flight event of the 2023-12-18 file calibrates (docs/idex-calibration.md):
    the targeted search has no time to look at, so NaN and never detected."""
    out = analysed_real["flight"]
    assert out["targeted_significance"].shape == (14, out.sizes["targeted_species"])
    assert np.all(np.isnan(out["targeted_significance"].values))
    assert not out["targeted_detected"].values.any()
