"""The event page's waveform stacks, built once per session and fed new data per event.

Constructing the HoloViews/Bokeh plots of six channels costs ~1 s on a 2-core
host (``docs/performance.md``, "Dashboard"), far more than reading the event.
Here every channel is a :class:`holoviews.DynamicMap` driven by one
:class:`EventRow` stream: switching events sends the new row through the stream
and HoloViews pushes new arrays into the existing Bokeh data sources instead of
building new figures.  Each layer keeps the same element type on every event
(an empty curve, no vertical lines where an event has no fit), because a
DynamicMap cannot change the structure of its overlay after its first frame.
"""

from __future__ import annotations

import html
import logging

import holoviews as hv
import numpy as np
import xarray as xr

from idexdask.dashboard.data import StoreData
from idexdask.dashboard.plots import (
    IMPACT_CHANNELS,
    downsampled,
    impact_overlay_data,
    waveform,
)

__all__ = ["EventRow", "WaveformStacks", "waveform_note"]

logger = logging.getLogger(__name__)

#: The stream that carries the event row (0-based) every channel of a session draws;
#: ``revision`` changes on every push, so a live refresh of the same row re-reads it
#: instead of getting the DynamicMap's memoised frame.
EventRow = hv.streams.Stream.define("EventRow", row=0, revision=0)


def waveform_note(event: xr.Dataset, names: list[str]) -> str:
    """HTML note of the channels of ``event`` that are missing or hold fill samples."""
    notes = []
    for name in names:
        _, values, _ = waveform(event, name)
        n_fill = int(np.count_nonzero(~np.isfinite(values)))
        if not np.isfinite(values).any():
            notes.append(f"{name}: missing (no valid sample)")
        elif n_fill:
            notes.append(f"{name}: {n_fill} fill/NaN samples")
    if not notes:
        return ""
    return ("<div class='idx-waveform-notes' style='color:#a00'>"
            + "<br>".join(html.escape(n) for n in notes) + "</div>")


class WaveformStacks:
    """One stack of channel plots per sampling rate, updated in place per event.

    Parameters
    ----------
    data : StoreData
        The served store.
    row : int
        The event row (0-based) drawn first.
    height : int
        Height of each channel's plot (px).
    svg : bool
        Render with Bokeh's SVG backend (the save tool then writes SVG).
    """

    def __init__(self, data: StoreData, row: int, *, height: int = 160,
                 svg: bool = False) -> None:
        self.data = data
        self.stream = EventRow(row=int(row))
        first = data.event(int(row)).event
        self.names = [n for n in data.waveform_names() if n in first]
        groups: dict[str, list] = {}
        for name in self.names:
            groups.setdefault(str(first[name].dims[-1]), []).append(
                self._channel(first, name, height))
        self.layouts = []
        for plots in groups.values():
            layout = hv.Layout(plots).cols(1).opts(shared_axes=True)
            if svg:
                layout = layout.opts(hv.opts.Curve(backend_opts={"plot.output_backend": "svg"}))
            self.layouts.append(layout)

    def _event(self, row: int) -> xr.Dataset:
        return self.data.event(int(row)).event

    def _channel(self, first: xr.Dataset, name: str, height: int) -> hv.DynamicMap:
        _, _, unit = waveform(first, name)
        label = f"{name} ({unit})" if unit else name
        # one time dimension per sampling rate: the TOF channels share their zoom, the
        # charge channels theirs (a shared axis would squeeze 40 µs of TOF into 130 µs)
        rate = str(first[name].dims[-1]).removesuffix("_index").removeprefix("time_")
        xdim = hv.Dimension(f"time_{rate}", label="time", unit="µs")
        ydim = hv.Dimension(name, label=label)

        def trace(row: int, revision: int = 0) -> hv.Curve:
            time, values, _ = waveform(self._event(row), name)
            if not np.isfinite(values).any():
                return hv.Curve(([], []), xdim, ydim)
            return hv.Curve((time, values), xdim, ydim)

        def fit(row: int, revision: int = 0) -> hv.Overlay:
            event = self._event(row)
            time, _, _ = waveform(event, name)
            overlay = impact_overlay_data(event, name, time)
            grid, model = (overlay.grid, overlay.model) if overlay else ([], [])
            impact = [overlay.time_of_impact] if overlay else []
            levels = list(overlay.levels) if overlay else []
            return (hv.Curve((grid, model), xdim, ydim).opts(color="red", line_width=2)
                    * hv.VLines(impact, kdims=[xdim]).opts(color="black", line_dash="dashed")
                    * hv.VLines(levels, kdims=[xdim]).opts(color="orange",
                                                           line_dash="dotted"))

        traces = downsampled(hv.DynamicMap(trace, streams=[self.stream])).opts(color="#1f77b4")
        if name in IMPACT_CHANNELS and f"{IMPACT_CHANNELS[name]}_fit_parameters" in first:
            traces = traces * hv.DynamicMap(fit, streams=[self.stream])
        # framewise: each event gets its own axis ranges, as a rebuilt plot would
        shown = {"height": height, "responsive": True, "title": label, "framewise": True}
        return traces.opts(hv.opts.Curve(**shown), hv.opts.VLines(framewise=True),
                           hv.opts.Overlay(show_legend=False, **shown))

    def show(self, row: int) -> None:
        """Draw event ``row`` in the existing plots (new data, same figures)."""
        self.stream.event(row=int(row), revision=self.stream.revision + 1)
