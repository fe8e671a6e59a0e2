"""Benchmark: bootstrap + TOF->mass calibration per spectrum, on one core.

Usage: ``python bench/calibrate.py [--n 500] [--preset flight] [--seed 0]``
Prints one markdown table row:
| stage | preset | spectra | ms/spectrum (median) | spectra/s | calibrated | correct |
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from idexdask.calibration import (  # noqa: E402
    comb_calibration,
    load_calibration_settings,
    synthetic_peaks,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--preset", default="flight")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    cfg = load_calibration_settings(args.preset)
    rng = np.random.default_rng(args.seed)
    spectra = [synthetic_peaks(rng, settings=cfg, n_ions=(4, 12), n_spurious=(0, 4))
               for _ in range(args.n)]
    comb_calibration(*spectra[0][:2], settings=cfg)  # warm caches

    per = np.empty(args.n)
    n_cal = n_right = 0
    t_start = time.perf_counter()
    for k, (times, amps, truth) in enumerate(spectra):
        t1 = time.perf_counter()
        res = comb_calibration(times, amps, settings=cfg)
        per[k] = time.perf_counter() - t1
        if res.calibrated:
            n_cal += 1
            got = {a.peak_index: a.label for a in res.assignments}
            n_right += all(
                got.get(j) == lab for j, lab in enumerate(truth["labels"]) if lab is not None
            ) and abs(res.stretch / truth["stretch"] - 1) < 1e-3
    wall = time.perf_counter() - t_start
    sys.stdout.write(
        f"| bootstrap+calibration (1 core) | {args.preset} | {args.n} | "
        f"{1e3 * np.median(per):.2f} (p90 {1e3 * np.percentile(per, 90):.2f}) | "
        f"{args.n / wall:.0f} | {n_cal / args.n:.1%} | {n_right}/{n_cal} |\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
