"""Joint fits of blended TOF lines (idexdask.analysis.blends)."""

from __future__ import annotations

import dataclasses

import lmfit
import numpy as np
import pytest
from numpy.testing import assert_allclose

from idexdask.analysis.blends import blends, multi_line_model, refit_blends
from idexdask.analysis.fitting import FitStatus, fit_batch
from idexdask.analysis.lineshapes import emg, emg_model, gaussian, gaussian_model

DT = 1.0 / 260.0  # µs per sample
NOISE = 2.0  # DN


def blend_windows(n: int, seed: int, m: int = 90):
    """Windows holding a strong EMG line and a 5-20x weaker Gaussian 12-20 samples
    later, on its tail (resolved: a weaker or closer line is not determined)."""
    rng = np.random.default_rng(seed)
    x = np.arange(m) * DT + rng.uniform(2.0, 20.0, (n, 1))
    c1 = x[:, 20] + rng.uniform(0.0, DT, n)
    c2 = c1 + rng.uniform(12.0, 20.0, n) * DT
    truth = np.stack([
        rng.uniform(5.0, 30.0, n), c1, rng.uniform(0.005, 0.01, n), rng.uniform(40.0, 120.0, n),
        np.zeros(n), c2, rng.uniform(0.005, 0.012, n), rng.uniform(-1.0, 1.0, n),
    ], axis=1)  # fmt: skip
    truth[:, 4] = truth[:, 0] / rng.uniform(5.0, 20.0, n)
    y = (emg(x, *(truth[:, j, None] for j in range(4)))
         + gaussian(x, *(truth[:, j, None] for j in range(4, 7))) + truth[:, 7, None])  # fmt: skip
    y = y + rng.normal(0.0, NOISE, y.shape)
    p0 = truth * rng.uniform(0.9, 1.1, truth.shape)
    p0[:, [1, 5]] = truth[:, [1, 5]] + rng.uniform(-1.0, 1.0, (n, 2)) * DT
    p0[:, 7] = 0.0
    return x, y, p0, truth


BOUNDS_LO = np.array([0.0, -np.inf, 3e-4, 1.0, 0.0, -np.inf, 3e-4, -np.inf])
BOUNDS_HI = np.array([np.inf, np.inf, 0.1, 1e4, np.inf, np.inf, 0.1, np.inf])


@pytest.mark.parametrize("engine", ["xp", "compiled"])
def test_multi_line_model_agrees_with_lmfit(engine):
    """Same minimum as lmfit's composite emg_model + gaussian_model + ConstantModel
    (same bounds, same start), as issue 3's contract asks of every fitted model:
    parameters within 1e-4 relative, chi-square within 1e-6 (test_batchfit's
    tolerances for the single-line models; lmfit run with xtol=ftol=1e-12), on
    the array code and on the compiled kernel (``KERNEL_LINES``)."""
    x, y, p0, truth = blend_windows(10, seed=3)
    # centres bounded to the window, as refit_blends bounds them (unbounded, a
    # line far outside its window has no gradient left to come back along)
    lower = np.broadcast_to(BOUNDS_LO, p0.shape).copy()
    upper = np.broadcast_to(BOUNDS_HI, p0.shape).copy()
    lower[:, [1, 5]] = x[:, :1]
    upper[:, [1, 5]] = x[:, -1:]
    model = multi_line_model(("emg", "gaussian"))
    assert model.param_names == ("l0_amplitude", "l0_center", "l0_sigma", "l0_gamma",
                                 "l1_amplitude", "l1_center", "l1_sigma", "c")  # fmt: skip
    res = fit_batch(x, y, model, p0, lower=lower, upper=upper, sigma=NOISE, engine=engine)
    assert np.all(res.status == FitStatus.CONVERGED)
    ref = emg_model(prefix="l0_") + gaussian_model(prefix="l1_") + lmfit.models.ConstantModel()
    for i in range(len(y)):
        params = ref.make_params()
        for j, name in enumerate(model.param_names):
            params[name].set(value=p0[i, j], min=lower[i, j], max=upper[i, j])
        out = ref.fit(y[i], params, x=x[i], weights=np.full(x.shape[1], 1 / NOISE),
                      fit_kws={"xtol": 1e-12, "ftol": 1e-12})  # fmt: skip
        values = np.array([out.params[name].value for name in model.param_names])
        assert_allclose(res.params[i], values, rtol=1e-4, err_msg=f"window {i}")
        assert res.chisq[i] == pytest.approx(out.chisqr, rel=1e-6)
        # and the fit found the lines: centres within a sample of the truth
        assert np.all(np.abs(res.params[i, [1, 5]] - truth[i, [1, 5]]) < DT)


