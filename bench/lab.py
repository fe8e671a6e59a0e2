"""Lab campaign throughput and store size of ``idexdask submit`` on LeCroy captures.

Usage::

    python bench/lab.py                  # 300 impacts, 1 and 2 workers
    python bench/lab.py --impacts 96     # fewer
    python bench/lab.py --stages         # + the per-stage times of one pack, in-process
    python bench/lab.py --repeat 3       # 1 and 2 workers back to back, 3 times: best, spread

Makes a campaign in a temporary directory (never in the repository): the shared
peridot impacts (``$IDEXDASK_DATA/scope-trc``, 3 impacts x 4 channels) replicated
under new impact numbers as symbolic links (the same bytes, read from the page
cache, as a campaign re-read after its recording), plus their settings file.
Then ``run_campaign`` (what ``idexdask submit`` runs) with an embedded cluster of 1
and of 2 single-threaded workers, and reports (no peer runs beside: the official
pipeline reads no LeCroy captures; docs/performance.md puts these figures beside
the flight ones):

* impacts/s end to end (plan + cluster start + every task; exports excluded) and
  per core (wall: with 2 workers, on 2 cores, the client and scheduler share them);
  target >= 50 impacts/s per core;
* the speed-up of 2 workers over 1 (target >= 1.8x);
* the store's bytes over the input .trc bytes (target <= 1.2);
* the workers' and the client's CPU time per impact, the host's steal time, the
  host check of ``bench/campaign.py`` and the load average (a shared machine makes
  every wall figure noisy; the CPU times less so).

``--no-campaign-step`` turns off the campaign calibration step that ``submit``
runs after the packs (``analysis.calibration.campaign.enabled``: a reduce task
per input and a map task per unit, here per impact, rewriting the
calibration-dependent products), to time the lab path itself.

``--worker-start spawn`` starts each worker as a fresh interpreter instead of
forking it from a preloaded forkserver (``cluster.worker_start``), to compare
the two; the "all CPU" column counts every process of a run (client, workers
from their start, the forkserver).

``--lab-batch-events N`` sets the impacts per task and per Zarr chunk
(``pipeline.lab_batch_events``, shipped 16) for the runs, to compare pack sizes.

``--repeat N`` runs the worker counts back to back N times (1, 2, 1, 2, ...), so
that each speed-up compares runs under the same load, and reports every run, the
load average (``os.getloadavg``, as ``uptime`` prints it) before each, and per
worker count the best rate and the spread (min - max) over the repeats, with the
speed-up of the best rates and the range of the per-repeat speed-ups.

``--stages`` times (CPU time of this process, best of 3, each stage in a thread
other than the main one, as a worker runs its tasks) the stages of one task's
work on one pack of impacts: the pack's joint read (``read_units``, what a task
runs), reading impact by impact (``decode_unit``, the fallback) and concatenating,
signal quality, the TOF gain merge, line search and fits, the pickup (QD)
products, the whole analysis, ``process_units`` (a pack's read, analysis and
normalisation for the store), the store's layout (``initialise_store``, what the
client runs once per run from the first pack's schema), the pack's region write
(codes checked, compressed with ``pipeline.lab_compressor``, files written), and
what a worker sends the client: each pack's ``PackResult`` (pickled) and, once
per run, the store's schema (one event).  The pack's data never leave the worker that processed it
(its write runs there).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def make_lab_campaign(directory: Path, n_impacts: int, source: Path) -> int:
    """``n_impacts`` impacts in ``directory``: links to the shared captures.

    Returns
    -------
    int
        Bytes of the .trc files (as the campaign's input size).
    """
    from idexdask.io.trc import parse_trc_filename

    originals: dict[int, dict[int, Path]] = {}
    for path in sorted(source.glob("*.trc")):
        channel, impact = parse_trc_filename(path.name)
        originals.setdefault(impact, {})[channel] = path
    impacts = sorted(originals)
    total = 0
    for number in range(1, n_impacts + 1):
        for channel, path in originals[impacts[(number - 1) % len(impacts)]].items():
            target = directory / f"peridot_C{channel}_{number:05d}.trc"
            os.symlink(path, target)
            total += path.stat().st_size
    for settings in source.glob("*settings*.txt"):
        os.symlink(settings, directory / settings.name)
    return total


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def stages(directory: Path, n_impacts: int) -> list[tuple[str, float]]:
    """CPU seconds per impact of each stage of one pack's work, in this process (best of 3)."""
    from idexdask.analysis.pickup_products import pickup_products
    from idexdask.analysis.signal_quality import load_quality_config, quality_variables
    from idexdask.analysis.tof import merge_gains, tof_lines
    from idexdask.config import load_config
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.pipeline.region_write import write_region
    from idexdask.pipeline.tasks import PackResult, Processed, schema_task
    from idexdask.pipeline.units import concat_events, decode_unit, process_units
    from idexdask.sources import sources
    from idexdask.workflow.analyze import analysis_products

    _worker_malloc()
    config = load_config({})
    settings = config["analysis"]
    units = plan_inputs([directory], 1).units[:n_impacts]
    timings: dict[str, float] = {}

    # every stage runs in a thread other than the main one, as a Dask worker runs
    # its tasks: numcodecs' Blosc compresses with threads of its own only when
    # called from the main thread (here ~3 ms of CPU more per impact in the
    # region write, which no worker spends)
    worker_thread = ThreadPoolExecutor(1)

    def best(label: str, func, repeat: int = 3):
        # CPU time of this process: on a machine others load, wall time measures them
        result, times = None, []
        for _ in range(repeat):
            # a worker frees a pack before it reads the next; holding the
            # previous result here would time every repetition's faults into
            # fresh memory (the pack read 3.6-3.8 instead of ~1.9 ms per impact)
            result = None
            start = time.process_time()
            result = worker_thread.submit(func).result()
            times.append(time.process_time() - start)
        timings[label] = min(times) / len(units)
        return result

    source = sources.by_kind(units[0].kind)
    # the stages analyse the pack as process_units does: its joint read, which
    # carries the int16 codes the reader recorded (signal quality and the pickup
    # take them); one-impact reads concatenated would be copies without them
    events = best("pack read (read_units: what process_units runs)",
                  lambda: source.read_units(units))
    parts = best("read_trc (per impact)", lambda: [decode_unit(u) for u in units])
    best("concatenate impacts", lambda: concat_events(parts))
    quality = best("signal quality", lambda: quality_variables(
        events, load_quality_config(settings.get("quality") or None),
        channel_dim="quality_channel"))
    merged = best("TOF gain merge", lambda: merge_gains(events, quality, {**settings["tof"]}))
    peaks = {**settings["peaks"], "fit_device": "cpu",
             "fit_engine": str(settings["fitting"]["engine"])}
    best("TOF line search and fits", lambda: tof_lines(merged, peaks))
    best("pickup (QD) products", lambda: pickup_products(events))
    best("analysis, all stages", lambda: analysis_products(events, config))
    processed = best("process_units (read + analyse + normalise)",
                     lambda: process_units(units, config))
    dataset = processed.dataset
    with tempfile.TemporaryDirectory(prefix="idexdask-lab-write-") as tmp:
        # the client lays a new store out once per run, from the first pack's
        # schema (CPU of this process: zarr's event-loop thread included)
        layouts = []
        for attempt in range(3):
            start = time.process_time()
            store = _laid_out(Path(tmp) / f"s{attempt}.zarr", dataset, config)
            layouts.append(time.process_time() - start)
        timings["store layout, initialise_store on the client, once per run (ms)"] = (
            min(layouts) * 1e3)
        n = len(units)
        # a worker keeps one region writer per run (pipeline/writers.py): its
        # set-up (every array's zarr.json read, each codec chain checked against
        # zarr once) is paid once per worker and run, not per pack
        start = time.process_time()
        worker_thread.submit(_writer_ready, store, dataset, n).result()
        timings["region writer set-up, once per worker and run (ms)"] = (
            time.process_time() - start) * 1e3
        # each repetition writes a store laid out afresh, as a campaign writes each
        # chunk once (rewriting the same chunk files replaces them: other costs);
        # the writer's set-up is timed above, once
        fresh = []

        def fresh_store():
            target = _laid_out(Path(tmp) / f"w{len(fresh)}.zarr", dataset, config)
            fresh.append(worker_thread.submit(_writer_ready, target, dataset, n).result())

        def write_fresh():
            return write_region(fresh[-1].path, dataset, (0, n), rows=n, n_events=n,
                                writer=fresh[-1])

        times = []
        for _ in range(3):
            fresh_store()
            start = time.process_time()
            worker_thread.submit(write_fresh).result()
            times.append(time.process_time() - start)
        timings["store write (write_region of the pack into a fresh store)"] = (
            min(times) / n)
    # what leaves a worker: the store's schema (one event, once per run) and each
    # pack's PackResult; the pack's data are written where they were processed
    schema = schema_task(Processed(processed, 0.0))
    result = PackResult(status={u.uid: "done" for u in units}, attrs=processed.attrs,
                        overrides_hash=processed.overrides_hash, worker="host:1")
    best("pickle a pack's result (worker -> client)",
         lambda: pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    timings["pack result bytes per impact (kB)"] = len(
        pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)) / len(units) / 1e3
    timings["schema bytes, once per run (MB)"] = len(
        pickle.dumps(schema, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6
    return list(timings.items())


def _writer_ready(store: Path, dataset, n: int):
    """A region writer of ``store`` that has read the metadata of every array it writes."""
    from idexdask.pipeline.region_write import RegionWriter

    writer = RegionWriter(store, rows=n, n_events=n)
    for name, variable in dataset.variables.items():
        if "epoch" in variable.dims:
            writer.spec(str(name))
    return writer


def _laid_out(store: Path, dataset, config) -> Path:
    """A store for the pack's rows, laid out as a lab campaign's (``lab_compressor``)."""
    from idexdask.pipeline.store import initialise_store

    pipeline = config["pipeline"]
    n = dataset.sizes["epoch"]
    initialise_store(store, dataset.isel(epoch=slice(0, 1)), n, rows=n,
                     compressor=str(pipeline.get("lab_compressor", pipeline["compressor"])),
                     level=int(pipeline["compression_level"]),
                     uncompressed=tuple(pipeline.get("lab_uncompressed_waveforms") or ()),
                     meta={})
    return store


def _worker_malloc() -> None:
    """This process's glibc malloc set as the embedded workers' environment sets theirs.

    The workers start with ``pipeline.cluster.MALLOC_ENVIRON``; glibc reads those
    variables only at start-up, so here the same thresholds are set by ``mallopt``
    (without them every large array of a repetition is mapped and faulted in
    afresh: the pack read ~3.4 instead of ~2.2 ms per impact).
    """
    import ctypes
    import ctypes.util

    from idexdask.pipeline.cluster import MALLOC_ENVIRON

    # mallopt parameter numbers, glibc's malloc.h
    parameters = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for name, value in MALLOC_ENVIRON.items():
        if name in parameters and not libc.mallopt(parameters[name], int(value)):
            raise RuntimeError(f"mallopt refused {name}={value}")


def _patch_configs(campaign_step: bool, lab_batch_events: int | None,
                   worker_start: str | None = None) -> None:
    """Every configuration bench/campaign.py's ``run`` loads gets these settings:
    the campaign step off (``campaign_step`` false), the impacts per task and chunk
    (``pipeline.lab_batch_events``) and the workers' start (``cluster.worker_start``)
    where given."""
    import idexdask.config as config_module

    original = config_module.load_config

    def load_config(overrides=None, *args, **kwargs):
        merged = dict(overrides or {})
        if not campaign_step:
            analysis = dict(merged.get("analysis") or {})
            calibration = dict(analysis.get("calibration") or {})
            calibration["campaign"] = {**(calibration.get("campaign") or {}), "enabled": False}
            merged["analysis"] = {**analysis, "calibration": calibration}
        if lab_batch_events is not None:
            merged["pipeline"] = {**(merged.get("pipeline") or {}),
                                  "lab_batch_events": lab_batch_events}
        if worker_start is not None:
            merged["cluster"] = {**(merged.get("cluster") or {}), "worker_start": worker_start}
        return original(merged, *args, **kwargs)

    config_module.load_config = load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impacts", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--stage-impacts", type=int, default=8)
    parser.add_argument("--no-campaign-step", action="store_true",
                        help="turn off the campaign calibration step after the packs")
    parser.add_argument("--lab-batch-events", type=int, default=None,
                        help="impacts per task and chunk (pipeline.lab_batch_events)")
    parser.add_argument("--worker-start", choices=("forkserver", "spawn"), default=None,
                        help="how the workers start (cluster.worker_start; default: shipped)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the worker counts back to back this many times")
    args = parser.parse_args()
    data = Path(os.environ.get("IDEXDASK_DATA", REPO.parent / "shared" / "data"))
    source = data / "scope-trc"

    from campaign import host_check, run  # bench/campaign.py

    from idexdask.config import load_config

    batch = int(load_config({})["pipeline"]["batch_events"])  # the shipped setting
    if args.no_campaign_step or args.lab_batch_events is not None or args.worker_start:
        _patch_configs(not args.no_campaign_step, args.lab_batch_events, args.worker_start)

    print(host_check())
    print(f"load average before the runs: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="idexdask-lab-bench-") as tmp:
        directory = Path(tmp) / "captures"
        directory.mkdir()
        input_bytes = make_lab_campaign(directory, args.impacts, source)
        if args.stages:
            print("\n| stage | CPU ms per impact |\n|---|---|")
            for label, value in stages(directory, args.stage_impacts):
                shown = value if label.endswith(("(ms)", "(kB)", "(MB)")) else value * 1e3
                print(f"| {label} | {shown:.2f} |")
        rows = []
        for repeat in range(args.repeat):
            for workers in args.workers:
                store = Path(tmp) / f"store_{workers}_{repeat}.zarr"
                load = os.getloadavg()[0]
                result = run([directory], store, workers, True, batch)
                rate = result["events"] / result["seconds"]
                rows.append((repeat, workers, load, result, rate, store_bytes(store)))
                shutil.rmtree(store)
        print(f"\n{args.impacts} impacts, {input_bytes / 1e6:.0f} MB of .trc\n")
        print("| repeat | workers | load (1 min) | wall s | impacts/s | per core | speed-up | "
              "worker CPU ms/impact | client CPU ms/impact | all CPU ms/impact | store / input | "
              "steal s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for repeat, workers, load, result, rate, size in rows:
            one = next((r[4] for r in rows if r[0] == repeat and r[1] == 1), None)
            speedup = f"{rate / one:.2f}x" if one else "-"
            cpu = result["worker_cpu"] / result["events"] * 1e3
            client = result["overhead_cpu"] / result["events"] * 1e3
            every = result["run_cpu"] / result["events"] * 1e3
            print(f"| {repeat + 1} | {workers} | {load:.1f} | {result['seconds']:.1f} | "
                  f"{rate:.1f} | {rate / workers:.1f} | {speedup} | {cpu:.1f} | {client:.1f} | "
                  f"{every:.1f} | {size / input_bytes:.2f} | {result['steal']:.1f} |")
        print("\n| workers | best impacts/s | spread impacts/s | best per core |")
        print("|---|---|---|---|")
        best = {}
        for workers in args.workers:
            rates = [r[4] for r in rows if r[1] == workers]
            best[workers] = max(rates)
            print(f"| {workers} | {max(rates):.1f} | {min(rates):.1f} - {max(rates):.1f} | "
                  f"{max(rates) / workers:.1f} |")
        if 1 in best and 2 in best:
            pairs = [r2[4] / r1[4] for r1 in rows for r2 in rows
                     if r1[0] == r2[0] and r1[1] == 1 and r2[1] == 2]
            print(f"\nspeed-up of 2 workers: best rates {best[2] / best[1]:.2f}x; per repeat "
                  f"{min(pairs):.2f}x - {max(pairs):.2f}x")
    print(host_check())
    print(f"load average after the runs: {os.getloadavg()}")


if __name__ == "__main__":
    main()
