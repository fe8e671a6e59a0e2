"""Every page of `idexdask serve` in headless Chromium, over real flight, lab and simulated stores.

Each test asserts no JavaScript console error, the plots and tables a scientist
expects, and writes a screenshot of every page (test-artifacts/dashboard/).
"""

from __future__ import annotations

import pytest

from idexdask.dashboard.data import StoreData
from tests.browser.pages import (
    click_in_shadow,
    console_errors,
    count_in_shadow,
    open_page,
    plot_texts,
    screenshot,
    shadow_text,
    source_lengths,
    source_strings,
    wait_count,
    wait_text,
)

pytestmark = pytest.mark.slow

ROUTES = ("/", "/campaign", "/event?event={event}", "/lines?event={event}", "/composition",
          "/noise?event={event}&channel={channel}", "/browser", "/docs")


def _visit_all(driver, server, artifacts, prefix: str, event: int, channel: str) -> dict:
    texts = {}
    for route in ROUTES:
        url = server.url + route.format(event=event, channel=channel)
        open_page(driver, url)
        name = route.split("?")[0].strip("/") or "index"
        # the page's own content, not only Bokeh's document, is there
        wait_count(driver, ".idx-nav")
        if name in ("campaign", "event", "lines", "noise", "composition"):
            wait_count(driver, ".bk-Canvas, canvas", at_least=1)
        screenshot(driver, artifacts, f"{prefix}-{name}")
        texts[name] = shadow_text(driver) + " | plots: " + " | ".join(plot_texts(driver))
        errors = console_errors(driver)
        assert not errors, f"{url}: console errors {errors}"
        assert "Traceback" not in texts[name], f"{url} shows a traceback"
        assert count_in_shadow(driver, ".idx-error") == 0 or name == "composition", \
            f"{url} shows an error: {texts[name][:1500]}"
    return texts


def test_every_page_on_real_flight_store(browser, start_server, l0_store, artifacts):
    server = start_server(l0_store)
    texts = _visit_all(browser, server, artifacts, "l0", event=5, channel="TOF_High")
    assert "22 events planned" in texts["index"]
    assert "finished" in texts["campaign"] and "22 of 22" in texts["campaign"]
    # the event header names the real source file and decodes the quality flags
    assert "imap_idex_l0_raw_20231218_v001.pkts" in texts["event"]
    assert "uncalibrated" in texts["event"]
    for channel in ("TOF_High (DN)", "TOF_Mid (DN)", "TOF_Low (DN)", "Target_High (DN)",
                    "Target_Low (DN)", "Ion_Grid (DN)"):
        assert channel in texts["event"]
    # the instrument state next to the waveforms, in engineering units (issue 22)
    assert "Instrument state" in texts["event"] and "reflectron_voltage" in texts["event"]
    assert "trigger_origin" in texts["event"] and "dead_time" in texts["event"]
    open_page(browser, server.url + "/event?event=5")
    wait_count(browser, ".idx-instrument-state")
    # a header row and the 32 housekeeping quantities
    assert wait_count(browser, ".idx-housekeeping tr", at_least=33) == 33
    screenshot(browser, artifacts, "l0-event-instrument-state")
    # the campaign page can plot any per-event instrument quantity over time
    scalars = StoreData(l0_store).scalars()
    for name in ("reflectron_voltage", "target_voltage", "dead_time", "trigger_level_hg"):
        assert name in scalars.columns and scalars[name].dtype.kind == "f"
    # V: the 20231218 file's reflectron at ~2947 V; every event has a reading
    assert scalars["reflectron_voltage"].notna().all()
    assert scalars["reflectron_voltage"].max() > 2900
    assert "lines (stored)" in texts["lines"]
    assert "Gaussian fit" in texts["noise"] and "Welch power spectral density" in texts["noise"]
    assert "manifest units" in texts["browser"] and "TOF_High" in texts["browser"]


