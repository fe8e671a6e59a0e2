"""The per-call savings of ``analyze`` change nothing: same variables, same values.

``analyze`` assembles its output from bare Variables (:func:`quality_variables`,
:func:`composition_variables`) in one ``assign``; configuration-derived values
(calibration settings of a named file, the mineral candidates) are parsed once per
file version; the two bisections run with fewer array operations.  Each piece is
checked here against the form it replaces.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from idexdask.analysis.impact_model import rise_time_10_90
from idexdask.analysis.signal_quality import load_quality_config, quality_variables, signal_quality
from idexdask.analysis.velocity import PowerLawCurve, invert_rise_time
from idexdask.calibration import load_calibration_settings
from idexdask.composition import composition_products, expected_fractions, load_mineral_library
from idexdask.composition.products import _candidates, composition_variables
from idexdask.config import config_dir, file_key, load_config
from idexdask.errors import ConfigError
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze


@pytest.fixture(scope="module")
def events():
    return simulate_events(6, seed=11).events


@pytest.fixture(scope="module")
def analysed(events):
    return analyze(events, load_config({}))


def _same_variable(a, b) -> None:
    assert a.dims == b.dims
    assert a.dtype == b.dtype
    assert repr(a.attrs) == repr(b.attrs)
    if a.dtype.kind == "f":
        assert np.array_equal(a.values, b.values, equal_nan=True)
    else:
        assert np.array_equal(a.values, b.values)


def test_quality_variables_are_those_of_signal_quality(events):
    ds = signal_quality(events)
    variables = quality_variables(events, load_quality_config())
    assert list(variables) == [k for k in ds.variables if k != "epoch"]
    for name, var in variables.items():
        _same_variable(var, ds.variables[name])


def test_analyze_carries_the_quality_products(events, analysed):
    ds = signal_quality(events).rename({"channel": "quality_channel"})
    names = [k for k in ds.variables if k != "epoch"]
    order = list(analysed.variables)
    positions = [order.index(k) for k in names]
    assert positions == sorted(positions)  # in signal_quality's order
    for name in names:
        _same_variable(analysed.variables[name], ds.variables[name])
    assert "quality_channel" in analysed.indexes


def test_composition_variables_are_those_of_composition_products(analysed):
    peaks = analysed[["peak_event", "peak_mass", "peak_area", "peak_area_err"]]
    cfg = load_config({})
    ds = composition_products(peaks, analysed.sizes["epoch"], cfg)
    variables, coords = composition_variables(peaks, analysed.sizes["epoch"], cfg)
    assert list(variables) == list(ds.variables)
    assert coords == set(ds.coords)
    for name, var in variables.items():
        _same_variable(var, ds.variables[name])
    # bare Variables as input: the same products
    bare = {k: peaks.variables[k] for k in peaks.data_vars}
    again, _ = composition_variables(bare, analysed.sizes["epoch"], cfg)
    for name, var in again.items():
        _same_variable(var, variables[name])


def test_analyze_composition_coordinates(analysed):
    assert {"element", "rsf", "mg_si_fe", "mg_fe_ca", "mixture_member"} <= set(analysed.coords)
    assert "rsf" not in analysed.indexes and "element" in analysed.indexes
    assert analysed.attrs == {"analysis": "idexdask.analyze", "analysis_overrides": 0}


def test_analyze_keeps_existing_quality_variables(events, analysed):
    """As with the former merge(compat='override'): the input's variable wins."""
    marked = events.assign(tof_high_snr=("epoch", np.full(events.sizes["epoch"], -1.0)))
    out = analyze(marked, load_config({}))
    assert np.all(out["tof_high_snr"].values == -1.0)
    position = list(marked.variables).index("tof_high_snr")
    assert list(out.variables)[position] == "tof_high_snr"
    _same_variable(out.variables["tof_high_noise"], analysed.variables["tof_high_noise"])


def test_mineral_candidates_cached_read_only():
    path, mtime = file_key("minerals.yaml")
    elements = tuple(load_config({})["composition"]["elements"])
    names, expected = _candidates(path, mtime, elements)
    ref_names, ref_expected = expected_fractions(load_mineral_library(path), elements)
    assert names == ref_names
    assert np.array_equal(expected, ref_expected)
    assert not expected.flags.writeable
    assert _candidates(path, mtime, elements)[1] is expected


