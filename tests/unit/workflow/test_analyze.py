"""analyze(): products, bad inputs, lab-like input and manual overrides."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.overrides import make_overrides, read_overrides, write_overrides
from idexdask.config import load_config
from idexdask.errors import AnalysisError, ConfigError
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze

NOCAL = {"analysis": {"calibration": {"enabled": False}}}


@pytest.fixture(scope="module")
def events():
    return simulate_events(12, seed=3).events


@pytest.fixture(scope="module")
def result(events):
    return analyze(events)


def test_products_present(result, events):
    for name in (
        "peak_event",
        "peak_center",
        "peak_sigma",
        "peak_gamma",
        "peak_area",
        "peak_area_err",
        "peak_height",
        "peak_chisq",
        "peak_status",
        "peak_manual",
        "peak_mass",
        "mass_calibration",
        "mass_calibration_status",
        "impact_velocity",
        "dust_mass",
        "impact_velocity_status",
        "tof_gain_ratio_mid",
        "tof_gain_ratio_low",
    ):
        assert name in result, name
    for ch in ("tof_high", "tof_mid", "tof_low", "target_high", "target_low", "ion_grid"):
        for suffix in ("snr", "saturated", "baseline", "noise"):
            assert f"{ch}_{suffix}" in result
    for ch in ("target_high", "target_low", "ion_grid"):
        fp = result[f"{ch}_fit_parameters"]
        assert fp.dims == ("epoch", "fit_parameter")
        assert list(fp.fit_parameter.values) == [
            "time_of_impact",
            "constant_offset",
            "amplitude",
            "rise_time",
            "decay_time",
        ]
        assert result[f"{ch}_impact_charge"].attrs["units"] == "pC"
    assert result.peak_event.max() < events.sizes["epoch"]
    assert result["TOF_High"].equals(events["TOF_High"])
    assert np.isfinite(result.peak_mass.values).any()


def _bad_events(events):
    ds = events.isel(epoch=slice(0, 7)).copy(deep=True)
    for name in ("TOF_High", "TOF_Mid", "TOF_Low", "Target_High", "Target_Low", "Ion_Grid"):
        v = ds[name].values
        v[0] = 512  # flat
        v[1] = 0  # all zero
        v[2] = 1023 if name.startswith("TOF") else 4095  # all saturated
        v[3, ::7] = 65535  # fill-containing
        v[4] = 65535  # all fill
        ds[name].values[:] = v
    return ds


def test_bad_inputs_give_statuses(events):
    ds = _bad_events(events)
    out = analyze(ds, NOCAL)
    st = out.target_low_fit_status.values
    assert set(st[[0, 1, 4]]) <= {4, 5}
    assert st[2] in (4, 5)
    assert st[3] in (0, 1, 2, 6)  # fill samples ignored, still fitted
    assert np.all(out.peak_event.values != 4)


def test_nan_and_short_waveforms(events):
    ds = events.isel(epoch=slice(0, 3)).copy()
    for name in ("TOF_High", "Target_Low"):
        ds[name] = ds[name].astype(float)
        ds[name][1, 100:200] = np.nan
        ds[name][2] = np.nan
    out = analyze(ds, NOCAL)
    assert out.target_low_fit_status.values[2] == 4
    short = events.isel(
        epoch=slice(0, 2),
        time_high_sample_rate_index=slice(0, 5),
        time_low_sample_rate_index=slice(0, 5),
    )
    out = analyze(short, NOCAL)
    assert np.all(out.target_high_fit_status.values == 4)


def test_lab_like_input(events):
    """Negative-going float volts, 1 ns sampling, two TOF channels, own time axis names."""
    n = 6000
    rng = np.random.default_rng(1)
    t = np.arange(n) * 1e-3 - 1.0
    sig = np.zeros((2, n))
    for c in (1.0, 2.2, 3.1):
        sig += 0.05 * np.exp(-0.5 * ((t - c) / 0.004) ** 2)
    hi = -(sig + rng.normal(0, 5e-4, (2, n))).astype(np.float32)
    lo = -(0.1 * sig + rng.normal(0, 5e-4, (2, n))).astype(np.float32)
    attrs = {"units": "V", "time_variable": "scope_time", "signal_polarity": -1}
    ds = xr.Dataset(
        {
            "TOF_High": (("epoch", "s"), hi, attrs),
            "TOF_Low": (("epoch", "s"), lo, attrs),
            "scope_time": (("epoch", "s"), np.broadcast_to(t, (2, n)).copy(), {"units": "us"}),
        },
        coords={"epoch": np.array([1, 2], dtype=np.int64)},
    )
    out = analyze(ds, {"calibration": {"preset": "lab"}})
    strong = out.peak_height.values > 0.02  # V
    for e in range(2):
        got = np.sort(out.peak_center.values[strong & (out.peak_event.values == e)])
        np.testing.assert_allclose(got, [1.0, 2.2, 3.1], atol=0.002)
    area = out.peak_area.values[strong]
    np.testing.assert_allclose(area, 0.05 * 0.004 * np.sqrt(2 * np.pi), rtol=0.05)
    assert "target_high_fit_parameters" not in out


def test_overrides_roundtrip_and_reapply(events, result, tmp_path):
    e = 2
    ep = int(events.epoch.values[e])
    mine = np.nonzero(result.peak_event.values == e)[0]
    first = float(result.peak_center.values[mine[0]])
    second = float(result.peak_center.values[mine[1]])
    table = make_overrides(
        [
            {"epoch": ep, "target": "tof", "action": "remove", "center_us": first},
            {
                "epoch": ep,
                "target": "tof",
                "action": "edit",
                "center_us": second,
                "window_start_us": second - 0.05,
                "window_stop_us": second + 0.1,
            },
            {"epoch": ep, "target": "tof", "action": "add", "center_us": 12.345},
            {
                "epoch": ep,
                "target": "Target_Low",
                "action": "window",
                "window_start_us": -20.0,
                "window_stop_us": 40.0,
            },
            {
                "epoch": 123,
                "target": "tof",
                "action": "add",
                "center_us": 5.0,
            },  # unknown event: ignored
        ]
    )
    path = tmp_path / "ov.json"
    write_overrides(table, path)
    table2 = read_overrides(path)
    out = analyze(events, NOCAL, overrides=table2)
    m2 = out.peak_event.values == e
    centers = out.peak_center.values[m2]
    assert not np.any(np.abs(centers - first) < 1e-3)
    manual = out.peak_manual.values[m2]
    assert manual.sum() == 2
    assert np.any(np.abs(out.peak_window_start.values[m2][manual] - (second - 0.05)) < 0.004)
    assert out.target_low_fit_manual.values[e] and out.target_low_fit_manual.values.sum() == 1
    assert out.sizes["peak"] == result.sizes["peak"] + 1 - 1  # one removed, one added
    # reprocessing with the same table gives the same products
    again = analyze(events, NOCAL, overrides=path)
    np.testing.assert_array_equal(again.peak_center.values, out.peak_center.values)


def test_invalid_config_and_overrides(events):
    with pytest.raises(ConfigError):
        analyze(events, {"analysis": {"peaks": {"nope": 1}}})
    with pytest.raises(AnalysisError):
        make_overrides([{"epoch": 1, "action": "explode"}])


def test_fitting_settings_validated(events):
    with pytest.raises(ConfigError, match="analysis.fitting.engine"):
        analyze(events, {"analysis": {"fitting": {"engine": "fastest"}}})
    with pytest.raises(ConfigError, match="analysis.fitting.device"):
        analyze(events, {"analysis": {"fitting": {"device": "tpu"}}})


def _converged_lines(out):
    ok = out.peak_status.values == 0
    return {
        (int(e), round(float(c), 3)): i
        for i, (e, c) in enumerate(zip(out.peak_event.values, out.peak_center.values, strict=True))
        if ok[i]
    }


@pytest.mark.numerics
def test_fit_engines_agree_on_converged_fits(events, result):
    """The CPU engines differ only in rounding: converged fits agree.

    auto is the xp iteration with the model and Jacobian compiled: exp/erfcx by
    libm instead of NumPy's CPU-dependent SIMD code, an ulp apart, so the same
    lines converge (identical statuses) to within sqrt(ftol * window) ~ 1e-4 of
    their standard errors (where an ulp flips fit_batch's stopping test; ftol
    1e-10, windows of ~70 samples); the compiled engine (``result``) sums in
    another order too, hence its looser 1e-3 below.
    """
    assert load_config()["analysis"]["fitting"]["engine"] == "compiled"  # `result`'s
    auto = analyze(events, {"analysis": {"fitting": {"engine": "auto"}}})
    xp = analyze(events, {"analysis": {"fitting": {"engine": "xp"}}})
    # the same lines converge.  An unconverged line's status may differ: a line
    # whose own fit failed is refitted jointly with its neighbours
    # (analysis.blends), from start values an ulp apart, and an ill-posed joint
    # fit that ends hit_bound under one engine can end not_significant under
    # the other (both failures; one such line of 70 here)
    np.testing.assert_array_equal(auto.peak_status.values == 0, xp.peak_status.values == 0)
    assert np.mean(auto.peak_status.values == xp.peak_status.values) >= 0.95
    ok = auto.peak_status.values == 0
    assert ok.sum() > 20
    for name in ("peak_center", "peak_area"):
        diff = np.abs(auto[name].values[ok] - xp[name].values[ok])
        # all but the members of a joint blend fit whose convergence flipped
        # under the ulp-apart start values (they carry the joint fit's values
        # under one engine, their own fits' under the other: 2 lines of 70
        # here, 0.5 and 3 standard errors apart)
        close = diff <= 1e-4 * xp[f"{name}_err"].values[ok]
        assert (~close).sum() <= 2, name
    for channel in ("target_low", "ion_grid"):
        status = xp[f"{channel}_fit_status"].values
        np.testing.assert_array_equal(auto[f"{channel}_fit_status"].values, status)
        fitted = status == 0
        assert fitted.sum() >= 6
        pull = np.abs(auto[f"{channel}_fit_parameters"].values[fitted]
                      - xp[f"{channel}_fit_parameters"].values[fitted])
        assert np.all(pull <= 1e-4 * xp[f"{channel}_fit_parameter_errors"].values[fitted]), channel
    ref, got = _converged_lines(auto), _converged_lines(result)
    common = sorted(set(ref) & set(got))
    assert len(common) >= 0.9 * len(ref) > 20
    i, j = [ref[k] for k in common], [got[k] for k in common]
    for name in ("peak_center", "peak_area"):
        diff = np.abs(auto[name].values[i] - result[name].values[j])
        close = diff <= 1e-3 * auto[f"{name}_err"].values[i]
        assert (~close).sum() <= 2, name  # flipped joint blend fits, as above
    sigma_close = np.isclose(result.peak_sigma.values[j], auto.peak_sigma.values[i], rtol=1e-4,
                             atol=0)  # fmt: skip
    assert (~sigma_close).sum() <= 2
    for channel in ("target_low", "ion_grid"):
        both = (auto[f"{channel}_fit_status"].values == 0) & (
            result[f"{channel}_fit_status"].values == 0
        )
        assert both.sum() >= 6
        np.testing.assert_allclose(
            result[f"{channel}_impact_charge"].values[both],
            auto[f"{channel}_impact_charge"].values[both],
            rtol=1e-6,
        )


def test_gpu_fitting_device(events, result):
    """device=gpu runs the fits through CuPy; without CuPy it is a clear error."""
    config = {"analysis": {"fitting": {"device": "gpu"}}}
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(AnalysisError, match="CuPy"):
            analyze(events, config)
        return
    on_gpu = analyze(events, config)
    ok = (on_gpu.peak_status.values == 0) & (result.peak_status.values == 0)
    assert ok.sum() > 20
    diff = np.abs(on_gpu.peak_center.values[ok] - result.peak_center.values[ok])
    assert np.all(diff <= 1e-3 * result.peak_center_err.values[ok])


def test_deferred_targeted_search_keeps_the_layout(events, result):
    """``defer_targeted`` (submit's packs, whose campaign step searches again at
    the campaign calibration): the same targeted variables, dims, dtypes and
    attributes, every value NaN / not detected, and nothing else changed."""
    from idexdask.workflow.analyze import analysis_products

    deferred = analysis_products(events, defer_targeted=True).variables
    names = [k for k in result.data_vars if k.startswith("targeted_")]
    assert names and np.isfinite(result["targeted_significance"].values).any()
    for name in names:
        var = deferred[name]
        assert var.dims == result[name].dims and var.dtype == result[name].dtype, name
        assert var.attrs == result[name].attrs, name
        if var.dtype == bool:
            assert not var.values.any(), name
        else:
            assert np.isnan(var.values).all(), name
    for name in ("peak_center", "mass_calibration", "composition_fraction"):
        if name in result:
            np.testing.assert_array_equal(deferred[name].values, result[name].values)


def test_targeted_search_reads_only_the_searched_columns(events, result):
    """analyze passes the targeted search the columns of its time window only
    (searched_columns of searched_times' bounds); the search over whole rows
    gives the same products.  The same compiled search on the same samples:
    each row's ``searchsorted`` finds the same sample in the window as in the
    row (searched_times' contract), so the values are exact."""
    from idexdask.composition.settings import composition_settings
    from idexdask.composition.targeted import (
        searched_columns,
        searched_times,
        target_masses,
        targeted_variables,
    )
    from idexdask.config import load_settings

    settings = composition_settings(load_settings({}))
    lines = {k: result[k].values for k in ("peak_event", "peak_center", "peak_sigma",
                                           "peak_gamma", "peak_area", "peak_status")}
    # the events analyze searched: a finite calibration (mass_calibration_products)
    calibrated = np.all(np.isfinite(result["mass_calibration"].values[:, :2]), axis=1)
    assert calibrated.any()
    time = events["time_high_sample_rate"]
    whole = targeted_variables(
        np.asarray(time.values, dtype=float), result["tof_combined"].values.astype(float),
        result["tof_high_noise"].values, lines, result["mass_calibration"].values,
        calibrated, settings.targeted_species,
        min_significance=settings.targeted_min_significance, unit="DN",
    )  # fmt: skip
    for name, variable in whole.items():
        if name.startswith("targeted_") and "epoch" in variable.dims:
            np.testing.assert_array_equal(result[name].values, variable.values, err_msg=name)
    low, high = searched_times(lines["peak_event"], lines["peak_center"], lines["peak_sigma"],
                               lines["peak_status"] == 0, result["mass_calibration"].values,
                               calibrated, target_masses(settings.targeted_species))
    columns = searched_columns(time.variable, low, high)
    rows = np.atleast_2d(np.asarray(time.values, dtype=float))
    assert 0 < columns.stop - columns.start < rows.shape[1]  # a window, not the row
    for row in rows:  # the window holds [low, high] and a sample beyond each end
        inside = row[columns]
        assert inside[0] < low or columns.start == 0
        assert inside[-1] > high or columns.stop == row.size
