"""Calibrate the real IDEX dust events of imap_idex_l0_raw_20231218_v001.pkts (flight preset).

Regenerates the table of ``docs/idex-calibration.md`` (printed as Markdown) and its
figures in ``docs/img/`` (``idex_event_<n>.png`` for the calibrated events,
``idex_overview.png``).  Usage::

    .venv/bin/python bench/study_idex.py [L0_FILE] [--img docs/img]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import idexdask
from idexdask.calibration import load_calibration_settings
from idexdask.calibration.single_event import EventLines, calibrate_lines, time2mass_figure
from idexdask.workflow import analyze

DEFAULT = (Path(__file__).resolve().parents[2]
           / "shared/data/idex-l0/imap_idex_l0_raw_20231218_v001.pkts")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("l0", nargs="?", default=str(DEFAULT))
    ap.add_argument("--img", default=str(Path(__file__).resolve().parents[1] / "docs/img"))
    args = ap.parse_args(argv)
    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    ds = idexdask.read_l0(args.l0)
    out = analyze(ds)  # the default: flight preset for L0 data, campaign calibration
    assert out["mass_calibration"].attrs["preset"] == "flight"
    settings = load_calibration_settings("flight")
    import json

    (campaign,) = json.loads(out["mass_calibration"].attrs["campaign_calibration"]).values()
    verdict = "calibrated" if campaign["calibrated"] else "uncalibrated"
    sys.stdout.write(
        f"Campaign (all 14 events, one shape): {verdict}"
        f" ({campaign['reason']}); best joint-scan stretch "
        f"{campaign['stretch_us_per_sqrt_u'] or float('nan'):.4f} µs/√u, score "
        f"{campaign['score'] or float('nan'):.2f}, anchors {campaign['anchors']}.\n\n")
    t = out["time_high_sample_rate"].values
    rows = []
    w = sys.stdout.write
    w("| event | lines (converged) | status (reason) | stretch µs/√u | t0 µs | order "
      "| lines identified (residual ppm) | rms u |\n|---|---|---|---|---|---|---|---|\n")
    for e in range(out.sizes["epoch"]):
        sel = out["peak_event"].values == e
        lines = EventLines(out["peak_center"].values[sel], out["peak_area"].values[sel],
                           out["peak_status"].values[sel], t[e],
                           out["tof_combined"].values[e].astype(float), "DN",
                           mode_centred=out["peak_center_at_mode"].values[sel])
        res = calibrate_lines(lines, settings)
        stored = str(out["mass_calibration_status"].values[e])
        if str(out["mass_calibration_method"].values[e]) != "campaign":
            assert (stored == "calibrated") == res.calibrated, "time2mass and analyze disagree"
        if res.calibrated:
            cal = res.calibration
            ids = ", ".join(f"{lab} ({ppm:+.0f})" for lab, ppm in
                            sorted(zip(res.line_label, cal.residual_ppm, strict=True),
                                   key=lambda x: x[0]))
            n_conv = np.sum(out["peak_status"].values[sel] == 0)
            w(f"| {e} | {sel.sum()} ({n_conv}) | calibrated | {res.stretch:.4f} | "
              f"{cal.t0:+.3f} | {cal.order} | {ids} | {cal.rms_residual_u:.3f} |\n")
            time2mass_figure(lines, res, title=f"IDEX 2023-12-18 event {e} (flight preset)"
                             ).savefig(img / f"idex_event_{e}.png", dpi=80)
        else:
            best = (f"best a={res.stretch:.3f}, t0={res.shift:+.2f}"
                    if np.isfinite(res.stretch) else "")
            w(f"| {e} | {sel.sum()} ({np.sum(out['peak_status'].values[sel] == 0)}) | "
              f"{res.status} ({res.reason}: {res.message}) | — | — | — | "
              f"{best} | — |\n")
        rows.append(res)
    # overview: merged TOF spectra of all events against time
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = out.sizes["epoch"]
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.1 * n), sharex=True, constrained_layout=True)
    for e, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(t[e], out["tof_combined"].values[e], lw=0.4, color="0.2")
        pc = out["peak_center"].values[out["peak_event"].values == e]
        ax.plot(pc, np.zeros_like(pc), "|", color="C3", ms=8)
        ax.text(0.005, 0.7, f"{e}: {rows[e].status}", transform=ax.transAxes, fontsize=7)
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].set_xlabel("time from trigger (µs)")
    fig.savefig(img / "idex_overview.png", dpi=60)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
