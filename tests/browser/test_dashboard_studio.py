"""The lines studio in Chromium: a line added by box-selecting a span, refit, saved into the
store's override table, and still there after an `idexdask submit` rerun."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains

from idexdask.dashboard.data import StoreData
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.overrides_store import overrides_path
from tests.browser.conftest import run_cli
from tests.browser.pages import (
    click_in_shadow,
    console_errors,
    open_page,
    screenshot,
    shadow_text,
    wait_count,
    wait_text,
)

pytestmark = pytest.mark.slow

EVENT = 3


def _spectrum_canvas_box(driver) -> dict:
    """Viewport box of the studio's spectrum canvas (the first plot canvas of the page)."""
    return driver.execute_script("""
        function find(root) {
            for (const el of root.querySelectorAll('canvas')) {
                const r = el.getBoundingClientRect();
                if (r.width > 300 && r.height > 150) return r;
            }
            for (const el of root.querySelectorAll('*'))
                if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; }
        }
        const r = find(document);
        return {x: r.x, y: r.y, width: r.width, height: r.height};
    """)


def _line_count(driver) -> int:
    text = shadow_text(driver)
    marker = " lines ("
    before = text.split(marker)[0].split()
    return int(before[-1])


def test_add_line_refit_save_survives_submit(browser, start_server, sim_store, tmp_path,
                                             artifacts):
    store = tmp_path / "studio.zarr"
    shutil.copytree(sim_store, store)
    server = start_server(store)
    open_page(browser, f"{server.url}/lines?event={EVENT}")
    wait_count(browser, "canvas", at_least=1)
    wait_text(browser, "lines (stored)")
    stored = _line_count(browser)
    stored_centers = np.sort(StoreData(store).lines(EVENT)["center"].to_numpy())
    # aim at the middle of the widest gap between the detected lines
    gap = int(np.argmax(np.diff(stored_centers)))
    target = 0.5 * (stored_centers[gap] + stored_centers[gap + 1])
    start, end = browser.execute_script("""
        for (const doc of Bokeh.documents)
            for (const m of doc._all_models.values())
                if (m.type === 'Figure' && m.title && String(m.title.text).includes('box-select'))
                    return [m.x_range.start, m.x_range.end];
    """)
    box = _spectrum_canvas_box(browser)
    # the plot frame sits inside the canvas: ~60 px of y axis left, ~45 px of toolbar right
    left, width = box["x"] + 60, box["width"] - 105
    y = int(box["y"] + box["height"] * 0.5)
    x0 = int(left + width * ((target - 0.15) - start) / (end - start))
    x1 = int(left + width * ((target + 0.15) - start) / (end - start))
    actions = ActionChains(browser)
    actions.w3c_actions.pointer_action.move_to_location(x0, y)
    actions.w3c_actions.pointer_action.pointer_down()
    for step in range(1, 6):
        actions.w3c_actions.pointer_action.move_to_location(x0 + (x1 - x0) * step // 5, y)
    actions.w3c_actions.pointer_action.pointer_up()
    actions.perform()
    wait_text(browser, "selected span:")  # the server has the box selection
    click_in_shadow(browser, "button", "add line in span")
    text = wait_text(browser, "added a line at")
    assert "refit in" in text
    refit_ms = int(text.split("refit in ")[1].split(" ms")[0])
    assert refit_ms < 1000, f"refit took {refit_ms} ms"
    wait_text(browser, f"{stored + 1} lines (refit")
    screenshot(browser, artifacts, "sim-lines-added")
    click_in_shadow(browser, "button", "save to store")
    wait_text(browser, "saved 1 edits")
    table = json.loads(overrides_path(store).read_text())
    rows = [r for r in table["overrides"] if r["action"] == "add"]
    assert len(rows) == 1 and rows[0]["origin"] == "dashboard"
    center = rows[0]["center_us"]
    w0, w1 = rows[0]["window_start_us"], rows[0]["window_stop_us"]
    assert w0 < w1 and abs(0.5 * (w0 + w1) - target) < 0.3, (w0, w1, target)
    # a new line, not one of the detected ones
    assert not np.any((stored_centers >= w0) & (stored_centers <= w1))
    assert w0 <= center <= w1
    wait_text(browser, "1 saved edits in force")
    screenshot(browser, artifacts, "sim-lines-saved")
    assert console_errors(browser) == []

    # `submit` again: the unit whose overrides changed is reprocessed with the row
    run_cli("submit", str(sim_store.parent / "sim"), "-o", str(store), "--workers", "1")
    dataset = open_campaign(store, dask=False)
    manual = np.asarray(dataset["peak_manual"].values[EVENT], dtype=bool)
    centers = np.asarray(dataset["peak_center"].values[EVENT], dtype=float)
    assert manual.any(), "the saved line is not in the reprocessed store"
    # the added line is fitted inside the window the user selected (on this noise-only
    # span its centre settles where the fit finds it, not at the span's maximum)
    fitted = centers[manual]
    assert np.any((fitted >= rows[0]["window_start_us"]) & (fitted <= rows[0]["window_stop_us"]))
    assert int(dataset["peak_count"].values[EVENT]) == stored + 1
    # ... and the table still holds the row
    table = json.loads(overrides_path(store).read_text())
    assert [r["id"] for r in table["overrides"] if r["action"] == "add"] == [rows[0]["id"]]


def test_read_only_server_cannot_save(browser, start_server, sim_store, artifacts):
    server = start_server(sim_store, "--read-only")
    open_page(browser, f"{server.url}/lines?event={EVENT}")
    text = wait_text(browser, "read-only server: saving is disabled")
    assert "lines (stored)" in text
    disabled = browser.execute_script("""
        function find(root) {
            for (const el of root.querySelectorAll('button'))
                if (el.textContent.includes('save to store')) return el;
            for (const el of root.querySelectorAll('*'))
                if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; }
        }
        return find(document).disabled;
    """)
    assert disabled is True
    assert not overrides_path(sim_store).exists()
    assert console_errors(browser) == []
