"""Configuration loading and validation."""

from __future__ import annotations

import pytest

from idexdask.config import load_config, merge
from idexdask.errors import ConfigError


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
