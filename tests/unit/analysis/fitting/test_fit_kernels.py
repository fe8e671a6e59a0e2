"""The compiled engine's per-window kernels against the array models' normal equations.

The EMG + constant kernel sums its normal equations in a second pass over the
Jacobian it wrote in the first, and both the EMG and the line kernels take a
line's terms below ``e**-NEGLIGIBLE_EXPONENT`` of its scale as exact zeros
(:func:`~idexdask.analysis.fitting.emg_kernels.fit_profile`).  The windows
below reach 60 sigma from the line on both sides, so those zeros are exercised.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from idexdask.analysis.blends import multi_line_model
from idexdask.analysis.fitting import batch_model
from idexdask.analysis.fitting.emg_kernels import (
    NEGLIGIBLE_EXPONENT,
    emg_constant_normal,
    emg_profile,
    fit_profile,
)
from idexdask.analysis.fitting.line_kernels import gaussian_point, lines_constant_normal

# Tolerance of a sum: 1e-11 of the sum of its terms' magnitudes.  The kernels and
# the array code sum in different orders (~n ulp of the terms), the kernel's
# erfcx is its own polynomial (within 1 ulp of SciPy's) and it multiplies by
# 1/sigma where the array code divides; an EMG Jacobian column is a difference
# of terms up to ~(gamma sigma)**2 larger than itself, so an ulp of a term is up
# to ~1e-12 of the sum's magnitude.  The dropped terms are below 1e-125 of it.
RTOL = 1e-11


def _emg_window(seed: int, gamma: float):
    """One EMG + constant window from 60 sigma left to 60 sigma right of the line."""
    rng = np.random.default_rng(seed)
    sigma = 0.004
    x = 5.0 + np.linspace(-60.0, 60.0, 241) * sigma
    p = np.array([3.0, 5.0 + 0.3 * sigma, sigma, gamma, 0.2])
    model = batch_model()
    y = model.evaluate(np, x[None], p[None])[0] + rng.normal(0.0, 0.05, x.size)
    w = rng.uniform(5.0, 20.0, x.size)
    w[11] = 0.0  # a masked point
    return model, x, y, w, p


@pytest.mark.numerics
@pytest.mark.parametrize("gamma", [50.0, 400.0, 5000.0])
def test_emg_kernel_matches_array_normal_equations(gamma):
    """Chi-square, ``A = J W^2 J^T`` and ``b = J W^2 r`` of the compiled EMG kernel."""
    model, x, y, w, p = _emg_window(1, gamma)
    f, jac = model.evaluate_with_jacobian(np, x[None], p[None])
    jw, r = jac[0] * w, w * (y - f[0])
    a, b = np.empty((5, 5)), np.empty(5)
    chi = emg_constant_normal(0, x, y, w, p, a, b, np.empty((x.size, 5)), np.empty(x.size),
                              math.nan)  # fmt: skip
    assert chi == pytest.approx(np.sum(r * r), rel=RTOL)
    assert np.all(np.abs(a - jw @ jw.T) <= RTOL * (np.abs(jw) @ np.abs(jw).T))
    assert np.all(np.abs(b - jw @ r) <= RTOL * (np.abs(jw) @ np.abs(r)))


def test_emg_kernel_limit_rejects_without_sums():
    """Below the chi-square, ``limit`` gives ``inf`` and leaves ``A``, ``b``
    unwritten; above it, the values of an evaluation without a limit (same code)."""
    _, x, y, w, p = _emg_window(2, 200.0)
    jm, rr = np.empty((x.size, 5)), np.empty(x.size)
    a, b = np.empty((5, 5)), np.empty(5)
    chi = emg_constant_normal(0, x, y, w, p, a, b, jm, rr, math.nan)
    a2, b2 = np.full((5, 5), -7.0), np.full(5, -7.0)
    assert emg_constant_normal(0, x, y, w, p, a2, b2, jm, rr, 0.5 * chi) == math.inf
    assert np.all(a2 == -7.0) and np.all(b2 == -7.0)
    assert emg_constant_normal(0, x, y, w, p, a2, b2, jm, rr, 2.0 * chi) == chi
    assert np.array_equal(a2, a) and np.array_equal(b2, b)


@numba.njit(cache=False)
def _profiles(u, gs):  # pragma: no cover - compiled
    out = np.empty((4, u.size))
    for i in range(u.size):
        out[0, i], out[1, i] = emg_profile(0, u[i], gs[i])
        out[2, i], out[3, i] = fit_profile(u[i], gs[i])
    return out


def test_fit_profile_drops_only_negligible_terms():
    """``fit_profile`` is ``emg_profile`` (compiled engine) wherever neither term is
    below ``e**-NEGLIGIBLE_EXPONENT``; where it gives zeros, the full profile is
    below twice that; NaN gives what ``emg_profile`` gives (NaN profile)."""
    u, gs = np.meshgrid(np.linspace(-80.0, 300.0, 761), [0.0, 0.01, 0.5, 2.0, 30.0, 400.0])
    u, gs = u.ravel(), gs.ravel()
    full_g, full_h, cut_g, cut_h = _profiles(u, gs)
    small = math.exp(-NEGLIGIBLE_EXPONENT)
    same = (cut_g == full_g) & (cut_h == full_h)
    assert not same.all()  # some terms are dropped on this grid
    dropped_h = cut_h != full_h
    assert np.all(cut_h[dropped_h] == 0.0)
    assert np.all(np.abs(full_h[dropped_h]) <= 2.0 * small)
    assert np.all(full_g[cut_g != full_g] <= small)
    assert np.all(same[0.5 * u * u <= NEGLIGIBLE_EXPONENT])  # the Gaussian core untouched
    nan = _profiles(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))
    assert np.array_equal(nan[2:], nan[:2], equal_nan=True)
    assert np.all(np.isnan(nan[3]))


def test_gaussian_point_negligible_beyond_the_exponent():
    u_edge = math.sqrt(2.0 * NEGLIGIBLE_EXPONENT)
    assert gaussian_point(5.0 + 1.01 * u_edge * 0.01, 2.0, 5.0, 100.0) == (0.0, 0.0, 0.0)
    g, jc, js = gaussian_point(5.0 + 0.99 * u_edge * 0.01, 2.0, 5.0, 100.0)
    assert 0.0 < g < 1e-120 and jc > 0.0 and js > 0.0


@pytest.mark.numerics
def test_lines_kernel_with_far_apart_lines_matches_array():
    """A blend whose lines lie 50-100 sigma apart: each line's far points are
    dropped terms, the cross terms of far lines all but vanish; the normal
    equations still agree with the array model's to the sums' rounding."""
    model = multi_line_model(("emg", "emg", "gaussian"))
    sigma = 0.003
    x = 2.0 + np.arange(400) * 0.001
    p = np.array([5.0, 2.08, sigma, 300.0, 2.0, 2.23, sigma, 800.0, 1.0, 2.35, sigma, 0.1])
    rng = np.random.default_rng(3)
    y = model.evaluate(np, x[None], p[None])[0] + rng.normal(0.0, 0.02, x.size)
    w = np.full(x.size, 50.0)
    f, jac = model.evaluate_with_jacobian(np, x[None], p[None])
    jw, r = jac[0] * w, w * (y - f[0])
    k = p.size
    a, b = np.empty((k, k)), np.empty(k)
    chi = lines_constant_normal(x, y, w, p, np.asarray(model.kernel_lines, np.int64), a, b,
                                np.empty((x.size, k)), np.empty(x.size), np.empty(3),
                                math.nan)  # fmt: skip
    assert chi == pytest.approx(np.sum(r * r), rel=RTOL)
    # a cross term of two far lines is a sum of ~1e-100 products: compared to
    # the magnitude of the lines' own sums, not to its own
    terms_a = np.abs(jw) @ np.abs(jw).T
    own = np.sqrt(np.outer(np.diag(terms_a), np.diag(terms_a)))
    assert np.all(np.abs(a - jw @ jw.T) <= RTOL * np.maximum(terms_a, 1e-100 * own))
    assert np.all(np.abs(b - jw @ r) <= RTOL * (np.abs(jw) @ np.abs(r)))
