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


def holoviews_stream_stacks(data, row: int):
    """The event page's previous waveform path, kept here to time it beside the new one.

    One HoloViews ``DynamicMap`` per channel (``downsample1d`` LTTB, impact-fit
    overlay), all driven by one stream: a switch sends the row through the stream
    and HoloViews pushes new arrays into the existing Bokeh sources.  Returns the
    layouts and a ``show(row)`` function.
    """
    import holoviews as hv

    from idexdask.dashboard.plots import IMPACT_CHANNELS, downsampled, impact_overlay_data
    from idexdask.dashboard.plots import waveform as channel_data

    stream = hv.streams.Stream.define("Row", row=0, revision=0)(row=int(row))
    first = data.event(int(row)).event
    groups: dict[str, list] = {}
    for name in [n for n in data.waveform_names() if n in first]:
        rate = str(first[name].dims[-1])
        xdim = hv.Dimension(f"time_{rate}", label="time", unit="µs")
        ydim = hv.Dimension(name)

        def trace(row, revision=0, name=name, xdim=xdim, ydim=ydim):
            time, values, _ = channel_data(data.event(int(row)).event, name)
            return hv.Curve((time, values), xdim, ydim)

        def fit(row, revision=0, name=name, xdim=xdim, ydim=ydim):
            event = data.event(int(row)).event
            time, _, _ = channel_data(event, name)
            overlay = impact_overlay_data(event, name, time)
            grid, model = (overlay.grid, overlay.model) if overlay else ([], [])
            return (hv.Curve((grid, model), xdim, ydim)
                    * hv.VLines([overlay.time_of_impact] if overlay else [], kdims=[xdim])
                    * hv.VLines(list(overlay.levels) if overlay else [], kdims=[xdim]))

        plot = downsampled(hv.DynamicMap(trace, streams=[stream]))
        if name in IMPACT_CHANNELS:
            plot = plot * hv.DynamicMap(fit, streams=[stream])
        groups.setdefault(rate, []).append(plot.opts(hv.opts.Curve(framewise=True)))
    layouts = [hv.Layout(plots).cols(1) for plots in groups.values()]

    def show(row: int) -> None:
        stream.event(row=int(row), revision=stream.revision + 1)

    return layouts, show


def campaign_build(store: Path) -> dict:
    """Server time of a ``/campaign`` session: the previous path and the page's, one run.

    Previous: the first session of a fresh server read the scalars, decoded the
    quality flags row by row and built the page (Datashader compiling on first
    use).  Now ``idexdask serve`` builds one page before listening
    (:func:`idexdask.dashboard.pages.campaign.warm_up`), flags are decoded per
    distinct value, and a session builds its page from the warm caches.
    """
    import panel as pn
    from bokeh.document import Document

    from idexdask.dashboard.data import decode_flags
    from idexdask.dashboard.pages.campaign import campaign_page, warm_up
    from idexdask.dashboard.server import make_context

    pn.extension("tabulator")
    begin = time.perf_counter()
    context = make_context(store)
    campaign_page(context).get_root(Document())
    cold_s = time.perf_counter() - begin
    flags = context.data.scalars()["quality_flags"].to_numpy()
    begin = time.perf_counter()
    [",".join(decode_flags(v)) or "ok" for v in flags]
    per_row_flags_s = time.perf_counter() - begin
    context = make_context(store)
    begin = time.perf_counter()
    warm_up(context)
    warm_up_s = time.perf_counter() - begin
    begin = time.perf_counter()
    campaign_page(context).get_root(Document())
    session_s = time.perf_counter() - begin
    return {"campaign_previous_first_session_s": cold_s + per_row_flags_s,
            "campaign_warm_up_s": warm_up_s, "campaign_session_s": session_s}


