"""Compare two campaign stores variable by variable, bit for bit.

A refactor (issue 18) must leave every product unchanged: run the same
campaign with the code before and after, then::

    python bench/store_diff.py BEFORE.zarr AFTER.zarr

It prints each variable that differs (values, dtype, dims or attributes) and
exits 1 when any does, 0 when the stores hold identical products.  Run-specific
attributes (times, hosts, versions, hashes of the code) are ignored by name.

``--make DIR`` writes the reference campaign used for such comparisons: 3
simulated L0 files of 100 events (one Rice-compressed), the shared real L0
files and the shared scope captures, each submitted to its own store under DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

#: Attribute names that legitimately change between two runs of the same code.
RUN_SPECIFIC = ("time", "date", "host", "version", "created", "hash", "duration", "elapsed", "pid")


def _attrs_of_interest(attrs: dict, home: Path) -> str:
    """Canonical text of the attributes: NaN equals NaN, the store's folder reads ``<DIR>``."""
    kept = {k: v for k, v in attrs.items() if not any(tag in k.lower() for tag in RUN_SPECIFIC)}
    text = json.dumps(kept, sort_keys=True, default=repr)
    text = re.sub(r'(\\?"(?:created|finished|started|updated)\\?": \\?")[^"\\]*', r"\1", text)
    return text.replace(str(home.resolve()), "<DIR>").replace(str(home), "<DIR>")


def _same(a, b) -> bool:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def diff_stores(before: Path, after: Path) -> list[str]:
    """Names and reasons of every variable that differs between two stores."""
    left = xr.open_zarr(before, decode_cf=False, consolidated=False)
    right = xr.open_zarr(after, decode_cf=False, consolidated=False)
    problems: list[str] = []
    for name in sorted(set(left.variables) | set(right.variables)):
        if name not in left.variables:
            problems.append(f"{name}: only in {after}")
            continue
        if name not in right.variables:
            problems.append(f"{name}: only in {before}")
            continue
        lv, rv = left.variables[name], right.variables[name]
        if lv.dims != rv.dims:
            problems.append(f"{name}: dims {lv.dims} != {rv.dims}")
        elif not _same(lv.values, rv.values):
            problems.append(f"{name}: values differ ({lv.dtype} vs {rv.dtype})")
        elif _attrs_of_interest(lv.attrs, before.parent) != _attrs_of_interest(
            rv.attrs, after.parent
        ):
            problems.append(f"{name}: attributes differ")
    if _attrs_of_interest(left.attrs, before.parent) != _attrs_of_interest(
        right.attrs, after.parent
    ):
        problems.append("<dataset>: attributes differ")
    return problems


def make_reference(directory: Path) -> None:
    """Submit the reference inputs (simulated, real L0, real scope), one store each."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("idexdask")
    data = Path(os.environ.get("IDEXDASK_DATA", "../shared/data"))
    sim = directory / "sim-input"
    sim.mkdir(exist_ok=True)
    for index in range(3):
        path = sim / f"sim_{index}.pkts"
        if not path.exists():
            extra = ["--compress"] if index == 0 else []
            subprocess.run(
                [
                    str(exe),
                    "simulate",
                    "-n",
                    "100",
                    "-o",
                    str(path),
                    "--seed",
                    str(18 + index),
                    *extra,
                ],
                check=True,
            )
    runs = {
        "sim.zarr": [str(sim)],
        "l0.zarr": sorted(str(p) for p in (data / "idex-l0").glob("*.pkts")),
        "trc.zarr": [str(data / "scope-trc")],
    }
    for store, inputs in runs.items():
        subprocess.run(
            [
                str(exe),
                "submit",
                *inputs,
                "-o",
                str(directory / store),
                "--workers",
                "1",
                "--overwrite",
            ],
            check=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stores", nargs="*", type=Path, help="BEFORE AFTER")
    parser.add_argument("--make", type=Path, help="write the reference stores into this directory")
    args = parser.parse_args(argv)
    if args.make:
        make_reference(args.make)
        return 0
    if len(args.stores) != 2:
        parser.error("give two stores, or --make DIR")
    problems = diff_stores(*args.stores)
    for line in problems:
        print(line)
    print(f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
