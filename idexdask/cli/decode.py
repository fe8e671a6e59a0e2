"""``idexdask decode`` (inputs -> event store, no analysis) and ``idexdask simulate``.

``decode`` is ``submit`` with the analysis off, run in this process: the same
plan, units and region writes (:func:`idexdask.pipeline.runner.run_campaign`
on an in-process cluster of one worker), so both commands write the same
variables for the same inputs, and a decoded store is a campaign store
(``idexdask status`` and ``idexdask serve`` read it).  Every event of every
input is stored, tagged with ``input_index``; an event found in two inputs
(the same telemetry downlinked twice) is stored twice, and the summary counts
such events.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.cli.config import add_config_options, config_from_args
from idexdask.cli.output import echo
from idexdask.cli.submit import run_and_report

__all__ = ["add_parsers", "cmd_decode", "cmd_simulate", "repeated_events"]


def repeated_events(epoch: np.ndarray, event_number: np.ndarray | None) -> int:
    """Rows whose event (epoch, and event number where known) an earlier row holds."""
    keys = np.stack([epoch.astype(np.int64),
                     (event_number if event_number is not None
                      else np.zeros_like(epoch)).astype(np.int64)])
    if keys.shape[1] == 0:
        return 0
    return int(keys.shape[1] - np.unique(keys, axis=1).shape[1])


def _report_events(store: Path) -> None:
    """What the store holds: events per input, quality flags, compression, repeats."""
    import xarray as xr

    from idexdask.packets.quality import SEVERE, QualityFlag
    from idexdask.pipeline.store import read_store_meta

    inputs = list((read_store_meta(store) or {}).get("inputs", []))
    stored = xr.open_zarr(store, consolidated=False)
    try:
        index = stored["input_index"].values if "input_index" in stored else np.zeros(0, int)
        for number, path in enumerate(inputs):
            echo(f"{Path(path).name}: {int(np.count_nonzero(index == number))} events")
        n_events = int(stored.sizes.get("epoch", 0))
        echo(f"events decoded     : {n_events}")
        if "quality_flags" in stored:
            flags = stored["quality_flags"].values
            damaged = int(np.count_nonzero(flags & int(SEVERE)))
            echo(f"events flagged     : {damaged}")
            for flag in QualityFlag if damaged else ():
                count = int(np.count_nonzero(flags & int(flag)))
                if count:
                    echo(f"  {flag.name:<22}: {count}")
        if n_events and "compressed" in stored:
            compressed = int(stored["compressed"].values.any(axis=1).sum())
            echo(f"compressed events  : {compressed}")
        numbers = stored["idx__txhdrevtnum"].values if "idx__txhdrevtnum" in stored else None
        repeats = repeated_events(stored["epoch"].values, numbers)
        if repeats:
            echo(f"repeated events    : {repeats} (in more than one input; each input's copy "
                 "is kept, see input_index)")
    finally:
        stored.close()


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode inputs into a store in this process (``submit`` without the analysis)."""
    from idexdask.pipeline.store import check_writable

    fixed: dict[str, Any] = {"pipeline": {"analyze": False}, "export": {"formats": []}}
    if args.chunk is not None:
        fixed["pipeline"]["chunk_events"] = args.chunk
    config = config_from_args(args, fixed)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        from idexdask.errors import StoreError

        raise StoreError(f"{output} exists; use --overwrite to replace it")
    check_writable(output)
    summary = run_and_report(args.inputs, output, config, overwrite=args.overwrite,
                             title="idexdask decode: summary", in_process=True)
    if summary.events_done:
        _report_events(output)
    return summary.exit_code


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write a file of simulated IDEX L0 science packets."""
    from idexdask.simulate import write_campaign

    simulated = write_campaign(args.output, args.n, compress=args.compress, seed=args.seed)
    size = Path(args.output).stat().st_size
    kind = "Rice-compressed" if args.compress else "uncompressed"
    n_simulated = simulated.events.sizes["epoch"]
    echo(f"wrote {n_simulated} {kind} events ({size:,} bytes) to {args.output}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``decode`` and ``simulate``."""
    decode = sub.add_parser(
        "decode", help="decode inputs into a Zarr v3 event store (no analysis, one process)",
        description="Decode L0 packet files, official L1a CDFs or LeCroy capture directories "
        "into a campaign store, in this process: what `submit` writes with "
        "pipeline.analyze false.  Every event of every input is stored, tagged with "
        "input_index.  Exit codes: 0 ok, 2 usage/input/store error, 3 some inputs failed.",
    )
    decode.add_argument("inputs", nargs="+",
                        help="L0 files, L1a CDFs, directories of them, or a directory of "
                        "LeCroy .trc captures")
    decode.add_argument("-o", "--output", required=True, help="output store (OUT.zarr)")
    decode.add_argument("--chunk", type=int,
                        help="events per Zarr chunk (default pipeline.chunk_events)")
    decode.add_argument("--batch-events", type=int, help="events per unit of work")
    add_config_options(decode)
    decode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    decode.set_defaults(func=cmd_decode)

    simulate = sub.add_parser("simulate", help="write simulated IDEX L0 science packets")
    simulate.add_argument("-n", type=int, required=True, help="number of events")
    simulate.add_argument("-o", "--output", required=True, help="output .pkts file")
    simulate.add_argument("--compress", action="store_true", help="Rice-compress the waveforms")
    simulate.add_argument("--seed", type=int, default=0, help="random seed")
    simulate.set_defaults(func=cmd_simulate)
