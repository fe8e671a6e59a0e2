"""The event page's figures: built once, then fed each event's arrays (issue 17)."""

from __future__ import annotations

import numpy as np

from idexdask.dashboard.data import StoreData
from idexdask.dashboard.decimate import decimated, minmax_indices
from idexdask.dashboard.event_plots import SpectrumFigure, WaveformStacks, waveform_note
from idexdask.dashboard.plots import placed_labels, waveform


def test_switching_events_updates_the_same_figures(sim_store):
    data = StoreData(sim_store)
    stacks = WaveformStacks(data, 0)
    figures = [id(f) for f in stacks.figures]
    assert len(figures) == len(stacks.names) >= 3
    name = stacks.names[0]  # the first TOF channel
    trace = stacks.channels[name].trace.source
    before = np.asarray(trace.data["y"], dtype=float).copy()
    for row in (1, 2):
        stacks.show(row)
        _, values, _ = waveform(data.event(row).event, name)
        after = np.asarray(trace.data["y"], dtype=float)
        # min-max decimation keeps samples: every point shown is one of this event's
        assert after.size and np.isin(after[np.isfinite(after)], values).all()
        assert not np.array_equal(after, before)
        # and the extremes of the event are among them (a line's peak is never cut)
        assert np.nanmax(after) == np.nanmax(values) and np.nanmin(after) == np.nanmin(values)
        before = after.copy()
    # same Bokeh figures (no rebuild), and the note lists no channel of a clean event
    assert [id(f) for f in stacks.figures] == figures
    assert "missing" not in waveform_note(data.event(2).event, stacks.names)


def test_spectrum_figure_draws_every_line_of_each_event(sim_store):
    data = StoreData(sim_store)
    spectrum = SpectrumFigure()
    for row in (0, 3):
        lines = data.lines(row)
        spectrum.show(data.event(row).event, lines)
        assert len(spectrum.lines.data["xs"]) == int(np.isfinite(lines["area"]).sum()) > 0
        assert set(spectrum.labels.data["text"]) <= set(lines["label"])
    scalars = data.scalars()
    calibrated = int(scalars.loc[scalars["mass_calibration_status"] == "calibrated",
                                 "event"].iloc[0])
    uncalibrated = int(scalars.loc[scalars["mass_calibration_status"] != "calibrated",
                                   "event"].iloc[0])
    assert spectrum.show(data.event(calibrated).event, data.lines(calibrated), mass=True)
    assert spectrum.figure.xaxis.axis_label == "mass (u)"
    # an uncalibrated event stays on the time axis, and says so to the page
    assert not spectrum.show(data.event(uncalibrated).event, data.lines(uncalibrated),
                             mass=True)
    assert spectrum.figure.xaxis.axis_label == "time (µs)"


def test_minmax_decimation_keeps_extremes_and_gaps():
    rng = np.random.default_rng(1)
    values = rng.normal(size=500_002)
    values[123_456] = 40.0  # a narrow line
    values[300_000:300_050] = np.nan  # a fill run
    keep = minmax_indices(values, 1000)
    assert keep.size <= 3002 and np.all(np.diff(keep) > 0)
    assert 123_456 in keep and keep[0] == 0 and keep[-1] == values.size - 1
    assert np.isnan(values[keep]).any()  # the gap stays a gap
    x = np.arange(values.size, dtype=float)
    xs, ys = decimated(x, values, (1000.0, 2000.0))
    # the visible range plus one sample either side, every sample of it (short span)
    assert xs[0] == 999.0 and xs[-1] == 2001.0 and np.array_equal(ys, values[999:2002])


def test_line_labels_do_not_overlap():
    # sixty lines within 3 µs of a 4 µs view, of similar heights: labels ~50 px wide,
    # lines ~13 px apart on an assumed 1000 px plot
    rng = np.random.default_rng(2)
    xs = list(np.linspace(10.0, 13.0, 60))
    heights = list(1.0 + 0.1 * rng.random(60))
    heights[17] = 30.0
    labels = [f"Mg@{24 + i:.1f}" for i in range(60)]
    placed = placed_labels(xs, heights, labels, span=4.0)
    assert 0 < len(placed) < 60
    assert placed[0] == (17, 0)  # the tallest line is labelled, right above its peak
    # no two drawn label boxes overlap on screen
    top = max(heights)
    boxes = []
    for i, tier in placed:
        centre, half = xs[i] / 4.0 * 1000, 0.5 * (len(labels[i]) * 6.5 + 6)
        low = heights[i] / top * 240 + 2 + 13 * tier
        boxes.append((centre - half, centre + half, low, low + 13))
    for k, a in enumerate(boxes):
        for b in boxes[k + 1:]:
            assert a[1] < b[0] or a[0] > b[1] or a[3] <= b[2] or a[2] >= b[3], (a, b)
    # well-separated lines are all labelled, right above their peaks
    assert placed_labels([1.0, 5.0, 9.0], [1, 2, 3], ["a", "b", "c"], span=10.0) == \
        [(2, 0), (1, 0), (0, 0)]


def test_minerals_on_one_ternary_point_are_stacked_not_overprinted():
    from idexdask.dashboard.pages.composition import mineral_label_rows

    x, y, texts = mineral_label_rows(np.array([0.0, 0.001, 0.5]), np.array([0.0, 0.0, 0.8]),
                                     ["quartz", "larnite", "forsterite"])
    assert sorted(texts) == ["forsterite", "larnite", "quartz"]
    at_corner = sorted(v for v, t in zip(y, texts, strict=True) if t != "forsterite")
    assert at_corner[1] - at_corner[0] >= 0.03  # one above the other
    assert len(set(zip(x, y, strict=True))) == 3
