"""``/composition``: element fractions, ternaries against minerals, RSF presets.

Switching the RSF preset recomputes the fractions from the stored
isotope-completed element areas with
:func:`idexdask.composition.products.molar_fractions` (no refit).  The store
keeps the areas, not their variances, so for a preset other than the stored one
the uncertainties are those of the RSF alone (stated on the page).
"""

from __future__ import annotations

import logging

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from idexdask.composition.minerals import expected_fractions, load_mineral_library
from idexdask.composition.plot import ternary_xy
from idexdask.composition.products import molar_fractions, ternary
from idexdask.composition.rsf import PRESET_NAMES, rsf_values
from idexdask.dashboard.common import (
    guarded,
    hv_pane,
    number_formatters,
    page_shell,
    start_live,
)
from idexdask.dashboard.data import as_text
from idexdask.dashboard.state import ReviewState, ServerContext
from idexdask.errors import StoreError

__all__ = [
    "STORED",
    "TERNARIES",
    "composition_page",
    "fractions_for_preset",
    "mineral_label_rows",
]

logger = logging.getLogger(__name__)

STORED = "(stored)"
TERNARIES = {"Mg–Si–Fe": ("Mg", "Si", "Fe"), "Mg–Fe–Ca": ("Mg", "Fe", "Ca")}


def fractions_for_preset(context: ServerContext, preset: str) -> pd.DataFrame:
    """Per-event molar fractions (+ ``err_<el>``) of the done events for ``preset``."""
    data = context.data
    dataset = data.dataset
    if "element_area" not in dataset or "composition" not in dataset:
        raise StoreError("this store has no composition products (element_area, composition)")
    rows = np.flatnonzero(data.done)
    elements = [str(e) for e in dataset["element"].values]
    if preset == STORED:
        x = np.asarray(dataset["composition"].values)[rows]
        err = np.asarray(dataset["composition_err"].values)[rows]
    else:
        areas = np.asarray(dataset["element_area"].values, dtype=float)[rows]
        rsf, rel = rsf_values(preset, elements)
        x, err, _, _ = molar_fractions(np.nan_to_num(areas), np.zeros_like(areas), rsf, rel)
        x = np.where(np.isfinite(areas).any(axis=1, keepdims=True), x, np.nan)
    frame = pd.DataFrame(x, columns=elements)
    for i, element in enumerate(elements):
        frame[f"err_{element}"] = err[:, i]
    frame.insert(0, "event", rows)
    if "best_mixture" in dataset and "best_mixture_fraction" in dataset:
        members = as_text(np.asarray(dataset["best_mixture"].values)[rows])
        share = np.asarray(dataset["best_mixture_fraction"].values, dtype=float)[rows]
        frame["best_mixture"] = [
            f"{a} {f:.2f} + {b} {1 - f:.2f}" if a and np.isfinite(f) else ""
            for (a, b), f in zip(members, share, strict=True)
        ]
    for name in ("best_mineral", "best_mineral_score", "mg_number", "mg_number_err",
                 "mass_calibration_status"):
        if name in dataset:
            values = np.asarray(dataset[name].values)[rows]
            frame[name] = as_text(values) if values.dtype.kind not in "biuf" else values
    return frame


def mineral_label_rows(x: np.ndarray, y: np.ndarray, names: list[str],
                       *, step: float = 0.035) -> tuple[list, list, list]:
    """Labels of the reference minerals: one per point, minerals on one point stacked.

    Several minerals project onto the same point of a ternary (every Mg-, Fe- or
    Ca-free silicate sits on an edge or a corner): their names would print over
    each other, so those of one point (to 0.01) are listed one above the other.
    """
    groups: dict[tuple[float, float], list[str]] = {}
    for px, py, name in zip(x, y, names, strict=True):
        groups.setdefault((round(float(px), 2), round(float(py), 2)), []).append(name)
    lx, ly, texts = [], [], []
    for (px, py), members in groups.items():
        for k, name in enumerate(sorted(members)):
            lx.append(px)
            ly.append(py + 0.03 + k * step)
            texts.append(name)
    return lx, ly, texts


def _triangle(corners: tuple[str, str, str]) -> list:
    edge = np.array([[0.5, np.sqrt(3) / 2], [0, 0], [1, 0], [0.5, np.sqrt(3) / 2]])
    labels = hv.Labels([(0.5, np.sqrt(3) / 2 + 0.04, corners[0]), (-0.04, -0.04, corners[1]),
                        (1.04, -0.04, corners[2])], ["x", "y"], "text").opts(
                            text_color="black", text_font_size="12pt")
    return [hv.Curve(edge, "x", "y").opts(color="black"), labels]


class CompositionView(param.Parameterized):
    """Preset and colouring of the composition page."""

    preset = param.Selector(default=STORED, objects=[STORED, *PRESET_NAMES])
    color = param.Selector(default="mg_number", objects=["mg_number", "event"])
    tapped = param.Integer(default=-1)


