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
    page_shell,
    query_int,
    start_live,
)
from idexdask.dashboard.event_header import event_header
from idexdask.dashboard.event_plots import SpectrumFigure, WaveformStacks, waveform_note
from idexdask.dashboard.instrument_view import instrument_state_html
from idexdask.dashboard.state import ReviewState, ServerContext

__all__ = ["event_controls", "event_page"]

logger = logging.getLogger(__name__)


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
        return pn.pane.HTML(event_header(context.data, event), sizing_mode="stretch_width")

    # the plots are Bokeh figures built once per session: an event switch writes the
    # new row's arrays into them instead of rebuilding ~1 s of figures
    figures: dict[str, object] = {}
    notes = pn.pane.HTML("", sizing_mode="stretch_width")
    waveforms = pn.Column(notes, sizing_mode="stretch_width")
    spectrum_note = pn.pane.HTML("", sizing_mode="stretch_width")

    def draw_spectrum() -> None:
        row = context.data.event(state.event).event
        on_mass = figures["spectrum"].show(row, context.data.lines(state.event),
                                           mass=view.mass_axis)
        spectrum_note.object = ("<i>this event is not calibrated: no mass axis</i>"
                                if view.mass_axis and not on_mass else "")

    spectrum_slot = pn.Column(sizing_mode="stretch_width")

    @guarded
    def make_figures() -> None:
        figures.update(stacks=WaveformStacks(context.data, state.event, svg=view.svg),
                       spectrum=SpectrumFigure(svg=view.svg))
        draw_spectrum()

    def build() -> None:
        """Make the figures of this session, or say in the page why they cannot be."""
        failed = make_figures()
        if failed is not None:
            figures.clear()
            spectrum_slot.objects = [failed]
            return
        stacks = figures["stacks"]
        notes.object = waveform_note(context.data.event(state.event).event, stacks.names)
        waveforms.objects = [notes, *(pn.pane.Bokeh(layout, sizing_mode="stretch_width",
                                                     css_classes=["idx-waveforms"])
                                      for layout in stacks.layouts)]
        spectrum_slot.objects = [
            spectrum_note, pn.pane.Bokeh(figures["spectrum"].figure,
                                         sizing_mode="stretch_width",
                                         css_classes=["idx-spectrum"])]

    def redraw(_=None) -> None:
        stacks = figures.get("stacks")
        if stacks is None:
            build()
            return
        try:
            with pn.io.hold():
                draw_spectrum()
                stacks.show(state.event)
                notes.object = waveform_note(context.data.event(state.event).event,
                                             stacks.names)
        except Exception as exc:  # a view must never take the page down
            logger.exception("plots of event %s failed", state.event)
            notes.object = (f"<div class='idx-error' style='color:#a00'>plots: "
                            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>")

    def set_svg(event) -> None:
        for key in ("stacks", "spectrum"):
            if key in figures:
                figures[key].set_svg(bool(event.new))

    state.param.watch(redraw, ["event", "refresh"])
    view.param.watch(redraw, "mass_axis")
    view.param.watch(set_svg, "svg")
    build()

    @guarded
    def instrument(event, refresh):
        row = context.data.event(event).dataset
        return pn.pane.HTML(instrument_state_html(row), width=620)

    controls = event_controls(state, message)
    toggles = pn.Row(pn.widgets.Checkbox.from_param(view.param.mass_axis, name="mass axis"),
                     pn.widgets.Checkbox.from_param(view.param.svg, name="SVG export"),
                     pn.pane.HTML("<span style='color:#555'>each plot's save tool writes "
                                  "PNG (SVG when ticked)</span>"))
    body = pn.Column(
        controls, toggles,
        pn.panel(pn.bind(header, state.param.event, state.param.refresh)),
        spectrum_slot,
        pn.Row(waveforms,
               pn.panel(pn.bind(instrument, state.param.event, state.param.refresh)),
               sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )
    return page_shell("/event", "Event", str(context.data.path), body, event=state.event)
