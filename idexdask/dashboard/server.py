"""The review server: one Panel/Bokeh server with a route per page.

:func:`build_routes` maps every route to a function that builds a fresh page for
each browser session; :func:`serve` starts the server (``idexdask serve``).
Security defaults: the server binds 127.0.0.1; any other address needs an
explicit ``allow_websocket_origin``; the store path is fixed when the server
starts (URL parameters select rows and channels only); ``read_only`` disables
every write.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import panel as pn

from idexdask.dashboard.common import PAGES, error_pane, page_shell
from idexdask.dashboard.data import StoreData
from idexdask.dashboard.state import ServerContext
from idexdask.errors import IdexDaskError, StoreError

__all__ = [
    "LOCAL_ADDRESSES", "build_routes", "check_address", "default_docs_dir", "index_page",
    "make_context", "serve",
]

logger = logging.getLogger(__name__)

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def default_docs_dir() -> Path | None:
    """``docs/`` of the source tree, if idexdask runs from one."""
    candidate = Path(__file__).resolve().parents[2] / "docs"
    return candidate if candidate.is_dir() else None


def index_page(context: ServerContext) -> pn.Column:
    """``/``: what the store is, and a link to every page."""
    data = context.data
    items = "".join(
        f"<li><a href='{route}'>{html.escape(title)}</a> — {html.escape(text)}</li>"
        for route, title, text in PAGES
    )
    kind = data.meta.get("kind", "l0")
    mode = "read-only" if context.read_only else "edits can be saved"
    body = pn.pane.HTML(
        f"<p>{data.n_events} events planned ({kind} campaign); {mode}.</p><ul>{items}</ul>",
        sizing_mode="stretch_width", css_classes=["idx-index"],
    )
    return page_shell("/", "idexdask science review", str(data.path), body)


def _guard_page(builder: Callable[[ServerContext], Any], context: ServerContext):
    """A page factory that renders into the session's document itself.

    Building the Bokeh models here (not after returning) means that an error
    while rendering also becomes a one-line message instead of Panel's
    traceback page.
    """
    def page():
        doc = pn.state.curdoc
        try:
            viewable = builder(context)
            viewable.server_doc(doc, title=doc.title if doc else None)
        except Exception as exc:  # never a traceback in the browser
            if isinstance(exc, IdexDaskError):
                message = str(exc)
            else:
                logger.exception("page %s failed", builder.__name__)
                message = f"{type(exc).__name__}: {exc}"
            doc.clear()
            pn.Column(error_pane(message)).server_doc(doc)
        return None
    return page


def build_routes(context: ServerContext) -> dict[str, Callable[[], Any]]:
    """Route -> page factory (called once per browser session)."""
    from idexdask.dashboard.pages.browser import browser_page
    from idexdask.dashboard.pages.campaign import campaign_page
    from idexdask.dashboard.pages.composition import composition_page
    from idexdask.dashboard.pages.docs import docs_page
    from idexdask.dashboard.pages.event import event_page
    from idexdask.dashboard.pages.lines import lines_page
    from idexdask.dashboard.pages.noise import noise_page

    builders = {
        "/": index_page, "/campaign": campaign_page, "/event": event_page,
        "/lines": lines_page, "/composition": composition_page, "/noise": noise_page,
        "/browser": browser_page, "/docs": docs_page,
    }
    return {route: _guard_page(builder, context) for route, builder in builders.items()}


def make_context(store: str | os.PathLike, *, read_only: bool = False,
                 docs_dir: str | os.PathLike | None = None,
                 config: dict | None = None) -> ServerContext:
    """Open the store and load the refit configuration (errors before serving)."""
    from idexdask.config import load_config

    data = StoreData(store)
    docs = Path(docs_dir) if docs_dir else default_docs_dir()
    return ServerContext(data=data, read_only=read_only, docs_dir=docs,
                         config=config if config is not None else load_config())


def check_address(address: str, allow_websocket_origin: Sequence[str]) -> None:
    """Refuse a non-local bind address without explicit websocket origins.

    Raises
    ------
    StoreError
        If ``address`` is not local and ``allow_websocket_origin`` is empty.
    """
    if address not in LOCAL_ADDRESSES and not allow_websocket_origin:
        raise StoreError(
            f"--address {address} exposes the server beyond this machine: name the hosts "
            "browsers will use with --allow-websocket-origin HOST[:PORT]"
        )


def serve(context: ServerContext, *, port: int = 5006, address: str = "127.0.0.1",
          allow_websocket_origin: Sequence[str] = (), show: bool = False) -> None:
    """Serve the review app of ``context`` (see :func:`make_context`) until interrupted.

    Raises
    ------
    StoreError
        If a non-local address is asked for without ``allow_websocket_origin``.
    """
    check_address(address, allow_websocket_origin)
    origins = list(allow_websocket_origin) or [f"localhost:{port}", f"127.0.0.1:{port}"]
    pn.extension("tabulator", notifications=True)
    logger.info("serving %s on http://%s:%d", context.data.path, address, port)
    import threading

    from idexdask.dashboard.pages.campaign import warm_up as warm_campaign
    from idexdask.dashboard.pages.docs import ASSETS_ROUTE
    from idexdask.dashboard.studio import warm_refit

    threading.Thread(target=warm_refit, args=(context.data, context.config), daemon=True,
                     name="idexdask-warm-refit").start()
    # before listening, not in a thread: Panel's state (its resource mode, the
    # current document) is process-wide, and a page built beside a session's could
    # leak into it
    warm_campaign(context)

    static = {ASSETS_ROUTE.strip("/"): str(context.docs_dir)} if context.docs_dir else {}
    pn.serve(build_routes(context), port=port, address=address, websocket_origin=origins,
             show=show, title="idexdask review", start=True, threaded=False,
             static_dirs=static)
