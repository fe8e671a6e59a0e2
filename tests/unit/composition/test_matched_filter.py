"""The compiled matched filter against its NumPy reference (composition.matched_filter)."""

from __future__ import annotations

import numpy as np

from idexdask.composition.matched_filter import filter_areas, filter_areas_reference

# The kernel computes every term in the reference's order and sums in NumPy's
# pairwise order; only exp may differ (libm against NumPy's SIMD exp, a few
# ulp), so areas agree to ~1e-15 relative of the sums they come from.  1e-9
# relative (of the error, for areas near zero) still fails on any changed
# sample set, weight or order of operations, which moves areas by >= 1e-6.
RTOL = 1e-9


def test_filter_areas_equal_the_numpy_reference():
    rng = np.random.default_rng(11)
    n = 4000
    x = np.sort(rng.uniform(0.0, 10.0, n))
    width = 0.004
    y = rng.normal(0.0, 1.0, n) + 40.0 * np.exp(-0.5 * ((x - 5.0) / width) ** 2)
    w = np.full(n, 1.0)
    y[100:110] = np.nan  # missing samples
    w[200:205] = 0.0  # unusable weights
    x32 = x.astype(np.float32).astype(float)
    centres = np.concatenate([[5.0], rng.uniform(0.0, 10.0, 60), [-1.0, 11.0, 0.0254]])
    for xs, ys in ((x, y), (x32, y.astype(np.float32))):
        got_a, got_e = filter_areas(xs, ys, w, centres, width)
        want_a, want_e = filter_areas_reference(xs, ys, w, centres, width)
        np.testing.assert_array_equal(np.isnan(got_a), np.isnan(want_a))
        ok = ~np.isnan(want_a)
        assert ok.sum() >= 50 and np.isnan(want_a[-3:-1]).all()  # off the record: NaN
        np.testing.assert_allclose(got_e[ok], want_e[ok], rtol=RTOL)
        np.testing.assert_allclose(got_a[ok], want_a[ok], rtol=0,
                                   atol=RTOL * np.abs(want_a[ok]).max())
    assert got_a[0] > 30 * got_e[0]  # the line at 5 us is found


def test_filter_areas_empty_inputs():
    a, e = filter_areas(np.zeros(0), np.zeros(0), np.zeros(0), np.array([1.0, 2.0]), 0.01)
    assert a.shape == (2,) and np.isnan(a).all() and np.isnan(e).all()
    a, e = filter_areas(np.arange(10.0), np.ones(10), np.ones(10), np.zeros(0), 0.5)
    assert a.shape == (0,) and e.shape == (0,)
