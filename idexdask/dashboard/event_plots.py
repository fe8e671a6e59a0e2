"""The event page's plots: Bokeh figures built once per session and fed new data per event.

Constructing the HoloViews/Bokeh plots of six channels and a spectrum costs
~1 s on a 2-core host, and even HoloViews' stream updates of existing plots
cost ~150 ms per event (its per-frame machinery and ``downsample1d``), far more
than reading the event (``docs/performance.md``, "Dashboard").  Here the figures
are plain Bokeh models made once; switching events writes new arrays into their
``ColumnDataSource`` objects, moves the impact markers and retitles the plots.
Every trace is min-max decimated (:mod:`idexdask.dashboard.decimate`) and
decimated again on the server for the visible range after each zoom or pan, so
a lab capture's 500,002 samples per channel never travel to the browser.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import xarray as xr
from bokeh.events import RangesUpdate
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, HoverTool, LabelSet, Range1d, Span
from bokeh.plotting import figure

from idexdask.dashboard.data import StoreData
from idexdask.dashboard.decimate import decimated
from idexdask.dashboard.plots import (
    IMPACT_CHANNELS,
    LABEL_ROW_PX,
    impact_overlay_data,
    line_curves,
    mass_of_time,
    placed_labels,
    spectrum_window,
    waveform,
)

__all__ = ["SpectrumFigure", "WaveformStacks", "waveform_note"]

logger = logging.getLogger(__name__)

TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
TRACE_COLOR = "#1f77b4"


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


def _extent(x: np.ndarray) -> tuple[float, float]:
    finite = x[np.isfinite(x)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _set_range(x_range: Range1d, low: float, high: float) -> None:
    """Move a range and the extent its reset tool returns to."""
    x_range.update(start=low, end=high, reset_start=low, reset_end=high)


class _Trace:
    """One decimated line of a figure: its full samples and its Bokeh source."""

    def __init__(self) -> None:
        self.x = np.zeros(0)
        self.y = np.zeros(0)
        self.source = ColumnDataSource({"x": [], "y": []})

    def set(self, x: np.ndarray, y: np.ndarray,
            x_range: tuple[float, float] | None = None) -> None:
        self.x, self.y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        self.redraw(x_range)

    def redraw(self, x_range: tuple[float, float] | None) -> None:
        x, y = decimated(self.x, self.y, x_range)
        self.source.data = {"x": x, "y": y}


def _on_zoom(fig, redraw: Callable[[tuple[float, float]], None]) -> None:
    """Decimate again for the new visible range once a zoom or pan ends."""
    def handler(event: RangesUpdate) -> None:
        if event.x0 is not None and event.x1 is not None:
            redraw((float(event.x0), float(event.x1)))
    fig.on_event(RangesUpdate, handler)


class _Channel:
    """The figure of one waveform: trace, impact-fit model, impact and 10/90 % markers."""

    def __init__(self, name: str, unit: str, x_range: Range1d, height: int,
                 svg: bool) -> None:
        self.name = name
        label = f"{name} ({unit})" if unit else name
        self.label = label
        self.figure = figure(height=height, sizing_mode="stretch_width", x_range=x_range,
                             tools=TOOLS, active_scroll="xwheel_zoom", title=label,
                             x_axis_label="time (µs)", y_axis_label=unit or None,
                             output_backend="svg" if svg else "canvas")
        self.figure.min_border_left = 70  # stacked plots' time axes line up
        self.trace = _Trace()
        self.figure.line("x", "y", source=self.trace.source, color=TRACE_COLOR)
        self.fit = ColumnDataSource({"x": [], "y": []})
        self.figure.line("x", "y", source=self.fit, color="red", line_width=2)
        self.impact = Span(location=0, dimension="height", line_color="black",
                           line_dash="dashed", visible=False)
        self.levels = [Span(location=0, dimension="height", line_color="orange",
                            line_dash="dotted", visible=False) for _ in range(2)]
        for span in (self.impact, *self.levels):
            self.figure.add_layout(span)
        _on_zoom(self.figure, self.trace.redraw)

    def show(self, event: xr.Dataset) -> None:
        time, values, _ = waveform(event, self.name)
        missing = not np.isfinite(values).any()
        self.trace.set(time, values)
        self.figure.title.text = self.label + (" — missing (no valid sample)"
                                               if missing else "")
        overlay = (impact_overlay_data(event, self.name, time)
                   if self.name in IMPACT_CHANNELS else None)
        self.fit.data = ({"x": overlay.grid, "y": overlay.model} if overlay
                         else {"x": [], "y": []})
        self.impact.visible = overlay is not None
        if overlay is not None:
            self.impact.location = overlay.time_of_impact
        for span, at in zip(self.levels, overlay.levels if overlay else (), strict=False):
            span.location = at
        for span in self.levels[len(overlay.levels) if overlay else 0:]:
            span.visible = False
        if overlay is not None:
            for span in self.levels[:len(overlay.levels)]:
                span.visible = True

    def extent(self) -> tuple[float, float]:
        return _extent(self.trace.x)


class WaveformStacks:
    """One stack of channel figures per sampling rate, updated in place per event.

    The channels of one sampling rate share their time axis (zooming one zooms
    all); the TOF channels and the charge channels have an axis each (a shared
    one would squeeze 40 µs of TOF into the charge channels' 130 µs).

    Parameters
    ----------
    data : StoreData
        The served store.
    row : int
        The event row (0-based) drawn first.
    height : int
        Height of each channel's figure (px).
    svg : bool
        Render with Bokeh's SVG backend (the save tool then writes SVG).
    """

    def __init__(self, data: StoreData, row: int, *, height: int = 160,
                 svg: bool = False) -> None:
        self.data = data
        first = data.event(int(row)).event
        self.names = [n for n in data.waveform_names() if n in first]
        self.channels: dict[str, _Channel] = {}
        self.ranges: dict[str, Range1d] = {}
        groups: dict[str, list[_Channel]] = {}
        for name in self.names:
            rate = str(first[name].dims[-1])
            x_range = self.ranges.setdefault(rate, Range1d(0, 1))
            _, _, unit = waveform(first, name)
            channel = _Channel(name, unit, x_range, height, svg)
            self.channels[name] = channel
            groups.setdefault(rate, []).append(channel)
        self.groups = groups
        self.layouts = [column(*[c.figure for c in channels], sizing_mode="stretch_width")
                        for channels in groups.values()]
        self.show(int(row))

    @property
    def figures(self) -> list:
        """Every channel's Bokeh figure, in display order."""
        return [channel.figure for channel in self.channels.values()]

    def set_svg(self, svg: bool) -> None:
        """Switch every figure between canvas and SVG rendering."""
        for fig in self.figures:
            fig.output_backend = "svg" if svg else "canvas"

    def show(self, row: int) -> None:
        """Draw event ``row`` in the existing figures (new data, same figures)."""
        event = self.data.event(int(row)).event
        for name, channel in self.channels.items():
            if name in event:
                channel.show(event)
        for rate, channels in self.groups.items():
            lows, highs = zip(*(c.extent() for c in channels), strict=True)
            _set_range(self.ranges[rate], min(lows), max(highs))


class SpectrumFigure:
    """The event page's TOF spectrum: trace, fitted lines, decluttered labels.

    Every fitted line is drawn (one ``multi_line`` glyph) and hovering it names
    it; labels ``species@mass`` (or the centre when uncalibrated) are drawn for
    the lines whose labels fit beside each other, tallest first, on up to three
    staggered rows (:func:`idexdask.dashboard.plots.placed_labels`), so that a lab
    impact's thirty lines within a few µs stay legible.
    """

    def __init__(self, *, height: int = 320, svg: bool = False) -> None:
        self.x_range = Range1d(0, 1)
        self.figure = figure(height=height, sizing_mode="stretch_width", x_range=self.x_range,
                             tools=TOOLS, active_scroll="xwheel_zoom", title="TOF spectrum",
                             x_axis_label="time (µs)", y_axis_label="TOF spectrum",
                             output_backend="svg" if svg else "canvas")
        self.trace = _Trace()
        self.figure.line("x", "y", source=self.trace.source, color="#444")
        self.lines = ColumnDataSource({"xs": [], "ys": [], "label": [], "center": [],
                                       "area": []})
        renderer = self.figure.multi_line("xs", "ys", source=self.lines, color="red",
                                          line_width=1.5, hover_line_width=3)
        self.figure.add_tools(HoverTool(renderers=[renderer], tooltips=[
            ("line", "@label"), ("centre", "@center{0.000} µs"), ("area", "@area{0.000e}")]))
        self.labels = ColumnDataSource({"x": [], "y": [], "text": [], "dy": []})
        self.figure.add_layout(LabelSet(x="x", y="y", text="text", y_offset="dy",
                                        source=self.labels, text_font_size="9pt",
                                        text_color="darkred", text_align="center",
                                        text_baseline="bottom"))
        _on_zoom(self.figure, self.trace.redraw)

    def set_svg(self, svg: bool) -> None:
        self.figure.output_backend = "svg" if svg else "canvas"

    def show(self, event: xr.Dataset, lines: pd.DataFrame, *, mass: bool = False) -> bool:
        """Draw ``event``'s spectrum; returns whether it is on the mass axis.

        ``mass`` asks for the mass axis (u), drawn only when the event is calibrated.
        """
        name = "tof_combined" if "tof_combined" in event else "TOF_High"
        time, values, unit = waveform(event, name)
        masses = mass_of_time(event, time) if mass else None
        x = time
        if masses is not None:
            keep = np.isfinite(masses)
            x, values = masses[keep], values[keep]
        order = np.argsort(x, kind="stable") if x.size and np.any(np.diff(x) < 0) else None
        if order is not None:
            x, values = x[order], values[order]
        window = None if masses is not None else spectrum_window(lines, x)
        self.trace.set(x, values, window)
        curves = line_curves(lines)
        xs = [mass_of_time(event, c.x) if masses is not None else c.x for c in curves]
        column_of = {name: (list(lines.loc[[c.index for c in curves], name])
                            if name in lines else [None] * len(curves))
                     for name in ("label", "center", "area")}
        self.lines.data = {"xs": xs, "ys": [c.y for c in curves], **column_of}
        low, high = window if window is not None else _extent(x)
        tops = []
        for c, lx in zip(curves, xs, strict=True):
            peak = int(np.nanargmax(c.y)) if np.isfinite(c.y).any() else 0
            tops.append((float(lx[peak]), float(c.y[peak]) if np.isfinite(c.y[peak]) else 0.0))
        labels = [str(t) for t in column_of["label"]]
        placed = placed_labels([t[0] for t in tops], [t[1] for t in tops], labels,
                               span=high - low)
        self.labels.data = {"x": [tops[i][0] for i, _ in placed],
                            "y": [tops[i][1] for i, _ in placed],
                            "text": [labels[i] for i, _ in placed],
                            "dy": [2 + LABEL_ROW_PX * tier for _, tier in placed]}
        _set_range(self.x_range, low, high)
        self.figure.xaxis.axis_label = "mass (u)" if masses is not None else "time (µs)"
        self.figure.yaxis.axis_label = f"TOF spectrum ({unit})" if unit else "TOF spectrum"
        title = "TOF spectrum" + (" on the mass axis" if masses is not None else "")
        if len(placed) < len(curves):
            title += (f" — {len(placed)} of {len(curves)} lines labelled "
                      "(hover a line for its name)")
        self.figure.title.text = title
        return masses is not None
