"""TOF line-fit quality on every real file: the table of docs/quality.md ("Line fits").

Per file: lines, fit statuses, events mass-calibrated, and the criteria of issue 19:
the share of *significant* lines (raw TOF_High trace >= 10 noise sigma within 3
samples of the line, or saturated there) that end ``converged`` (detections
classified ``ringing``, one lobe of an electrical oscillation with a negative
excursion >= 10 sigma beside it and not an ion line, are counted apart), their
median fitted sigma in samples, the median reduced chi-square of those converged
fits, and the local maxima >= 10 sigma of the raw TOF_High trace (the highest
sample within +-min_distance_us, outside saturated samples) with no converged
line within 3 samples; maxima that are ringing lobes (a negative excursion
>= 10 sigma and half their height within 60 ns) are counted apart.

The configuration is the default one (each source gets its own calibration
preset).  Usage::

    .venv/bin/python bench/line_quality.py [--data ../shared/data]
    .venv/bin/python bench/line_quality.py --maxima   # why each unmatched maximum stays
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

import idexdask

_DATA = Path(os.environ.get("IDEXDASK_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
L0_FILES = (
    "imap_idex_l0_raw_20231218_v001.pkts",
    "non_compressed_2023_102_14_22_26.pkts",
    "compressed_2023_102_14_24_55.pkts",
)


@dataclass
class LineQuality:
    """Line-fit figures of one analysed file (see module docstring)."""

    name: str
    events: int
    lines: int
    status_counts: dict[str, int]
    calibrated: int
    significant: int
    significant_ringing: int
    significant_converged: int
    significant_sigma_samples: float
    significant_redchi: float
    maxima: int
    maxima_unmatched: int
    maxima_ringing: int


def raw_tof(out: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The raw TOF_High traces as positive-going excursions from their baseline.

    Returns the excursions (NaN inside the saturation interval of the quality
    products), the time axes (µs), the noise sigma per event (the
    ``tof_high_noise`` quality product floored at one quantisation step over
    sqrt(12): 1 DN, or the scope's ``vertical_gain``) and whether each sample
    lies in the saturation interval.
    """
    raw = out["TOF_High"]
    x = np.asarray(raw.values, dtype=float)
    x = np.where(x == raw.attrs.get("FILLVAL", np.nan), np.nan, x)
    pol = float(raw.attrs.get("signal_polarity", 1) or 1)
    y = pol * (x - out["tof_high_baseline"].values[:, None])
    name = raw.attrs.get("time_variable", "time_high_sample_rate")
    t = np.broadcast_to(np.asarray(out[name].values, dtype=float), y.shape)
    step = 1.0
    if "vertical_gain" in out:
        step = float(np.nanmax(out["vertical_gain"].values))
    noise = np.maximum(np.asarray(out["tof_high_noise"].values, dtype=float),
                       step / np.sqrt(12.0))
    s0 = out["tof_high_saturation_start"].values[:, None]
    s1 = out["tof_high_saturation_stop"].values[:, None]
    with np.errstate(invalid="ignore"):
        sat = (t >= s0) & (t <= s1)
    return np.where(sat, np.nan, y), t, noise, sat


