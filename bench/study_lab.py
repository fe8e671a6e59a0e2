"""Calibrate the three peridot impacts of the LeCroy captures.

The default configuration (scope captures: the lab_peridot preset, campaign
calibration of the three impacts together); the joint scan of section 3 runs
over the wide lab range.

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
from idexdask.analysis.pickup import pickup_from_dataset
from idexdask.calibration import load_calibration_settings
from idexdask.calibration.single_event import EventLines, calibrate_lines
from idexdask.workflow import analyze

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


def _plot_mass(out, e: int, path: Path, title: str) -> None:
    """Spectrum of event ``e`` against mass, identified lines labelled."""
    import matplotlib.pyplot as plt

    from idexdask.calibration import mass_axis

    name = out["TOF_High"].attrs.get("time_variable", "time_high_sample_rate")
    t = np.asarray(out[name].values[e], dtype=float)
    c = out["mass_calibration"].values[e]
    keep = t > c[0] + 0.05
    mass = mass_axis(c[None, :], t[keep][None, :])[0]
    fig, ax = plt.subplots(figsize=(9, 3.4), constrained_layout=True)
    ax.plot(mass, out["tof_combined"].values[e][keep], lw=0.5, color="0.2")
    sel = out["peak_event"].values == e
    for sp, m, h in zip(out["peak_species"].values[sel], out["peak_mass"].values[sel],
                        out["peak_height"].values[sel], strict=True):
        if sp and np.isfinite(m) and m < 70:
            ax.annotate(sp, (m, h), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=7, color="C3")
    ax.set_xlim(0, 70)
    ax.set_xlabel("mass (u)")
    ax.set_ylabel("TOF (V)")
    ax.set_title(title)
    fig.savefig(path, dpi=70)
    plt.close(fig)


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
    # the default configuration: the source's preset, the campaign calibration
    # of the three impacts together; the joint scan below searches the wide
    # `lab` range that the preset's geometry came from
    out = analyze(ds)
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

    # 2. the campaign calibration (one shape, a shift per impact) and, for
    # comparison, each impact's own bootstrap with the same preset
    import json

    groups = json.loads(out["mass_calibration"].attrs["campaign_calibration"])
    (summary,) = groups.values()
    shape, err = summary["shape"], summary["shape_err"]
    w(f"Campaign calibration (preset {out['mass_calibration'].attrs['preset']}): "
      f"{summary['reason'] if not summary['calibrated'] else 'calibrated'}, order "
      f"{summary['order']}, joint-scan stretch {summary['stretch_us_per_sqrt_u']:.4f} µs/√u, "
      "shape a_k = " + ", ".join(
          f"{a:.5f} ± {e:.5f}" for a, e in zip(shape, err, strict=True) if a)
      + f" (µs/u^(k/2)), rms residual {summary['rms_residual_ns']:.1f} ns over "
      f"{summary['lines']} lines, anchors {summary['anchors']}, score "
      f"{summary['score']:.2f} against {summary['rival_score']:.2f} for the best rival.\n\n")
    w("| impact | lines (fitted / used) | method | t0 µs | own bootstrap | lines used "
      "(residual ns) |\n|---|---|---|---|---|---|\n")
    results = []
    coeffs = out["mass_calibration"].values
    resid = out["peak_calibration_residual"].values
    for e in range(n):
        sel = out["peak_event"].values == e
        lines = EventLines(out["peak_center"].values[sel], out["peak_area"].values[sel],
                           out["peak_status"].values[sel], t[e],
                           out["tof_combined"].values[e].astype(float), "V",
                           mode_centred=out["peak_center_at_mode"].values[sel])
        own = calibrate_lines(lines, setup_settings)
        results.append(own)
        used = sel & np.isfinite(resid)
        ids = ", ".join(f"{sp or '?'}@{m:.2f} ({1e3 * r:+.1f})" for sp, m, r in zip(
            out["peak_species"].values[used], out["peak_mass"].values[used], resid[used],
            strict=True))
        own_text = ("calibrated" if own.calibrated else f"{own.status} ({own.reason})")
        w(f"| {impacts[e]} | {sel.sum()} / {used.sum()} | "
          f"{out['mass_calibration_method'].values[e]} | {coeffs[e, 0]:+.4f} | {own_text} | "
          f"{ids} |\n")
        if np.isfinite(coeffs[e, 0]):
            _plot_mass(out, e, img / f"lab_impact_{impacts[e]}.png",
                       f"peridot impact {impacts[e]} (campaign calibration)")

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
    cerr = out["composition_err"].values
    for e in range(n):
        if out["mass_calibration_status"].values[e] != "calibrated":
            w(f"| {impacts[e]} | uncalibrated | | | | | | | | |\n")
            continue
        sel = out["peak_event"].values == e
        sp = [f"{s}@{m:.2f}" for s, m in zip(out["peak_species"].values[sel],
                                             out["peak_mass"].values[sel], strict=True) if s]
        c = out["composition"].values[e]
        x = {s: (c[el.index(s)], cerr[e][el.index(s)]) for s in ("Mg", "Si", "Fe", "Na", "Al")}
        w(f"| {impacts[e]} | {' '.join(sp)} | "
          + " | ".join(f"{v:.2f} ± {u:.2f}" for v, u in x.values())
          + f" | {float(out['mg_number'].values[e]):.2f} ± "
          f"{float(out['mg_number_err'].values[e]):.2f} | "
          f"{float(out['fo_number'].values[e]):.1f} | {out['best_mineral'].values[e]} |\n")

    # 5. targeted search at the calibrated masses: analyze's targeted_* products
    #    (composition.targeted_species, threshold composition.targeted_min_significance)
    from idexdask.composition.targeted import targeted_search

    targets = [str(x) for x in out["targeted_species"].values]
    area, err = out["targeted_area"].values * 1e6, out["targeted_area_err"].values * 1e6
    sigs, det = out["targeted_significance"].values, out["targeted_detected"].values
    threshold = out["targeted_detected"].attrs["min_significance"]
    w(f"\nTargeted search (products targeted_*: matched filter at the calibrated time; "
      f"area in mV·ns, its measured 1 sigma, significance; ** at >= {threshold:g} sigma, "
      "targeted_detected; in brackets the blind line list's label there):\n\n| impact | "
      + " | ".join(targets) + " |\n|---" + "|---" * len(targets) + "|\n")
    for e in range(n):
        sel = out["peak_event"].values == e
        cells = []
        for j, name in enumerate(targets):
            blind = name in set(out["peak_species"].values[sel])
            mark = "**" if det[e, j] else ""
            cells.append(f"{mark}{area[e, j]:.0f} ± {err[e, j]:.0f} ({sigs[e, j]:+.1f}){mark}"
                         + (" [blind]" if blind else ""))
        w(f"| {impacts[e]} | " + " | ".join(cells) + " |\n")
    # the white-noise error, for the ratio (not a product)
    found = targeted_search(
        t, out["tof_combined"].values.astype(float),
        np.broadcast_to(out["tof_high_noise"].values[:, None], t.shape),
        out["peak_event"].values, out["peak_center"].values, out["peak_sigma"].values,
        out["peak_gamma"].values, out["peak_area"].values, out["peak_status"].values == 0,
        coeffs, out["mass_calibration_status"].values == "calibrated",
        out["targeted_mass"].values,
    )  # fmt: skip
    np.testing.assert_allclose(found.area_err * 1e6, err)  # the products' own values
    ratio = found.area_err / found.area_err_white
    w(f"\nMeasured / white-noise uncertainty of the filter: {np.nanmin(ratio):.1f}-"
      f"{np.nanmax(ratio):.1f}.\n")

    # 6. the generic `lab` preset against `lab_peridot`
    wide = analyze(ds, config={"calibration": {"preset": "lab"}})
    (gw,) = json.loads(wide["mass_calibration"].attrs["campaign_calibration"]).values()
    w(f"\nWith the generic `lab` preset: {'calibrated' if gw['calibrated'] else gw['reason']}, "
      f"stretch {gw['stretch_us_per_sqrt_u']:.4f} µs/√u, shifts "
      + ", ".join(f"{v:+.4f}" for v in wide["mass_calibration"].values[:, 0])
      + f" µs, score {gw['score']:.2f} against {gw['rival_score']:.2f} for the best rival "
      f"(ratio {gw['rival_score'] / gw['score']:.2f}; ambiguous at "
      f"{settings.bootstrap.ambiguity_ratio}).\n")

    # 7. grain speed and charge from the QD pickups (placeholder geometry)
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
