"""``idexdask submit``, ``status``, ``export``, ``compile`` and ``demo``: campaigns on Dask.

``submit`` plans the inputs, runs every unit on a Dask cluster into a resumable
Zarr store and journals it (:func:`idexdask.pipeline.runner.run_campaign`);
``status`` summarises a store from its plan and manifest; ``export`` writes its
HDF5 or CDF files; ``compile`` fills numba's cache; ``demo`` simulates a
campaign, runs it as ``submit`` does and checks the round trip.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.cli.config import add_config_options, config_from_args
from idexdask.cli.output import ProgressBar, echo, print_summary

__all__ = [
    "add_parsers", "cmd_compile", "cmd_demo", "cmd_export", "cmd_status", "cmd_submit",
    "ensure_kernels", "run_and_report",
]


def ensure_kernels() -> None:
    """Compile the numba kernels here, once per installation, saying so (first run)."""
    from idexdask.pipeline.warmup import ensure_kernels as compile_once

    seconds = compile_once(lambda line: echo(f"kernels            : {line}"))
    if seconds is not None:
        echo(f"kernels            : compiled in {seconds:.0f} s")


def run_and_report(
    inputs: Sequence[str], store: str | Path, config: dict[str, Any], *, title: str,
    gpu: bool = False, overwrite: bool = False, export_dir: str | None = None,
    in_process: bool = False,
):
    """Run a campaign holding the store's lock (taken before the cluster starts); summarise.

    Parameters
    ----------
    inputs, store, config
        As :func:`~idexdask.pipeline.runner.run_campaign`.
    title : str
        ``"idexdask submit: summary"``: the command (before the colon) is the
        lock's purpose.
    gpu, overwrite, export_dir
        As the ``submit`` flags.
    in_process : bool
        Run the embedded cluster's one worker in this process (``decode``).

    Returns
    -------
    RunSummary
    """
    from idexdask.pipeline.cluster import ClusterOptions
    from idexdask.pipeline.lock import store_lock
    from idexdask.pipeline.runner import run_campaign

    def on_start(dashboard, plan, todo_events) -> None:
        if not in_process:
            echo(f"dashboard          : {dashboard or '(none)'}")
        echo(f"planned            : {plan.n_events:,} events in {len(plan.units)} units "
             f"from {len(plan.inputs)} inputs; {todo_events:,} events to process")

    options = ClusterOptions.from_config(config, gpu=gpu)
    if in_process:
        # any free port: a fixed one may be another run's
        options = ClusterOptions(workers=1, threads_per_worker=1, memory_limit="0",
                                 dashboard=":0", processes=False)
    purpose = title.partition(":")[0]  # "idexdask submit"
    with store_lock(store, purpose=purpose):
        if not options.address:  # workers on this machine: their kernels compiled once, first
            ensure_kernels()
        summary = run_campaign(
            inputs, store, config, cluster=options, overwrite=overwrite, on_start=on_start,
            on_progress=ProgressBar(), export_dir=export_dir,
        )
    print_summary(summary, title)
    if config["export"]["formats"]:  # written on the cluster as the inputs finished
        echo(f"exports            : {len(summary.exports)} files, the last "
             f"{summary.export_s:.1f} s after the first")
        for file in summary.exports:
            echo(f"  {file}")
    return summary


def cmd_submit(args: argparse.Namespace) -> int:
    """Process a campaign on a Dask cluster into a resumable Zarr store."""
    from idexdask.pipeline.store import check_writable

    config = config_from_args(args)  # validated before anything runs
    check_writable(args.output)
    summary = run_and_report(args.inputs, args.output, config, gpu=args.gpu,
                             overwrite=args.overwrite, export_dir=args.export_dir,
                             title="idexdask submit: summary")
    return summary.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    """Summary of a campaign store, and its manual overrides."""
    from idexdask.pipeline.runner import store_status

    summary = store_status(args.store)
    print_summary(summary, "idexdask status")
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
    echo(f"manual overrides   : {in_force} in force, {table.sizes['override'] - in_force} undone"
         + (f"; {len(waiting)} unit(s) redone by the next submit" if waiting else ""))


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile and cache the numba kernels (what a fresh worker's first task would do)."""
    from idexdask.pipeline.warmup import compile_kernels

    echo(f"compiled and cached the kernels in {compile_kernels():.1f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """HDF5 or CDF files of a store, one task per input."""
    from idexdask.pipeline.cluster import ClusterOptions, open_client
    from idexdask.pipeline.export import export_store

    config = config_from_args(args)
    with open_client(ClusterOptions.from_config(config)) as client:  # one task per input
        files = export_store(args.store, [args.format], args.output,
                             cdf_attributes=config["export"]["cdf_attributes"],
                             compression=int(config["export"]["cdf_compression"]),
                             client=client)
    for file in files:
        echo(f"wrote {file}")
    if not files:
        echo("nothing to export: no finished units in the store")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a campaign (compressed and not), run it as `submit` does, summarise."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from idexdask.pipeline.export import open_campaign
    from idexdask.simulate import write_campaign

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ensure_kernels()  # before the simulator's processes, which use kernels too
    inputs = out / "l0"
    inputs.mkdir(exist_ok=True)
    plan = [(f"day{i + 1}_{'rice' if i % 2 else 'plain'}.pkts", bool(i % 2), i + 1)
            for i in range(args.files)]
    echo(f"simulating {len(plan)} L0 files of {args.events:,} events each "
         f"({len(plan) * args.events:,} events, {sum(c for _, c, _ in plan)} files "
         f"Rice-compressed) in {inputs}/")
    start = time.perf_counter()
    # One process per file (the simulator is single-threaded), before the cluster starts.
    with ProcessPoolExecutor(max_workers=max(1, min(len(plan), os.cpu_count() or 1))) as pool:
        futures = {name: pool.submit(write_campaign, inputs / name, args.events,
                                     compress=compress, seed=seed)
                   for name, compress, seed in plan}
        truths = {name: future.result().events for name, future in futures.items()}
    echo(f"simulated in {time.perf_counter() - start:.1f} s")
    config = config_from_args(args)
    config["export"]["formats"] = ["hdf5", "cdf"]
    store = out / "campaign.zarr"
    summary = run_and_report([str(inputs / name) for name, _, _ in plan], store, config,
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
    echo(f"round trip exact   : {'yes' if exact else 'NO'}")
    echo(f"review in a browser: idexdask serve {store}")
    if not exact:
        return 1
    return summary.exit_code


def add_parsers(sub: Any) -> None:
    """Register ``submit``, ``status``, ``export``, ``compile`` and ``demo``."""
    submit = sub.add_parser(
        "submit", help="process a campaign on a Dask cluster into a resumable Zarr store",
        description="Plan, run and journal a campaign; re-running resumes it.  Every event "
        "of every input is stored, tagged with input_index (an event in two inputs is "
        "stored twice).  Exit codes: 0 ok, 2 usage/config/store error before any work, "
        "3 partial failure.",
    )
    submit.add_argument("inputs", nargs="+",
                        help="L0 files (.pkts, .bin, no extension), official L1a CDFs, "
                        "directories of them, or directories of LeCroy .trc captures")
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
    add_config_options(submit)
    submit.add_argument("--batch-events", type=int, help="events per task")
    submit.add_argument("--retries", type=int, help="retries of a failed task")
    submit.add_argument("--overwrite", action="store_true",
                        help="replace an existing store instead of resuming it")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="summary of a campaign store (finished or running)")
    status.add_argument("store", help="campaign store")
    status.set_defaults(func=cmd_status)

    export = sub.add_parser("export", help="HDF5 or CDF files (one per input) from a store")
    export.add_argument("store", help="campaign store")
    export.add_argument("--format", required=True, choices=("hdf5", "cdf"))
    export.add_argument("-o", "--output", help="output directory (default STORE.exports)")
    add_config_options(export, assignments=False)
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
