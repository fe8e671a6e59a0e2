"""Accuracy of the line and impact fits against the simulator's truth, by SNR.

Simulates ``--n`` events, runs :func:`idexdask.analyze`, matches every
isolated truth line (no other line within 0.3 µs) to the nearest fitted line
and prints, per SNR bin (fitted line height / baseline noise; impact amplitude
/ noise), the median and 90th-percentile errors: centre (samples of 1/260 µs),
area and gamma (relative), impact charge (relative).  Writes a PNG plot.

Usage: ``python bench/accuracy.py OUT.png [--n 400] [--seed 0]``
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from idexdask.simulate import simulate_events  # noqa: E402
from idexdask.workflow import analyze  # noqa: E402

DT = 1.0 / 260.0
BINS = [(5, 10), (10, 20), (20, 50), (50, 100), (100, 1000), (1000, np.inf)]


def line_errors(sim, out):
    tr = sim.truth
    le, lc = tr.line_event.values, tr.line_center.values
    pe, pc = out.peak_event.values, out.peak_center.values
    rows = []
    for i in range(le.size):
        others = lc[(le == le[i]) & (np.arange(le.size) != i)]
        if others.size and np.min(np.abs(others - lc[i])) < 0.3:
            continue
        sel = np.nonzero(pe == le[i])[0]
        if sel.size == 0:
            continue
        j = sel[np.argmin(np.abs(pc[sel] - lc[i]))]
        if abs(pc[j] - lc[i]) < 0.02 and out.peak_status.values[j] <= 2:
            snr = out.peak_height.values[j] / tr.TOF_High_noise.values[le[i]]
            # measured in the high gain alone: no TOF_High sample at a rail in the fit window
            t = sim.events.time_high_sample_rate.values[le[i]]
            inside = (t >= out.peak_window_start.values[j]) & (t <= out.peak_window_stop.values[j])
            raw = sim.events.TOF_High.values[le[i]][inside]
            high_gain = not np.any((raw == 0) | (raw == 1023))
            rows.append(
                (
                    snr,
                    (pc[j] - lc[i]) / DT,
                    out.peak_area.values[j] / tr.line_area.values[i] - 1,
                    out.peak_gamma.values[j] / tr.line_gamma.values[i] - 1,
                    high_gain,
                    out.peak_center_err.values[j] / DT,
                    out.peak_area_err.values[j] / tr.line_area.values[i],
                )
            )
    return np.array(rows)


def charge_errors(sim, out):
    rows = []
    for ch in ("Target_High", "Target_Low", "Ion_Grid"):
        k = ch.lower()
        amp = sim.truth[f"{k}_impact_amplitude"].values
        snr = amp / sim.truth[f"{ch}_noise"].values
        ok = out[f"{k}_fit_status"].values <= 2
        fit = np.abs(out[f"{k}_fit_parameters"].values[:, 2])
        charge = np.abs(out[f"{k}_impact_charge"].values)
        sigma = out[f"{k}_impact_charge_err"].values / np.where(charge > 0, charge, np.nan)
        rows += list(zip(snr[ok], fit[ok] / amp[ok] - 1, sigma[ok], strict=True))
    return np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("png")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sim = simulate_events(a.n, seed=a.seed)
    out = analyze(sim.events, {"analysis": {"calibration": {"enabled": False}}})
    L = line_errors(sim, out)
    Q = charge_errors(sim, out)
    print(f"{a.n} simulated events (seed {a.seed}); isolated lines, fit status <= hit_bound\n")
    print(
        "| SNR | lines | centre err median / p90 (samples) | area err median / p90 "
        "| gamma err median / p90 | charge fits | charge err median / p90 |"
    )
    print("|---|---:|---|---|---|---:|---|")
    for lo, hi in BINS:
        k = (L[:, 0] >= lo) & (L[:, 0] < hi)
        q = (Q[:, 0] >= lo) & (Q[:, 0] < hi)

        def mp(v):
            return f"{np.median(v):+.3f} / {np.percentile(np.abs(v), 90):.3f}" if v.size else "-"

        def mpp(v):
            return (
                f"{100 * np.median(v):+.2f} % / {100 * np.percentile(np.abs(v), 90):.1f} %"
                if v.size
                else "-"
            )

        print(
            f"| {lo}-{hi} | {k.sum()} | {mp(L[k, 1])} | {mpp(L[k, 2])} | {mpp(L[k, 3])} "
            f"| {q.sum()} | {mpp(Q[q, 1])} |"
        )
    print(
        "\nThe same, lines whose fit window has no TOF_High sample at a rail (measured in the "
        "high gain, where the SNR above is the line's own):\n"
    )
    print(
        "| SNR | lines | centre err median / p90 (samples) | area err median / p90 "
        "| gamma err median / p90 |"
    )
    print("|---|---:|---|---|---|")
    for lo, hi in BINS:
        k = (L[:, 0] >= lo) & (L[:, 0] < hi) & (L[:, 4] > 0)
        print(f"| {lo}-{hi} | {k.sum()} | {mp(L[k, 1])} | {mpp(L[k, 2])} | {mpp(L[k, 3])} |")
    print(
        "\nThe same lines and fits against their own 1-sigma uncertainties (from the fit "
        "covariance): pull = error / sigma.  An efficient, unbiased fit with honest "
        "uncertainties has |pull| p90 = 1.64 (Gaussian), and then p90 |error| ~ 1.64 sigma "
        "is the information limit for that SNR (no estimator does better on average):\n"
    )
    print(
        "| SNR | lines | centre sigma median (samples) | centre pull p90 | area sigma median "
        "| area pull p90 | charge sigma median | charge pull p90 |"
    )
    print("|---|---:|---|---|---|---|---|---|")
    for lo, hi in BINS:
        k = (L[:, 0] >= lo) & (L[:, 0] < hi) & (L[:, 4] > 0)
        q = (Q[:, 0] >= lo) & (Q[:, 0] < hi) & np.isfinite(Q[:, 2]) & (Q[:, 2] > 0)

        def sp(err, sig, pct=False):
            ok = np.isfinite(sig) & (sig > 0)
            if not ok.any():
                return "- | -"
            med = np.median(sig[ok])
            med_s = f"{100 * med:.2f} %" if pct else f"{med:.3f}"
            return f"{med_s} | {np.percentile(np.abs(err[ok] / sig[ok]), 90):.2f}"

        print(
            f"| {lo}-{hi} | {k.sum()} | {sp(L[k, 1], L[k, 5])} | {sp(L[k, 2], L[k, 6], True)} "
            f"| {sp(Q[q, 1], Q[q, 2], True)} |"
        )
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6), dpi=80)
    ax[0].semilogx(L[:, 0], L[:, 1], ".", ms=2)
    ax[0].set(xlabel="line SNR", ylabel="centre error (samples)", ylim=(-2, 2))
    ax[1].semilogx(L[:, 0], 100 * L[:, 2], ".", ms=2, label="area")
    ax[1].semilogx(L[:, 0], 100 * L[:, 3], ".", ms=2, alpha=0.5, label="gamma")
    ax[1].set(xlabel="line SNR", ylabel="relative error (%)", ylim=(-30, 30))
    ax[1].legend()
    ax[2].semilogx(Q[:, 0], 100 * Q[:, 1], ".", ms=2)
    ax[2].set(xlabel="impact amplitude / noise", ylabel="charge error (%)", ylim=(-10, 10))
    for x in ax:
        x.axvline(20, color="k", lw=0.5)
        x.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(a.png)


if __name__ == "__main__":
    main()