def test_multi_line_jacobian_matches_differences():
    """The analytic Jacobian equals central differences of the model (rtol 1e-6:
    the differences' own truncation and rounding error at steps of 1e-6)."""
    model = multi_line_model(("gaussian", "emg", "emg"))
    x = np.linspace(1.9, 2.3, 120)[None, :]
    p = np.array([[2.0, 1.95, 0.008, 8.0, 2.0, 0.01, 80.0, 1.0, 2.12, 0.006, 200.0, 0.3]])
    _, jac = model.evaluate_with_jacobian(np, x, p)
    for j in range(p.shape[1]):
        h = 1e-6 * max(abs(p[0, j]), 1e-3)
        up, dn = p.copy(), p.copy()
        up[0, j] += h
        dn[0, j] -= h
        num = (model.evaluate(np, x, up) - model.evaluate(np, x, dn)) / (2 * h)
        scale = np.max(np.abs(num)) + 1e-300
        assert_allclose(jac[0, j] / scale, num[0] / scale, atol=1e-6, err_msg=model.param_names[j])


@pytest.mark.parametrize("shapes", [("gaussian",), ("emg", "emg", "gaussian")])
def test_compiled_lines_kernel_matches_array_normal_equations(shapes):
    """The compiled kernel of a sum of lines (``KERNEL_LINES``) gives the array
    model's chi-square and normal equations ``A = J W^2 J^T``, ``b = J W^2 r``, a
    masked (weight 0) point left out.  Tolerance 1e-11 of the largest term of
    each sum: the kernel and the array code sum in different orders, and the
    kernel takes erfcx from its own polynomial (within 1 ulp of SciPy's) and ``1/sigma``
    products for divisions, so the two differ by rounding only."""
    from idexdask.analysis.fitting.line_kernels import lines_constant_normal

    model = multi_line_model(shapes)
    rng = np.random.default_rng(4)
    x = np.linspace(1.9, 2.3, 120)
    per_line = {"emg": [8.0, 0.0, 0.008, 90.0], "gaussian": [3.0, 0.0, 0.006]}
    p = np.concatenate([per_line[s] for s in shapes] + [[0.4]])
    centres = [j for j, n in enumerate(model.param_names) if n.endswith("center")]
    p[centres] = rng.uniform(2.0, 2.2, len(centres))
    y = rng.normal(0.0, NOISE, x.size) + model.evaluate(np, x[None], p[None])[0]
    w = np.full(x.size, 1.0 / NOISE)
    w[7] = 0.0
    f, jac = model.evaluate_with_jacobian(np, x[None], p[None])
    jw, r = jac[0] * w, w * (y - f[0])
    k = p.size
    a, b = np.empty((k, k)), np.empty(k)
    chi = lines_constant_normal(x, y, w, p, np.asarray(model.kernel_lines, np.int64), a, b,
                                np.empty((x.size, k)), np.empty(x.size),
                                np.empty(len(shapes)), np.nan)  # fmt: skip
    assert chi == pytest.approx(np.sum(r * r), rel=1e-11)
    terms_a = np.abs(jw) @ np.abs(jw).T
    terms_b = np.abs(jw) @ np.abs(r)
    assert np.all(np.abs(a - jw @ jw.T) <= 1e-11 * terms_a)
    assert np.all(np.abs(b - jw @ r) <= 1e-11 * terms_b)


def test_blends_group_near_lines_only():
    """An unconverged line joins its near neighbours (two deep); far lines and
    other events stay out; a blend larger than MAX_BLEND_LINES is left out."""
    event = np.array([0, 0, 0, 0, 0, 1, 1])
    index = np.array([10, 30, 50, 70, 400, 30, 50])
    refit = np.array([False, False, True, False, False, False, False])
    groups = blends(event, index, refit, np.full(7, 40))
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3]]
    refit[5] = True
    groups = blends(event, index, refit, np.full(7, 40))
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3], [5, 6]]
    event, index = np.zeros(12, int), np.arange(12) * 10
    assert blends(event, index, np.ones(12, bool), np.full(12, 40)) == []