def test_every_page_on_real_lab_store(browser, start_server, trc_store, artifacts):
    server = start_server(trc_store)
    texts = _visit_all(browser, server, artifacts, "trc", event=1, channel="QD_1")
    assert "3 of 3" in texts["campaign"]
    for channel in ("TOF_High (V)", "TOF_Low (V)", "QD_1 (V)", "QD_2 (V)"):
        assert channel in texts["event"]
    assert "peridot_C" in texts["event"]
    # lab captures carry no IDEX event header: a note, not an error
    assert "no instrument state for this event" in texts["event"]
    # 500,002 samples per channel never reach the browser: every trace is downsampled
    open_page(browser, server.url + "/event?event=1")
    wait_count(browser, ".bk-Canvas, canvas", at_least=1)
    sizes = source_lengths(browser)
    assert sizes and max(sizes) <= 20_000, f"a data source holds {max(sizes)} points"


def test_simulated_store_pages_and_event_selection(browser, start_server, sim_store, artifacts):
    server = start_server(sim_store)
    texts = _visit_all(browser, server, artifacts, "sim", event=3, channel="TOF_High")
    assert "Mg–Si–Fe" in texts["composition"] and "Mg–Fe–Ca" in texts["composition"]
    open_page(browser, server.url + "/composition")
    wait_count(browser, ".bk-Canvas, canvas", at_least=1)
    minerals = source_strings(browser)
    assert {"forsterite", "fayalite", "enstatite"} <= minerals, sorted(minerals)[:40]
    # an event chosen by URL shows that event
    open_page(browser, server.url + "/event?event=7")
    text = wait_text(browser, "event (row)")
    assert "event (row) 7" in text
    # ... and by clicking it in the campaign table
    open_page(browser, server.url + "/campaign")
    wait_count(browser, "a[href='/event?event=12']")
    click_in_shadow(browser, "a[href='/event?event=12']", "event 12")
    text = wait_text(browser, "event (row)")
    assert "event (row) 12" in text
    assert browser.current_url.endswith("/event?event=12")
    # next steps to the following event and puts it in the URL
    click_in_shadow(browser, "button", "next ▶")
    wait_text(browser, "event (row) 13 UTC")
    assert "event (row) 13" in shadow_text(browser)
    assert browser.current_url.endswith("event=13")
    assert console_errors(browser) == []


def test_rsf_switch_recomputes_fractions(browser, start_server, sim_store, artifacts):
    server = start_server(sim_store)
    open_page(browser, server.url + "/composition")
    wait_text(browser, "stored fractions")
    browser.execute_script("""
        function find(root) {
            for (const el of root.querySelectorAll('select'))
                for (const o of el.options) if (o.value === 'suda_fo87') return el;
            for (const el of root.querySelectorAll('*'))
                if (el.shadowRoot) { const f = find(el.shadowRoot); if (f) return f; }
        }
        const select = find(document);
        select.value = 'suda_fo87';
        select.dispatchEvent(new Event('change'));
    """)
    wait_text(browser, "recomputed with the suda_fo87 RSF preset")
    screenshot(browser, artifacts, "sim-composition-suda")
    assert console_errors(browser) == []


def test_bad_inputs_give_messages_not_tracebacks(browser, start_server, l0_store, artifacts):
    server = start_server(l0_store)
    for route, message in (("/event?event=999", "out of range"),
                           ("/event?event=abc", "is not an integer"),
                           ("/noise?event=2&channel=../../etc/passwd", "is not a waveform"),
                           ("/docs?page=../../../etc/passwd", "no documentation page")):
        open_page(browser, server.url + route)
        text = wait_text(browser, message)
        assert "Traceback" not in text and "root:" not in text
        assert console_errors(browser) == []
    screenshot(browser, artifacts, "l0-event-out-of-range")
    # no view failed on the server for these: they are expected inputs (tornado's own
    # notes of websockets closed by the navigation are not ours)
    log = server.server_log()
    assert "idexdask/dashboard/" not in log and "ERROR idexdask" not in log, log[-3000:]
