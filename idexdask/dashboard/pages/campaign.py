"""``/campaign``: progress of the store and every event's scalars, live.

The progress block and the scalar views re-read the store when the manifest
changes (polled every 2 s by the session), so they follow a running
``idexdask submit``.  Above :data:`RASTERIZE_ABOVE` points the scatter is
rasterised by Datashader on the server (the browser receives an image, not the
points); a box selection then filters by the box's bounds.  The timeline is
rasterised above the same size, and the event table sends the browser one page.
"""

from __future__ import annotations

import html
import logging

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from panel.io.model import JSCode

from idexdask.dashboard.common import (
    guarded,
    hv_pane,
    number_formatters,
    page_shell,
    start_live,
)
from idexdask.dashboard.state import ReviewState, ServerContext

__all__ = [
    "RASTERIZE_ABOVE",
    "TABLE_COLUMNS",
    "CampaignView",
    "campaign_page",
    "labelled",
    "ratio_column",
    "warm_up",
]

logger = logging.getLogger(__name__)

#: Points above which the scatter is rasterised by Datashader.
RASTERIZE_ABOVE = 10_000
NONE = "(none)"
#: Columns of the event table before the user picks others (a scientist's first look;
#: every per-event scalar can be added).
TABLE_COLUMNS = (
    "time", "quality", "mass_calibration_status", "impact_velocity", "dust_mass",
    "target_low_impact_charge", "target_high_impact_charge", "ion_grid_impact_charge",
    "tof_line_count", "tof_high_snr", "mg_number", "best_mineral",
)


#: Tabulator cell of the event column: a link that opens the event (written by the
#: browser for the rows of the page shown, not as 100,000 strings on the server).
EVENT_LINK = JSCode("""function(cell) {
    const row = cell.getValue();
    return '<a href="/event?event=' + row + '">event ' + row + '</a>';
}""")


def labelled(name: str, units: dict[str, str]) -> str:
    """``name (unit)`` for a column or ratio with a unit, else ``name``."""
    if "/" in name:
        top, bottom = name.split("/", 1)
        if units.get(top) and units.get(top) == units.get(bottom):
            return name  # a ratio of like quantities has no unit
        if units.get(top) or units.get(bottom):
            return f"{name} ({units.get(top, '1')}/{units.get(bottom, '1')})"
        return name
    return f"{name} ({units[name]})" if units.get(name) else name


def ratio_column(frame: pd.DataFrame, numerator: str, denominator: str) -> tuple[str, np.ndarray]:
    """A column or the ratio of two (NaN where the denominator is 0)."""
    values = frame[numerator].to_numpy(dtype=float)
    if denominator in (None, NONE, ""):
        return numerator, values
    below = frame[denominator].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return f"{numerator}/{denominator}", np.where(below != 0, values / below, np.nan)