def significant_lines(out: xr.Dataset, k_sigma: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Lines that stand ``k_sigma`` noise sigmas above the baseline.

    A line counts when the raw TOF_High trace reaches ``k_sigma`` sigmas within
    3 samples of its fitted centre, or when that part of the trace is saturated
    (far above any threshold).  Returns the mask over ``peak`` and the sample
    step per line (µs).
    """
    y, t, noise, sat = raw_tof(out)
    ev = out["peak_event"].values.astype(int)
    tc = out["peak_center"].values
    dt = np.nanmedian(np.diff(t, axis=1), axis=1)
    keep = np.zeros(ev.size, bool)
    for k, (e, c) in enumerate(zip(ev, tc, strict=True)):
        if not np.isfinite(c):
            c = t[e, int(np.nanargmax(np.where(np.isfinite(y[e]), y[e], -np.inf)))]
        i = int(np.argmin(np.abs(t[e] - c)))
        part = slice(max(i - 3, 0), i + 4)
        keep[k] = bool(np.any(sat[e, part])) or np.nanmax(
            np.append(y[e, part], -np.inf)) >= k_sigma * noise[e]
    return keep, dt[ev]


def line_modes(out: xr.Dataset) -> np.ndarray:
    """Time of each fitted line's maximum, µs (an EMG peaks after its Gaussian centre)."""
    from idexdask.analysis.lineshapes import emg

    c = out["peak_center"].values
    s = out["peak_sigma"].values
    g = out["peak_gamma"].values
    a = out["peak_area"].values
    grid = np.linspace(-2.0, 6.0, 801)
    x = c[:, None] + grid[None, :] * s[:, None]
    with np.errstate(all="ignore"):
        prof = np.where(np.isfinite(g)[:, None], emg(x, a[:, None], c[:, None], s[:, None],
                                                      np.nan_to_num(g, nan=1.0)[:, None]),
                        np.exp(-0.5 * grid**2)[None, :])
        prof = np.where(np.isfinite(prof), prof, -np.inf)
    mode = x[np.arange(c.size), np.argmax(prof, axis=1)] if c.size else c
    return np.where(np.isfinite(mode), mode, c)


@dataclass
class MaximaCheck:
    """The local maxima of issue 19's test and which have no converged line.

    Attributes
    ----------
    total : int
        Local maxima >= ``k_sigma`` of the raw trace (see :func:`unmatched_maxima`).
    unmatched : list of (int, float)
        Event and time (µs) of each *ion-line* maximum with no converged line
        whose maximum lies within ``within`` samples.
    ringing : list of (int, float)
        Maxima that are one lobe of an electrical oscillation (counted apart:
        not ion lines; the ringing criterion of
        :func:`idexdask.analysis.tof.classify_ringing` on the raw trace).
    """

    total: int
    unmatched: list[tuple[int, float]]
    ringing: list[tuple[int, float]]


def unmatched_maxima(out: xr.Dataset, k_sigma: float = 10.0, half_width_us: float = 0.02,
                     within: int = 3, ringing_sigma: float = 10.0,
                     ringing_reach_us: float = 0.06) -> MaximaCheck:
    """Local maxima >= ``k_sigma`` sigmas of the raw TOF_High trace after the trigger
    (the highest sample within +-``half_width_us``, away from saturated samples)
    with no converged line whose maximum (:func:`line_modes`) lies within
    ``within`` samples.

    A maximum with a negative excursion of at least ``ringing_sigma`` noise
    sigmas and half its own height within ``ringing_reach_us`` (the
    ``analysis.peaks`` ringing criterion and reach, ``window_left_us``) is a
    lobe of ringing, not an ion line: it is listed in ``ringing`` and not
    required to have a converged line.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    y, t, noise, _ = raw_tof(out)
    ev = out["peak_event"].values.astype(int)
    tc = line_modes(out)
    st = out["peak_status"].values
    total, missed, ringing = 0, [], []
    for e in range(y.shape[0]):
        row, tr = y[e], t[e]
        dt = float(np.nanmedian(np.diff(tr)))
        h = max(int(round(half_width_us / dt)), 1)
        finite = np.isfinite(row)
        padded = np.where(finite, row, -np.inf)
        wmax = sliding_window_view(np.pad(padded, h, constant_values=-np.inf), 2 * h + 1).max(1)
        near_nan = sliding_window_view(np.pad(~finite, h, constant_values=False),
                                       2 * h + 1).any(1)
        pk = np.nonzero((padded == wmax) & (row >= k_sigma * noise[e]) & ~near_nan
                        & (tr > 0))[0]
        lines = tc[(ev == e) & (st == 0)]
        for i in pk:
            total += 1
            if np.any(np.abs(lines - tr[i]) <= within * dt):
                continue
            near = np.abs(tr - tr[i]) <= ringing_reach_us
            trough = float(np.nanmin(np.where(near, row, np.inf)))
            if trough <= -ringing_sigma * noise[e] and -trough >= 0.5 * row[i]:
                ringing.append((e, float(tr[i])))
            else:
                missed.append((e, float(tr[i])))
    return MaximaCheck(total=total, unmatched=missed, ringing=ringing)


@dataclass
class MaximumCase:
    """Why one ion-line maximum has no converged line within 3 samples.

    Attributes
    ----------
    event, time : int, float
        The maximum (event index, µs) and its height in noise sigmas.
    line, mode, offset_samples : int, float, float
        The nearest converged line (row), its maximum (µs) and the maximum's
        distance from it in samples.
    mc_far : float
        Share of 2000 draws of the fitted model plus stretches of the event's
        own pre-trigger trace (its real, correlated noise) whose highest sample
        within +-20 ns of the mode lies more than 3 samples from it.
    chi2_one, chi2_two, ndof_two : float, float, int
        White-noise chi-square of the line refitted alone (with a constant) and
        with a second Gaussian started at the maximum, where the line dominates
        (its profile above 10 % of its height and above the event's other
        lines, which are removed), and the latter's degrees of freedom.
    f_pvalue : float
        F-test of the 3 extra parameters.
    second_center, second_sigma_samples, second_height_sigma : float
        The second Gaussian's centre (µs), width (samples) and height (sigmas).
    """

    event: int
    time: float
    height_sigma: float
    line: int
    mode: float
    offset_samples: float
    mc_far: float
    chi2_one: float
    chi2_two: float
    ndof_two: int
    f_pvalue: float
    second_center: float
    second_sigma_samples: float
    second_height_sigma: float


def examine_maxima(out: xr.Dataset, draws: int = 2000, seed: int = 19) -> list[MaximumCase]:
    """The checks of docs/quality.md ("What stays") for every unmatched ion-line maximum."""
    from scipy.optimize import curve_fit
    from scipy.stats import f as f_dist

    from idexdask.analysis.lineshapes import emg, gaussian

    rng = np.random.default_rng(seed)
    y, t, noise, _ = raw_tof(out)
    merged = np.asarray(out["tof_combined"].values, dtype=float)
    ev = out["peak_event"].values
    st = out["peak_status"].values
    modes = line_modes(out)
    par = {k: out[f"peak_{k}"].values for k in ("area", "center", "sigma", "gamma")}

    def profile(x, j):
        a, c, s, g = (par[k][j] for k in ("area", "center", "sigma", "gamma"))
        with np.errstate(all="ignore"):
            p = emg(x, a, c, s, g) if np.isfinite(g) else gaussian(x, a, c, s)
        return np.nan_to_num(p)

    cases = []
    for e, tm in unmatched_maxima(out).unmatched:
        tt = t[e]
        dt = float(np.nanmedian(np.diff(tt)))
        n = float(noise[e])
        conv = np.flatnonzero((ev == e) & (st == 0))
        j = int(conv[np.argmin(np.abs(modes[conv] - tm))])
        model = sum((profile(tt, k) for k in np.flatnonzero(ev == e)), np.zeros_like(tt))
        im = int(np.argmin(np.abs(tt - modes[j])))
        h = max(int(round(0.02 / dt)), 1)
        # the MC: the model plus stretches of the pre-trigger trace
        base = y[e][(tt < tt[0] + 0.8 * (0.0 - tt[0])) & np.isfinite(y[e])]
        span = 4 * h + 1
        far = 0
        for o in rng.integers(0, base.size - span, draws):
            trial = model[im - 2 * h: im - 2 * h + span] + base[o: o + span]
            far += abs(int(np.argmax(trial[h: 3 * h + 1])) - h) > 3
        # one line against two, where the line dominates: its profile above 10 %
        # of its height and above the sum of the event's other lines
        own = profile(tt, j)
        others = model - own
        w = (own >= 0.1 * own.max()) & (others < own) & np.isfinite(merged[e])
        if w.sum() < 16:
            # a line under a stronger one's tail dominates too few samples for 8
            # parameters: its whole profile above 10 % (the others are removed)
            w = (own >= 0.1 * own.max()) & np.isfinite(merged[e])
        x = tt[w]
        d = merged[e][w] - others[w]
        a, c, s, g = (float(par[k][j]) for k in ("area", "center", "sigma", "gamma"))
        tail = np.isfinite(g)

        def one(x, a, c, s, *rest, tail=tail):
            return (emg(x, a, c, s, rest[0]) if tail else gaussian(x, a, c, s)) + rest[-1]

        def two(x, a, c, s, *rest, one=one):
            *shape, a2, c2, s2, k = rest
            return one(x, a, c, s, *shape, k) + gaussian(x, a2, c2, s2)

        sig = np.full(x.size, n)
        start = [a, c, s, *([g] if tail else []), 0.0]
        try:
            p1, _ = curve_fit(one, x, d, p0=start, sigma=sig, maxfev=20000)
        except RuntimeError:  # no least-squares optimum found: reported as NaN
            p1 = np.asarray(start, dtype=float)
            chi1 = float("nan")
        else:
            chi1 = float(np.sum(((d - one(x, *p1)) / n) ** 2))
        best = None
        for shift in (-2, 0, 2) if np.isfinite(chi1) else ():
            p0 = [*p1[:-1], 0.1 * p1[0], tm + shift * dt, 2 * dt, p1[-1]]
            try:
                p2, _ = curve_fit(two, x, d, p0=p0, sigma=sig, maxfev=40000)
            except RuntimeError:
                continue
            chi2 = float(np.sum(((d - two(x, *p2)) / n) ** 2))
            if best is None or chi2 < best[0]:
                best = (chi2, p2)
        chi2, p2 = best if best is not None else (chi1, np.full(len(start) + 3, np.nan))
        ndof = x.size - len(p2)
        fval = ((chi1 - chi2) / 3.0) / (chi2 / ndof)
        a2, c2, s2 = p2[-4], p2[-3], abs(p2[-2])
        cases.append(MaximumCase(
            event=int(e), time=float(tm), height_sigma=float(y[e][np.argmin(np.abs(tt - tm))] / n),
            line=j, mode=float(modes[j]), offset_samples=float((tm - modes[j]) / dt),
            mc_far=far / draws, chi2_one=chi1, chi2_two=chi2, ndof_two=int(ndof),
            f_pvalue=float(f_dist.sf(fval, 3, ndof)), second_center=float(c2),
            second_sigma_samples=float(s2 / dt),
            second_height_sigma=float(a2 / (s2 * math.sqrt(2 * math.pi)) / n),
        ))  # fmt: skip
    return cases


def measure(name: str, ds: xr.Dataset) -> LineQuality:
    """Analyse ``ds`` with the default configuration and measure its line fits."""
    out = idexdask.analyze(ds)
    from idexdask.analysis.line_status import fit_status_meanings

    names = fit_status_meanings().split()
    st = out["peak_status"].values
    counts = {names[k]: int(np.sum(st == k)) for k in range(len(names))}
    sig, dt = significant_lines(out)
    ringing = sig & (st == names.index("ringing"))
    sig &= ~ringing
    conv = sig & (st == 0)
    check = unmatched_maxima(out)
    cal = int(np.sum(out["mass_calibration_status"].values == "calibrated")) \
        if "mass_calibration_status" in out else 0
    return LineQuality(
        name=name,
        events=int(out.sizes["epoch"]),
        lines=int(st.size),
        status_counts=counts,
        calibrated=cal,
        significant=int(sig.sum()),
        significant_ringing=int(ringing.sum()),
        significant_converged=int(conv.sum()),
        significant_sigma_samples=float(np.median(out["peak_sigma"].values[conv] / dt[conv]))
        if conv.any() else float("nan"),
        significant_redchi=float(np.median(out["peak_redchi"].values[conv]))
        if conv.any() else float("nan"),
        maxima=check.total,
        maxima_unmatched=len(check.unmatched),
        maxima_ringing=len(check.ringing),
    )


def datasets(data: Path) -> list[tuple[str, xr.Dataset]]:
    """The real science files: every L0 file with events, and the scope captures."""
    out = []
    for f in L0_FILES:
        out.append((f, idexdask.read_l0(data / "idex-l0" / f)))
    out.append(("scope-trc peridot 1, 3, 6", idexdask.read_trc(data / "scope-trc")))
    return out


def analyze_with_residual_tests(ds: xr.Dataset) -> tuple[xr.Dataset, list]:
    """``idexdask.analyze(ds)`` and the residual test's record of every maximum it
    looked at (:class:`idexdask.analysis.residual_lines.ResidualTest`)."""
    import functools

    from idexdask.analysis import tof

    tests: list = []
    stage = tof.add_residual_lines
    tof.add_residual_lines = functools.partial(stage, tests=tests)
    try:
        out = idexdask.analyze(ds)
    finally:
        tof.add_residual_lines = stage
    return out, tests


def print_maxima(data: list[tuple[str, xr.Dataset]]) -> int:
    """The table of docs/quality.md's unmatched maxima, with the residual test's
    figures there (screen: excess over the fitted lines; joint: the hosts' joint
    fit's residual, χ² without → with the second line and its F-test p; both in
    smoothed-baseline sigmas, threshold ``prominence_sigma``)."""
    w = sys.stdout.write
    w("| data | event | maximum µs (σ) | nearest converged line's mode µs | offset (samples) "
      "| MC: P(offset > 3) | χ² one line → two lines (ndof) | F-test p | second line: "
      "centre µs, σ (samples), height (σ) | residual test |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n")
    for name, ds in data:
        out, tests = analyze_with_residual_tests(ds)
        if "tof_combined" not in out:
            continue
        for c in examine_maxima(out):
            near = [x for x in tests if x.event == c.event and abs(x.time - c.time) < 1e-6]
            if not near:
                verdict = "not tested (a line's mode or an unconverged detection within 3 samples)"
            elif not near[0].hosts.size:
                verdict = f"screen {near[0].residual_sigma:.1f}"
            else:
                x = near[0]
                verdict = (f"joint residual {x.residual_sigma:.1f}; χ² {x.chisq_one:.1f} → "
                           f"{x.chisq_two:.1f}, p = {x.pvalue:.2g}, kept {x.kept}")
            w(f"| {name} | {c.event} | {c.time:.4f} ({c.height_sigma:.1f}) | {c.mode:.4f} | "
              f"{c.offset_samples:+.1f} | {c.mc_far:.2f} | {c.chi2_one:.1f} → {c.chi2_two:.1f} "
              f"({c.ndof_two}) | {c.f_pvalue:.1e} | {c.second_center:.4f}, "
              f"{c.second_sigma_samples:.1f}, {c.second_height_sigma:.1f} | {verdict} |\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_DATA))
    ap.add_argument("--maxima", action="store_true",
                    help="also examine every unmatched ion-line maximum (docs/quality.md)")
    args = ap.parse_args(argv)
    if args.maxima:
        return print_maxima(datasets(Path(args.data)))
    rows = [measure(n, ds) for n, ds in datasets(Path(args.data))]
    names = list(rows[0].status_counts)
    w = sys.stdout.write
    w("| data | events | lines | " + " | ".join(names) + " | calibrated | >=10 sigma lines "
      "converged | >=10 sigma ringing | their median sigma (samples) | median redchi | "
      ">=10 sigma maxima (not ringing) without converged line | >=10 sigma maxima that are "
      "ringing lobes |\n")
    w("|---" * (len(names) + 10) + "|\n")
    for r in rows:
        share = (f"{r.significant_converged}/{r.significant} "
                 f"({100 * r.significant_converged / r.significant:.0f} %)"
                 if r.significant else "0/0 (no lines)")
        w(f"| {r.name} | {r.events} | {r.lines} | "
          + " | ".join(str(r.status_counts[k]) for k in names)
          + f" | {r.calibrated} of {r.events} | {share} | {r.significant_ringing} | "
          f"{r.significant_sigma_samples:.2f} | "
          f"{r.significant_redchi:.2f} | {r.maxima_unmatched} of "
          f"{r.maxima - r.maxima_ringing} | {r.maxima_ringing} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
