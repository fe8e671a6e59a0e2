"""Calibrate the three peridot impacts of the LeCroy captures.

Per impact the lab_peridot preset; the joint scan runs over the wide lab range.

Regenerates the tables of ``docs/lab-captures.md`` (printed as Markdown) and its
figures in ``docs/img/``: ``lab_raw.png`` (TOF and QD waveforms), ``lab_scan.png``
(comb alignment score against stretch, best shift per impact, summed over the
three impacts that share one geometry) and ``lab_impact_<n>.png`` for every
calibrated impact.  Usage::

    .venv/bin/python bench/study_lab.py [TRC_DIR] [--img docs/img]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import idexdask
from idexdask.analysis.analyze import analyze
from idexdask.analysis.pickup import pickup_from_dataset
from idexdask.calibration import load_calibration_settings
from idexdask.calibration.time2mass import EventLines, calibrate_lines, plot_time2mass

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/scope-trc"


def joint_scan(out, settings, stretches: np.ndarray, sigma_us: float = 0.006) -> np.ndarray:
    """Comb alignment score per impact and stretch, at the best shift of each impact.

    Score = sum over peaks of (A/Amax)**0.25 x ion weight x exp(-dt²/2σ²) for the
    nearest comb line; shifts tried are all peak-minus-comb-line differences.

    Returns
    -------
    numpy.ndarray, shape (n_impacts, n_stretches), and the best shifts (µs).
    """
    m = np.array([ion.mass_u for ion in settings.comb])
    s, wc = np.sqrt(m), np.array([ion.weight for ion in settings.comb])
    n = out.sizes["epoch"]
    score = np.zeros((n, stretches.size))
    shift = np.zeros((n, stretches.size))
    for e in range(n):
        sel = (out["peak_event"].values == e) & (out["peak_status"].values <= 2)
        t = out["peak_center"].values[sel]
        a = out["peak_area"].values[sel]
        ok = np.isfinite(t) & (a > 0) & (t > -1.0)
        t, w = t[ok], (a[ok] / a[ok].max()) ** 0.25
        for k, st in enumerate(stretches):
            cand = (t[:, None] - st * s[None, :]).ravel()
            cand = cand[(cand > -2.0) & (cand < 2.0)]
            pred = cand[:, None, None] + st * s[None, None, :]
            val = (w[None, :, None] * wc[None, None, :]
                   * np.exp(-0.5 * ((t[None, :, None] - pred) / sigma_us) ** 2)).max(2).sum(1)
            i = int(np.argmax(val))
            score[e, k], shift[e, k] = val[i], cand[i]
    return score, shift


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trc", nargs="?", default=str(DEFAULT))
    ap.add_argument("--img", default=str(Path(__file__).resolve().parents[1] / "docs/img"))
    args = ap.parse_args(argv)
    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    w = sys.stdout.write

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = idexdask.read_trc(args.trc)
    # per-impact calibration with this setup's preset; the joint scan below
    # searches the wide `lab` range that the preset's geometry came from
    out = analyze(ds, {"calibration": {"preset": "lab_peridot"}})
    settings = load_calibration_settings("lab")
    setup_settings = load_calibration_settings("lab_peridot")
    t = out["time_high_sample_rate"].values
    impacts = out["impact_number"].values
    n = out.sizes["epoch"]

    # 1. raw waveforms
    fig, axes = plt.subplots(n + 1, 1, figsize=(9, 8), constrained_layout=True)
    for e in range(n):
        m = (t[e] > -1.0) & (t[e] < 8.0)
        axes[e].plot(t[e][m], out["tof_combined"].values[e][m], lw=0.4, color="0.2")
        pc = out["peak_center"].values[out["peak_event"].values == e]
        axes[e].plot(pc, np.zeros_like(pc), "|", color="C3", ms=10)
        axes[e].set_ylabel(f"impact {impacts[e]}\nTOF (V)")
        axes[-1].plot(t[e][::200], ds["QD_1"].values[e][::200] - 0.03 * e, lw=0.5, color="C0")
        axes[-1].plot(t[e][::200], ds["QD_2"].values[e][::200] - 0.03 * e, lw=0.5, color="C1")
    axes[n - 1].set_xlabel("time from scope trigger (µs)")
    axes[-1].set_xlabel("time from scope trigger (µs); QD 1 (blue), QD 2 (orange), "
                        "offset per impact")
    axes[-1].set_ylabel("QD (V)")
    fig.savefig(img / "lab_raw.png", dpi=60)
    plt.close(fig)

    # 2. per-impact calibration with the lab_peridot preset
    w("| impact | lines | status (reason) | stretch µs/√u | t0 µs | order "
      "| lines (residual ppm) |\n"
      "|---|---|---|---|---|---|---|\n")
    results = []
    for e in range(n):
        sel = out["peak_event"].values == e
        lines = EventLines(out["peak_center"].values[sel], out["peak_area"].values[sel],
                           out["peak_status"].values[sel], t[e],
                           out["tof_combined"].values[e].astype(float), "V")
        res = calibrate_lines(lines, setup_settings)
        results.append(res)
        if res.calibrated:
            cal = res.calibration
            ids = ", ".join(f"{lab} ({ppm:+.0f})" for lab, ppm in
                            zip(res.line_label, cal.residual_ppm, strict=True))
            w(f"| {impacts[e]} | {sel.sum()} | calibrated | {res.stretch:.4f} | {cal.t0:+.3f} | "
              f"{cal.order} | {ids} |\n")
            plot_time2mass(lines, res, img / f"lab_impact_{impacts[e]}.png",
                           title=f"peridot impact {impacts[e]} (lab_peridot preset)")
        else:
            w(f"| {impacts[e]} | {sel.sum()} | {res.status} ({res.reason}: {res.message}) | "
              f"{res.stretch:.4f} (rejected) | {res.shift:+.3f} (rejected) | — | — |\n")

    # 3. joint scan: one geometry -> one stretch for all impacts
    stretches = np.arange(0.30, 1.20, 0.001)
    score, shift = joint_scan(out, settings, stretches)
    total = score.sum(0)
    fig, ax = plt.subplots(figsize=(8, 3.2), constrained_layout=True)
    for e in range(n):
        ax.plot(stretches, score[e], lw=0.6, label=f"impact {impacts[e]}")
    ax.plot(stretches, total, color="k", lw=1.0, label="sum")
    ax.set_xlabel("stretch a (µs/√u)")
    ax.set_ylabel("comb alignment score")
    ax.legend(fontsize=7)
    fig.savefig(img / "lab_scan.png", dpi=70)
    plt.close(fig)
    w("\nJoint scan, best stretches (sum over impacts; best shift of each impact, µs):\n\n"
      "| stretch µs/√u | summed score | shifts |\n|---|---|---|\n")
    order = np.argsort(-total)
    shown: list[float] = []
    for k in order:
        if any(abs(stretches[k] - s) < 0.01 for s in shown):
            continue
        shown.append(stretches[k])
        w(f"| {stretches[k]:.3f} | {total[k]:.2f} | "
          + ", ".join(f"{v:+.3f}" for v in shift[:, k]) + " |\n")
        if len(shown) == 4:
            break

    # 4. composition of calibrated impacts (analyze products, lab RSF preset)
    w("\n| impact | lines assigned | Mg | Si | Fe | Na | Al | Mg# | Fo | best mineral |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n")
    el = list(out["element"].values)
    for e in range(n):
        if not results[e].calibrated:
            w(f"| {impacts[e]} | uncalibrated | | | | | | | | |\n")
            continue
        sel = out["peak_event"].values == e
        sp = [f"{s}@{m:.2f}" for s, m in zip(out["peak_species"].values[sel],
                                             out["peak_mass"].values[sel], strict=True) if s]
        c = out["composition"].values[e]
        x = {s: c[el.index(s)] for s in ("Mg", "Si", "Fe", "Na", "Al")}
        w(f"| {impacts[e]} | {' '.join(sp)} | " + " | ".join(f"{x[s]:.3f}" for s in x)
          + f" | {float(out['mg_number'].values[e]):.2f} | {float(out['fo_number'].values[e]):.1f}"
          f" | {out['best_mineral'].values[e]} |\n")

    # 5. grain speed and charge from the QD pickups (placeholder geometry)
    p = pickup_from_dataset(ds)
    w("\n| impact | QD1 transit µs | speed km/s | QD1 charge fC | QD2 charge fC |\n"
      "|---|---|---|---|---|\n")
    for e in range(n):
        w(f"| {impacts[e]} | {p['qd1_transit_time'].values[e]:.2f} | "
          f"{p['speed_transit'].values[e]:.2f} ± {p['speed_transit_err'].values[e]:.2f} | "
          f"{p['qd1_charge'].values[e]:.1f} ± {p['qd1_charge_err'].values[e]:.1f} | "
          f"{p['qd2_charge'].values[e]:.1f} ± {p['qd2_charge_err'].values[e]:.1f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
