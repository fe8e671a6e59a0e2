"""The ``idexdask`` command line.

Sub-commands: ``decode`` (L0 files -> Zarr store), ``simulate`` (write a simulated
L0 file) and ``demo`` (simulate a small campaign, decode it, print a summary).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from idexdask.errors import IdexDaskError

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
    _echo(f"time               : {elapsed:.2f} s ({rate:,.0f} events/s, {n_bytes / elapsed / 1e6:,.1f} MB/s)")


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
    _echo(f"wrote {simulated.events.sizes['epoch']} {kind} events ({size:,} bytes) to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a small campaign (compressed and not), decode it, print a summary."""
    from idexdask.io.zarr_store import concat_events, write_zarr
    from idexdask.packets.reader import read_l0
    from idexdask.simulate import write_campaign

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    plan = [("day1_plain.pkts", False, 1), ("day2_rice.pkts", True, 2), ("day3_plain.pkts", False, 3)]
    truths = []
    _echo(f"simulating {len(plan)} L0 files of {args.events} events each in {out}/")
    for name, compress, seed in plan:
        truths.append(write_campaign(out / name, args.events, compress=compress, seed=seed))
    start = time.perf_counter()
    datasets = [read_l0(out / name) for name, _, _ in plan]
    joined = concat_events(datasets)
    store = write_zarr(joined, out / "campaign.zarr", overwrite=True)
    elapsed = time.perf_counter() - start
    n_bytes = sum((out / name).stat().st_size for name, _, _ in plan)
    exact = all(
        np.array_equal(d[v].values, t.events[v].values)
        for d, t in zip(datasets, truths, strict=True)
        for v in ("TOF_High", "TOF_Mid", "TOF_Low", "Target_High", "Target_Low", "Ion_Grid")
    )
    _echo("")
    _echo("== idexdask demo: decode summary ==")
    _summarise(joined, elapsed, n_bytes)
    _echo(f"round trip exact   : {'yes' if exact else 'NO'}")
    _echo(f"store              : {store}")
    return 0 if exact else 1


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

    demo = sub.add_parser("demo", help="simulate a small campaign, decode it, summarise")
    demo.add_argument("--output", default="demo-output", help="working directory")
    demo.add_argument("--events", type=int, default=100, help="events per simulated file")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except IdexDaskError as exc:
        logger.error("%s", exc)
        _echo(f"error: {exc}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
