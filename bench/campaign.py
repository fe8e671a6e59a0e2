"""Campaign throughput and worker memory of ``idexdask submit`` (embedded LocalCluster).

Usage::

    python bench/campaign.py                 # 10k and 100k events (slow: ~10+ min)
    python bench/campaign.py --quick         # 2k and 8k events
    python bench/campaign.py --analyze       # with idexdask.analyze (slow)
    python bench/campaign.py --analyze --large-one-worker   # + 1 worker at 100k (slower)
    python bench/campaign.py --analyze --large-one-worker --large-pairs 2  # 2 pairs at 100k
    python bench/campaign.py --exports       # the demo's exports against its processing

Measures, on simulated campaigns (files of ``--file-events`` events, plain and
Rice-compressed alternating, made once in a temporary directory):

* end-to-end events/s (plan + cluster start + all tasks; exports excluded) with 1
  and 2 single-threaded workers, and the speed-up (target >= 1.8x);
* events/s per core (wall), and the workers' CPU time per event (user + system,
  all their threads, from ``getrusage``): on a 2-core machine the client and
  the scheduler share the workers' cores, so the wall figure understates what a
  core gives; and the CPU time per event of the client (this process:
  planning, progress, the manifest journal), the scheduler and the workers'
  nannies, which is what those take from the workers' cores;
* peak RSS (VmHWM) of every worker at the small and the large campaign (target:
  flat within 10 %: a worker holds one batch at a time whatever the campaign size);
* the wall time of the campaign calibration step (a reduce over each input's
  line lists, then a map rewriting the calibration-dependent products of every
  event; docs/pipeline.md) and its share of the run: it must not change the
  campaign's scaling (issue 19);
* the host's CPU steal time during each run (``/proc/stat``): on a virtual
  machine, time the hypervisor gave to other guests while ours wanted the CPU;
  and, before and after the runs, how much two busy processes slow each other
  (a pure-Python loop alone and two at once; +-10 % is its noise): on a loaded
  host each of two takes up to 70 % longer than one alone, and every two-worker
  figure with it;
* the official pipeline's (imap-processing 1.0.40, ``.venv-oracle``) time per
  event on the same simulated events, measured in the same run: its L1a decoder
  on the first ``--official-events`` events of a plain file, plus, with
  ``--analyze``, its per-event L2a science steps (``bench/analyze.py``).  The
  target is >= 500 events/s per core for ours.

With ``--exports`` it measures instead the exports of the demo's campaign (4
files of 1,000 events, with the analysis, 2 workers, CDF and HDF5 as ``make
demo`` writes them): the campaign without exports, the same with the exports
written on the cluster as each file finishes (what ``submit --export`` does),
and the export of the finished store by ``idexdask export`` (on the cluster)
and by one process; with the files' sizes per 1,000 events beside the L0's.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as stream:
        line = next(x for x in stream if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _cpu_seconds() -> tuple[float, float]:
    """User and system CPU time of this process (a worker), all its threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def make_campaign(directory: Path, n_events: int, file_events: int) -> list[Path]:
    """Simulate a campaign, reusing one file per (size, compression) by copying."""
    from idexdask.simulate import write_campaign

    directory.mkdir(parents=True, exist_ok=True)
    templates = {}
    files = []
    remaining, index = n_events, 0
    while remaining > 0:
        n = min(file_events, remaining)
        compress = bool(index % 2)
        key = (n, compress)
        if key not in templates:
            templates[key] = directory.parent / f"template_{n}_{int(compress)}.pkts"
            if not templates[key].exists():
                write_campaign(templates[key], n, compress=compress, seed=n + compress)
        path = directory / f"f{index:04d}.pkts"
        path.write_bytes(templates[key].read_bytes())
        files.append(path)
        remaining -= n
        index += 1
    return files


