"""analyze() uses the configured calibration settings file, not only the shipped one."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from idexdask.config import config_dir, load_config
from idexdask.errors import ConfigError
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze


@pytest.fixture(scope="module")
def events():
    return simulate_events(4, seed=21).events


def test_missing_settings_file_is_an_error(events, tmp_path):
    """Found when the configuration is loaded, before any event is analysed."""
    override = {"calibration": {"settings_file": str(tmp_path / "absent.yaml")}}
    with pytest.raises(ConfigError, match="calibration.settings_file: .*not found"):
        load_config(override)
    with pytest.raises(ConfigError, match="calibration.settings_file"):
        analyze(events, override)


def test_settings_file_changes_the_result(events, tmp_path):
    shipped = analyze(events, load_config())
    assert (shipped["mass_calibration_status"].values == "calibrated").any()
    settings = yaml.safe_load((config_dir() / "calibration.yaml").read_text())
    # a t0 search range that excludes the simulated t0 (-0.05..0.15 µs)
    settings["presets"]["flight"]["t0_range_us"] = [2.5, 3.0]
    custom = tmp_path / "calibration.yaml"
    custom.write_text(yaml.safe_dump(settings))
    config = load_config({"calibration": {"settings_file": str(custom)}})
    moved = analyze(events, config)
    assert not np.array_equal(
        moved["mass_calibration_status"].values, shipped["mass_calibration_status"].values
    )
