"""The event page's waveform stacks: built once, then fed each event's arrays (issue 17)."""

from __future__ import annotations

import holoviews as hv
import numpy as np
from bokeh.models import ColumnDataSource, Plot

from idexdask.dashboard.data import StoreData
from idexdask.dashboard.event_plots import WaveformStacks, waveform_note
from idexdask.dashboard.plots import waveform


def _sources(plot) -> list[ColumnDataSource]:
    return list(plot.state.select({"type": ColumnDataSource}))


def test_switching_events_updates_the_same_figures(sim_store):
    hv.extension("bokeh")
    renderer = hv.renderer("bokeh")
    data = StoreData(sim_store)
    stacks = WaveformStacks(data, 0)
    plots = [renderer.get_plot(layout) for layout in stacks.layouts]
    figures = [id(f) for p in plots for f in p.state.select({"type": Plot})]
    assert len(figures) == len(stacks.names) >= 3
    name = stacks.names[0]  # the first TOF channel, in the first stack
    trace = next(s for s in _sources(plots[0]) if name in s.data)
    before = np.asarray(trace.data[name], dtype=float).copy()
    for row in (1, 2):
        stacks.show(row)
        _, values, _ = waveform(data.event(row).event, name)
        after = np.asarray(trace.data[name], dtype=float)
        # LTTB keeps samples of the trace: every point shown is one of this event's
        assert after.size and np.isin(after[np.isfinite(after)], values).all()
        assert not np.array_equal(after, before)
        before = after.copy()
    # same Bokeh figures (no rebuild), and the note lists no channel of a clean event
    assert [id(f) for p in plots for f in p.state.select({"type": Plot})] == figures
    assert "missing" not in waveform_note(data.event(2).event, stacks.names)
