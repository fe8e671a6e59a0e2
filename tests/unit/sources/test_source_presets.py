"""Per-source calibration defaults: scope captures lab, IDEX data flight, explicit wins."""

from __future__ import annotations

import pytest

from idexdask.config import load_config
from idexdask.errors import ConfigError
from idexdask.simulate import simulate_events
from idexdask.sources.defaults import resolve_preset, source_kind
from idexdask.workflow import analyze


def test_source_kind_from_attributes_and_variables():
    assert source_kind({"source_kind": "lecroy_trc"}) == "lecroy_trc"
    assert source_kind({"source": "lecroy_trc"}) == "lecroy_trc"
    assert source_kind({}, ["TOF_High", "vertical_gain"]) == "lecroy_trc"
    assert source_kind({"source": "x.pkts"}, ["TOF_High"]) == "idex_l0"


def test_auto_preset_by_source_and_explicit_preset_wins():
    section = load_config()["calibration"]
    assert section["preset"] == "auto"
    assert resolve_preset(section, {"source_kind": "lecroy_trc"}) == "lab_peridot"
    assert resolve_preset(section, {"source_kind": "idex_l0"}) == "flight"
    assert resolve_preset(section, {}) == "flight"
    explicit = load_config({"calibration": {"preset": "flight"}})["calibration"]
    assert resolve_preset(explicit, {"source_kind": "lecroy_trc"}) == "flight"
    mapped = load_config({"calibration": {"source_presets": {"lecroy_trc": "lab"}}})
    assert resolve_preset(mapped["calibration"], {"source_kind": "lecroy_trc"}) == "lab"
    with pytest.raises(ConfigError, match="no preset for source kind 'cdf_x'"):
        resolve_preset(section, {"source_kind": "cdf_x"})


def test_source_presets_table_validated():
    with pytest.raises(ConfigError):
        load_config({"calibration": {"source_presets": {"lecroy_trc": 3}}})


def test_analyze_records_the_preset_of_the_source():
    ev = simulate_events(2, seed=1).events
    assert analyze(ev)["mass_calibration"].attrs["preset"] == "flight"
    lab = ev.assign_attrs(source_kind="lecroy_trc")
    assert analyze(lab)["mass_calibration"].attrs["preset"] == "lab_peridot"
    forced = analyze(lab, {"calibration": {"preset": "flight"}})
    assert forced["mass_calibration"].attrs["preset"] == "flight"


@pytest.mark.parametrize(
    "override",
    [
        {"analysis": {"calibration": {"campaign": {"shift_window_us": 0}}}},
        {"analysis": {"calibration": {"campaign": {"min_event_matches": 0}}}},
        {"analysis": {"peaks": {"min_line_snr": -1.0}}},
    ],
)
def test_new_keys_range_checked(override):
    with pytest.raises(ConfigError):
        load_config(override)
