"""Instrument-state helpers on constructed inputs: HV grouping, physical waveforms, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.hv_settings import group_by_high_voltage
from idexdask.analysis.instrument import (
    InstrumentStateFlag,
    event_readings,
    instrument_products,
    instrument_state,
    physical_waveforms,
)
from idexdask.analysis.instrument_table import load_instrument_table
from idexdask.errors import AnalysisError

TABLE = load_instrument_table()
DN_PER_V = 1 / 1.4652  # the HV readout: 1.4652 V per DN


def voltages(reflectron: list[float], target: list[float]) -> xr.Dataset:
    return xr.Dataset(
        {
            "reflectron_voltage": ("epoch", np.array(reflectron, dtype=float)),
            "target_voltage": ("epoch", np.array(target, dtype=float)),
        }
    )


def test_groups_split_at_gaps_wider_than_the_tolerance():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.5, 30)  # about one readout DN
    refl = np.r_[np.full(10, 2946.5), np.full(10, 2946.5), np.full(10, 3100.0)] + noise
    targ = np.r_[np.full(10, 2504.0), np.full(10, 2000.0), np.full(10, 2504.0)] + noise[::-1]
    groups = group_by_high_voltage(voltages(list(refl), list(targ)), tolerance_v=25.0)
    assert groups.n_groups == 3 and groups.count.tolist() == [10, 10, 10]
    # groups numbered by increasing setting (reflectron first, then target)
    np.testing.assert_allclose(groups.setting[:, 0], [2946.5, 2946.5, 3100.0], atol=3)
    np.testing.assert_allclose(groups.setting[:, 1], [2000.0, 2504.0, 2504.0], atol=3)
    assert groups.members(0).tolist() == list(range(10, 20))
    assert (groups.spread < 12).all()
    # a tolerance below the readout noise splits one setting
    assert group_by_high_voltage(voltages(list(refl), list(targ)), tolerance_v=0.01).n_groups > 3


def test_missing_voltages_are_not_grouped_and_bad_tolerance_raises():
    ds = voltages([2946.5, np.nan, 2947.0, 0.0], [2504.0, 2504.0, 2505.5, 0.0])
    groups = group_by_high_voltage(ds)
    assert groups.group.tolist() == [1, -1, 1, 0]  # HV off (0 V) is a setting of its own
    assert groups.count.tolist() == [1, 2]
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(AnalysisError):
            group_by_high_voltage(ds, tolerance_v=bad)
    empty = group_by_high_voltage(voltages([], []))
    assert empty.n_groups == 0 and empty.group.size == 0


def test_grouping_computes_the_state_from_header_words():
    words = {q.word: np.zeros(3, np.uint32) for q in TABLE.housekeeping}
    dn = np.array([2011, 2012, 2200], dtype=np.uint32)
    words["idx__txhdrhvpshkch45"] = dn  # reflectron: bits 0-11
    words["idx__txhdrhvpshkch23"] = np.uint32(1709)  # target: bits 0-11
    ds = xr.Dataset({k: ("epoch", np.broadcast_to(v, 3).copy()) for k, v in words.items()})
    groups = group_by_high_voltage(ds)
    assert groups.group.tolist() == [0, 0, 1]  # 2200 DN is 275 V above 2011 DN


def test_physical_waveforms_are_lazy_and_mask_fill():
    raw = np.array([[100, 65535, 200]], dtype=np.uint16)
    ds = xr.Dataset(
        {
            "TOF_High": (("epoch", "s"), raw, {"units": "DN", "FILLVAL": 65535}),
            "Target_Low": (("epoch", "s"), raw.copy(), {"units": "DN", "FILLVAL": 65535}),
        }
    ).chunk({"epoch": 1})
    out = physical_waveforms(ds)
    assert out["TOF_High"].chunks is not None  # nothing computed yet
    np.testing.assert_allclose(out["TOF_High"].values, [[100 * 7.5e-5, np.nan, 200 * 7.5e-5]])
    np.testing.assert_allclose(out["Target_Low"].values, [[1580.0, np.nan, 3160.0]])
    assert out["TOF_High"].attrs["units"] == "mA" and out["Target_Low"].attrs["units"] == "pC"
    volts = ds.assign(TOF_High=ds.TOF_High.assign_attrs(units="V"))
    with pytest.raises(AnalysisError, match="not DN"):
        physical_waveforms(volts, ["TOF_High"])
    with pytest.raises(AnalysisError, match="no waveform"):
        physical_waveforms(ds, ["Ion_Grid"])


def test_unknown_trigger_mode_and_fill_words():
    n = 3
    ds = xr.Dataset(
        {
            "idx__txhdrhgtrigmode": ("epoch", np.array([1, 7, 0], np.uint8)),
            "idx__txhdrhgtrigctrl1": ("epoch", np.full(n, 0x91000000, np.uint32)),
            "idx__txhdrblocks": (
                "epoch",
                np.array([0x3B7DF, 0xFFFFFFFF, (5 << 24) | (3 << 20)], np.uint32),
                {"FILLVAL": 0xFFFFFFFF},
            ),
        }
    )
    state = instrument_state(ds)
    assert state["trigger_mode_hg"].values.tolist() == ["HGThreshold", "HGunknown", ""]
    assert state["trigger_mode_hg_code"].values.tolist() == [1, 7, 0]
    np.testing.assert_allclose(state["trigger_level_hg"].values[:2], 580 * 7.5e-5, rtol=1e-15)
    assert np.isnan(state["trigger_level_hg"].values[2])
    assert np.isnan(state["dead_time"].values[1])  # FILLVAL
    np.testing.assert_allclose(state["dead_time"].values[2], 5 * 8 * 8 / 4.0625e6, rtol=1e-15)
    flags = state["instrument_state_flags"].values
    assert flags[1] & InstrumentStateFlag.UNKNOWN_TRIGGER_MODE
    assert (flags & InstrumentStateFlag.HEADER_MISSING).all()  # no housekeeping words at all
    assert instrument_products(xr.Dataset({"TOF_High": ("epoch", np.zeros(2))})) == {}
    with pytest.raises(AnalysisError, match="epoch"):
        instrument_state(xr.Dataset({"x": ("t", np.zeros(2))}))


def test_event_readings_from_words_and_from_stored_values():
    words = {q.word: np.zeros(2, np.uint32) for q in TABLE.housekeeping}
    words["idx__txhdrhvpshkch45"] = np.array([2011, 4095], np.uint32)  # reflectron DN
    ds = xr.Dataset({k: ("epoch", v) for k, v in words.items()})
    readings = event_readings(ds, 1)
    assert [r.name for r in readings] == [q.name for q in TABLE.housekeeping]
    refl = next(r for r in readings if r.name == "reflectron_voltage")
    assert refl.units == "V" and refl.out_of_range and refl.value == pytest.approx(4095 * 1.4652)
    stored = xr.Dataset(instrument_state(ds).data_vars)
    again = event_readings(stored, 0)
    assert not next(r for r in again if r.name == "reflectron_voltage").out_of_range
    with pytest.raises(AnalysisError, match="outside"):
        event_readings(ds, 2)


def test_header_suspect_from_decoder_flags_even_after_concatenation():
    words = {q.word: np.zeros(3, np.uint32) for q in TABLE.housekeeping}
    flags = np.array([0.0, 128.0, np.nan])  # HEADER_CRC_MISMATCH = 128; NaN: no flags
    ds = xr.Dataset(
        {**{k: ("epoch", v) for k, v in words.items()}, "quality_flags": ("epoch", flags)}
    )
    state = instrument_state(ds)
    suspect = state["instrument_state_flags"].values & InstrumentStateFlag.HEADER_SUSPECT
    assert (suspect != 0).tolist() == [False, True, False]
