"""Pieces every page uses: the page shell, URL parameters, error panes, live polling."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import holoviews.plotting.bokeh  # noqa: F401  (the Bokeh backend of every plot's options)
import panel as pn
from panel.io.model import JSCode

from idexdask.dashboard.state import LIVE_PERIOD_MS, ReviewState
from idexdask.errors import IdexDaskError

__all__ = [
    "PAGES",
    "NUMBER_FORMAT",
    "error_pane",
    "guarded",
    "hv_pane",
    "number_formatters",
    "page_shell",
    "query_int",
    "query_str",
    "start_live",
]

logger = logging.getLogger(__name__)

#: Route, title and one-line description of every page (the index lists them).
PAGES = (
    ("/campaign", "Campaign", "progress of the store and every event's scalars"),
    ("/event", "Event", "one event: header, six waveforms, impact fits, TOF spectrum"),
    ("/lines", "Lines studio", "the event's line table: add, remove, refit, save"),
    ("/composition", "Composition", "element fractions, ternaries, minerals, RSF presets"),
    ("/noise", "Noise", "baseline histogram, Welch PSD and autocorrelation"),
    ("/browser", "Browser", "the store's variables, attributes and manifest"),
    ("/docs", "Docs", "the documentation, searchable"),
)


#: Tabulator cell format of every float column: six significant digits, and an
#: exponent below 1e-3 or from 1e6 (a dust mass of 3e-15 kg is not 0.0); NaN as is.
NUMBER_FORMAT = JSCode("""function(cell) {
    const v = cell.getValue();
    if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) return "NaN";
    if (typeof v !== "number") return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(4);
    return String(Number(v.toPrecision(6)));
}""")


def number_formatters(frame) -> dict[str, JSCode]:
    """Tabulator formatters giving every float column of ``frame`` :data:`NUMBER_FORMAT`."""
    return {str(name): NUMBER_FORMAT for name in frame.columns
            if getattr(frame[name].dtype, "kind", "") == "f"}


def error_pane(message: str) -> pn.pane.Alert:
    """A clear message in the page instead of a stack trace."""
    return pn.pane.Alert(html.escape(str(message)), alert_type="danger",
                         css_classes=["idx-error"], sizing_mode="stretch_width")


def guarded(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a view so that an expected error becomes a message pane.

    Errors of idexdask (a bad event, a missing variable) show their message;
    anything else is logged with its traceback on the server and shown as a
    one-line message, never as a traceback in the browser.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except IdexDaskError as exc:
            return error_pane(str(exc))
        except Exception as exc:  # a view must never take the page down
            logger.exception("view %s failed", view.__name__)
            return error_pane(f"{view.__name__}: {type(exc).__name__}: {exc}")

    return wrapper


def hv_pane(obj: Any, **params: Any) -> pn.pane.HoloViews:
    """A HoloViews pane whose axes are its own.

    Panel links the axes of every pane of a page that share a dimension name by
    default; when one such pane is re-rendered (a live refresh, a new choice) the
    others keep references to its replaced ranges and the browser rejects the
    update ("reference ... isn't known").  Views that must share zoom do so inside
    one HoloViews layout instead.
    """
    params.setdefault("sizing_mode", "stretch_width")
    return pn.pane.HoloViews(obj, linked_axes=False, **params)


def query_str(name: str, default: str | None = None) -> str | None:
    """A URL query parameter of the current session, as text."""
    args = pn.state.session_args or {}
    values = args.get(name)
    if not values:
        return default
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def query_int(name: str, default: int) -> tuple[int, str | None]:
    """An integer URL query parameter and, if it is not an integer, the message why."""
    text = query_str(name)
    if text is None:
        return default, None
    try:
        return int(text), None
    except ValueError:
        return default, f"{name}={text!r} is not an integer; showing {name} {default}"


def start_live(state: ReviewState) -> None:
    """Poll the store's manifest from this session every ``LIVE_PERIOD_MS``."""
    if pn.state.curdoc is not None:
        pn.state.add_periodic_callback(state.poll, period=LIVE_PERIOD_MS)


def nav_bar(current: str, event: int | None = None) -> pn.pane.HTML:
    """Links to every page (carrying the current event where it applies)."""
    links = ['<a href="/">Index</a>']
    for route, title, _ in PAGES:
        href = route
        if event is not None and route in ("/event", "/lines", "/noise"):
            href = f"{route}?event={event}"
        style = ' style="font-weight:bold"' if route == current else ""
        links.append(f'<a href="{href}"{style}>{title}</a>')
    return pn.pane.HTML(" | ".join(links), css_classes=["idx-nav"], sizing_mode="stretch_width")


def page_shell(current: str, title: str, store: str, *body: Any,
               event: int | None = None) -> pn.Column:
    """The page: navigation, title with the store path, then the body."""
    if pn.state.curdoc is not None:
        pn.state.curdoc.title = f"idexdask · {title}"
    header = pn.pane.HTML(
        f"<h2 style='margin:4px 0'>{html.escape(title)}</h2>"
        f"<div style='color:#555'>store: <code>{html.escape(store)}</code></div>",
        sizing_mode="stretch_width",
    )
    return pn.Column(nav_bar(current, event), header, *body, sizing_mode="stretch_width",
                     css_classes=[f"idx-page-{current.strip('/') or 'index'}"])
