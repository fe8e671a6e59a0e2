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

__all__ = ["LinesStudio", "calibration_residuals", "line_units", "lines_page"]

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


class LinesStudio:
    """The ``/lines`` page of one session: views of its state, edit actions, layout.

    The views are functions of the session's :class:`ReviewState` (event) and
    :class:`StudioView` (selection, span, revision, message), bound with
    ``pn.bind``; every edit goes through the event's :class:`StudioSession`
    and bumps the revision, which redraws the views.
    """

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.data = context.data
        index, self.url_message = query_int("event", 0)
        self.state = ReviewState(context)
        self.state.event = max(index, 0)
        self.view = StudioView()
        sync_event_to_url(self.state)
        self._sessions: dict[int, StudioSession] = {}
        self.span_stream = hv.streams.BoundsX()
        self.span_stream.add_subscriber(self._on_span)
        self.window_start = pn.widgets.FloatInput(name="window start (µs)", width=140)
        self.window_stop = pn.widgets.FloatInput(name="window stop (µs)", width=140)
        self.shape = pn.widgets.Select(name="line shape", options=list(LINE_SHAPES), width=130)
        self.species = pn.widgets.TextInput(name="species", placeholder="Na, 24Mg, SiO",
                                            width=130)
        self.view.param.watch(self._on_selected, "selected")

    # -------------------------------------------------------------- state

    def session(self) -> StudioSession:
        """The edit session of the shown event (one at a time: a new event drops the last)."""
        event = self.state.event
        if event not in self._sessions:
            self._sessions.clear()
            self._sessions[event] = StudioSession(self.data, self.data.check_event(event),
                                                  self.context.config)
        return self._sessions[event]

    def current_lines(self) -> tuple[pd.DataFrame, str]:
        """The line table shown (the last refit's, else the store's) and where it is from."""
        studio = self.session()
        if studio.last is not None:
            return studio.last.lines, f"refit ({studio.last.elapsed_s * 1000:.0f} ms)"
        return self.data.lines(self.state.event), "stored"

    def current_row(self, event: int):
        """The shown event's dataset row: the last refit's, else the store's."""
        studio = self.session()
        return studio.last.dataset.isel(epoch=0) if studio.last else self.data.event(event).event

    def say(self, text: str) -> None:
        """Show a message (an error when it starts with ``error``)."""
        self.view.message = text
        self.view.revision += 1

    def act(self, function):
        """A button handler running ``function``; an idexdask error becomes the message."""
        def handler(_event=None):
            try:
                function()
            except IdexDaskError as exc:
                self.say(f"error: {exc}")
        return handler

    def _on_span(self, boundsx) -> None:
        self.view.span = tuple(float(b) for b in boundsx) if boundsx else None

    def _on_selected(self, event) -> None:
        lines, _ = self.current_lines()
        if 0 <= event.new < len(lines):
            self.window_start.value = float(lines["window_start"].iloc[event.new])
            self.window_stop.value = float(lines["window_stop"].iloc[event.new])

    def _on_new_event(self, _event) -> None:
        self.view.selected = -1
        self.view.message = ""

    # -------------------------------------------------------------- views

    @guarded
    def spectrum(self, event, revision):
        """The merged TOF spectrum with the lines; box-select a span to add a line."""
        lines, source = self.current_lines()
        plot = spectrum_plot(self.current_row(event), lines, tools=("xbox_select",),
                             height=300, streams=(self.span_stream,))
        plot = plot.opts(hv.opts.Overlay(title=f"TOF spectrum, lines {source} — box-select "
                                         "a span to add a line"))
        return hv_pane(plot, sizing_mode="stretch_width", css_classes=["idx-spectrum"])

    @guarded
    def table(self, event, revision):
        """The line table (units in its headers); selecting a row inspects that line."""
        lines, source = self.current_lines()
        shown = lines.round(5)
        units = line_units(self.data.dataset)
        widget = pn.widgets.Tabulator(shown, disabled=True, selectable=1, show_index=True,
                                      formatters=number_formatters(shown),
                                      titles={c: f"{c} ({units[c]})" for c in shown.columns
                                              if units.get(c)},
                                      sizing_mode="stretch_width", height=260,
                                      css_classes=["idx-line-table"])

        def chosen(change):
            self.view.selected = int(change.new[0]) if change.new else -1
        widget.param.watch(chosen, "selection")
        return pn.Column(pn.pane.HTML(f"<b class='idx-line-count'>{len(lines)}</b> lines "
                                      f"({source})"), widget, sizing_mode="stretch_width")

    def csv_file(self):
        """The line table as CSV (the download button's callback)."""
        lines, _ = self.current_lines()
        return io.StringIO(lines.to_csv(index=False))

    @guarded
    def inspector(self, selected, revision):
        """The selected line's window: data, fitted line and residuals."""
        lines, _ = self.current_lines()
        if not 0 <= selected < len(lines):
            return pn.pane.HTML("<i>select a line in the table to inspect it</i>")
        line = lines.iloc[[selected]]
        row = self.current_row(self.state.event)
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
    def pending(self, event, revision):
        """The edits not yet saved into the store."""
        studio = self.session()
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
    def span_note(self, span):
        """The box-selected span, in µs."""
        if span is None:
            return pn.pane.HTML("<i>no span selected</i>")
        return pn.pane.HTML(f"<span class='idx-span'>selected span: {span[0]:.4f} – "
                            f"{span[1]:.4f} µs</span>")

    @guarded
    def message(self, text, revision):
        """The last action's outcome (success or error)."""
        if not text:
            return pn.pane.HTML("")
        if text.startswith("error"):
            return error_pane(text)
        return pn.pane.Alert(html.escape(text), alert_type="success",
                             css_classes=["idx-message"])

    @guarded
    def calibration(self, event, revision):
        """The event's mass calibration, its method, and the residuals of assigned lines."""
        row = self.current_row(event)
        lines, source = self.current_lines()
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
    def saved(self, event, revision):
        """The saved override rows in force for this event, each undoable."""
        read_only = self.context.read_only
        rows = self.session().saved_records()
        if not rows:
            return pn.pane.HTML("<i>no saved edit for this event</i>", css_classes=["idx-saved"])
        frame = pd.DataFrame(rows)[["id", "action", "center_us", "window_start_us",
                                    "window_stop_us", "shape", "species", "author", "created"]]
        chooser = pn.widgets.Select(name="saved row", options=frame["id"].tolist(), width=160)
        undo_button = pn.widgets.Button(name="undo saved row", css_classes=["idx-undo-saved"],
                                        disabled=read_only)

        def undo_saved():
            self.session().undo_saved(chooser.value, read_only=read_only)
            self.refit(f"saved row {chooser.value} undone (kept in the table's history)")
        undo_button.on_click(self.act(undo_saved))
        return pn.Column(pn.pane.HTML(f"<b class='idx-saved-count'>{len(frame)}</b> saved edits "
                                      "in force for this event"),
                         pn.widgets.Tabulator(frame, disabled=True, show_index=False,
                                              sizing_mode="stretch_width", height=140),
                         pn.Row(chooser, undo_button), sizing_mode="stretch_width")

    # -------------------------------------------------------------- edits

    def selected_line(self) -> pd.Series:
        """The line selected in the table (an error when none is)."""
        lines, _ = self.current_lines()
        if not 0 <= self.view.selected < len(lines):
            raise IdexDaskError("select a line in the table first")
        return lines.iloc[self.view.selected]

    def add(self) -> None:
        """Add a line in the box-selected span."""
        if self.view.span is None:
            raise IdexDaskError("box-select a span of the spectrum first")
        record = self.session().add_line(*self.view.span)
        self.refit(f"added a line at {record['center_us']:.4f} µs")

    def remove(self) -> None:
        """Remove the selected line."""
        center = float(self.selected_line()["center"])
        self.session().remove_line(center)
        self.view.selected = -1
        self.refit(f"removed the line at {center:.4f} µs")

    def set_window(self) -> None:
        """Give the selected line the fit window of the two inputs."""
        center = float(self.selected_line()["center"])
        self.session().edit_window(center, float(self.window_start.value),
                                   float(self.window_stop.value))
        self.refit("fit window changed")

    def set_shape(self) -> None:
        """Fit the selected line with the chosen shape."""
        center = float(self.selected_line()["center"])
        self.session().set_shape(center, self.shape.value)
        self.refit(f"line shape {self.shape.value}")

    def set_species(self) -> None:
        """Assign the typed species to the selected line."""
        center = float(self.selected_line()["center"])
        self.session().assign_species(center, self.species.value)
        self.refit(f"species {self.species.value.strip()}")

    def calibrate(self) -> None:
        """Calibrate the event from the lines assigned by hand."""
        self.session().calibrate()
        self.refit("calibration from the lines assigned by hand")

    def refit(self, what: str = "refit") -> None:
        """Refit the event with the pending and saved edits."""
        result = self.session().refit()
        self.say(f"{what}: {len(result.lines)} lines, refit in {result.elapsed_s * 1000:.0f} ms")

    def save(self) -> None:
        """Write the pending edits into the store's override table (under its lock)."""
        rows = self.session().save(read_only=self.context.read_only)
        self.say(f"saved {rows} edits into the store's override table; `idexdask submit` "
                 "reapplies them")

    def undo(self) -> None:
        """Drop the last pending edit."""
        self.session().undo()
        self.refit("undone")

    def reset(self) -> None:
        """Drop every pending edit."""
        self.session().reset()
        self.view.selected = -1
        self.say("pending edits dropped")

    def button(self, name: str, function, css: str, *, disabled: bool = False) -> pn.widgets.Button:
        """A button running ``function`` through :meth:`act`."""
        widget = pn.widgets.Button(name=name, css_classes=[css], disabled=disabled)
        widget.on_click(self.act(function))
        return widget

    def edit_controls(self) -> pn.Column:
        """The edit buttons and inputs."""
        read_only = self.context.read_only
        button = self.button
        return pn.Column(
            pn.panel(pn.bind(self.span_note, self.view.param.span)),
            pn.Row(button("add line in span", self.add, "idx-add"),
                   button("remove selected line", self.remove, "idx-remove"),
                   button("refit", self.refit, "idx-refit"),
                   button("undo", self.undo, "idx-undo"),
                   button("reset", self.reset, "idx-reset"),
                   button("save to store", self.save, "idx-save", disabled=read_only)),
            pn.Row(self.window_start, self.window_stop,
                   button("set fit window", self.set_window, "idx-window")),
            pn.Row(self.shape, button("set shape", self.set_shape, "idx-shape"),
                   self.species, button("assign species", self.set_species, "idx-species"),
                   button("calibrate from assigned lines", self.calibrate, "idx-calibrate")),
            pn.pane.HTML("<span style='color:#555'>read-only server: saving is disabled</span>"
                         if read_only else ""),
        )

    # -------------------------------------------------------------- layout

    def page(self) -> pn.Column:
        """The whole page."""
        view = self.view
        dep = (self.state.param.event, view.param.revision)
        body = pn.Column(
            event_controls(self.state, self.url_message),
            pn.panel(pn.bind(self.message, view.param.message, view.param.revision)),
            pn.panel(pn.bind(self.spectrum, *dep)),
            self.edit_controls(),
            pn.panel(pn.bind(self.pending, *dep)),
            pn.Row(pn.Column(pn.panel(pn.bind(self.table, *dep)),
                             pn.widgets.FileDownload(callback=self.csv_file,
                                                     filename="lines.csv",
                                                     label="download the line table (CSV)",
                                                     css_classes=["idx-csv"]),
                             sizing_mode="stretch_width"),
                   pn.panel(pn.bind(self.inspector, view.param.selected, view.param.revision)),
                   sizing_mode="stretch_width"),
            pn.pane.HTML("<h3>Saved edits</h3>"),
            pn.panel(pn.bind(self.saved, *dep)),
            pn.pane.HTML("<h3>Calibration</h3>"),
            pn.panel(pn.bind(self.calibration, *dep)),
            sizing_mode="stretch_width",
        )
        # after the views' bindings, as a new event first redraws them, then clears
        # the selection and the message
        self.state.param.watch(self._on_new_event, "event")
        return page_shell("/lines", "Lines studio", str(self.data.path), body,
                          event=self.state.event)


def lines_page(context: ServerContext) -> pn.Column:
    """Build the ``/lines`` page of one session."""
    return LinesStudio(context).page()
