"""The ``idexdask`` command line.

Sub-commands: ``decode`` (L0 files -> Zarr store), ``simulate`` (write a simulated
L0 file), ``submit`` (a campaign on a Dask cluster -> resumable Zarr store, with
HDF5/CDF exports), ``status`` (summary of a campaign store), ``export`` (HDF5/CDF
files from a store), ``config`` (print the merged, validated configuration),
``time2mass`` (mass calibration of a spectrum) and ``demo`` (simulate a campaign,
run it as ``submit`` does, print a summary).

Exit codes: 0 success; 2 usage, configuration, input or store error, detected
before any work starts; 3 partial failure (some inputs or units failed, the
others are in the store; see ``idexdask status``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from idexdask.errors import ConfigError, IdexDaskError

logger = logging.getLogger("idexdask.cli")


def _echo(text: str = "") -> None:
    """Terminal output of the CLI (the user interface, not logging)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _expand_inputs(inputs: Sequence[str], patterns: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for pattern in patterns for p in path.glob(pattern) if p.is_file())
            files.extend(dict.fromkeys(found))
        elif path.exists():
            files.append(path)
        else:
            raise IdexDaskError(f"input not found: {path}")
    if not files:
        raise IdexDaskError("no input files found")
    return files


def _summarise(dataset, elapsed: float, n_bytes: int) -> None:
    from idexdask.packets.quality import SEVERE, QualityFlag

    n_events = dataset.sizes["epoch"]
    flags = dataset["quality_flags"].values if n_events else np.zeros(0, dtype=np.uint16)
    damaged = int(np.count_nonzero(flags & int(SEVERE)))
    _echo(f"events decoded     : {n_events}")
    _echo(f"events flagged     : {damaged}")
    if damaged:
        for flag in QualityFlag:
            count = int(np.count_nonzero(flags & int(flag)))
            if count:
                _echo(f"  {flag.name:<22}: {count}")
    if n_events and "compressed" in dataset:
        compressed = int(dataset["compressed"].values.any(axis=1).sum())
        _echo(f"compressed events  : {compressed}")
    rate = n_events / elapsed if elapsed > 0 else float("inf")
    mb_per_s = n_bytes / elapsed / 1e6
    _echo(f"time               : {elapsed:.2f} s ({rate:,.0f} events/s, {mb_per_s:,.1f} MB/s)")