def _steal_seconds() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it, all CPUs (Linux).

    A run during which it grows ran on a busy host: its figures are not this
    code's (docs/performance.md).
    """
    import os

    try:
        with open("/proc/stat") as stream:
            fields = stream.readline().split()
    except OSError:
        return float("nan")
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else float("nan")


def _python_loop_seconds(_: int = 0) -> float:
    """CPU seconds of a fixed pure-Python loop (no memory traffic), best of three."""
    best = float("inf")
    for _repeat in range(3):
        start = time.process_time()
        total = 0
        for i in range(5_000_000):
            total += i * i
        best = min(best, time.process_time() - start)
    return best


def host_check() -> str:
    """How much two busy processes slow each other on this host, right now.

    A pure-Python loop alone, then two at once: on a quiet host each of the two
    takes what one alone does; on a virtual machine whose host is loaded (or
    places both virtual CPUs on one physical core) each takes longer, and so does
    every two-worker run.
    """
    from multiprocessing import get_context

    context = get_context("spawn")  # fresh processes both times, like for like
    with context.Pool(1) as pool:
        alone = pool.map(_python_loop_seconds, [0])[0]
    with context.Pool(2) as pool:
        both = pool.map(_python_loop_seconds, [0, 1])
    slower = (sum(both) / len(both) / alone - 1) * 100
    return (f"host check: a pure-Python loop takes {alone:.2f} s alone, "
            f"{sum(both) / len(both):.2f} s each with a second at once ({slower:+.0f} %)")


def _pid_cpu_seconds() -> tuple[int, float]:
    import os

    return os.getpid(), sum(_cpu_seconds())


def _overhead_cpu_seconds(client) -> float:
    """CPU seconds so far of the processes other than the workers: this one (the
    client; a LocalCluster's scheduler and nannies also run in it), and a
    scheduler or nannies in processes of their own, each process counted once."""
    processes = dict([_pid_cpu_seconds(), client.run_on_scheduler(_pid_cpu_seconds)])
    processes.update(client.run(_pid_cpu_seconds, nanny=True).values())
    return sum(processes.values())


def run(files: list[Path], store: Path, workers: int, analyze: bool, batch: int,
        export: dict | None = None, export_dir: Path | None = None) -> dict:
    from distributed import get_client  # noqa: F401

    from idexdask.config import load_config
    from idexdask.pipeline import cluster as cluster_module
    from idexdask.pipeline.cluster import ClusterOptions
    from idexdask.pipeline.runner import run_campaign

    config = load_config({"pipeline": {"analyze": analyze, "batch_events": batch},
                          **({"export": export} if export else {})})
    # the shipped cluster settings (cluster.dask_config), this run's size, no dashboard
    options = replace(ClusterOptions.from_config(config), workers=workers,
                      threads_per_worker=1, dashboard="")
    peaks: list[float] = []
    cpu_start: list[tuple[float, float]] = []
    cpu_end: list[tuple[float, float]] = []
    overhead: list[float] = []  # the scheduler's and this process's (the client's) CPU
    original = cluster_module.open_client

    def recording(opts):  # wrap the client to read the workers' peak RSS at the end
        import contextlib

        @contextlib.contextmanager
        def wrapped():
            with original(opts) as client:
                cpu_start.extend(client.run(_cpu_seconds).values())
                overhead.append(-_overhead_cpu_seconds(client))
                yield client
                peaks.extend(client.run(_peak_rss_mib).values())
                cpu_end.extend(client.run(_cpu_seconds).values())
                overhead[-1] += _overhead_cpu_seconds(client)
        return wrapped()

    cluster_module.open_client = recording
    import idexdask.pipeline.runner as runner_module

    runner_module.open_client = recording
    campaign_s: list[float] = []  # the campaign calibration step (reduce + map), wall
    original_step = runner_module.campaign_step

    def timed_step(*a, **k):
        t0 = time.perf_counter()
        try:
            return original_step(*a, **k)
        finally:
            campaign_s.append(time.perf_counter() - t0)

    runner_module.campaign_step = timed_step
    try:
        steal = _steal_seconds()
        every_cpu = _run_cpu_seconds()
        start = time.perf_counter()
        summary = run_campaign(files, store, config, cluster=options, overwrite=True,
                               export_dir=export_dir)
        elapsed = time.perf_counter() - start
        steal = _steal_seconds() - steal
        every_cpu = _run_cpu_seconds() - every_cpu
    finally:
        cluster_module.open_client = original
        runner_module.open_client = original
        runner_module.campaign_step = original_step
    assert not summary.failures, summary.failures
    return {"events": summary.events_done, "seconds": elapsed,
            "task_seconds": summary.elapsed_s, "rss": peaks,
            "worker_cpu": sum(map(sum, cpu_end)) - sum(map(sum, cpu_start)),
            "worker_sys": sum(c[1] for c in cpu_end) - sum(c[1] for c in cpu_start),
            "overhead_cpu": sum(overhead), "steal": steal, "exports": summary.exports,
            "export_s": summary.export_s, "campaign_s": sum(campaign_s),
            "run_cpu": every_cpu}


def _run_cpu_seconds() -> float:
    """CPU seconds of this process and of every process it started and reaped.

    Over a run: the client (with an embedded cluster's scheduler and nannies),
    the worker processes from their start (their imports included, which the
    workers' own figure, taken once they are connected, leaves out) and a
    forkserver the workers were forked from (with the imports it made for them),
    each reaped when the cluster closes.
    """
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _sizes_per_1000(files: list[Path], n_events: int) -> str:
    """Mean size per 1,000 events of the L1a CDFs, L2a CDFs and HDF5 files, MB."""
    groups = {"L1a CDF": "imap_idex_l1a_", "L2a CDF": "imap_idex_l2a_", "HDF5": ".h5"}
    parts = []
    for label, key in groups.items():
        chosen = [Path(f) for f in files if key in Path(f).name]
        if chosen:
            total = sum(f.stat().st_size for f in chosen)
            parts.append(f"{label} {total / n_events * 1000 / 1e6:.1f} MB")
    return ", ".join(parts)


def exports_benchmark(args) -> None:
    """The demo's campaign with and without its exports; the exports of its store."""
    from idexdask.config import load_config
    from idexdask.pipeline.cluster import ClusterOptions, open_client
    from idexdask.pipeline.export import export_store

    n_files, per_file = 4, 1000
    check_before = host_check()
    with tempfile.TemporaryDirectory(prefix="idexdask-bench-") as tmp:
        tmp = Path(tmp)
        files = make_campaign(tmp / "demo", n_files * per_file, per_file)
        l0_mb = sum(f.stat().st_size for f in files) / n_files / 1e6
        export = {"formats": ["hdf5", "cdf"], "cdf_compression": args.cdf_compression}
        plain = run(files, tmp / "plain.zarr", 2, True, args.batch_events)
        streamed = run(files, tmp / "streamed.zarr", 2, True, args.batch_events, export,
                       tmp / "streamed.exports")
        config = load_config({"export": export})
        options = replace(ClusterOptions.from_config(config), workers=2, threads_per_worker=1,
                          dashboard="")
        start = time.perf_counter()
        with open_client(options) as client:
            started = time.perf_counter()
            cluster_files = export_store(tmp / "plain.zarr", ["hdf5", "cdf"], tmp / "c",
                                         compression=args.cdf_compression, client=client)
            cluster_s = time.perf_counter() - started
        sizes = _sizes_per_1000(cluster_files, plain["events"])
        cluster_total = time.perf_counter() - start
        start = time.perf_counter()
        export_store(tmp / "plain.zarr", ["hdf5", "cdf"], tmp / "one",
                     compression=args.cdf_compression)
        one_s = time.perf_counter() - start
        check_after = host_check()
    print(f"\n### Exports of the demo campaign ({n_files} x {per_file:,} events, analysis, "
          f"2 workers, CDF gzip level {args.cdf_compression} + HDF5)\n")
    print(f"before the runs, {check_before}; after them, {check_after}\n")
    print("| run | wall s | of which processing s | exports s | host steal s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| campaign, no exports | {plain['seconds']:.1f} | {plain['task_seconds']:.1f} | - | "
          f"{plain['steal']:.1f} |")
    print(f"| campaign, exports on the cluster as files finish | {streamed['seconds']:.1f} | "
          f"{streamed['task_seconds']:.1f} | {streamed['export_s']:.1f} (the last file "
          f"{streamed['seconds'] - plain['seconds']:+.1f} s after the run without) | "
          f"{streamed['steal']:.1f} |")
    print(f"| idexdask export of the store, cluster of 2 | {cluster_total:.1f} | - | "
          f"{cluster_s:.1f} | - |")
    print(f"| export of the store in one process | {one_s:.1f} | - | {one_s:.1f} | - |")
    print(f"\nper 1,000 events: L0 {l0_mb:.1f} MB; "
          f"{sizes}")


def official_seconds_per_event(plain_file: Path, n_events: int, with_l2a: bool) -> float:
    """Official L1a (+ L2a steps) seconds per event on the first events of ``plain_file``."""
    sys.path.insert(0, str(REPO / "bench"))
    import decode as decode_bench

    if not decode_bench.ORACLE.exists() or n_events <= 0:
        return float("nan")  # no peer in this run: its figure is left out
    small = plain_file.parent / "official_prefix.pkts"
    small.write_bytes(decode_bench.prefix_events(plain_file.read_bytes(), n_events))
    l1a = decode_bench.run(
        [str(decode_bench.ORACLE), str(REPO / "bench" / "_official_decode.py"), str(small)]
    )
    seconds = l1a["seconds"] / l1a["events"]
    if with_l2a:
        import analyze as analyze_bench

        from idexdask import read_l0

        seconds += analyze_bench.official_seconds_per_event(read_l0(small), 3)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k / 8k events instead of 10k / 100k")
    parser.add_argument("--analyze", action="store_true", help="apply idexdask.analyze")
    parser.add_argument("--file-events", type=int, default=1000)
    parser.add_argument("--batch-events", type=int, default=None,
                        help="events per task (default: configs/default.yaml's)")
    parser.add_argument("--official-events", type=int, default=12,
                        help="events the official pipeline is timed on (0: not timed)")
    parser.add_argument(
        "--large-pairs", type=int, default=1,
        help="with --large-one-worker: run the large campaign with 2 and 1 workers this "
        "many times, alternating (each pair's speed-up is printed; the host's speed varies)",
    )
    parser.add_argument(
        "--large-one-worker",
        action="store_true",
        help="also run the large campaign with 1 worker (the speed-up without the fixed "
        "costs of a run: cluster start, schema, store creation; slow)",
    )
    parser.add_argument("--exports", action="store_true",
                        help="measure the demo campaign's exports (see above) instead")
    parser.add_argument("--cdf-compression", type=int, default=6,
                        help="with --exports: gzip level of the CDFs (default 6)")
    args = parser.parse_args()
    if args.batch_events is None:
        from idexdask.config import load_config

        args.batch_events = int(load_config({})["pipeline"]["batch_events"])
    if args.exports:
        exports_benchmark(args)
        return
    small, large = (2000, 8000) if args.quick else (10_000, 100_000)
    checks = [host_check()]
    with tempfile.TemporaryDirectory(prefix="idexdask-bench-") as tmp:
        tmp = Path(tmp)
        rows = []
        small_files = make_campaign(tmp / "small", small, args.file_events)
        result = {}
        for workers in (1, 2):
            result[workers] = run(small_files, tmp / f"s{workers}.zarr", workers,
                                  args.analyze, args.batch_events)
        large_files = make_campaign(tmp / "large", large, args.file_events)
        pairs = []  # (2 workers, 1 worker or None) on the large campaign
        for index in range(max(1, args.large_pairs) if args.large_one_worker else 1):
            two = run(large_files, tmp / f"large2_{index}.zarr", 2, args.analyze,
                      args.batch_events)
            one = (run(large_files, tmp / f"large1_{index}.zarr", 1, args.analyze,
                       args.batch_events) if args.large_one_worker else None)
            pairs.append((two, one))
        checks.append(host_check())
        official = official_seconds_per_event(small_files[0], args.official_events, args.analyze)
    mode = "decode + analysis" if args.analyze else "decode (L1a)"
    print(f"\n### Campaign pipeline ({mode}, batch {args.batch_events} events, "
          f"files of {args.file_events} events)\n")
    print(f"before the runs, {checks[0]}; after them, {checks[1]}\n")
    print("| run | events | workers | wall s | events/s | events/s per core "
          "| worker CPU ms per event (system) | client, scheduler, nannies CPU ms per event "
          "| peak RSS per worker MiB | host steal s | campaign calibration step s (share) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")

    def row(label: str, r: dict, workers: int) -> float:
        rate = r["events"] / r["seconds"]
        print(f"| {label} | {r['events']:,} | {workers} | {r['seconds']:.1f} | {rate:,.0f} | "
              f"{rate / workers:,.0f} | {r['worker_cpu'] / r['events'] * 1e3:.2f} "
              f"({r['worker_sys'] / r['events'] * 1e3:.2f}) | "
              f"{r['overhead_cpu'] / r['events'] * 1e3:.2f} | "
              f"{', '.join(f'{x:.0f}' for x in r['rss'])} | {r['steal']:.1f} | "
              f"{r['campaign_s']:.2f} ({100 * r['campaign_s'] / r['seconds']:.1f} %) |")
        return rate

    for workers in (1, 2):
        rows.append(row("small", result[workers], workers))
    ratios, rates_one, rates_two = [], [], []
    for two, one in pairs:
        rates_two.append(row("large", two, 2))
        if one is not None:
            rates_one.append(row("large", one, 1))
            ratios.append(rates_two[-1] / rates_one[-1])
    print(f"\n2 workers vs 1 at {small:,} events: {rows[1] / rows[0]:.2f}x (a run's fixed "
          "costs weigh on it)")
    if ratios:
        print(f"2 workers vs 1 at {large:,} events: "
              f"{', '.join(f'{x:.2f}x' for x in ratios)} (target >= 1.8x)")
    rss_small = max(result[2]["rss"])
    rss_large = max(max(two["rss"]) for two, _ in pairs)
    print(f"peak RSS of the larger of two workers: {rss_small:.0f} MiB at {small:,} events, "
          f"{rss_large:.0f} MiB at {large:,} ({(rss_large / rss_small - 1) * 100:+.1f} %, "
          "target within 10 %)")
    if rates_one:
        one_small = max(result[1]["rss"])
        one_large = max(max(one["rss"]) for _, one in pairs)
        print(f"peak RSS of the single worker: {one_small:.0f} MiB at {small:,} events, "
              f"{one_large:.0f} MiB at {large:,} ({(one_large / one_small - 1) * 100:+.1f} %)")
    rate = max(rates_two)
    one = max(rates_one) if rates_one else 0.0
    per_core = max(rows[0], rows[1] / 2, rate / 2, one)
    label = "L1a + L2a steps" if args.analyze else "L1a"
    print(f"official pipeline ({label}), same events: {official:.3f} s per event = "
          f"{1 / official:.2f} events/s per core; ours, best of the runs above: "
          f"{per_core:,.0f} events/s per core = {per_core * official:,.0f}x (target >= 500 "
          "events/s per core)")
    runs = [result[1], result[2], *(r for pair in pairs for r in pair if r is not None)]
    best_cpu = min(r["worker_cpu"] / r["events"] for r in runs)
    print(f"per worker CPU second (workers' user + system time, fixed costs included; "
          f"the scheduler and client not counted): {1 / best_cpu:,.0f} events")


if __name__ == "__main__":
    main()