def test_lines_set_by_hand_stay_out_of_blends():
    """A line added or edited by hand keeps its own fit: it joins no blend, and a
    blend does not reach across it (the lines beyond stay apart)."""
    event = np.zeros(5, int)
    index = np.array([10, 30, 50, 70, 90])
    refit = np.array([False, False, True, False, False])
    fixed = np.array([False, True, False, False, False])
    groups = blends(event, index, refit, np.full(5, 40), fixed)
    assert [g.tolist() for g in groups] == [[2, 3, 4]]
    fixed[2] = True  # the unconverged line itself set by hand: nothing to refit
    assert blends(event, index, refit, np.full(5, 40), fixed) == []


def _spectrum(seed: int, later: float = 0.08):
    """A strong EMG line at 1.0 µs with a weaker Gaussian ``later`` µs later, 260 MSPS."""
    rng = np.random.default_rng(seed)
    t = -0.5 + np.arange(1024) / 260.0
    y = emg(t, 30.0, 1.0, 0.006, 60.0) + gaussian(t, 1.5, 1.0 + later, 0.008)
    return t[None, :], np.round(y + rng.normal(0.0, NOISE, t.size))[None, :]


@pytest.mark.parametrize("seed", range(4))
def test_refit_blends_recovers_both_lines(seed):
    """A blend whose weak line's own fit failed is fitted jointly: both lines
    recovered (centres within a sample, areas within 3 standard errors), the
    reduced chi-square near 1.  The single-line fit of the weak line on its cut
    window is biased by the strong line's tail (it is marked unconverged here to
    trigger the joint fit; on the real flight spectra such fits run into the
    window edge)."""
    from idexdask.analysis.line_fits import fit_lines
    from idexdask.analysis.line_status import LineStatus
    from idexdask.analysis.peaks import detect_peaks
    from idexdask.analysis.products import load_analysis_settings
    from idexdask.analysis.sample_step import sample_step

    settings = {**load_analysis_settings()[1]["peaks"], "fit_device": "cpu"}
    t, y = _spectrum(seed)
    noise = np.full_like(y, NOISE)
    cand, _ = detect_peaks(y, t, np.array([NOISE]), settings)
    first = fit_lines(y, t, noise, cand, settings)
    strong = int(np.argmin(np.abs(t[0, cand.index] - 1.0)))
    weak = int(np.argmin(np.abs(t[0, cand.index] - 1.08)))
    assert strong != weak
    status = first.status.copy()
    status[weak] = LineStatus.HIT_BOUND
    joint = refit_blends(y, t, noise, cand.event, cand.index,
                         dataclasses.replace(first, status=status), settings, sample_step(t))
    assert joint.blend[strong] == joint.blend[weak] >= 0
    assert joint.converged[[strong, weak]].all()
    for k, (area, center) in ((strong, (30.0, 1.0)), (weak, (1.5, 1.08))):
        assert abs(joint.center[k] - center) < DT
        assert abs(joint.area[k] - area) < 3 * joint.area_err[k]
    assert 0.6 < joint.redchi[weak] < 1.6  # ~100 points: chi2/dof within +-4 sd of 1
    # lines in no blend are untouched
    others = np.setdiff1d(np.arange(cand.size), [strong, weak])
    assert np.all(joint.blend[others] == -1) or np.all(joint.converged[others])


