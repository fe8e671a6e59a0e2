"""Benchmark: batched Levenberg–Marquardt (idexdask) vs an lmfit loop, one CPU core.

Simulates IDEX-like mass-line windows (EMG lines, sigma 0.005-0.02 µs, gamma
50-150 /µs, 260 samples/µs, baseline 512 DN, noise 2 DN, SNR 20-1000), fits
them all with :func:`idexdask.analysis.fitting.fit_batch` (each engine: "xp"
array code only, "auto" the default, "compiled") and a subset with
``lmfit.Model.fit`` (same model, same bounds, same starting values) and prints
fits/s and the speed-up over lmfit as markdown table rows.

Usage: ``python bench/fit.py [--n 2000] [--n-lmfit 200] [--points 60] [--seed 0]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import lmfit  # noqa: E402
import numpy as np  # noqa: E402

from idexdask.analysis.fitting import FitStatus, batch_model, fit_batch  # noqa: E402
from idexdask.analysis.lineshapes import emg, emg_model  # noqa: E402

DT = 1.0 / 260.0  # µs per sample
NOISE = 2.0  # DN
BASELINE = 512.0  # DN
LOWER = np.array([0.0, -np.inf, 1e-4, 0.0, -np.inf])
UPPER = np.array([np.inf, np.inf, 0.1, 1e4, np.inf])


def simulate(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows ``x`` (µs), ``y`` (DN) and perturbed starting parameters."""
    rng = np.random.default_rng(seed)
    x = np.arange(m) * DT + rng.uniform(2.0, 20.0, (n, 1))
    center = x[:, m // 4] + rng.uniform(0.0, DT, n)
    sigma = rng.uniform(0.005, 0.02, n)
    gamma = rng.uniform(50.0, 150.0, n)
    snr = np.exp(rng.uniform(np.log(20.0), np.log(1000.0), n))
    peak = emg(x, 1.0, center[:, None], sigma[:, None], gamma[:, None]).max(axis=1)
    amplitude = snr * NOISE / peak
    y = emg(x, amplitude[:, None], center[:, None], sigma[:, None], gamma[:, None])
    y = y + BASELINE + rng.normal(0.0, NOISE, (n, m))
    truth = np.stack([amplitude, center, sigma, gamma, np.full(n, BASELINE)], axis=1)
    p0 = truth * rng.uniform(0.9, 1.1, truth.shape)
    p0[:, 1] = center + rng.uniform(-0.5, 0.5, n) * DT
    return x, y, p0


def time_batch(
    x, y, p0, engine: str = "auto", repeats: int = 3
) -> tuple[float, float, np.ndarray]:
    """Best wall and CPU seconds of ``fit_batch`` over ``repeats`` runs."""
    model = batch_model("emg", "constant")
    wall = cpu = np.inf
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        res = fit_batch(x, y, model, p0, lower=LOWER, upper=UPPER, engine=engine)
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, res.status


def time_lmfit(x, y, p0) -> tuple[float, float]:
    """Wall and CPU seconds of an lmfit loop over the windows."""
    model = emg_model() + lmfit.models.ConstantModel()
    names = ("amplitude", "center", "sigma", "gamma", "c")
    params = model.make_params()
    for name, lo, hi in zip(names, LOWER, UPPER, strict=True):
        params[name].set(min=lo, max=hi)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(y)):
        for j, name in enumerate(names):
            params[name].set(value=p0[i, j])
        model.fit(y[i], params, x=x[i])
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="windows for the batched fitter")
    ap.add_argument("--n-lmfit", type=int, default=200, help="windows for the lmfit loop")
    ap.add_argument("--points", type=int, default=60, help="samples per window")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x, y, p0 = simulate(args.n, args.points, args.seed)
    engines = ("xp", "auto", "compiled")
    for engine in engines:  # warm-up (imports, numba caches)
        time_batch(x[:50], y[:50], p0[:50], engine=engine, repeats=1)
    timings = {engine: time_batch(x, y, p0, engine=engine) for engine in engines}
    status = timings["auto"][2]
    k = min(args.n_lmfit, args.n)
    l_wall, l_cpu = time_lmfit(x[:k], y[:k], p0[:k])

    counts = ", ".join(
        f"{s.name}={int(np.sum(status == s))}" for s in FitStatus if np.any(status == s)
    )
    print(
        f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
        f"lmfit {lmfit.__version__}, 1 thread"
    )
    print(f"# batch: {args.n} windows x {args.points} points; statuses: {counts}")
    print(f"# lmfit: {k} windows (per-fit rate extrapolates)")
    print(
        "| windows x points | engine | batched fits/s (wall / cpu) | lmfit fits/s (wall / cpu) "
        "| speed-up (wall / cpu) |"
    )
    print("|---|---|---|---|---|")
    for engine, (b_wall, b_cpu, _) in timings.items():
        print(
            f"| {args.n} x {args.points} | {engine} "
            f"| {args.n / b_wall:,.0f} / {args.n / b_cpu:,.0f} "
            f"| {k / l_wall:,.1f} / {k / l_cpu:,.1f} "
            f"| {l_wall / k * args.n / b_wall:,.0f}x / {l_cpu / k * args.n / b_cpu:,.0f}x |"
        )


if __name__ == "__main__":
    main()
