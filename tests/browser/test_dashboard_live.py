"""The campaign page follows a running `idexdask submit` without a reload."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from idexdask.pipeline.manifest import pipeline_dir
from tests.browser.conftest import IDEXDASK, cli_env, run_cli
from tests.browser.pages import console_errors, open_page, screenshot, shadow_text, wait_text

pytestmark = pytest.mark.slow

FILES, EVENTS, BATCH = 6, 300, 50  # ~35 s of submit on one worker: the page opens within 10 s


def _events_done(driver) -> tuple[int, int, str]:
    text = shadow_text(driver)
    match = re.search(r"events\s*:\s*(\d+) of (\d+)", text)
    state = re.search(r"state\s*:\s*(\w+)", text)
    assert match and state, text[:1000]
    return int(match.group(1)), int(match.group(2)), state.group(1)


def _submit(inputs, store, log) -> subprocess.Popen:
    return subprocess.Popen([*IDEXDASK, "submit", str(inputs), "-o", str(store), "--workers", "1",
                             "--batch-events", str(BATCH)], stdout=log, stderr=subprocess.STDOUT,
                            env=cli_env(), start_new_session=True)


def _units_recorded(store) -> int:
    path = pipeline_dir(store) / "manifest.jsonl"
    if not path.exists():
        return 0
    return path.read_text().count('"record": "unit"')


def test_campaign_page_follows_a_running_submit(browser, start_server, tmp_path, artifacts):
    """A page opened on a part-filled store follows the run that completes it.

    The first run is stopped (killed, as a crash would) after a few units, so
    that the page is open before the resuming run starts: the test does not
    race the machine's speed.
    """
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(FILES):
        run_cli("simulate", "-n", str(EVENTS), "-o", str(inputs / f"f{i}.pkts"),
                "--seed", str(100 + i))
    store = tmp_path / "live.zarr"
    total = FILES * EVENTS
    with open(tmp_path / "submit.log", "w") as log:
        first = _submit(inputs, store, log)
        deadline = time.monotonic() + 300
        while _units_recorded(store) < 3:
            assert first.poll() is None, (tmp_path / "submit.log").read_text()
            assert time.monotonic() < deadline, "no unit recorded within 300 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        server = start_server(store)
        open_page(browser, server.url + "/campaign")
        wait_text(browser, "last run")
        done, planned, state = _events_done(browser)
        assert planned == total and 0 < done < total and state == "interrupted", (done, state)
        seen = [(done, state)]
        second = _submit(inputs, store, log)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                done, _, state = _events_done(browser)
                if seen[-1] != (done, state):
                    seen.append((done, state))
                if done == total and state == "finished":
                    break
                time.sleep(0.25)
            screenshot(browser, artifacts, "live-campaign-finished")
            assert second.wait(timeout=120) == 0, (tmp_path / "submit.log").read_text()
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
    assert seen[-1] == (total, "finished"), seen
    # the same page, never reloaded, showed the store filling up while the run ran
    running = [done for done, state in seen if state == "running"]
    assert running and any(seen[0][0] < d < total for d in running), seen
    # the scalar table followed too
    wait_text(browser, f"{total} of {total} events")
    assert console_errors(browser) == []
