"""``/event?event=N``: one event's header, waveforms, instrument state and TOF spectrum."""

from __future__ import annotations

import html
import logging

import numpy as np
import panel as pn
import param

from idexdask.dashboard.common import (
    error_pane,
    guarded,
    hv_pane,
    page_shell,
    query_int,
    start_live,
)
from idexdask.dashboard.data import decode_flags, tt2000_to_utc
from idexdask.dashboard.event_plots import WaveformStacks, waveform_note
from idexdask.dashboard.instrument_view import instrument_state_html
from idexdask.dashboard.plots import spectrum_plot
from idexdask.dashboard.state import ReviewState, ServerContext

__all__ = ["event_controls", "event_header", "event_page"]

logger = logging.getLogger(__name__)


def _value(event, name, default="—"):
    if name not in event:
        return default
    value = event[name].values
    return value.item() if hasattr(value, "item") else value


def event_header(context: ServerContext, index: int) -> str:
    """HTML table of the event's identity, quality and calibration."""
    data = context.data
    event = data.event(index).event
    utc = str(tt2000_to_utc(np.asarray([_value(event, "epoch", 0)]))[0])[:23]
    if "source_file" in event:
        source = ", ".join(sorted({str(s) for s in np.ravel(event["source_file"].values) if s}))
    else:
        source = data.input_name(int(_value(event, "input_index", -1)))
    number = _value(event, "idx__txhdrevtnum", _value(event, "impact_number"))
    flags = decode_flags(int(_value(event, "quality_flags", 0))) or ["none"]
    status = _value(event, "mass_calibration_status")
    reason = _value(event, "mass_calibration_reason")
    rows = [
        ("event (row)", index), ("UTC", utc), ("epoch (TT2000 ns)", _value(event, "epoch")),
        ("source", source), ("event number", number), ("quality flags", ", ".join(flags)),
        ("calibration", f"{status} ({reason})"), ("lines", _value(event, "peak_count")),
        ("impact speed (km/s)", _fmt(_value(event, "impact_velocity"))),
        ("dust mass (kg)", _fmt(_value(event, "dust_mass"))),
        ("target charge (pC)", _fmt(_value(event, "target_low_impact_charge"))),
    ]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th>"
                    f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='idx-event-header'>{cells}</table>"


def _fmt(value) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


class EventView(param.Parameterized):
    """Display choices of the event page."""

    mass_axis = param.Boolean(default=False, doc="TOF spectrum on the mass axis")
    svg = param.Boolean(default=False, doc="render as SVG (the save tool then writes SVG)")


def event_controls(state: ReviewState, message: str | None) -> pn.Row:
    """Event number, previous/next (skipping rows not done yet)."""
    data = state.context.data
    number = pn.widgets.IntInput(name="event", value=state.event, start=0,
                                 end=max(data.n_events - 1, 0), width=120,
                                 css_classes=["idx-event-input"])
    previous = pn.widgets.Button(name="◀ previous", width=110, css_classes=["idx-prev"])
    following = pn.widgets.Button(name="next ▶", width=110, css_classes=["idx-next"])

    def step(direction: int) -> None:
        done = np.flatnonzero(data.done)
        if not done.size:
            return
        if direction > 0:
            later = done[done > state.event]
            state.event = int(later[0]) if later.size else state.event
        else:
            earlier = done[done < state.event]
            state.event = int(earlier[-1]) if earlier.size else state.event

    previous.on_click(lambda _: step(-1))
    following.on_click(lambda _: step(+1))
    number.param.watch(lambda e: setattr(state, "event", int(e.new)), "value")
    state.param.watch(lambda e: setattr(number, "value", int(e.new)), "event")
    items = [previous, number, following]
    if message:
        items.append(error_pane(message))
    return pn.Row(*items)


def sync_event_to_url(state: ReviewState) -> None:
    """Keep ``?event=N`` in the address bar (the view is a shareable link)."""
    def update(event):
        if pn.state.location is not None:
            pn.state.location.update_query(event=int(event.new))
    state.param.watch(update, "event")


def event_page(context: ServerContext) -> pn.Column:
    """Build the ``/event`` page of one session."""
    index, message = query_int("event", 0)
    state = ReviewState(context)
    if index >= 0:
        state.event = index
    else:
        message = f"event {index} is out of range: rows start at 0"
    view = EventView()
    sync_event_to_url(state)
    start_live(state)

    @guarded
    def header(event, refresh):
        return pn.pane.HTML(event_header(context, event), sizing_mode="stretch_width")

    # the waveform plots are built once per session (and per SVG choice): an event
    # switch pushes the new row's arrays into them instead of rebuilding ~1 s of figures
    stacks: dict[str, WaveformStacks] = {}
    notes = pn.pane.HTML("", sizing_mode="stretch_width")

    @guarded
    def waveforms(svg):
        stacks["current"] = WaveformStacks(context.data, state.event, svg=svg)
        notes.object = waveform_note(context.data.event(state.event).event,
                                     stacks["current"].names)
        panes = [hv_pane(layout, sizing_mode="stretch_width", css_classes=["idx-waveforms"])
                 for layout in stacks["current"].layouts]
        return pn.Column(*panes, sizing_mode="stretch_width")

    def show_waveforms(_=None) -> None:
        current = stacks.get("current")
        if current is None:
            return
        try:
            with pn.io.hold():
                current.show(state.event)
                notes.object = waveform_note(context.data.event(state.event).event,
                                             current.names)
        except Exception as exc:  # a view must never take the page down
            logger.exception("waveforms of event %s failed", state.event)
            notes.object = (f"<div class='idx-error' style='color:#a00'>waveforms: "
                            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>")

    state.param.watch(show_waveforms, ["event", "refresh"])

    @guarded
    def instrument(event, refresh):
        row = context.data.event(event).dataset
        return pn.pane.HTML(instrument_state_html(row), width=620)

    @guarded
    def spectrum(event, mass_axis, refresh):
        row = context.data.event(event).event
        lines = context.data.lines(event)
        note = None
        if mass_axis and not np.isfinite(np.asarray(row["mass_calibration"].values)).all():
            note = pn.pane.HTML("<i>this event is not calibrated: no mass axis</i>")
        plot = spectrum_plot(row, lines, mass=mass_axis)
        items = [hv_pane(plot, sizing_mode="stretch_width",
                                   css_classes=["idx-spectrum"])]
        return pn.Column(*([note] if note else []), *items, sizing_mode="stretch_width")

    controls = event_controls(state, message)
    toggles = pn.Row(pn.widgets.Checkbox.from_param(view.param.mass_axis, name="mass axis"),
                     pn.widgets.Checkbox.from_param(view.param.svg, name="SVG export"),
                     pn.pane.HTML("<span style='color:#555'>each plot's save tool writes "
                                  "PNG (SVG when ticked)</span>"))
    body = pn.Column(
        controls, toggles,
        pn.panel(pn.bind(header, state.param.event, state.param.refresh)),
        pn.panel(pn.bind(spectrum, state.param.event, view.param.mass_axis,
                         state.param.refresh)),
        pn.Row(
            pn.Column(notes, pn.panel(pn.bind(waveforms, view.param.svg),
                                      sizing_mode="stretch_width"),
                      sizing_mode="stretch_width"),
            pn.panel(pn.bind(instrument, state.param.event, state.param.refresh)),
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
    return page_shell("/event", "Event", str(context.data.path), body, event=state.event)
