"""Benchmark: ``idexdask.analyze`` events/s on a simulated campaign vs the official L2a, one core.

Simulates ``--n`` events (default 500), runs :func:`idexdask.analyze`
on them (with and without the per-event mass calibration), then times the
official pipeline's (imap-processing 1.0.40 in ``.venv-oracle``) per-event L2a
science steps on ``--n-official`` of the same events (see
``bench/_official_l2a_time.py``; waveforms scaled to the L1b units it expects:
TOF in mA, targets in pC).  Prints a markdown table.

Second comparison (``--real``, default the real 2023-12-18 file): the official
steps on each real event, ours on the same events repeated ``--real-copies``
times and on the file alone.  The official's cost depends on the data: its EMG
fits (scipy curve_fit) take 0.15 s on some events and several seconds on others
(the real ones; the issue's "about 3 s per event"), while on our simulated
events they converge quickly.

Usage: ``python bench/analyze.py [--n 500] [--n-official 3] [--seed 0] [--real FILE]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy is imported

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from idexdask.simulate import simulate_events  # noqa: E402
from idexdask.workflow import analyze  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ORACLE = REPO / ".venv-oracle" / "bin" / "python"
TO_L1B = {"TOF_High": 7.50e-5, "Target_Low": 15.8, "Target_High": 0.163, "Ion_Grid": 7.46e-4}


def official_seconds_per_event(events, n: int) -> float:
    """Seconds per event of the official L2a steps (NaN if the oracle venv is missing)."""
    if not ORACLE.exists():
        return float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.npz"
        sub = events.isel(epoch=slice(0, n))
        np.savez(
            path,
            time_high=sub.time_high_sample_rate.values,
            time_low=sub.time_low_sample_rate.values,
            **{k: sub[k].values.astype(float) * f for k, f in TO_L1B.items()},
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        res = subprocess.run(
            [
                str(ORACLE),
                "-W",
                "ignore",
                str(REPO / "bench" / "_official_l2a_time.py"),
                str(path),
                str(n),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        if res.returncode:
            sys.stderr.write(res.stderr[-2000:])
            return float("nan")
        return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-official", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    data = Path(os.environ.get("IDEXDASK_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument(
        "--real",
        type=Path,
        default=data / "idex-l0" / "imap_idex_l0_raw_20231218_v001.pkts",
        help="real L0 file for the second comparison ('' to skip)",
    )
    ap.add_argument("--real-copies", type=int, default=40)
    args = ap.parse_args()
    if str(args.real) in ("", ".") or not args.real.is_file():
        args.real = None  # no real file: the simulated comparison only
    events = simulate_events(args.n, seed=args.seed).events
    analyze(events.isel(epoch=slice(0, 4)))  # warm-up (imports, caches)
    rows = []
    for label, cfg in (
        ("analyze (all products)", None),
        (
            "analyze without mass calibration/composition",
            {"analysis": {"calibration": {"enabled": False}}},
        ),
    ):
        t0 = time.perf_counter()
        out = analyze(events, cfg)
        dt = time.perf_counter() - t0
        rows.append((label, dt / args.n, int(out.sizes.get("peak", 0))))
    official = official_seconds_per_event(events, args.n_official)
    print(f"{args.n} simulated events, one core; official L2a steps on {args.n_official} events\n")
    print("| pipeline | ms / event | events / s | lines | speed-up vs official |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| official L2a steps (imap-processing 1.0.40) | {official * 1e3:.0f} "
        f"| {1 / official:.2f} | - | 1 |"
    )
    for label, per, lines in rows:
        print(f"| {label} | {per * 1e3:.2f} | {1 / per:.0f} | {lines} | {official / per:.0f}x |")
    if args.real is not None:
        real_comparison(args.real, args.real_copies)


def real_comparison(path: Path, copies: int) -> None:
    """Ours and the official on the real events of one L0 file (the official on each once)."""
    import xarray as xr

    from idexdask import read_l0

    real = read_l0(path)
    n = int(real.sizes["epoch"])
    official = official_seconds_per_event(real, n)
    many = xr.concat([real] * copies, dim="epoch")
    analyze(real.isel(epoch=slice(0, 4)))
    t0 = time.perf_counter()
    out = analyze(many)
    ours = (time.perf_counter() - t0) / many.sizes["epoch"]
    t0 = time.perf_counter()
    analyze(real)
    ours_file = (time.perf_counter() - t0) / n
    print(f"\nReal events: {path.name} ({n} events); the official L2a steps on each of them, "
          f"ours on the {n} events repeated {copies}x ({many.sizes['epoch']} events, "
          f"{int(out.sizes.get('peak', 0))} lines) and on the file alone\n")
    print("| pipeline | ms / event | events / s | speed-up vs official |")
    print("|---|---:|---:|---:|")
    print(f"| official L2a steps (imap-processing 1.0.40) | {official * 1e3:.0f} "
          f"| {1 / official:.2f} | 1 |")
    print(f"| analyze, {many.sizes['epoch']} events | {ours * 1e3:.2f} | {1 / ours:.0f} "
          f"| {official / ours:.0f}x |")
    print(f"| analyze, the file's {n} events | {ours_file * 1e3:.2f} | {1 / ours_file:.0f} "
          f"| {official / ours_file:.0f}x |")


if __name__ == "__main__":
    main()