def test_refit_blends_does_not_depend_on_the_other_events():
    """An event's joint fits are the same fitted with other events or alone (bit
    for bit: the same code on the same window, padded to its own width class),
    so a campaign's results do not depend on how its events are batched."""
    from idexdask.analysis.line_fits import fit_lines
    from idexdask.analysis.line_status import LineStatus
    from idexdask.analysis.peaks import detect_peaks
    from idexdask.analysis.products import load_analysis_settings
    from idexdask.analysis.sample_step import sample_step

    settings = {**load_analysis_settings()[1]["peaks"], "fit_device": "cpu"}
    # the weak line 0.08 and 0.15 µs after the strong one: blend windows of
    # different widths (other width classes), padded alike only when batched
    parts = [_spectrum(0, 0.08), _spectrum(1, 0.15)]
    t = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    noise = np.full_like(y, NOISE)

    def joint(rows):
        cand, _ = detect_peaks(y[rows], t[rows], np.full(len(rows), NOISE), settings)
        first = fit_lines(y[rows], t[rows], noise[rows], cand, settings)
        status = first.status.copy()
        weak = np.where(np.asarray(rows)[cand.event] == 0, 1.08, 1.15)
        status[np.abs(t[0, cand.index] - weak) < 0.01] = LineStatus.HIT_BOUND
        res = refit_blends(y[rows], t[rows], noise[rows], cand.event, cand.index,
                           dataclasses.replace(first, status=status), settings,
                           sample_step(t[rows]))  # fmt: skip
        return cand, res

    cand_both, both = joint([0, 1])
    for e in (0, 1):
        cand_one, one = joint([e])
        mine = cand_both.event == e
        assert mine.sum() == cand_one.size
        for name in ("center", "sigma", "area", "area_err", "chisq", "status"):
            np.testing.assert_array_equal(getattr(both, name)[mine], getattr(one, name))
    assert both.converged.sum() >= 4  # both events' blends were fitted


@pytest.fixture(scope="module")
def peridot_lines(trc_dir):
    """The merged TOF spectra, peaks and line fits of the shared peridot captures."""
    from idexdask.analysis.products import load_analysis_settings
    from idexdask.analysis.signal_quality import load_quality_config, quality_variables
    from idexdask.analysis.tof import merge_gains, tof_lines
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.sources import sources

    settings = load_analysis_settings()[1]
    units = plan_inputs([trc_dir], 1).units
    events = sources.by_kind(units[0].kind).read_units(units)
    quality = quality_variables(events, load_quality_config(settings.get("quality") or None),
                                channel_dim="quality_channel")  # fmt: skip
    merged = merge_gains(events, quality, {**settings["tof"]})
    peaks = {**settings["peaks"], "fit_device": "cpu"}
    cand, fits, _ = tof_lines(merged, peaks)
    return merged, cand, fits, peaks


def test_real_weak_line_blend_converges_in_both_engines(peridot_lines):
    """The weak line ~0.05 µs after the first strong line of the first peridot
    impact, fitted jointly with its neighbours (4 EMG lines, reduced chi-square
    ~4: the lines are not exact EMGs).  Such a fit converges linearly, its
    damping stays above LAMBDA_GN, and the ftol test is the Gauss-Newton step's
    (taken where the stall test would stop it): it ends CONVERGED, in both
    engines, at the same minimum."""
    from idexdask.analysis.peaks import detect_peaks
    from idexdask.analysis.tof import FormulaTimes

    merged, cand, fits, peaks = peridot_lines
    t = merged.time  # as tof.joint_blend_fits passes it
    if not isinstance(t, FormulaTimes):
        t = np.broadcast_to(t, merged.signal.shape)
    step = np.empty(merged.signal.shape[0])  # the sample steps, as tof.tof_lines finds them
    detect_peaks(merged.signal, merged.time, merged.noise, peaks,
                 merged.sigma if merged.sigma_varies else None, scale_den=merged.noise,
                 quantum=merged.quantum, step_out=step)  # fmt: skip
    first = np.flatnonzero(cand.event == 0)
    weak = first[np.argmin(np.abs(fits.center[first] - 0.055))]
    assert abs(fits.center[weak] - 0.055) < 0.02  # the line is there
    status = fits.status.copy()
    status[weak] = FitStatus.MAX_ITERATIONS  # as its own fit, cut at the midpoints, once ended
    forced = dataclasses.replace(fits, status=status)
    out = {}
    for engine in ("compiled", "xp"):
        out[engine] = refit_blends(merged.signal, t, merged.sigma, cand.event, cand.index, forced,
                                   {**peaks, "fit_engine": engine}, step)  # fmt: skip
    comp, xp = out["compiled"], out["xp"]
    members = np.flatnonzero(comp.blend == comp.blend[weak])
    assert members.size >= 3 and comp.blend[weak] >= 0
    assert np.all(comp.converged[members]) and np.all(xp.converged[members])
    # the same minimum: rounding-level differences of the two engines' sums
    # move a converged fit by far less than 1e-2 of its standard errors
    for value, err in (("center", "center_err"), ("area", "area_err")):
        diff = np.abs(getattr(comp, value)[members] - getattr(xp, value)[members])
        assert np.all(diff < 1e-2 * getattr(comp, err)[members]), value