def cmd_decode(args: argparse.Namespace) -> int:
    from idexdask.io.zarr_store import concat_events, write_zarr
    from idexdask.packets.reader import read_l0

    files = _expand_inputs(args.inputs, ("*.pkts", "*.bin", "*"))
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise IdexDaskError(f"{output} exists; use --overwrite to replace it")
    start = time.perf_counter()
    datasets = []
    n_bytes = 0
    for file in files:
        dataset = read_l0(file, xtce=args.xtce)
        n_bytes += file.stat().st_size
        _echo(f"{file.name}: {dataset.sizes['epoch']} events, {dataset.attrs['packets']} packets")
        datasets.append(dataset)
    joined = concat_events(datasets)
    write_zarr(joined, output, events_per_chunk=args.chunk, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    _summarise(joined, elapsed, n_bytes)
    _echo(f"store              : {output}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from idexdask.simulate import write_campaign

    simulated = write_campaign(args.output, args.n, compress=args.compress, seed=args.seed)
    size = Path(args.output).stat().st_size
    kind = "Rice-compressed" if args.compress else "uncompressed"
    n_simulated = simulated.events.sizes["epoch"]
    _echo(f"wrote {n_simulated} {kind} events ({size:,} bytes) to {args.output}")
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{hours}:{minutes}" if hours else minutes


class _ProgressBar:
    """Events done of total, rate and ETA: a bar on a terminal, else plain lines."""

    def __init__(self, stream=None, min_interval: float = 2.0) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.min_interval = min_interval
        self.last = -float("inf")

    def __call__(self, progress) -> None:
        now = time.monotonic()
        finished = progress.units_done + progress.units_failed >= progress.units_todo
        if not self.tty and now - self.last < self.min_interval and not finished:
            return
        self.last = now
        total = max(progress.events_total, 1)
        fraction = progress.events_done / total
        text = (
            f"{progress.events_done:>9,}/{progress.events_total:,} events "
            f"({fraction:6.1%})  {progress.rate:8,.0f} ev/s  ETA {_duration(progress.eta_s)}"
            + (f"  failed units: {progress.units_failed}" if progress.units_failed else "")
        )
        if self.tty:
            width = 30
            filled = int(width * fraction)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(f"progress: {text}\n")
        self.stream.flush()


def _print_summary(summary, title: str) -> None:
    _echo(f"== {title} ==")
    _echo(f"store              : {summary.store}")
    _echo(f"state              : {summary.state}")
    _echo(f"events in store    : {summary.events_done:,} of {summary.events_total:,}")
    _echo(f"units              : {summary.units_done} of {summary.units_total} done"
          + (f" ({summary.units_skipped} already done before this run)"
             if summary.units_skipped else ""))
    if summary.events_this_run or summary.elapsed_s:
        line = (f"this run           : {summary.events_this_run:,} events "
                f"in {summary.elapsed_s:.1f} s")
        if summary.elapsed_s > 0 and summary.events_this_run:
            line += f" ({summary.rate:,.0f} events/s"
            if summary.workers:
                line += f", {summary.workers} workers"
            line += ")"
        _echo(line)
    for path in summary.empty_inputs:
        _echo(f"no science events  : {path}")
    _echo(f"failures           : {len(summary.failures)}")
    for failure in summary.failures:
        _echo(f"  FAILED {failure['uid']}: {failure['reason']}")


def _config_from_args(args: argparse.Namespace) -> dict:
    """The run configuration: defaults < --config FILE < --set KEY=VALUE < flags."""
    import idexdask.pipeline  # noqa: F401  (registers the pipeline's config checks)
    from idexdask.config import load_config, load_yaml, merge, parse_assignment

    override: dict = {}
    if getattr(args, "config", None):
        override = load_yaml(args.config) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{args.config}: a configuration file must hold a mapping")
    for assignment in getattr(args, "set", None) or []:
        override = merge(override, parse_assignment(assignment))
    flags: dict = {"cluster": {}, "pipeline": {}, "export": {}}
    for flag, section, key in (
        ("workers", "cluster", "workers"),
        ("threads_per_worker", "cluster", "threads_per_worker"),
        ("memory_limit", "cluster", "memory_limit"),
        ("scheduler", "cluster", "address"),
        ("dashboard", "cluster", "dashboard"),
        ("batch_events", "pipeline", "batch_events"),
        ("retries", "pipeline", "retries"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            flags[section][key] = value
    if getattr(args, "export", None) is not None:
        flags["export"]["formats"] = [f.strip() for f in args.export.split(",") if f.strip()]
    override = merge(override, {k: v for k, v in flags.items() if v})
    return load_config(override)


def _ensure_kernels() -> None:
    """Compile the numba kernels here, once per installation, saying so (first run)."""
    from idexdask.pipeline.warmup import ensure_kernels

    seconds = ensure_kernels(lambda line: _echo(f"kernels            : {line}"))
    if seconds is not None:
        _echo(f"kernels            : compiled in {seconds:.0f} s")


def _run_and_report(inputs, store, config, *, gpu: bool, overwrite: bool,
                    export_dir: str | None, title: str):
    """Run a campaign holding the store's lock (taken before the cluster starts)."""
    from idexdask.pipeline.lock import store_lock

    purpose = title.partition(":")[0]  # "idexdask submit"
    with store_lock(store, purpose=purpose):
        return _run_locked(inputs, store, config, gpu=gpu, overwrite=overwrite,
                           export_dir=export_dir, title=title)


def _run_locked(inputs, store, config, *, gpu: bool, overwrite: bool,
                export_dir: str | None, title: str):
    from idexdask.pipeline.cluster import ClusterOptions
    from idexdask.pipeline.runner import run_campaign

    def on_start(dashboard, plan, todo_events) -> None:
        _echo(f"dashboard          : {dashboard or '(none)'}")
        _echo(f"planned            : {plan.n_events:,} events in {len(plan.units)} units "
              f"from {len(plan.inputs)} inputs; {todo_events:,} events to process")

    options = ClusterOptions.from_config(config, gpu=gpu)
    if not options.address:  # workers on this machine: their kernels compiled once, first
        _ensure_kernels()
    summary = run_campaign(
        inputs, store, config,
        cluster=options,
        overwrite=overwrite, on_start=on_start, on_progress=_ProgressBar(),
        export_dir=export_dir,
    )
    _print_summary(summary, title)
    if config["export"]["formats"]:  # written on the cluster as the inputs finished
        _echo(f"exports            : {len(summary.exports)} files, the last "
              f"{summary.export_s:.1f} s after the first")
        for file in summary.exports:
            _echo(f"  {file}")
    return summary


def cmd_submit(args: argparse.Namespace) -> int:
    """Process a campaign on a Dask cluster into a resumable Zarr store."""
    from idexdask.pipeline.store import check_writable

    config = _config_from_args(args)  # validated before anything runs
    check_writable(args.output)
    summary = _run_and_report(args.inputs, args.output, config, gpu=args.gpu,
                              overwrite=args.overwrite, export_dir=args.export_dir,
                              title="idexdask submit: summary")
    return summary.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from idexdask.pipeline.runner import store_status

    summary = store_status(args.store)
    _print_summary(summary, "idexdask status")
    _print_overrides(args.store)
    return summary.exit_code


def _print_overrides(store: str) -> None:
    """The store's manual overrides: rows in force, undone, units the next submit redoes."""
    from idexdask.pipeline.overrides_store import read_store_overrides, units_awaiting_overrides

    table = read_store_overrides(store)
    if table.sizes["override"] == 0:
        return
    in_force = int((table["undone"].values == "").sum())
    waiting = units_awaiting_overrides(store)
    _echo(f"manual overrides   : {in_force} in force, {table.sizes['override'] - in_force} undone"
          + (f"; {len(waiting)} unit(s) redone by the next submit" if waiting else ""))


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile and cache the numba kernels (what a fresh worker's first task would do)."""
    from idexdask.pipeline.warmup import compile_kernels

    _echo(f"compiled and cached the kernels in {compile_kernels():.1f} s")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the configuration (defaults < --config FILE < --set KEY=VALUE) as YAML."""
    from idexdask.config import dump_config, load_config, load_yaml, merge, parse_assignment

    override: dict = {}
    if args.config:
        override = load_yaml(args.config) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{args.config}: a configuration file must hold a mapping")
    for assignment in args.set or ():
        override = merge(override, parse_assignment(assignment))
    config = load_config(override)  # validated: a bad key or value exits with code 2
    if args.key:  # that key only, still nested: the output is a valid --config file
        parts = args.key.split(".")
        value = config
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"no configuration key {args.key!r}")
            value = value[part]
        for part in reversed(parts):
            value = {part: value}
        config = value
    sys.stdout.write(dump_config(config))
    sys.stdout.flush()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from idexdask.pipeline.cluster import ClusterOptions, open_client
    from idexdask.pipeline.export import export_store

    config = _config_from_args(args)
    with open_client(ClusterOptions.from_config(config)) as client:  # one task per input
        files = export_store(args.store, [args.format], args.output,
                             cdf_attributes=config["export"]["cdf_attributes"],
                             compression=int(config["export"]["cdf_compression"]),
                             client=client)
    for file in files:
        _echo(f"wrote {file}")
    if not files:
        _echo("nothing to export: no finished units in the store")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a campaign (compressed and not), run it as `submit` does, summarise."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from idexdask.pipeline.export import open_campaign
    from idexdask.simulate import write_campaign

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _ensure_kernels()  # before the simulator's processes, which use kernels too
    inputs = out / "l0"
    inputs.mkdir(exist_ok=True)
    plan = [(f"day{i + 1}_{'rice' if i % 2 else 'plain'}.pkts", bool(i % 2), i + 1)
            for i in range(args.files)]
    _echo(f"simulating {len(plan)} L0 files of {args.events:,} events each "
          f"({len(plan) * args.events:,} events, {sum(c for _, c, _ in plan)} files "
          f"Rice-compressed) in {inputs}/")
    start = time.perf_counter()
    # One process per file (the simulator is single-threaded), before the cluster starts.
    with ProcessPoolExecutor(max_workers=max(1, min(len(plan), os.cpu_count() or 1))) as pool:
        futures = {name: pool.submit(write_campaign, inputs / name, args.events,
                                     compress=compress, seed=seed)
                   for name, compress, seed in plan}
        truths = {name: future.result().events for name, future in futures.items()}
    _echo(f"simulated in {time.perf_counter() - start:.1f} s")
    config = _config_from_args(args)
    config["export"]["formats"] = ["hdf5", "cdf"]
    store = out / "campaign.zarr"
    summary = _run_and_report([str(inputs / name) for name, _, _ in plan], store, config,
                              gpu=False, overwrite=True, export_dir=str(out / "exports"),
                              title="idexdask demo: campaign summary")
    stored = open_campaign(store, dask=False)
    index = stored["input_index"].values
    exact = True
    for variable in ("TOF_High", "TOF_Mid", "TOF_Low", "Target_High", "Target_Low", "Ion_Grid"):
        values = stored[variable].values  # read once, compared per input file
        for number, (name, _, _) in enumerate(plan):
            rows = np.flatnonzero(index == number)
            exact &= bool(np.array_equal(values[rows], truths[name][variable].values))
    stored.close()
    _echo(f"round trip exact   : {'yes' if exact else 'NO'}")
    _echo(f"review in a browser: idexdask serve {store}")
    if not exact:
        return 1
    return summary.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idexdask", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    decode = sub.add_parser("decode", help="decode L0 packet files into a Zarr v3 store")
    decode.add_argument("inputs", nargs="+", help="L0 files or directories of them")
    decode.add_argument("-o", "--output", required=True, help="output store (OUT.zarr)")
    decode.add_argument(
        "--xtce", action="append", help="XTCE file(s) to decode the non-science APIDs with"
    )
    decode.add_argument("--chunk", type=int, default=256, help="events per Zarr chunk")
    decode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    decode.set_defaults(func=cmd_decode)

    simulate = sub.add_parser("simulate", help="write simulated IDEX L0 science packets")
    simulate.add_argument("-n", type=int, required=True, help="number of events")
    simulate.add_argument("-o", "--output", required=True, help="output .pkts file")
    simulate.add_argument("--compress", action="store_true", help="Rice-compress the waveforms")
    simulate.add_argument("--seed", type=int, default=0, help="random seed")
    simulate.set_defaults(func=cmd_simulate)

    submit = sub.add_parser(
        "submit", help="process a campaign on a Dask cluster into a resumable Zarr store",
        description="Plan, run and journal a campaign; re-running resumes it.  Exit codes: "
        "0 ok, 2 usage/config/store error before any work, 3 partial failure.",
    )
    submit.add_argument("inputs", nargs="+",
                        help="L0 files (.pkts, .bin, no extension), directories of them, "
                        "or directories of LeCroy .trc captures")
    submit.add_argument("-o", "--output", required=True, help="campaign store (OUT.zarr)")
    where = submit.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address (tcp://host:8786) or scheduler file "
                       "(.json) of a running Dask cluster")
    where.add_argument("--workers", type=int, help="workers of the embedded cluster")
    submit.add_argument("--threads-per-worker", type=int, help="threads per embedded worker")
    submit.add_argument("--memory-limit", help="memory limit per embedded worker (4GiB, auto)")
    submit.add_argument("--dashboard", help="dashboard address of the embedded cluster (:0)")
    submit.add_argument("--gpu", action="store_true",
                        help="run on GPU workers (dask-cuda; fails early without a GPU)")
    submit.add_argument("--export", help="comma-separated export formats: hdf5,cdf")
    submit.add_argument("--export-dir", help="directory of the exports (default STORE.exports)")
    submit.add_argument("--config", help="YAML file overriding configs/default.yaml")
    submit.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one key, value read as YAML "
                        "(analysis.peaks.height_sigma=6); repeatable, after --config")
    submit.add_argument("--batch-events", type=int, help="events per task")
    submit.add_argument("--retries", type=int, help="retries of a failed task")
    submit.add_argument("--overwrite", action="store_true",
                        help="replace an existing store instead of resuming it")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="summary of a campaign store (finished or running)")
    status.add_argument("store", help="campaign store")
    status.set_defaults(func=cmd_status)

    config = sub.add_parser(
        "config", help="print the merged, validated configuration (every knob) as YAML",
        description="Print configs/default.yaml merged with --config FILE and --set overrides, "
        "after validation (exit code 2 on an unknown key or a bad value).",
    )
    config.add_argument("key", nargs="?", help="dotted key of one section or value "
                        "(analysis.peaks); default everything")
    config.add_argument("--config", help="YAML file overriding configs/default.yaml")
    config.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one key, value read as YAML "
                        "(analysis.peaks.height_sigma=6); repeatable, applied after --config")
    config.set_defaults(func=cmd_config)

    export = sub.add_parser("export", help="HDF5 or CDF files (one per input) from a store")
    export.add_argument("store", help="campaign store")
    export.add_argument("--format", required=True, choices=("hdf5", "cdf"))
    export.add_argument("-o", "--output", help="output directory (default STORE.exports)")
    export.add_argument("--config", help="YAML file overriding configs/default.yaml")
    export.set_defaults(func=cmd_export)

    compile_ = sub.add_parser(
        "compile", help="compile and cache the numba kernels (run once after installing)",
        description="Decode, analyse and store a few simulated events, so that every "
        "compiled kernel is in numba's cache before workers start: on a fresh "
        "installation each worker would otherwise spend ~70 s compiling.",
    )
    compile_.set_defaults(func=cmd_compile)

    demo = sub.add_parser("demo", help="simulate a campaign, run it as `submit`, summarise")
    demo.add_argument("--output", default="demo-output", help="working directory")
    demo.add_argument("--events", type=int, default=1000, help="events per simulated file")
    demo.add_argument("--files", type=int, default=4, help="simulated files")
    demo.add_argument("--workers", type=int, help="workers of the embedded cluster")
    demo.add_argument("--dashboard", default=":0", help="dashboard address")
    demo.set_defaults(func=cmd_demo)

    from idexdask.calibration.time2mass import add_time2mass_parser

    add_time2mass_parser(sub)

    from idexdask.dashboard.cli import add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # the cluster's own chatter, and cdflib's ISTP auto-fix notes
        import dask

        # distributed sets its loggers' levels from this when it is imported (later,
        # by the commands that use it), overriding a level set on them before
        dask.config.set({"distributed.logging.distributed": "error"})
        for name in ("distributed", "distributed.scheduler", "distributed.nanny",
                     "distributed.core", "distributed.worker", "distributed.http.proxy",
                     "cdflib"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except IdexDaskError as exc:
        logger.error("%s", exc)
        _echo(f"error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
