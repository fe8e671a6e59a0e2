"""The configuration model (idexdask.schema): every key covered, every mistake stops early.

Each kind of mistake -- a typo in a preset name, an unknown key, a wrong type, a
value out of range -- is tried in the three places a configuration comes from:
a YAML file (`--config`), `--set KEY=VALUE`, and the `config=` mapping of
`analyze`.  Each gives exit code 2 / ConfigError naming the dotted key (and what
is allowed), and nothing is written.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import yaml

import idexdask
from idexdask.cli import main
from idexdask.config import default_config, load_config, load_settings
from idexdask.errors import ConfigError
from idexdask.schema import SCHEMA, Settings, missing_specs
from idexdask.simulate import simulate_events

# (dotted key, bad value, what the message must say)
MISTAKES = [
    ("composition.rsf_preset", "labb",
     "composition.rsf_preset: unknown RSF preset 'labb' (allowed: hyperdust_fo91, lab,"),
    ("calibration.preset", "nope",
     "calibration.preset: unknown preset 'nope' of calibration.yaml (allowed: flight, lab"),
    ("composition.species_file", "no-such-species.yaml", "composition.species_file: "),
    ("analysis.peaks.height_sigmaa", 6.0,
     "unknown configuration key 'analysis.peaks.height_sigmaa' (known in analysis.peaks: "),
    ("analysis.peaks.height_sigma", "six",
     "analysis.peaks.height_sigma: expected a number >= 0, got 'six'"),
    ("pipeline.retries", 25, "pipeline.retries: expected an integer >= 0 and <= 20, got 25"),
    ("analysis.fitting.engine", "fastest",
     "analysis.fitting.engine: expected one of compiled, auto, xp, got 'fastest'"),
    ("composition.mass_tolerance_u", -0.1,
     "composition.mass_tolerance_u: expected a number > 0, got -0.1"),
]


def _nested(dotted: str, value) -> dict:
    out = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


@pytest.fixture(scope="module")
def events():
    return simulate_events(4, seed=5).events


def test_every_key_of_default_yaml_is_in_the_model():
    """A key added to default.yaml needs its line in idexdask.schema.SCHEMA."""
    assert missing_specs(default_config()) == []
    # and no spec for a key default.yaml does not have (a stale line)
    defaults = default_config()
    for dotted in SCHEMA:
        node = defaults
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"{dotted} not in default.yaml"
            node = node[part]


def test_defaults_pass_the_model_unchanged():
    assert load_config() == default_config()


def test_shipped_dask_settings_are_dask_settings():
    """The load-time check looks up only keys added to cluster.dask_config."""
    from idexdask.pipeline.cluster import check_dask_settings

    check_dask_settings(default_config()["cluster"]["dask_config"])


@pytest.mark.parametrize(("key", "value", "message"), MISTAKES)
def test_mistake_in_a_mapping_or_a_yaml_file(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as info:
        load_config(_nested(key, value))
    assert message in str(info.value)
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(_nested(key, value)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), MISTAKES)
def test_mistake_in_analyze_config_raises(events, key, value, message):
    """No stage carries on past a configuration mistake (before: a bad RSF preset
    only logged a warning and the products lost their composition)."""
    with pytest.raises(ConfigError) as info:
        idexdask.analyze(events, config=_nested(key, value))
    assert message in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), MISTAKES)
def test_mistake_in_config_command_exits_2(tmp_path, capsys, key, value, message):
    assert main(["config", "--set", f"{key}={yaml.safe_dump(value).splitlines()[0]}"]) == 2
    assert message in capsys.readouterr().out
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(_nested(key, value)))
    assert main(["config", "--config", str(path)]) == 2
    assert message in capsys.readouterr().out


@pytest.mark.parametrize(("key", "value", "message"), MISTAKES)
def test_mistake_stops_submit_before_anything_is_written(tmp_path, capsys, key, value,
                                                         message):
    (tmp_path / "in").mkdir()
    store = tmp_path / "store.zarr"
    argv = ["submit", str(tmp_path / "in"), "-o", str(store),
            "--set", f"{key}={yaml.safe_dump(value).splitlines()[0]}"]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert message in out and "dashboard" not in out  # no cluster started
    assert not store.exists()
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(_nested(key, value)))
    assert main(["submit", str(tmp_path / "in"), "-o", str(store), "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert message in out and "dashboard" not in out
    assert not store.exists()


def test_bad_config_file_that_is_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)
    assert main(["config", "--config", str(path)]) == 2


def test_settings_are_frozen_and_travel_to_workers():
    settings = load_settings({"analysis": {"peaks": {"height_sigma": 6}}})
    assert isinstance(settings, Settings)
    assert settings.analysis.peaks.height_sigma == 6.0
    assert settings["analysis"]["quality"]["baseline_window_us"] == (-7.0, -5.0)
    with pytest.raises(TypeError):
        settings["analysis"]["peaks"]["height_sigma"] = 7  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.analysis.peaks.height_sigma = 7
    assert pickle.loads(pickle.dumps(settings)) == settings  # Dask pickles the config
    assert copy.deepcopy(settings) == settings


def test_values_are_normalised_by_type():
    config = load_config({"pipeline": {"batch_events": 256.0},
                          "analysis": {"peaks": {"height_sigma": 6}}})
    assert config["pipeline"]["batch_events"] == 256
    assert isinstance(config["pipeline"]["batch_events"], int)
    assert isinstance(config["analysis"]["peaks"]["height_sigma"], float)
    # a bool is not a number, a number is not a bool
    with pytest.raises(ConfigError, match="analysis.peaks.height_sigma"):
        load_config({"analysis": {"peaks": {"height_sigma": True}}})


def test_analysis_products_unchanged_by_the_model(events):
    """The same analysis twice through the model: bit for bit (same code, same machine)."""
    first = idexdask.analyze(events, config={"composition": {"rsf_preset": "lab"}})
    again = idexdask.analyze(events)
    assert "composition" in first and set(first.variables) == set(again.variables)
    for name in first.variables:
        a, b = first[name].values, again[name].values
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert np.array_equal(a, b), name


@pytest.mark.parametrize(("override", "message"), [
    ({"cluster": {"memory_limit": "lots"}}, "cluster.memory_limit: expected a size"),
    ({"cluster": {"dask_config": {"distributed.nope": 1}}}, "'distributed.nope' is not a Dask"),
    ({"export": {"formats": ["pdf"]}}, "export.formats[0]: expected one of hdf5, cdf"),
    ({"export": {"cdf_attributes": "absent.yaml"}}, "export.cdf_attributes: "),
    ({"analysis": {"impact": {"tau_min_us": 2000.0}}}, "analysis.impact.tau_min_us: "),
    ({"analysis": {"quality": {"polarity": {"QD_1": 2}}}},
     "analysis.quality.polarity.QD_1: expected one of -1, 0, 1, got 2"),
    ({"composition": {"elements": ["Mg", "Mg"]}}, "composition.elements: expected a non-empty"),
    ({"analysis": None}, "analysis: expected a mapping"),
])
def test_more_mistakes_name_their_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(override)
    assert message in str(info.value)
