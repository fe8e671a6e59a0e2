"""``/lines?event=N``: the lines studio of one event.

The line table (sortable, CSV download), a zoomed inspector of the selected line
(data, fitted line, residuals), edits (add a line by box-selecting a span of the
spectrum, remove, fit window, and the line-shape and species edits when the
override table has them), refit with ``analyze`` in well under a second, save
into the store's override table (not with ``--read-only``), reset; and a
calibration panel (stored coefficients, manual calibration from lines assigned
by hand, residuals in u and ppm).
"""

from __future__ import annotations

import html
import io
import logging

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from idexdask.analysis.overrides import LINE_SHAPES
from idexdask.calibration.ions import ion_mass
from idexdask.dashboard.common import (
    error_pane,
    guarded,
    hv_pane,
    number_formatters,
    page_shell,
    query_int,
)
from idexdask.dashboard.data import LINE_COLUMNS
from idexdask.dashboard.event_header import calibration_text
from idexdask.dashboard.pages.event import event_controls, sync_event_to_url
from idexdask.dashboard.plots import line_curves, spectrum_plot, waveform
from idexdask.dashboard.state import ReviewState, ServerContext
from idexdask.dashboard.studio import StudioSession
from idexdask.errors import IdexDaskError

__all__ = ["calibration_residuals", "line_units", "lines_page"]

logger = logging.getLogger(__name__)

def line_units(dataset) -> dict[str, str]:
    """Unit of each line-table column, from its ``peak_<name>`` variable in the store."""
    units = {}
    for name in LINE_COLUMNS:
        variable = dataset.variables.get(f"peak_{name}")
        unit = str(variable.attrs.get("units", "")) if variable is not None else ""
        if unit and unit != "1":
            # the store writes CDF-style "us"; a table header can show µs
            units[name] = " ".join("µs" if t == "us" else t.replace("/us", "/µs")
                                   for t in unit.split())
    return units


def calibration_residuals(lines: pd.DataFrame) -> pd.DataFrame:
    """Lines with a species: calibrated mass minus the ion's mass, in u and ppm."""
    if "species" not in lines or "mass" not in lines:
        return pd.DataFrame(columns=["line", "center", "species", "mass", "ion_mass",
                                     "residual_u", "residual_ppm"])
    rows = []
    for row in lines.itertuples():
        species = str(row.species)
        if not species or species == "none":
            continue
        try:
            reference = ion_mass(species)
        except Exception:  # a label the ion tables cannot weigh: shown without residual
            reference = np.nan
        residual = float(row.mass) - reference
        rows.append({"line": row.Index, "center": row.center, "species": species,
                     "mass": row.mass, "ion_mass": reference, "residual_u": residual,
                     "residual_ppm": 1e6 * residual / reference if reference else np.nan})
    return pd.DataFrame(rows)


class StudioView(param.Parameterized):
    """What the studio shows: the selected line, the box-selected span, a message."""

    selected = param.Integer(default=-1)
    span = param.Tuple(default=None, allow_None=True, length=2)
    revision = param.Integer(default=0, doc="bumped by every edit, refit or save")
    message = param.String(default="")