def server_side(store: Path, repeats: int = 30) -> dict:
    """In-process timings of what the server does (cold campaign read, event switch, refit).

    The event switch is timed three ways in the same run: the page's path (Bokeh
    figures built once, fed each row; rows read a Zarr chunk at a time), the
    previous path (HoloViews streams into existing plots, the spectrum rebuilt,
    one row read per switch) and rebuilding every plot per event.  Switches step
    to the next event (the page's ◀/▶, rows of one chunk) and jump to random
    rows with every cache dropped first (each jump then reads a chunk).
    """
    import holoviews as hv
    from bokeh.document import Document

    from idexdask.config import load_config
    from idexdask.dashboard.data import HEADER_PREFIX, HEADER_SHOWN, StoreData
    from idexdask.dashboard.event_plots import SpectrumFigure, WaveformStacks, waveform_note
    from idexdask.dashboard.plots import spectrum_plot, waveform_plot
    from idexdask.dashboard.studio import StudioSession

    hv.extension("bokeh")
    renderer = hv.renderer("bokeh")
    campaign = campaign_build(store)
    start = time.perf_counter()
    data = StoreData(store)
    scalars = data.scalars()
    campaign_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    n_rows = min(WAVEFORM_ROWS, data.n_events)
    jumps = rng.integers(0, n_rows, repeats)
    steps = np.arange(1, min(repeats, n_rows - 1) + 1)

    def new_path() -> tuple[list[float], list[float]]:
        stacks, spectrum = WaveformStacks(data, 0), SpectrumFigure()
        document = Document()
        for model in (*stacks.layouts, spectrum.figure):
            document.add_root(model)

        def switch(row: int) -> float:
            begin = time.perf_counter()
            event = data.event(row).event
            spectrum.show(event, data.lines(row))
            stacks.show(row)
            waveform_note(event, stacks.names)
            return time.perf_counter() - begin

        stepped = [switch(int(row)) for row in steps]
        jumped = []
        for row in jumps:
            data.clear_cache()
            jumped.append(switch(int(row)))
        return stepped, jumped

    def old_path() -> list[float]:
        dataset = data.dataset
        dataset = dataset.drop_vars([n for n in dataset.data_vars
                                     if str(n).startswith(HEADER_PREFIX)
                                     and n not in HEADER_SHOWN])
        layouts, show = holoviews_stream_stacks(data, 0)
        for layout in layouts:
            renderer.get_plot(layout)
        times = []
        for row in steps:
            begin = time.perf_counter()
            data.clear_cache()  # the previous path read one row per switch
            event = dataset.isel(epoch=slice(int(row), int(row) + 1)).load().isel(epoch=0)
            data.event(int(row))  # what the stream callbacks read (one chunk: cached)
            show(int(row))
            waveform_note(event, data.waveform_names())
            renderer.get_plot(spectrum_plot(event, data.lines(int(row))))
            times.append(time.perf_counter() - begin)
        return times

    stepped, jumped = new_path()
    previous = old_path()
    rebuild = []
    for row in steps[:5]:
        begin = time.perf_counter()
        event = data.event(int(row)).event
        lines = data.lines(int(row))
        plots = [waveform_plot(event, name) for name in data.waveform_names()]
        renderer.get_plot(hv.Layout([spectrum_plot(event, lines), *plots]).cols(1))
        rebuild.append(time.perf_counter() - begin)
    config = load_config()
    refits = []
    for row in jumps[:10]:
        session = StudioSession(data, int(row), config)
        begin = time.perf_counter()
        session.refit()
        refits.append(time.perf_counter() - begin)
    return {"events": data.n_events, "scalar_rows": len(scalars),
            "campaign_read_s": campaign_s, **campaign,
            "switch_p50_ms": 1e3 * percentile(stepped, 50),
            "switch_p95_ms": 1e3 * percentile(stepped, 95),
            "jump_p50_ms": 1e3 * percentile(jumped, 50),
            "jump_p95_ms": 1e3 * percentile(jumped, 95),
            "switch_previous_p50_ms": 1e3 * percentile(previous, 50),
            "switch_previous_p95_ms": 1e3 * percentile(previous, 95),
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
    begin = time.perf_counter()
    server = Server(store, log=log)
    ready_s = time.perf_counter() - begin
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
        return {"serve_ready_s": ready_s, "campaign_first_render_s": campaign_s,
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
    parser.add_argument("--work", help="folder of the tiled stores (kept; default: a "
                        "temporary folder, removed)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
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
        store = work / f"tiled-{size}.zarr"
        if not (args.work and store.exists()):
            store = tile_store(source, store, size)
        row = {"size": size, **server_side(store), **through_browser(store)}
        results.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['size']:>8} /campaign server: previous first session "
              f"{r['campaign_previous_first_session_s']:.2f} s; now warm-up before serving "
              f"{r['campaign_warm_up_s']:.2f} s, then a session {r['campaign_session_s']:.2f} s")
    print(f"{'events':>8} {'campaign read':>14} {'first render':>13} {'step p50/p95':>14} "
          f"{'jump p50/p95':>14} {'previous p50/p95':>17} {'refit p50':>10} {'RSS MiB':>8}")
    for r in results:
        print(f"{r['size']:>8} {r['campaign_read_s']:>12.2f} s "
              f"{r['campaign_first_render_s']:>11.2f} s "
              f"{r['switch_p50_ms']:>6.0f}/{r['switch_p95_ms']:<4.0f} ms "
              f"{r['jump_p50_ms']:>6.0f}/{r['jump_p95_ms']:<4.0f} ms "
              f"{r['switch_previous_p50_ms']:>8.0f}/{r['switch_previous_p95_ms']:<5.0f} ms "
              f"{r['refit_p50_ms']:>7.0f} ms "
              f"{r['rss_after_mib']:>8.0f}")
    if len(results) >= 2:
        growth = results[-1]["rss_after_mib"] / results[0]["rss_after_mib"] - 1
        print(f"RSS growth {results[0]['size']} -> {results[-1]['size']}: {100 * growth:+.1f} %")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