def test_calibration_settings_of_a_named_file_follow_its_version(tmp_path):
    text = (config_dir() / "calibration.yaml").read_text(encoding="utf-8")
    path = tmp_path / "calibration.yaml"
    path.write_text(text, encoding="utf-8")
    first = load_calibration_settings("flight", path=str(path))
    assert load_calibration_settings("flight", path=str(path)) is first
    shipped = load_calibration_settings("flight", path="calibration.yaml")
    assert shipped == load_calibration_settings("flight")
    edited = text.replace("presets:", "presets:\n  extra_preset_for_test: null", 1)
    path.write_text(edited, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = load_calibration_settings("flight", path=str(path))
    assert second is not first
    assert second == first  # the flight preset itself did not change
    with pytest.raises(ConfigError):
        load_calibration_settings("flight", path=str(tmp_path / "missing.yaml"))


def _rise_time_reference(tau_r, tau_d, iterations=60):
    """The former rise_time_10_90: one bisection per level."""
    tr = np.asarray(tau_r, dtype=float)
    td = np.asarray(tau_d, dtype=float)
    ok = np.isfinite(tr) & np.isfinite(td) & (tr > 0) & (td > 0)
    tr = np.where(ok, tr, 1.0)
    td = np.where(ok, td, 1.0)
    umax = tr * np.log1p(td / tr)

    def shape(u):
        return -np.expm1(-u / tr) * np.exp(-u / td)

    gmax = shape(umax)
    out = []
    for level in (0.1, 0.9):
        lo = np.zeros_like(umax)
        hi = umax.copy()
        target = level * gmax
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = shape(mid) < target
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        out.append(0.5 * (lo + hi))
    return np.where(ok, out[1] - out[0], np.nan)


@pytest.mark.numerics
@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_rise_time_10_90_bitwise(n):
    rng = np.random.default_rng(n)
    tr = 10 ** rng.uniform(-3, 2, n)
    td = 10 ** rng.uniform(-2, 4, n)
    if n > 3:
        tr[0], td[1], tr[2] = np.nan, -1.0, np.inf
    assert rise_time_10_90(tr, td).tobytes() == _rise_time_reference(tr, td).tobytes()
    assert rise_time_10_90(np.ones((2, 3)), np.full((2, 3), 20.0)).shape == (2, 3)


def _invert_reference(rise_time, curve, iterations=60):
    """The former invert_rise_time's bisection (curve.log10 per step)."""
    tr = np.asarray(rise_time, dtype=float)
    lv0, lv1 = np.log10(curve.v_range[0]), np.log10(curve.v_range[1])
    decreasing = curve.monotonic_range().decreasing
    with np.errstate(all="ignore"):
        target = np.log10(tr)
    lo = np.full(tr.shape, lv0)
    hi = np.full(tr.shape, lv1)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = curve.log10(10**mid) > target
        go_right = above if decreasing else ~above
        lo = np.where(go_right, mid, lo)
        hi = np.where(go_right, hi, mid)
    return 10 ** (0.5 * (lo + hi))


@pytest.mark.numerics
def test_invert_rise_time_bitwise():
    curve = PowerLawCurve.from_config(load_config({})["analysis"]["velocity"]["rise_time_curve"])
    rng = np.random.default_rng(3)
    tau = 10 ** rng.uniform(-2, 2, 500)
    tau[:3] = (np.nan, -1.0, 0.0)
    v, status = invert_rise_time(tau, curve)
    ref = _invert_reference(tau, curve)
    inside = status == 0
    assert inside.sum() > 100
    assert v[inside].tobytes() == ref[inside].tobytes()
    assert np.all(np.isnan(v[~inside]))


def test_non_monotonic_rise_curve_rejected():
    section = dict(load_config({})["analysis"]["velocity"]["rise_time_curve"])
    section.update(a1=-2.0, a2=3.0, a3=-2.0, vb=2.0, vc=20.0, k=20.0)
    curve = PowerLawCurve.from_config(section)
    with pytest.raises(ConfigError, match="not monotonic"):
        curve.monotonic_range()
    with pytest.raises(ConfigError, match="rise_time_curve"):
        load_config({"analysis": {"velocity": {"rise_time_curve": section}}})