def lines_page(context: ServerContext) -> pn.Column:
    """Build the ``/lines`` page of one session."""
    data = context.data
    index, url_message = query_int("event", 0)
    state = ReviewState(context)
    state.event = max(index, 0)
    view = StudioView()
    sync_event_to_url(state)
    sessions: dict[int, StudioSession] = {}

    def session() -> StudioSession:
        if state.event not in sessions:
            sessions.clear()
            sessions[state.event] = StudioSession(data, data.check_event(state.event),
                                                  context.config)
        return sessions[state.event]

    def current_lines() -> tuple[pd.DataFrame, str]:
        studio = session()
        if studio.last is not None:
            return studio.last.lines, f"refit ({studio.last.elapsed_s * 1000:.0f} ms)"
        return data.lines(state.event), "stored"

    def say(text: str) -> None:
        view.message = text
        view.revision += 1

    def act(function):
        def handler(_event=None):
            try:
                function()
            except IdexDaskError as exc:
                say(f"error: {exc}")
        return handler

    # -------------------------------------------------------------- views

    span_stream = hv.streams.BoundsX()

    def on_span(boundsx):
        view.span = tuple(float(b) for b in boundsx) if boundsx else None
    span_stream.add_subscriber(on_span)

    @guarded
    def spectrum(event, revision):
        lines, source = current_lines()
        row = session().last.dataset.isel(epoch=0) if session().last else data.event(event).event
        plot = spectrum_plot(row, lines, tools=("xbox_select",), height=300,
                             streams=(span_stream,))
        plot = plot.opts(hv.opts.Overlay(title=f"TOF spectrum, lines {source} — box-select "
                                         "a span to add a line"))
        return hv_pane(plot, sizing_mode="stretch_width", css_classes=["idx-spectrum"])

    @guarded
    def table(event, revision):
        lines, source = current_lines()
        shown = lines.round(5)
        units = line_units(data.dataset)
        widget = pn.widgets.Tabulator(shown, disabled=True, selectable=1, show_index=True,
                                      formatters=number_formatters(shown),
                                      titles={c: f"{c} ({units[c]})" for c in shown.columns
                                              if units.get(c)},
                                      sizing_mode="stretch_width", height=260,
                                      css_classes=["idx-line-table"])

        def chosen(event):
            view.selected = int(event.new[0]) if event.new else -1
        widget.param.watch(chosen, "selection")
        return pn.Column(pn.pane.HTML(f"<b class='idx-line-count'>{len(lines)}</b> lines "
                                      f"({source})"), widget, sizing_mode="stretch_width")

    def csv_file():
        lines, _ = current_lines()
        return io.StringIO(lines.to_csv(index=False))

    @guarded
    def inspector(selected, revision):
        lines, _ = current_lines()
        if not 0 <= selected < len(lines):
            return pn.pane.HTML("<i>select a line in the table to inspect it</i>")
        line = lines.iloc[[selected]]
        studio = session()
        row = studio.last.dataset.isel(epoch=0) if studio.last else data.event(state.event).event
        name = "tof_combined" if "tof_combined" in row else "TOF_High"
        time, values, unit = waveform(row, name)
        start = float(line["window_start"].iloc[0])
        stop = float(line["window_stop"].iloc[0])
        inside = (time >= start) & (time <= stop)
        fitted = line_curves(line, points=max(int(inside.sum()), 2))
        xdim = hv.Dimension("time", unit="µs")
        layers = [hv.Scatter((time[inside], values[inside]), xdim, f"signal ({unit})").opts(
            color="black", size=3)]
        residual = None
        if fitted:
            fx, fy = fitted[0].x, fitted[0].y
            layers.append(hv.Curve((fx, fy), xdim, f"signal ({unit})").opts(color="red"))
            model = np.interp(time[inside], fx, fy)
            residual = hv.Scatter((time[inside], values[inside] - model), xdim,
                                  f"residual ({unit})").opts(color="purple", size=3,
                                                            height=150, responsive=True)
        label = str(line["label"].iloc[0]) if "label" in line else str(selected)
        top = hv.Overlay(layers).opts(title=f"line {selected}: {label}", height=260,
                                      responsive=True)
        plots = [top] + ([residual * hv.HLine(0).opts(color="gray")] if residual else [])
        return hv_pane(hv.Layout(plots).cols(1), sizing_mode="stretch_width",
                                 css_classes=["idx-inspector"])

    @guarded
    def pending(event, revision):
        studio = session()
        if not studio.pending:
            return pn.pane.HTML("<i>no pending edit</i>", css_classes=["idx-pending"])
        frame = pd.DataFrame(studio.pending).drop(columns=["epoch"])
        return pn.Column(pn.pane.HTML(f"<b class='idx-pending-count'>{len(frame)}</b> pending "
                                      "edits (saved rows are reapplied by every refit and by "
                                      "`idexdask submit`)"),
                         pn.widgets.Tabulator(frame, disabled=True, show_index=False,
                                              sizing_mode="stretch_width", height=140,
                                              css_classes=["idx-pending"]))

    @guarded
    def span_note(span):
        if span is None:
            return pn.pane.HTML("<i>no span selected</i>")
        return pn.pane.HTML(f"<span class='idx-span'>selected span: {span[0]:.4f} – "
                            f"{span[1]:.4f} µs</span>")

    @guarded
    def message(text, revision):
        if not text:
            return pn.pane.HTML("")
        if text.startswith("error"):
            return error_pane(text)
        return pn.pane.Alert(html.escape(text), alert_type="success",
                             css_classes=["idx-message"])

    # -------------------------------------------------------------- edits

    window_start = pn.widgets.FloatInput(name="window start (µs)", width=140)
    window_stop = pn.widgets.FloatInput(name="window stop (µs)", width=140)
    shape = pn.widgets.Select(name="line shape", options=list(LINE_SHAPES), width=130)
    species = pn.widgets.TextInput(name="species", placeholder="Na, 24Mg, SiO", width=130)

    def selected_line() -> pd.Series:
        lines, _ = current_lines()
        if not 0 <= view.selected < len(lines):
            raise IdexDaskError("select a line in the table first")
        return lines.iloc[view.selected]

    def on_selected(event):
        lines, _ = current_lines()
        if 0 <= event.new < len(lines):
            window_start.value = float(lines["window_start"].iloc[event.new])
            window_stop.value = float(lines["window_stop"].iloc[event.new])
    view.param.watch(on_selected, "selected")

    def add():
        if view.span is None:
            raise IdexDaskError("box-select a span of the spectrum first")
        record = session().add_line(*view.span)
        refit(f"added a line at {record['center_us']:.4f} µs")

    def remove():
        line = selected_line()
        session().remove_line(float(line["center"]))
        view.selected = -1
        refit(f"removed the line at {float(line['center']):.4f} µs")

    def set_window():
        line = selected_line()
        session().edit_window(float(line["center"]), float(window_start.value),
                              float(window_stop.value))
        refit("fit window changed")

    def set_shape():
        line = selected_line()
        session().set_shape(float(line["center"]), shape.value)
        refit(f"line shape {shape.value}")

    def set_species():
        line = selected_line()
        session().assign_species(float(line["center"]), species.value)
        refit(f"species {species.value.strip()}")

    def calibrate():
        session().calibrate()
        refit("calibration from the lines assigned by hand")

    def refit(what: str = "refit") -> None:
        result = session().refit()
        say(f"{what}: {len(result.lines)} lines, refit in {result.elapsed_s * 1000:.0f} ms")

    def save():
        rows = session().save(read_only=context.read_only)
        say(f"saved {rows} edits into the store's override table; `idexdask submit` "
            "reapplies them")

    def undo():
        session().undo()
        refit("undone")

    def reset():
        session().reset()
        view.selected = -1
        say("pending edits dropped")

    def button(name, function, css, *, disabled=False):
        widget = pn.widgets.Button(name=name, css_classes=[css], disabled=disabled)
        widget.on_click(act(function))
        return widget

    edits = pn.Column(
        pn.panel(pn.bind(span_note, view.param.span)),
        pn.Row(button("add line in span", add, "idx-add"),
               button("remove selected line", remove, "idx-remove"),
               button("refit", refit, "idx-refit"),
               button("undo", undo, "idx-undo"), button("reset", reset, "idx-reset"),
               button("save to store", save, "idx-save", disabled=context.read_only)),
        pn.Row(window_start, window_stop, button("set fit window", set_window, "idx-window")),
        pn.Row(shape, button("set shape", set_shape, "idx-shape"),
               species, button("assign species", set_species, "idx-species"),
               button("calibrate from assigned lines", calibrate, "idx-calibrate")),
        pn.pane.HTML("<span style='color:#555'>read-only server: saving is disabled</span>"
                     if context.read_only else ""),
    )

    # -------------------------------------------------------------- calibration

    @guarded
    def calibration(event, revision):
        studio = session()
        row = studio.last.dataset.isel(epoch=0) if studio.last else data.event(event).event
        lines, source = current_lines()
        coefficients = np.asarray(row["mass_calibration"].values, dtype=float)
        residuals = calibration_residuals(lines)
        rms = (float(np.sqrt(np.nanmean(residuals["residual_u"] ** 2)))
               if len(residuals) else np.nan)
        formula = (f"t = c0 + Σ c_k √m^k, c = {np.array2string(coefficients, precision=6)}"
                   if np.isfinite(coefficients).all() else "no mass axis")
        fit = (f"{len(residuals)} lines with a species, RMS residual {rms:.4g} u"
               if len(residuals) else "no line with a species")
        text = (f"<b>calibration ({source})</b>: <span class='idx-cal-status'>"
                f"{html.escape(calibration_text(row))}</span>; {formula}; {fit}")
        return pn.Column(pn.pane.HTML(text, css_classes=["idx-calibration"]),
                         pn.widgets.Tabulator(residuals.round(6), disabled=True,
                                              show_index=False, sizing_mode="stretch_width",
                                              height=160), sizing_mode="stretch_width")

    @guarded
    def saved(event, revision):
        rows = session().saved_records()
        if not rows:
            return pn.pane.HTML("<i>no saved edit for this event</i>", css_classes=["idx-saved"])
        frame = pd.DataFrame(rows)[["id", "action", "center_us", "window_start_us",
                                    "window_stop_us", "shape", "species", "author", "created"]]
        chooser = pn.widgets.Select(name="saved row", options=frame["id"].tolist(), width=160)
        undo_button = pn.widgets.Button(name="undo saved row", css_classes=["idx-undo-saved"],
                                        disabled=context.read_only)

        def undo_saved(_event=None):
            session().undo_saved(chooser.value, read_only=context.read_only)
            refit(f"saved row {chooser.value} undone (kept in the table's history)")
        undo_button.on_click(act(undo_saved))
        return pn.Column(pn.pane.HTML(f"<b class='idx-saved-count'>{len(frame)}</b> saved edits "
                                      "in force for this event"),
                         pn.widgets.Tabulator(frame, disabled=True, show_index=False,
                                              sizing_mode="stretch_width", height=140),
                         pn.Row(chooser, undo_button), sizing_mode="stretch_width")

    # -------------------------------------------------------------- layout

    dep = (state.param.event, view.param.revision)
    body = pn.Column(
        event_controls(state, url_message),
        pn.panel(pn.bind(message, view.param.message, view.param.revision)),
        pn.panel(pn.bind(spectrum, *dep)),
        edits,
        pn.panel(pn.bind(pending, *dep)),
        pn.Row(pn.Column(pn.panel(pn.bind(table, *dep)),
                         pn.widgets.FileDownload(callback=csv_file, filename="lines.csv",
                                                 label="download the line table (CSV)",
                                                 css_classes=["idx-csv"]),
                         sizing_mode="stretch_width"),
               pn.panel(pn.bind(inspector, view.param.selected, view.param.revision)),
               sizing_mode="stretch_width"),
        pn.pane.HTML("<h3>Saved edits</h3>"),
        pn.panel(pn.bind(saved, *dep)),
        pn.pane.HTML("<h3>Calibration</h3>"),
        pn.panel(pn.bind(calibration, *dep)),
        sizing_mode="stretch_width",
    )

    def new_event(_):
        view.selected = -1
        view.message = ""
    state.param.watch(new_event, "event")
    return page_shell("/lines", "Lines studio", str(data.path), body, event=state.event)
