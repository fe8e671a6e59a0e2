"""Per-line products stored event-major and back."""

from __future__ import annotations

import numpy as np
import xarray as xr

from idexdask.pipeline.ragged import peaks_from_event_major, peaks_to_event_major


def ragged(n_events=4):
    rng = np.random.default_rng(0)
    event = np.array([0, 0, 0, 2, 2, 3])
    return xr.Dataset(
        {
            "peak_event": ("peak", event),
            "peak_center": ("peak", np.array([3.0, 1.0, 2.0, 5.0, 4.0, 9.0])),
            "peak_area": ("peak", np.array([1.0, 5.0, 3.0, 2.0, 2.5, 7.0])),
            "peak_status": ("peak", np.arange(6, dtype=np.int8)),
            "peak_species": ("peak", np.array(["Na", "H", "C", "Mg", "", "Fe"], dtype=object)),
            "x": ("epoch", rng.normal(size=n_events)),
        },
        coords={"epoch": np.arange(n_events) * 10},
    )


def test_round_trip_keeps_every_line_in_time_order():
    ds = ragged()
    stored = peaks_to_event_major(ds, max_peaks=5)
    assert stored["peak_center"].dims == ("epoch", "peak_slot")
    assert stored["peak_count"].values.tolist() == [3, 0, 2, 1]
    assert stored["peak_center"].values[0, :3].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(stored["peak_center"].values[1]).all()
    assert stored["peak_species"].values[0, :3].tolist() == ["H", "C", "Na"]
    back = peaks_from_event_major(stored)
    order = np.lexsort((ds["peak_center"].values, ds["peak_event"].values))
    for name in ("peak_event", "peak_center", "peak_area", "peak_status", "peak_species"):
        np.testing.assert_array_equal(back[name].values, ds[name].values[order])
    np.testing.assert_array_equal(back["x"].values, ds["x"].values)


def test_overflow_keeps_the_largest_lines_and_counts_the_rest(caplog):
    stored = peaks_to_event_major(ragged(), max_peaks=2)
    assert stored["peak_count"].values.tolist() == [2, 0, 2, 1]
    assert stored["peak_overflow"].values.tolist() == [1, 0, 0, 0]
    # event 0 keeps areas 5 and 3 (centres 1 and 2), drops area 1
    assert stored["peak_area"].values[0].tolist() == [5.0, 3.0]
    assert "more than 2 lines" in caplog.text


def test_datasets_without_peaks_pass_through():
    ds = xr.Dataset({"x": ("epoch", np.zeros(3))})
    assert peaks_to_event_major(ds, 8) is ds


def test_overflow_keeps_manual_lines_first():
    """A line a person added is stored even when the event's slots are full."""
    ds = ragged().assign(peak_manual=("peak", np.array([True, False, False, False, False, False])))
    stored = peaks_to_event_major(ds, max_peaks=2)
    # event 0: the manual line (area 1, the smallest) and the largest other (area 5)
    assert sorted(stored["peak_area"].values[0, :2].tolist()) == [1.0, 5.0]
    assert stored["peak_manual"].values[0, :2].tolist() == [False, True]  # time order
    assert stored["peak_overflow"].values.tolist() == [1, 0, 0, 0]
