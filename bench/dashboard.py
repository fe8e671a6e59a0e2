"""Dashboard benchmark: /campaign first render, event switch, refit, RSS at 10k and 100k events.

    python bench/dashboard.py [--source STORE] [--sizes 10000 100000] [--out bench/output]

Stores of 10,000 and 100,000 events are made by tiling a store written by
``idexdask submit`` (default: a 300-event simulated campaign made here) along
``epoch``: every per-event variable is tiled, the waveforms are stored for the
first ``WAVEFORM_ROWS`` rows only (the rest are the fill value; the event
benchmarks pick rows there), and the plan and manifest say one done unit.  It
measures what the server does with a store of that size (the campaign page's
scalar reads, one event's read and plots, a refit), not a submit.

Targets (issue 17): event switch p95 < 300 ms server-side, /campaign of 100k
events < 3 s, server RSS within 20 % from 10k to 100k.  Timings on a shared,
loaded 2-core machine are noisy: the script reports medians and p95 of repeats.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WAVEFORM_ROWS = 256


def tile_store(source: Path, target: Path, n_events: int) -> Path:
    """Copy ``source`` to ``target`` with every epoch array tiled to ``n_events`` rows."""
    import zarr

    from idexdask.pipeline.manifest import pipeline_dir

    if target.exists():
        shutil.rmtree(target)
    src = zarr.open_group(str(source), mode="r")
    meta = json.loads(src.attrs["idexdask_pipeline"])
    n_src = int(meta["n_events"])
    meta["n_events"] = n_events
    dst = zarr.open_group(str(target), mode="w")
    dst.attrs.update({**dict(src.attrs), "idexdask_pipeline": json.dumps(meta)})
    reps = -(-n_events // n_src)
    for name, array in src.arrays():
        dims = list(array.metadata.dimension_names or ())
        values = array[...]
        if dims and dims[0] == "epoch":
            row_size = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
            shape = (n_events, *array.shape[1:])
            out = zarr.create_array(
                dst.store, name=name, shape=shape, chunks=array.chunks, dtype=array.dtype,
                fill_value=array.fill_value, compressors=array.compressors,
                attributes=dict(array.attrs), dimension_names=dims)
            if row_size > 4096:  # a waveform: only the first rows are stored
                rows = min(WAVEFORM_ROWS, n_events)
                out[:rows] = np.concatenate([values] * (-(-rows // n_src)))[:rows]
            else:
                tiled = np.concatenate([values] * reps)[:n_events]
                if name == "epoch":  # keep the coordinate increasing and unique
                    tiled = values[0] + np.arange(n_events, dtype=np.int64) * 1_000_000_000
                out[...] = tiled
        else:
            out = zarr.create_array(
                dst.store, name=name, shape=array.shape, chunks=array.chunks,
                dtype=array.dtype, fill_value=array.fill_value, compressors=array.compressors,
                attributes=dict(array.attrs), dimension_names=dims or None)
            out[...] = values
    shutil.copytree(pipeline_dir(source), pipeline_dir(target), dirs_exist_ok=True)
    plan_path = pipeline_dir(target) / "plan.json"
    plan = json.loads(plan_path.read_text())
    unit = dict(plan["units"][0], region=[0, n_events], n_events=n_events,
                uid=f"{plan['units'][0]['input']}@tiled")
    plan["units"] = [unit]
    plan_path.write_text(json.dumps(plan))
    records = [r for r in map(json.loads, (pipeline_dir(source) / "manifest.jsonl")
                              .read_text().splitlines())]
    start = next(r for r in records if r["record"] == "run_start")
    end = next(r for r in records if r["record"] == "run_end")
    done = next(r for r in records if r["record"] == "unit")
    done = dict(done, uid=unit["uid"], region=[0, n_events], n_events=n_events,
                input_hash=unit["input_hash"], config_hash=plan["config_hash"])
    (pipeline_dir(target) / "manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (start, done, end)))
    (pipeline_dir(target) / "lock.json").unlink(missing_ok=True)
    return target


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def server_side(store: Path, repeats: int = 30) -> dict:
    """In-process timings of what the server does (cold campaign read, event switch, refit)."""
    import holoviews as hv

    from idexdask.config import load_config
    from idexdask.dashboard.data import StoreData
    from idexdask.dashboard.event_plots import WaveformStacks, waveform_note
    from idexdask.dashboard.plots import spectrum_plot, waveform_plot
    from idexdask.dashboard.studio import StudioSession

    hv.extension("bokeh")
    renderer = hv.renderer("bokeh")
    start = time.perf_counter()
    data = StoreData(store)
    scalars = data.scalars()
    campaign_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    rows = rng.integers(0, min(WAVEFORM_ROWS, data.n_events), repeats)
    # the event page builds its waveform stacks once per session and pushes each new
    # event's arrays into them; the spectrum is rebuilt per event
    stacks = WaveformStacks(data, int(rows[0]))
    for layout in stacks.layouts:
        renderer.get_plot(layout)
    switch = []
    for row in rows:
        begin = time.perf_counter()
        event = data.event(int(row)).event
        lines = data.lines(int(row))
        stacks.show(int(row))
        waveform_note(event, stacks.names)
        renderer.get_plot(spectrum_plot(event, lines))
        switch.append(time.perf_counter() - begin)
    # the previous design, for comparison in the same run: every plot rebuilt per event
    rebuild = []
    for row in rows[:5]:
        begin = time.perf_counter()
        event = data.event(int(row)).event
        lines = data.lines(int(row))
        plots = [waveform_plot(event, name) for name in data.waveform_names()]
        renderer.get_plot(hv.Layout([spectrum_plot(event, lines), *plots]).cols(1))
        rebuild.append(time.perf_counter() - begin)
    config = load_config()
    refits = []
    for row in rows[:10]:
        session = StudioSession(data, int(row), config)
        begin = time.perf_counter()
        session.refit()
        refits.append(time.perf_counter() - begin)
    return {"events": data.n_events, "scalar_rows": len(scalars),
            "campaign_read_s": campaign_s,
            "switch_p50_ms": 1e3 * percentile(switch, 50),
            "switch_p95_ms": 1e3 * percentile(switch, 95),
            "switch_rebuild_p50_ms": 1e3 * percentile(rebuild, 50),
            "refit_first_ms": 1e3 * refits[0],
            "refit_p50_ms": 1e3 * percentile(refits[1:], 50),
            "refit_p95_ms": 1e3 * percentile(refits[1:], 95)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def through_browser(store: Path, events: int = 5) -> dict:
    """`idexdask serve` + headless Chromium: /campaign first render, event switch, RSS."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.browser.conftest import Server
    from tests.browser.pages import open_page, wait_count

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    log = Path(tempfile.mkdtemp()) / "serve.log"
    server = Server(store, log=log)
    try:
        rss_start = rss_mib(server.process.pid)
        begin = time.perf_counter()
        open_page(driver, server.url + "/campaign", timeout=300)
        wait_count(driver, "canvas", at_least=2, timeout=300)
        campaign_s = time.perf_counter() - begin
        switches = []
        for row in range(1, events + 1):
            begin = time.perf_counter()
            open_page(driver, f"{server.url}/event?event={row}", timeout=300)
            wait_count(driver, "canvas", at_least=3, timeout=300)
            switches.append(time.perf_counter() - begin)
        return {"campaign_first_render_s": campaign_s,
                "event_page_p50_s": percentile(switches, 50),
                "rss_start_mib": rss_start, "rss_after_mib": rss_mib(server.process.pid)}
    finally:
        server.stop()
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="store written by `idexdask submit` to tile")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", default=str(REPO / "bench" / "output"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    source = Path(args.source) if args.source else None
    if source is None:
        inputs = work / "inputs"
        inputs.mkdir()
        idexdask = [sys.executable, "-m", "idexdask.cli"]
        subprocess.run([*idexdask, "simulate", "-n", "300", "-o", str(inputs / "a.pkts")],
                       check=True)
        source = work / "source.zarr"
        subprocess.run([*idexdask, "submit", str(inputs), "-o", str(source), "--workers", "1"],
                       check=True, capture_output=True)
    results = []
    for size in args.sizes:
        store = tile_store(source, work / f"tiled-{size}.zarr", size)
        row = {"size": size, **server_side(store), **through_browser(store)}
        results.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(results, indent=1))
    print(f"{'events':>8} {'campaign read':>14} {'first render':>13} {'switch p95':>11} "
          f"{'refit p50':>10} {'RSS MiB':>8}")
    for r in results:
        print(f"{r['size']:>8} {r['campaign_read_s']:>12.2f} s "
              f"{r['campaign_first_render_s']:>11.2f} s {r['switch_p95_ms']:>8.0f} ms "
              f"{r['refit_p50_ms']:>7.0f} ms "
              f"{r['rss_after_mib']:>8.0f}")
    if len(results) >= 2:
        growth = results[-1]["rss_after_mib"] / results[0]["rss_after_mib"] - 1
        print(f"RSS growth {results[0]['size']} -> {results[-1]['size']}: {100 * growth:+.1f} %")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
