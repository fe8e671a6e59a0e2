"""``/docs``: the Markdown documentation, rendered, with a search box.

Only the ``*.md`` files of the configured docs directory are listed; a page is
chosen from that list (never by a path from the URL).
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import panel as pn

from idexdask.dashboard.common import error_pane, guarded, page_shell, query_str
from idexdask.dashboard.state import ServerContext

__all__ = ["ASSETS_ROUTE", "docs_page", "search_docs", "with_asset_links"]

#: Where the server serves the docs directory's images (a static route).
ASSETS_ROUTE = "/docs-assets"
_IMAGE = re.compile(r"!\[([^\]]*)\]\((?!https?:|/)([^)\s]+)\)")


def with_asset_links(markdown: str) -> str:
    """Point the relative image links of a document at :data:`ASSETS_ROUTE`."""
    return _IMAGE.sub(lambda m: f"![{m.group(1)}]({ASSETS_ROUTE}/{m.group(2)})", markdown)

logger = logging.getLogger(__name__)


def _documents(docs_dir: Path | None) -> dict[str, Path]:
    if docs_dir is None or not docs_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(docs_dir.glob("*.md"))}


def search_docs(documents: dict[str, Path], text: str, *, context: int = 60) -> list[tuple]:
    """(document, line number, excerpt) of every line containing ``text`` (case-insensitive)."""
    needle = text.strip().lower()
    if not needle:
        return []
    hits = []
    for name, path in documents.items():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            at = line.lower().find(needle)
            if at >= 0:
                hits.append((name, number, line[max(0, at - context): at + len(needle) + context]))
    return hits


def docs_page(context: ServerContext) -> pn.Column:
    """Build the ``/docs`` page of one session."""
    documents = _documents(context.docs_dir)
    if not documents:
        return page_shell("/docs", "Documentation", str(context.data.path),
                          error_pane("no documentation directory (serve --docs DIR)"))
    names = list(documents)
    asked = query_str("page", "dashboard" if "dashboard" in documents else names[0])
    message = None
    if asked not in documents:  # a name from the list, never a path
        message = f"no documentation page {asked!r}"
        asked = names[0]
    chooser = pn.widgets.Select(name="page", options=names, value=asked, width=220)
    search = pn.widgets.TextInput(name="search", placeholder="word or phrase", width=300,
                                  css_classes=["idx-doc-search"])

    @guarded
    def document(name):
        if pn.state.location is not None:
            pn.state.location.update_query(page=name)
        text = with_asset_links(documents[name].read_text(encoding="utf-8"))
        return pn.pane.Markdown(text, sizing_mode="stretch_width", css_classes=["idx-doc"],
                                disable_anchors=False)

    @guarded
    def results(text):
        hits = search_docs(documents, text)
        if not text.strip():
            return pn.pane.HTML("")
        items = "".join(f"<li><b>{html.escape(n)}</b>:{k} … {html.escape(e)} …</li>"
                        for n, k, e in hits[:50])
        return pn.pane.HTML(f"<div class='idx-doc-hits'>{len(hits)} matches"
                            f"<ul>{items}</ul></div>", sizing_mode="stretch_width")

    body = pn.Column(pn.Row(chooser, search), *( [error_pane(message)] if message else []),
                     pn.panel(pn.bind(results, search.param.value_input)),
                     pn.panel(pn.bind(document, chooser)), sizing_mode="stretch_width")
    return page_shell("/docs", "Documentation", str(context.data.path), body)
