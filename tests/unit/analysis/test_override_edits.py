"""Override rows `shape`, `species`, `calibrate`: applied by analyze, and undone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idexdask.analysis.overrides import (
    LINE_SHAPES,
    make_overrides,
    override_digest,
    override_records,
    overrides_for,
)
from idexdask.calibration.ions import ion_mass
from idexdask.errors import AnalysisError
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

EVENT = 2


@pytest.fixture(scope="module")
def events():
    return simulate_events(6, seed=3).events


@pytest.fixture(scope="module")
def base(events):
    return analyze(events)


def _lines(ds, e=EVENT):
    return np.nonzero(ds.peak_event.values == e)[0]


def _row(events, action, center, **extra):
    return {"epoch": int(events.epoch.values[EVENT]), "action": action, "center_us": center,
            **extra}


def _strongest(base):
    mine = _lines(base)
    return int(mine[np.argmax(base.peak_area.values[mine])])


def _undone(table, index=-1):
    records = override_records(table)
    records[index]["undone"] = "2026-12-07T04:00:00+00:00"
    return make_overrides(records)


def test_defaults_without_overrides(base):
    # the automatic fits: EMG, or a Gaussian where the fitter falls back to one
    assert set(base.peak_shape.values) <= {0, 1} and LINE_SHAPES[:2] == ("emg", "gaussian")
    assert base.peak_shape.attrs["flag_meanings"].split() == list(LINE_SHAPES)
    assert set(base.peak_shape_parameters.values) == {""}
    assert not base.peak_species_manual.values.any()
    assert "manual" not in set(base.mass_calibration_method.values)


@pytest.mark.parametrize("shape", ["gaussian", "double_emg", "hyper_emg", "voigt"])
def test_shape_refits_one_line(events, base, shape):
    j = _strongest(base)
    center = float(base.peak_center.values[j])
    table = make_overrides([_row(events, "shape", center + 0.01, shape=shape)])
    out = analyze(events, overrides=table)
    assert out.sizes["peak"] == base.sizes["peak"]
    assert LINE_SHAPES[out.peak_shape.values[j]] == shape and out.peak_manual.values[j]
    params = json.loads(out.peak_shape_parameters.values[j])
    expected = {"gaussian": set(), "voigt": {"gamma"},
                "double_emg": {"gamma1", "gamma2", "fraction"},
                "hyper_emg": {"gamma_left", "gamma_right", "fraction_left"}}[shape]
    assert set(params) == expected
    # same window, a fit that converged on the same line
    assert out.peak_window_start.values[j] == base.peak_window_start.values[j]
    assert out.peak_status.values[j] <= 1
    assert abs(out.peak_center.values[j] - center) < 3 * base.peak_sigma.values[j]
    # the simulated lines are EMGs: any area-normalised shape finds their area
    # to within the tail the shape cannot follow (20 %)
    np.testing.assert_allclose(out.peak_area.values[j], base.peak_area.values[j], rtol=0.2)
    if shape == "gaussian":
        assert np.isnan(out.peak_gamma.values[j])
        # the EMG nests the Gaussian (gamma -> inf): its chi-square cannot be larger
        assert out.peak_chisq.values[j] >= base.peak_chisq.values[j] * (1 - 1e-6)
    if shape in ("double_emg", "hyper_emg"):
        # the two-tail shapes nest the EMG: no worse a fit (optimiser tolerance 1 %)
        assert out.peak_chisq.values[j] <= base.peak_chisq.values[j] * 1.01
    others = np.arange(base.sizes["peak"]) != j
    np.testing.assert_array_equal(out.peak_center.values[others],
                                  base.peak_center.values[others])
    np.testing.assert_array_equal(out.peak_shape.values[others], base.peak_shape.values[others])


def test_shape_of_the_automatic_fit_keeps_it(events, base):
    j = _strongest(base)
    assert base.peak_shape.values[j] == LINE_SHAPES.index("emg")
    table = make_overrides([_row(events, "shape", float(base.peak_center.values[j]),
                                 shape="emg")])
    out = analyze(events, overrides=table)
    np.testing.assert_array_equal(out.peak_area.values, base.peak_area.values)
    assert out.peak_manual.values[j] and out.peak_manual.values.sum() == 1


def test_shape_undo_restores_the_automatic_fit(events, base):
    j = _strongest(base)
    table = make_overrides([_row(events, "shape", float(base.peak_center.values[j]),
                                 shape="voigt")])
    out = analyze(events, overrides=_undone(table))
    np.testing.assert_array_equal(out.peak_center.values, base.peak_center.values)
    np.testing.assert_array_equal(out.peak_area.values, base.peak_area.values)
    assert not out.peak_manual.values.any()
    assert out.attrs["analysis_overrides"] == 0


def test_shape_row_far_from_any_line_is_ignored(events, base):
    table = make_overrides([_row(events, "shape", 0.5, shape="gaussian")])
    out = analyze(events, overrides=table)
    np.testing.assert_array_equal(out.peak_center.values, base.peak_center.values)
    np.testing.assert_array_equal(out.peak_shape.values, base.peak_shape.values)


def test_species_by_hand_replaces_the_automatic_assignment(events, base):
    mine = _lines(base)
    na = mine[base.peak_species.values[mine] == "Na"]
    assert na.size == 1
    j = int(na[0])
    elements = list(base.element.values)
    table = make_overrides([_row(events, "species", float(base.peak_center.values[j]),
                                 species="Mg")])
    out = analyze(events, overrides=table)
    assert out.peak_species_manual.values[j] and out.peak_species_manual.values.sum() == 1
    assert out.peak_species.values[j] == "24Mg"  # Mg names its main line
    assert out.peak_element.values[j] == "Mg" and not out.peak_ambiguous.values[j]
    before = base.element_area.values[EVENT, elements.index("Mg")]
    after = out.element_area.values[EVENT, elements.index("Mg")]
    assert after > np.nan_to_num(before)  # the Na line's area now counts for Mg
    others = np.arange(base.sizes["peak"]) != j
    np.testing.assert_array_equal(out.peak_species.values[others & (base.peak_event.values
                                                                    != EVENT)],
                                  base.peak_species.values[others & (base.peak_event.values
                                                                     != EVENT)])
    # "none" unassigns; undo restores the automatic assignment
    none = make_overrides([_row(events, "species", float(base.peak_center.values[j]),
                                species="none")])
    out = analyze(events, overrides=none)
    assert out.peak_species.values[j] == "" and out.peak_element.values[j] == ""
    assert out.peak_species_manual.values[j]
    out = analyze(events, overrides=_undone(none))
    np.testing.assert_array_equal(out.peak_species.values, base.peak_species.values)
    np.testing.assert_array_equal(out.composition.values, base.composition.values)


def test_species_not_in_library_is_kept_but_not_quantified(events, base):
    j = _strongest(base)
    table = make_overrides([_row(events, "species", float(base.peak_center.values[j]),
                                 species="Xe")])
    out = analyze(events, overrides=table)
    assert out.peak_species.values[j] == "Xe" and out.peak_element.values[j] == ""


def test_manual_calibration_from_assigned_lines(events, base):
    mine = _lines(base)
    named = [(int(j), str(base.peak_species.values[j])) for j in mine
             if base.peak_species.values[j] and base.peak_status.values[j] == 0]
    assert len(named) >= 4
    # calibrate from all but an inner line; that line's mass is then a prediction
    left_out = named.pop(1)
    rows = [_row(events, "species", float(base.peak_center.values[j]), species=label)
            for j, label in named]
    rows.append({"epoch": int(events.epoch.values[EVENT]), "action": "calibrate",
                 "target": "tof"})
    table = make_overrides(rows)
    out = analyze(events, overrides=table)
    assert out.mass_calibration_method.values[EVENT] == "manual"
    assert out.mass_calibration_status.values[EVENT] == "calibrated"
    assert out.mass_calibration_reason.values[EVENT] == "none"
    assert list(out.mass_calibration_method.values).count("manual") == 1
    masses = np.array([ion_mass(label) for _, label in named])
    got = out.peak_mass.values[[j for j, _ in named]]
    # a least-squares fit through the assigned lines: the residuals of simulated
    # lines with ~1e-3 µs centre errors are well under 0.05 u
    np.testing.assert_allclose(got, masses, atol=0.05)
    # the line left out lands on its own mass (interpolated by the fit): 0.1 u
    assert abs(out.peak_mass.values[left_out[0]] - ion_mass(left_out[1])) < 0.1
    # other events keep the bootstrap calibration
    keep = np.arange(out.sizes["epoch"]) != EVENT
    np.testing.assert_array_equal(out.mass_calibration.values[keep],
                                  base.mass_calibration.values[keep])
    # one assigned line cannot make a calibration: uncalibrated, and why
    one = make_overrides([rows[0], rows[-1]])
    out = analyze(events, overrides=one)
    assert out.mass_calibration_status.values[EVENT] == "uncalibrated"
    assert out.mass_calibration_reason.values[EVENT] == "manual_too_few_lines"
    assert np.isnan(out.mass_calibration.values[EVENT]).all()
    assert np.isnan(out.peak_mass.values[mine]).all()
    # undoing the calibrate row brings the bootstrap back
    out = analyze(events, overrides=_undone(table))
    np.testing.assert_array_equal(out.mass_calibration.values, base.mass_calibration.values)
    np.testing.assert_array_equal(out.mass_calibration_method.values,
                                  base.mass_calibration_method.values)


def test_new_rows_validated():
    for bad in (
        {"epoch": 1, "action": "shape", "center_us": 1.0, "shape": "lorentz"},
        {"epoch": 1, "action": "shape", "shape": "voigt"},
        {"epoch": 1, "action": "species", "center_us": 1.0, "species": "magnesium!"},
        {"epoch": 1, "action": "calibrate", "target": "Target_Low"},
        {"epoch": 1, "action": "remove", "center_us": 1.0, "tolerance_us": -1},
    ):
        with pytest.raises(AnalysisError):
            make_overrides([bad])
    with pytest.raises(AnalysisError, match="twice"):
        make_overrides([{"id": "a", "epoch": 1, "action": "calibrate"}] * 2)


def test_digest_follows_the_rows_in_force():
    rows = [
        {"id": "a", "epoch": 1, "action": "add", "center_us": 2.0, "note": "x"},
        {"id": "b", "epoch": 2, "action": "calibrate"},
    ]
    table = make_overrides(rows)
    d1 = override_digest(table, [1])
    assert d1 and override_digest(table, [3]) == ""
    # descriptive columns do not change the products, so not the digest
    relabelled = make_overrides([{**rows[0], "id": "c", "note": "y", "author": "z"}, rows[1]])
    assert override_digest(relabelled, [1]) == d1
    moved = make_overrides([{**rows[0], "center_us": 2.5}, rows[1]])
    assert override_digest(moved, [1]) != d1
    assert override_digest(_undone(table, 0), [1]) == ""
    assert list(overrides_for(table, [2, 5])["override"].values) == ["b"]
    assert overrides_for(table, [7]).sizes["override"] == 0


def test_manual_calibrations_recover_a_known_scale():
    """Lines placed by a known t = t0 + a sqrt(m): the fit gives the scale back."""
    from idexdask.calibration import load_calibration_settings
    from idexdask.calibration.manual import manual_calibrations

    species = np.array(["Na", "K", "56Fe", "none", "", "12C"])
    masses = np.array([ion_mass(s) if s not in ("", "none") else 30.0 for s in species])
    t0, a = -1.5, 1.45  # µs, µs/sqrt(u): inside the flight preset's ranges
    centers = t0 + a * np.sqrt(masses)
    event = np.array([0, 0, 0, 0, 0, 1])
    settings = load_calibration_settings("flight")
    cal = manual_calibrations(event, centers, species, [0, 1], settings, order=3)
    assert cal.calibrated.tolist() == [True, False]
    assert cal.reason.tolist() == ["none", "manual_too_few_lines"]
    assert cal.n_lines.tolist() == [3, 1]  # "none" and "" lines are not used
    # exact times of three distinct masses: an exact fit, to rounding (1e-9 µs)
    t = np.polynomial.polynomial.polyval(np.sqrt(masses[:3]), cal.coefficients[0])
    np.testing.assert_allclose(t, centers[:3], atol=1e-9)
    assert np.abs(cal.calibrations[0].residual_ppm).max() < 1e-3
    assert np.isnan(cal.coefficients[1]).all()


def test_calibrate_row_is_time2mass_lines(events, base):
    """A calibrate row fits what `idexdask time2mass --lines "t1:X,t2:Y,..."` fits."""
    from idexdask.calibration import load_calibration_settings
    from idexdask.calibration.single_event import calibrate_lines, parse_lines

    mine = _lines(base)
    named = [(int(j), str(base.peak_species.values[j])) for j in mine
             if base.peak_species.values[j] and base.peak_status.values[j] == 0][:3]
    rows = [_row(events, "species", float(base.peak_center.values[j]), species=label)
            for j, label in named]
    rows.append({"epoch": int(events.epoch.values[EVENT]), "action": "calibrate"})
    out = analyze(events, overrides=rows)
    text = ",".join(f"{float(base.peak_center.values[j])!r}:{label}" for j, label in named)
    preset = base.mass_calibration.attrs["preset"]
    cli = calibrate_lines(None, load_calibration_settings(preset),  # type: ignore[arg-type]
                          user_lines=parse_lines(text))
    assert cli.calibrated
    coeffs = cli.calibration.coefficients
    # the same fit of the same numbers (the same code run twice): identical
    np.testing.assert_array_equal(out.mass_calibration.values[EVENT][: coeffs.size], coeffs)