class CampaignView(param.Parameterized):
    """Axis choices and the selection of the campaign page."""

    x = param.Selector(default=None, objects=[])
    x_over = param.Selector(default=NONE, objects=[NONE])
    y = param.Selector(default=None, objects=[])
    y_over = param.Selector(default=NONE, objects=[NONE])
    selected = param.List(default=[], doc="rows of the scalar table chosen by box/lasso")
    columns = param.ListSelector(default=[], objects=[], doc="columns of the event table")
    bounds = param.Tuple(default=None, allow_None=True, length=4)

    def __init__(self, state: ReviewState, **params) -> None:
        super().__init__(**params)
        self.state = state
        self._update_choices()
        state.param.watch(lambda *_: self._update_choices(), "refresh")

    def _update_choices(self) -> None:
        frame = self.state.context.data.scalars()
        numeric = [c for c in frame.columns
                   if c not in ("epoch", "time") and frame[c].dtype.kind in "biuf"]
        self.param.x.objects = numeric
        self.param.y.objects = numeric
        self.param.x_over.objects = [NONE, *numeric]
        self.param.y_over.objects = [NONE, *numeric]
        self.param.columns.objects = [c for c in frame.columns if c not in ("epoch", "event")]
        # defaults with data: real flight events often have no speed (NaN), and a
        # charge channel may have fitted only a few events
        finite = {c: np.isfinite(frame[c].to_numpy(dtype=float)) for c in numeric}
        if self.x not in numeric and numeric:
            self.x = next((c for c in ("impact_velocity", "target_low_impact_charge",
                                       "tof_high_snr") if c in finite and finite[c].any()),
                          numeric[0])
        if self.y not in numeric and numeric:
            candidates = [c for c in ("target_low_impact_charge", "target_high_impact_charge",
                                      "tof_line_count", "tof_high_snr") if c != self.x]
            both = {c: int((finite[c] & finite[self.x]).sum()) for c in candidates
                    if c in finite}
            self.y = (max(both, key=lambda c: (both[c], -candidates.index(c))) if both
                      else numeric[-1])
        if not self.columns:
            wanted = [*TABLE_COLUMNS, self.x, self.y]
            self.columns = [c for c in dict.fromkeys(wanted) if c in frame.columns]

    def table_frame(self, frame: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
        """The rows chosen by the selection (all rows without one)."""
        if self.selected:
            frame = frame.iloc[[i for i in self.selected if i < len(frame)]]
        elif self.bounds is not None:
            x0, y0, x1, y1 = self.bounds
            keep = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            frame = frame[keep]
        return frame


def warm_up(context: ServerContext) -> None:
    """Build a ``/campaign`` page once, unseen, before a browser asks for one.

    Called by ``idexdask serve`` before it starts listening.  The first
    ``/campaign`` of a large store otherwise waits for what no session owns: the
    scalar read (cached by :class:`~idexdask.dashboard.data.StoreData`, ~1.4 s at
    100,000 events), the imports of Datashader and Matplotlib's colour maps, and
    Numba compiling Datashader's aggregation for these columns (~2 s together).
    """
    from bokeh.document import Document

    try:
        campaign_page(context).get_root(Document())
    except Exception:  # a warm-up must never stop the server; a session reports errors
        logger.exception("warm-up of /campaign failed")
    release_memory()


def release_memory() -> None:
    """Collect the warm-up page's garbage and hand freed heap pages back to the system.

    The unseen page's models and copies of the scalar columns are garbage once
    built; glibc keeps freed memory in the process unless asked (``malloc_trim``),
    which would count a one-off page against the server's resident memory for good.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to hand back this way
            pass


@guarded
def progress_view(state: ReviewState, refresh: int) -> pn.Column:
    """State, units and throughput of the store, and the failed units with reasons."""
    data = state.context.data
    summary = data.status()
    rate = (f"{summary.events_this_run / summary.elapsed_s:,.1f} events/s"
            if summary.elapsed_s > 0 else "n/a")
    failed = len(summary.failures)
    done_fraction = summary.events_done / summary.events_total if summary.events_total else 1.0
    text = (
        f"<b>state</b>: <span class='idx-state'>{summary.state}</span> &nbsp; "
        f"<b>events</b>: <span class='idx-events-done'>{summary.events_done}</span> of "
        f"{summary.events_total} &nbsp; <b>units</b>: {summary.units_done} of "
        f"{summary.units_total} done, {failed} failed &nbsp; <b>last run</b>: "
        f"{summary.events_this_run} events in {summary.elapsed_s:,.1f} s ({rate})"
    )
    items = [pn.pane.HTML(text, css_classes=["idx-progress"], sizing_mode="stretch_width"),
             pn.indicators.Progress(value=int(round(100 * done_fraction)), max=100,
                                    width=400, bar_color="success" if not failed else "warning")]
    if summary.failures:
        failures = pd.DataFrame(summary.failures)[["input", "uid", "n_events", "reason"]]
        items.append(pn.pane.HTML("<b>failed units</b>"))
        items.append(pn.widgets.Tabulator(failures, disabled=True, show_index=False,
                                          sizing_mode="stretch_width", height=150))
    return pn.Column(*items, sizing_mode="stretch_width")


def _points(frame: pd.DataFrame, xdim: hv.Dimension, x: np.ndarray, ydim: hv.Dimension,
            y: np.ndarray) -> hv.Points:
    table = pd.DataFrame({xdim.name: x, ydim.name: y, "event": frame["event"].to_numpy()})
    return hv.Points(table, kdims=[xdim, ydim], vdims=["event"])


def campaign_page(context: ServerContext) -> pn.Column:
    """Build the ``/campaign`` page of one session."""
    state = ReviewState(context)
    view = CampaignView(state)
    data = context.data
    selection = hv.streams.Selection1D()
    bounds = hv.streams.BoundsXY()

    def on_selection(index):
        view.selected = list(index or [])
    selection.add_subscriber(on_selection)

    def on_bounds(bounds):
        view.selected = []
        view.bounds = tuple(float(b) for b in bounds) if bounds is not None else None
    bounds.add_subscriber(on_bounds)

    def columns():
        frame = data.scalars()
        xname, x = ratio_column(frame, view.x, view.x_over)
        yname, y = ratio_column(frame, view.y, view.y_over)
        return frame, xname, x, yname, y

    @guarded
    def scatter(x, x_over, y, y_over, refresh):
        frame, xname, xv, yname, yv = columns()
        if not len(frame):
            return pn.pane.HTML("<i>no events in the store yet</i>")
        units = data.units()
        points = _points(frame, hv.Dimension(xname, label=labelled(xname, units)), xv,
                         hv.Dimension(yname, label=labelled(yname, units)), yv)
        if len(frame) > RASTERIZE_ABOVE:
            from holoviews.operation.datashader import dynspread, rasterize

            plot = dynspread(rasterize(points).opts(cmap="viridis", cnorm="log",
                                                   tools=["box_select"]))
            bounds.source = plot
            return hv_pane(plot.opts(responsive=True, min_height=380,
                                               title=f"{yname} vs {xname} (rasterised)"),
                                     sizing_mode="stretch_width")
        points = points.opts(tools=["box_select", "lasso_select", "tap", "hover"], size=6,
                             color="event", cmap="viridis", colorbar=True, clabel="event (row)",
                             responsive=True, min_height=380,
                             title=f"{yname} vs {xname}", active_tools=["box_select"])
        selection.source = points
        return hv_pane(points, sizing_mode="stretch_width")

    @guarded
    def histogram(y, y_over, refresh):
        frame, _, _, yname, yv = columns()
        finite = yv[np.isfinite(yv)]
        if not finite.size:
            return pn.pane.HTML(f"<i>{html.escape(yname)}: no finite values</i>")
        counts, edges = np.histogram(finite, bins=min(50, max(5, finite.size // 4)))
        ydim = hv.Dimension(yname, label=labelled(yname, data.units()))
        return hv_pane(hv.Histogram((edges, counts), kdims=[ydim]).opts(
            responsive=True, min_height=250, title=f"histogram of {yname}"),
            sizing_mode="stretch_width")

    @guarded
    def timeline(y, y_over, refresh):
        frame, _, _, yname, yv = columns()
        if "time" not in frame or not len(frame):
            return pn.pane.HTML("<i>no event times</i>")
        ydim = hv.Dimension(yname, label=labelled(yname, data.units()))
        curve = hv.Scatter((frame["time"].to_numpy(), yv), kdims=["UTC"], vdims=[ydim])
        if len(frame) > RASTERIZE_ABOVE:
            # 100k glyphs cost the browser seconds to receive and draw: send an image
            from holoviews.operation.datashader import dynspread, rasterize

            image = dynspread(rasterize(curve).opts(cmap="viridis", cnorm="log"))
            return hv_pane(image.opts(responsive=True, min_height=250,
                                      title=f"{yname} over time (rasterised)"),
                           sizing_mode="stretch_width")
        return hv_pane(curve.opts(responsive=True, min_height=250, size=4,
                                            title=f"{yname} over time"),
                                 sizing_mode="stretch_width")

    @guarded
    def table(x, x_over, y, y_over, selected, bounds_, columns_, refresh):
        frame, _, xv, _, yv = columns()
        shown = view.table_frame(frame, xv, yv)
        keep = ["event", *[c for c in view.columns if c in shown and c != "event"]]
        shown = shown[keep]
        units = data.units()
        note = pn.pane.HTML(f"<span class='idx-table-count'>{len(shown)}</span> of "
                            f"{len(frame)} events" + (" (selection)" if len(shown) < len(frame)
                                                       else ""))
        widget = pn.widgets.Tabulator(
            shown, disabled=True, show_index=False, pagination="remote", page_size=15,
            formatters={**number_formatters(shown), "event": EVENT_LINK},
            titles={c: labelled(c, units) for c in shown.columns},
            sizing_mode="stretch_width", css_classes=["idx-event-table"],
        )
        return pn.Column(note, widget, sizing_mode="stretch_width")

    controls = pn.Row(
        pn.widgets.Select.from_param(view.param.x, name="x"),
        pn.widgets.Select.from_param(view.param.x_over, name="x divided by"),
        pn.widgets.Select.from_param(view.param.y, name="y"),
        pn.widgets.Select.from_param(view.param.y_over, name="y divided by"),
    )
    dep = dict(x=view.param.x, x_over=view.param.x_over, y=view.param.y,
               y_over=view.param.y_over, refresh=state.param.refresh)
    start_live(state)
    body = pn.Column(
        pn.panel(pn.bind(progress_view, state, state.param.refresh)),
        controls,
        pn.Row(pn.panel(pn.bind(scatter, **dep)),
               pn.Column(pn.panel(pn.bind(histogram, y=view.param.y, y_over=view.param.y_over,
                                          refresh=state.param.refresh)),
                         pn.panel(pn.bind(timeline, y=view.param.y, y_over=view.param.y_over,
                                          refresh=state.param.refresh)),
                         sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        pn.pane.HTML("<b>events</b> (box or lasso on the scatter filters; click "
                     "<i>event N</i> to open it; sort by a column's header)"),
        pn.widgets.MultiChoice.from_param(view.param.columns, name="table columns",
                                          sizing_mode="stretch_width"),
        pn.panel(pn.bind(table, selected=view.param.selected, bounds_=view.param.bounds,
                         columns_=view.param.columns, **dep)),
        sizing_mode="stretch_width",
    )
    return page_shell("/campaign", "Campaign", str(data.path), body)
