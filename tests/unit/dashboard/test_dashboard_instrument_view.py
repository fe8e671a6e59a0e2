"""The event page's instrument-state table (issue 22): readings, range marks, lab note."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from idexdask.analysis.instrument import event_readings
from idexdask.dashboard.instrument_view import instrument_state_html
from idexdask.simulate import simulate_events
from idexdask.workflow import analyze


@pytest.fixture(scope="module")
def analysed() -> xr.Dataset:
    return analyze(simulate_events(3, seed=11).events)


def test_every_quantity_and_the_trigger_are_shown(analysed):
    row = analysed.isel(epoch=[1])
    text = instrument_state_html(row)
    readings = event_readings(row, 0)
    assert len(readings) == 32
    for r in readings:
        assert f">{r.name}<" in text
    for name in ("trigger_mode_hg", "trigger_level_hg", "trigger_origin", "dead_time",
                 "instrument_state_flags"):
        assert f">{name}<" in text
    assert "HGThreshold" in text  # the simulator's high-gain threshold trigger
    assert "idx-out-of-range" not in text and "within their valid ranges" in text


def test_an_out_of_range_value_is_marked(analysed):
    row = analysed.isel(epoch=[0]).copy()
    row["reflectron_voltage"] = ("epoch", np.array([6500.0]))  # V, above 5940
    text = instrument_state_html(row)
    marked = re.findall(r"<tr class='idx-out-of-range'[^>]*><td[^>]*>(\w+)<", text)
    assert marked == ["reflectron_voltage"]
    assert "1 quantities out of range" in text


def test_a_source_without_state_gets_a_note():
    row = xr.Dataset({"TOF_High": (("epoch", "time"), np.zeros((1, 4)))})
    text = instrument_state_html(row)
    assert "idx-no-state" in text and "no instrument state" in text
