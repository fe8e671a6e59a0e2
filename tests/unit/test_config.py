"""Configuration loading and validation."""

from __future__ import annotations

import pytest
import yaml

from idexdask.analysis.products import load_analysis_settings
from idexdask.analysis.signal_quality import load_quality_config
from idexdask.config import config_dir, dump_config, load_config, merge, parse_assignment
from idexdask.errors import ConfigError
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze


def test_defaults_load_and_override_merges():
    defaults = load_config()
    assert defaults["decode"]["keep_samples_high"] == 8192
    merged = load_config({"calibration": {"preset": "lab"}})
    assert merged["calibration"]["preset"] == "lab"
    assert merged["calibration"]["settings_file"] == defaults["calibration"]["settings_file"]


def test_override_from_yaml_file(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text("decode:\n  verify_crc: false\n")
    assert load_config(path)["decode"]["verify_crc"] is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"decode": {"verify_crcc": True}}, "unknown configuration key 'decode.verify_crcc'"),
        ({"nonsense": 1}, "unknown configuration key 'nonsense'"),
        ({"decode": {"verify_crc": "yes"}}, "decode.verify_crc: expected true/false"),
        ({"decode": {"keep_samples_high": 1.5}}, "expected an integer"),
        ({"decode": 3}, "decode: expected a mapping"),
    ],
)
def test_bad_keys_and_values_are_rejected_clearly(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(override)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    out = merge(base, {"a": {"b": 5}})
    assert out == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


# ---------------------------------------------------------------- the analysis section


def test_every_analysis_knob_is_in_default_yaml():
    analysis = load_config()["analysis"]
    assert set(analysis) == {
        "quality", "tof", "fitting", "peaks", "impact", "velocity", "calibration"
    }
    assert analysis["peaks"]["height_sigma"] == 5.0
    assert analysis["quality"]["noise"]["welch_nperseg"] == 256
    for name in ("rise_time_curve", "yield_curve"):  # calibration curves, with provenance
        assert "placeholder" in analysis["velocity"][name]["provenance"]
    # the analysis knobs no longer live in files of their own
    assert not (config_dir() / "analysis.yaml").exists()
    assert not (config_dir() / "analysis_quality.yaml").exists()


def test_analysis_override_from_a_config_file(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text(
        "analysis:\n"
        "  peaks: {height_sigma: 6}\n"
        "  quality: {flat_top_sigma: 12, polarity: {QD_1: -1}}\n"
        "  velocity:\n"
        "    rise_time_curve: {provenance: lab fit 2025-01, log_a: 1.3}\n"
    )
    cfg, settings = load_analysis_settings(path)
    assert settings is cfg["analysis"]
    assert settings["peaks"]["height_sigma"] == 6
    assert settings["peaks"]["prominence_sigma"] == 3.0  # untouched keys keep their defaults
    assert settings["velocity"]["rise_time_curve"]["log_a"] == 1.3
    assert settings["velocity"]["rise_time_curve"]["a1"] == -0.2
    quality = load_quality_config(settings["quality"])
    assert quality["flat_top_sigma"] == 12.0 and quality["polarity"] == {"QD_1": -1}
    assert quality["baseline_window_by_channel"]["Ion_Grid"] == (-30.0, -5.0)


def test_quality_defaults_come_from_default_yaml():
    assert load_quality_config() == load_quality_config(load_config()["analysis"]["quality"])
    assert load_quality_config({"quality": {"flat_top_sigma": 5}})["flat_top_sigma"] == 5.0


def test_per_channel_tables_take_any_channel_name():
    cfg = load_config({"analysis": {
        "quality": {"baseline_window_by_channel": {"TOF_High": [-6.0, -5.0]},
                    "polarity": {"TOF_High": -1}},
        "tof": {"polarity": {"TOF_Low": -1}},
        "impact": {"polarity": {"Ion_Grid": 0}, "baseline_stop_us": {"Target_Low": -3.0}},
    }})
    windows = cfg["analysis"]["quality"]["baseline_window_by_channel"]
    assert windows["TOF_High"] == [-6.0, -5.0] and windows["Ion_Grid"] == [-30.0, -5.0]


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ("peaks: {height_sigmaa: 6}", "unknown configuration key 'analysis.peaks.height_sigmaa'"),
        ("peaks: {height_sigma: six}", "analysis.peaks.height_sigma: expected a number"),
        ("peaks: {max_iterations: 2.5}", "analysis.peaks.max_iterations: expected an integer"),
        ("tof: {nominal_gain: {TOF_high: 1.0}}", "'analysis.tof.nominal_gain.TOF_high'"),
        ("quality: {noise: {bins: 3}}", "unknown configuration key 'analysis.quality.noise.bins'"),
        ("quality: {flat_top_min_run: 1}", "analysis.quality.flat_top_min_run: expected an int"),
        ("quality: {baseline_window_us: [-5, -7]}", "analysis.quality.baseline_window_us"),
        ("quality: {polarity: {TOF_High: 2}}",
         r"analysis.quality.polarity.TOF_High: expected one of -1, 0, 1, got 2"),
        ("quality: {baseline_window_by_channel: {QD_1: 3}}", "by_channel.QD_1: expected a list"),
        ("quality: null", "analysis.quality: expected a mapping"),
        ("impact: {baseline_stop_us: {Target_Low: x}}", "baseline_stop_us.Target_Low"),
        ("velocity: {rise_time_curve: {vb: -1}}",
         "analysis.velocity.rise_time_curve.vb: expected a number > 0, got -1"),
        ("velocity: {yield_curve: {k: 0}}",
         "analysis.velocity.yield_curve.k: expected a number > 0"),
        # a curve valid key by key but not invertible
        ("velocity: {rise_time_curve: {a1: 1.0, a2: -1.0, a3: -1.0}}",
         "analysis.velocity.rise_time_curve: rise-time curve is not monotonic"),
        ("velocity: {rise_time_curve: {log_b: 1}}", "'analysis.velocity.rise_time_curve.log_b'"),
        ("velocity: {channels: [Target_Hi]}", "analysis.velocity.channels"),
        ("calibration: {enabled: yes please}", "analysis.calibration.enabled: expected true/false"),
        # the former indirection (analysis.settings -> configs/analysis.yaml) is gone
        ("settings: {peaks: {height_sigma: 6}}", "unknown configuration key 'analysis.settings'"),
    ],
)
def test_bad_analysis_config_file_is_rejected_at_load(tmp_path, analysis, message):
    path = tmp_path / "user.yaml"
    path.write_text(f"analysis:\n  {analysis}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match=message):
        load_analysis_settings(path)


def test_analyze_takes_analysis_knobs_inline():
    events = simulate_events(3, seed=5).events
    base = {"calibration": {"enabled": False}}
    default = analyze(events, {"analysis": base})
    strict = analyze(events, {"analysis": {**base, "peaks": {"height_sigma": 1e6}}})
    assert default.sizes["peak"] > 0 and strict.sizes["peak"] == 0
    with pytest.raises(ConfigError, match="analysis.peaks.nope"):
        analyze(events, {"analysis": {"peaks": {"nope": 1}}})


def test_parse_assignment():
    assert parse_assignment("analysis.peaks.height_sigma=6") == {
        "analysis": {"peaks": {"height_sigma": 6}}
    }
    assert parse_assignment("analysis.velocity.channels=[Target_Low]") == {
        "analysis": {"velocity": {"channels": ["Target_Low"]}}
    }
    assert parse_assignment("cluster.address=null") == {"cluster": {"address": None}}
    assert parse_assignment("cluster.dashboard=") == {"cluster": {"dashboard": ""}}
    for bad in ("analysis.peaks", "=3", "a..b=1", "a.b=[1"):
        with pytest.raises(ConfigError):
            parse_assignment(bad)


def test_dump_config_round_trips():
    cfg = load_config({"analysis": {"peaks": {"height_sigma": 6}}})
    text = dump_config(cfg)
    assert "baseline_window_us: [-7.0, -5.0]" in text
    assert load_config(yaml.safe_load(text)) == cfg


def test_shipped_yaml_reads_the_same_with_libyaml_and_pure_python():
    """load_yaml uses libyaml's parser when present; it must not change any value."""
    import yaml

    from idexdask.config import load_yaml

    files = sorted(config_dir().glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        with open(path, encoding="utf-8") as stream:
            assert load_yaml(path) == yaml.load(stream, Loader=yaml.SafeLoader), path.name