def composition_page(context: ServerContext) -> pn.Column:
    """Build the ``/composition`` page of one session."""
    state = ReviewState(context)
    view = CompositionView()
    start_live(state)
    library = load_mineral_library(context.config.get("composition", {}).get(
        "minerals_file", "minerals.yaml"))

    library_elements = {str(e) for e in context.data.dataset["element"].values} \
        if "element" in context.data.dataset else set()

    @guarded
    def ternaries(preset, color, refresh):
        frame = fractions_for_preset(context, preset)
        plots = []
        for title, corners in TERNARIES.items():
            if not all(c in frame for c in corners):
                continue
            coords = ternary(frame[list(corners)].to_numpy(dtype=float))
            x, y = ternary_xy(coords)
            keep = np.isfinite(x) & np.isfinite(y)
            points = pd.DataFrame({"x": x[keep], "y": y[keep],
                                   "event": frame["event"].to_numpy()[keep],
                                   color: frame[color].to_numpy()[keep] if color in frame
                                   else frame["event"].to_numpy()[keep]})
            tap = hv.streams.Selection1D()
            element = hv.Points(points, ["x", "y"], ["event", color] if color != "event"
                                else ["event"]).opts(color=color, cmap="viridis", size=7,
                                                     colorbar=True, tools=["tap", "hover"])
            tap.source = element

            def opened(index, points=points):
                if index:
                    view.tapped = int(points["event"].iloc[index[0]])
            tap.add_subscriber(opened)
            elements = [c for c in frame.columns if c in library_elements]
            names, expected = expected_fractions(library, elements)
            corner_columns = [elements.index(c) for c in corners]
            expected = ternary(expected[:, corner_columns])
            shown = np.isfinite(expected).all(axis=1)
            names = [n for n, ok in zip(names, shown, strict=True) if ok]
            mx, my = ternary_xy(expected[shown])
            minerals = hv.Points((mx, my, list(names)), ["x", "y"], "mineral").opts(
                marker="diamond", color="red", size=10, tools=["hover"])
            lx, ly, texts = mineral_label_rows(mx, my, [n.split("|")[0] for n in names])
            mineral_labels = hv.Labels((lx, ly, texts), ["x", "y"], "text").opts(
                text_font_size="7pt", text_color="red")
            overlay = hv.Overlay([*_triangle(corners), minerals, mineral_labels, element])
            plots.append(overlay.opts(hv.opts.Overlay(
                title=f"{title} ({int(keep.sum())} events)", width=460, height=420,
                xlim=(-0.12, 1.12), ylim=(-0.1, 1.0),
                xaxis=None, yaxis=None, show_legend=False)))
        if not plots:
            return pn.pane.HTML("<i>no ternary elements in this store</i>")
        return hv_pane(hv.Layout(plots).cols(2), css_classes=["idx-ternary"])

    @guarded
    def opener(tapped):
        if tapped < 0:
            return pn.pane.HTML("<i>click a point to pick an event</i>")
        return pn.pane.HTML(f"<a class='idx-open-event' href='/event?event={tapped}'>"
                            f"open event {tapped}</a> · <a href='/lines?event={tapped}'>"
                            f"its lines</a>")

    @guarded
    def table(preset, refresh):
        frame = fractions_for_preset(context, preset)
        calibrated = frame.dropna(subset=[c for c in frame.columns if c in ("Mg", "Si")],
                                  how="all")
        note = ("stored fractions with their uncertainties" if preset == STORED else
                f"recomputed with the {preset} RSF preset from the stored areas "
                "(uncertainty: RSF only)")
        leading = [c for c in ("event", "best_mineral", "best_mixture", "mg_number",
                               "mg_number_err")
                   if c in calibrated]
        shown = calibrated[leading + [c for c in calibrated.columns if c not in leading]].copy()
        shown.insert(0, "open", [f'<a href="/event?event={i}">{i}</a>' for i in shown["event"]])
        return pn.Column(
            pn.pane.HTML(f"<b>{len(calibrated)}</b> of {len(frame)} events with a composition;"
                         f" {note}"),
            pn.widgets.Tabulator(shown.round(4), disabled=True, show_index=False,
                                 pagination="remote", page_size=12,
                                 formatters={**number_formatters(shown),
                                             "open": {"type": "html"}},
                                 sizing_mode="stretch_width", css_classes=["idx-fractions"]),
            sizing_mode="stretch_width")

    controls = pn.Row(pn.widgets.Select.from_param(view.param.preset, name="RSF preset"),
                      pn.widgets.Select.from_param(view.param.color, name="colour by"))
    body = pn.Column(
        controls,
        pn.panel(pn.bind(opener, view.param.tapped)),
        pn.panel(pn.bind(ternaries, view.param.preset, view.param.color, state.param.refresh)),
        pn.panel(pn.bind(table, view.param.preset, state.param.refresh)),
        sizing_mode="stretch_width",
    )
    return page_shell("/composition", "Composition", str(context.data.path), body)
