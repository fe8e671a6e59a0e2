"""``/browser``: the store's variables by dimension, their metadata, a slice, the manifest."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn

from idexdask.dashboard.common import guarded, page_shell, start_live
from idexdask.dashboard.state import ReviewState, ServerContext

__all__ = ["browser_page", "product_descriptions", "variable_table"]

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 5
PREVIEW_COLUMNS = 12


def product_descriptions(docs_dir: Path | None) -> dict[str, str]:
    """Variable -> meaning, from the tables of docs/products.md (`name` in the first cell)."""
    if docs_dir is None or not (docs_dir / "products.md").exists():
        return {}
    meanings: dict[str, str] = {}
    for line in (docs_dir / "products.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not line.startswith("|"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            meanings.setdefault(name, cells[-1])
    return meanings


def variable_table(context: ServerContext) -> pd.DataFrame:
    """One row per variable: group (dimensions), dtype, chunks, compression, units, meaning."""
    dataset = context.data.dataset
    meanings = product_descriptions(context.docs_dir)
    rows = []
    for name, variable in dataset.variables.items():
        encoding = variable.encoding
        compressors = encoding.get("compressors") or ()
        rows.append({
            "group": " × ".join(map(str, variable.dims)) or "scalar",
            "variable": str(name),
            "dtype": str(variable.dtype),
            "shape": " × ".join(map(str, variable.shape)),
            "chunks": " × ".join(map(str, encoding.get("chunks") or ())),
            "compression": ", ".join(type(c).__name__ for c in compressors) or "none",
            "units": str(variable.attrs.get("units", "")),
            "description": str(variable.attrs.get("long_name", "")) or meanings.get(str(name), ""),
        })
    return pd.DataFrame(rows).sort_values(["group", "variable"]).reset_index(drop=True)


def browser_page(context: ServerContext) -> pn.Column:
    """Build the ``/browser`` page of one session."""
    data = context.data
    state = ReviewState(context)
    start_live(state)
    table = variable_table(context)
    names = table["variable"].tolist()
    chooser = pn.widgets.Select(name="variable", options=names,
                                value="peak_center" if "peak_center" in names else names[0])
    first = pn.widgets.IntInput(name="first event", value=0, start=0, width=120)

    @guarded
    def detail(name, start, refresh):
        variable = data.dataset[name]
        attrs = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                        f"<td>{html.escape(str(v))[:300]}</td></tr>"
                        for k, v in variable.attrs.items())
        index = {}
        if "epoch" in variable.dims:
            index["epoch"] = slice(start, start + PREVIEW_ROWS)
        for dim in variable.dims:
            if dim != "epoch":
                index[dim] = slice(0, PREVIEW_COLUMNS)
        values = np.asarray(variable.isel(index).values)
        if values.ndim == 0:
            preview = pd.DataFrame({"value": [values.item()]})
        elif values.ndim == 1:
            preview = pd.DataFrame({"value": values})
        else:
            preview = pd.DataFrame(values.reshape(values.shape[0], -1))
            preview.columns = [str(c) for c in preview.columns]
        return pn.Column(
            pn.pane.HTML(f"<b>{html.escape(name)}</b> {html.escape(str(variable.dims))} "
                         f"{variable.dtype}<table class='idx-attrs'>{attrs}</table>"),
            pn.pane.HTML(f"first {PREVIEW_ROWS} rows from event {start} (at most "
                         f"{PREVIEW_COLUMNS} columns):"),
            pn.widgets.Tabulator(preview, disabled=True, sizing_mode="stretch_width",
                                 height=200, css_classes=["idx-preview"]),
            sizing_mode="stretch_width")

    @guarded
    def manifest(refresh):
        return pn.widgets.Tabulator(data.manifest_units(), disabled=True, show_index=False,
                                    sizing_mode="stretch_width", height=220,
                                    css_classes=["idx-manifest"])

    body = pn.Column(
        pn.pane.HTML(f"<b>{len(table)}</b> variables, grouped by their dimensions"),
        pn.widgets.Tabulator(table, disabled=True, show_index=False, groupby=["group"],
                             sizing_mode="stretch_width", height=380, layout="fit_data_table",
                             css_classes=["idx-variables"]),
        pn.Row(chooser, first),
        pn.panel(pn.bind(detail, chooser, first, state.param.refresh)),
        pn.pane.HTML("<b>manifest units</b> (input, events, status, error, input hash)"),
        pn.panel(pn.bind(manifest, state.param.refresh)),
        sizing_mode="stretch_width",
    )
    return page_shell("/browser", "Data browser", str(data.path), body)
