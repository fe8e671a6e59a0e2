"""Helpers of the browser tests: open a page, wait for Bokeh, read the console, screenshot."""

from __future__ import annotations

import time
from pathlib import Path

from selenium.webdriver.support.ui import WebDriverWait

#: Console messages that are not errors of the page (Chromium's own notices).
BENIGN = ("favicon.ico", "DevTools")


def console_errors(driver) -> list[str]:
    """SEVERE console entries since the last call (the log is drained by reading it)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and not any(b in entry["message"] for b in BENIGN)]


def wait_rendered(driver, timeout: float = 60) -> None:
    """Wait until Bokeh has a document and its plots have drawn their canvases."""
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return window.Bokeh !== undefined && Bokeh.documents.length > 0"))
    time.sleep(0.5)
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def open_page(driver, url: str, timeout: float = 60) -> None:
    """Load ``url`` and wait for the app."""
    driver.get_log("browser")  # drain what the previous page left
    driver.get(url)
    wait_rendered(driver, timeout)


def shadow_text(driver) -> str:
    """Visible text of the page, shadow roots included (Panel renders into shadow DOM),
    whitespace collapsed to single spaces."""
    text = driver.execute_script("""
        function collect(node) {
            let text = '';
            if (node.shadowRoot) text += collect(node.shadowRoot);
            for (const child of node.childNodes) {
                if (child.nodeType === Node.TEXT_NODE) text += child.textContent + ' ';
                else if (!['STYLE', 'SCRIPT', 'LINK'].includes(child.nodeName))
                    text += collect(child);
            }
            return text;
        }
        return collect(document.body);
    """)
    return " ".join(text.split())


def wait_text(driver, needle: str, timeout: float = 60) -> str:
    """Wait until ``needle`` appears in the page's text; return the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = shadow_text(driver)
        if needle in text:
            return text
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} not on the page within {timeout} s; text: {text[:2000]}")


def count_in_shadow(driver, selector: str) -> int:
    """Elements matching a CSS selector anywhere, shadow roots included."""
    return driver.execute_script("""
        const selector = arguments[0];
        function count(root) {
            let n = root.querySelectorAll(selector).length;
            for (const el of root.querySelectorAll('*'))
                if (el.shadowRoot) n += count(el.shadowRoot);
            return n;
        }
        return count(document);
    """, selector)


def wait_count(driver, selector: str, at_least: int = 1, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = count_in_shadow(driver, selector)
        if n >= at_least:
            return n
        time.sleep(0.3)
    raise AssertionError(f"fewer than {at_least} {selector!r} within {timeout} s (found {n})")


def click_in_shadow(driver, selector: str, text: str | None = None) -> None:
    """Click the first element matching ``selector`` (and containing ``text``)."""
    found = driver.execute_script("""
        const [selector, text] = arguments;
        function find(root) {
            for (const el of root.querySelectorAll(selector))
                if (text === null || el.textContent.includes(text)) return el;
            for (const el of root.querySelectorAll('*'))
                if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; }
            return null;
        }
        const el = find(document);
        if (el) { el.click(); return true; }
        return false;
    """, selector, text)
    if not found:
        raise AssertionError(f"nothing to click: {selector!r} {text!r}")


def screenshot(driver, folder: Path, name: str) -> Path:
    """Full-page screenshot (the window grown to the page's height)."""
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    driver.set_window_size(1400, max(900, min(int(height) + 100, 6000)))
    time.sleep(0.8)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1800)
    return path


def plot_texts(driver) -> list[str]:
    """Titles and axis labels of every Bokeh plot of the page (drawn on canvas, not DOM)."""
    return driver.execute_script("""
        const texts = [];
        for (const doc of Bokeh.documents)
            for (const model of doc._all_models.values()) {
                if (model.type === 'Title' && model.text) texts.push(model.text);
                if (model.axis_label) texts.push(model.axis_label);
            }
        return texts;
    """)


def source_lengths(driver) -> list[int]:
    """Lengths of the columns of every Bokeh data source of the page."""
    return driver.execute_script("""
        const sizes = [];
        for (const doc of Bokeh.documents)
            for (const model of doc._all_models.values())
                if (model.type === 'ColumnDataSource')
                    for (const column of Object.values(model.data))
                        if (column && column.length !== undefined) sizes.push(column.length);
        return sizes;
    """)


def source_strings(driver) -> set[str]:
    """Every string value held by the page's Bokeh data sources (labels, names)."""
    return set(driver.execute_script("""
        const out = [];
        for (const doc of Bokeh.documents)
            for (const model of doc._all_models.values())
                if (model.type === 'ColumnDataSource')
                    for (const column of Object.values(model.data))
                        if (Array.isArray(column))
                            for (const v of column) if (typeof v === 'string') out.push(v);
        return out;
    """))
