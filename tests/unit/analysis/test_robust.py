"""analysis/robust.py: NaN-ignoring medians, MAD sigmas and the compiled building blocks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from idexdask.analysis.robust import (
    MAD_TO_SIGMA,
    median_inplace,
    nanmedian_rows,
    quiet_nan_warnings,
    robust_sigma,
)

# A median is a selection (exact) or the mean of the two middle values (one
# rounding either way): the compiled and NumPy results agree to an ulp.
RTOL = 2 * np.finfo(float).eps


def test_mad_to_sigma_is_the_gaussian_factor():
    # 1 / Phi^-1(3/4) = 1.482602..., written to 4 decimals
    assert MAD_TO_SIGMA == pytest.approx(1.0 / stats.norm.ppf(0.75), abs=5e-5)


def _rows(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(40, 33))
    x[::3] = np.round(x[::3] * 4)  # integer-valued rows: many ties
    x[1::5, ::4] = np.nan
    x[7] = np.nan  # a row with no finite value
    return x


@pytest.mark.parametrize("n", [1, 2, 7, 32, 33, 100])
def test_nanmedian_rows_matches_numpy(n):
    rng = np.random.default_rng(n)
    x = _rows(rng)[:, :n]
    with quiet_nan_warnings():
        want = np.nanmedian(x, axis=1)
    got = nanmedian_rows(x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    assert np.isnan(got[7])


def test_nanmedian_rows_shapes():
    assert nanmedian_rows(np.zeros((3, 0))).shape == (3,)
    assert np.isnan(nanmedian_rows(np.zeros((3, 0)))).all()
    assert nanmedian_rows(np.ones((2, 3, 4))).shape == (2, 3)
    assert float(nanmedian_rows(np.array(5.0))) == 5.0


def test_robust_sigma_is_the_scaled_mad():
    rng = np.random.default_rng(1)
    x = _rows(rng)
    with quiet_nan_warnings():
        med = np.nanmedian(x, axis=1)
        want = MAD_TO_SIGMA * np.nanmedian(np.abs(x - med[:, None]), axis=1)
    np.testing.assert_allclose(robust_sigma(x), want, rtol=RTOL, atol=0)
    # along another axis, and of a large Gaussian sample: sigma within 2 %
    np.testing.assert_allclose(robust_sigma(x.T, axis=0), robust_sigma(x), rtol=0, atol=0)
    big = rng.normal(0.0, 3.0, 200_000)
    assert robust_sigma(big) == pytest.approx(3.0, rel=0.02)


@pytest.mark.parametrize("k", [1, 2, 5, 6, 33, 64])
def test_median_inplace_matches_numpy(k):
    rng = np.random.default_rng(k)
    values = np.round(rng.normal(size=k) * 3)  # ties
    buf = np.empty(2 * k)
    buf[:k] = values
    assert median_inplace(buf, k) == pytest.approx(float(np.median(values)), rel=RTOL, abs=0)


def test_quiet_nan_warnings_silences_only_inside():
    row = np.full(4, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with quiet_nan_warnings():
            assert np.isnan(np.nanmedian(row))
        with pytest.raises(RuntimeWarning):
            np.nanmedian(row)


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_prefix_mean_is_the_nanmean_of_the_clipped_prefix(dtype):
    """The mean of the first ``end`` samples within 4 sigma of the median (NaN and the
    fill value left out), summed over the whole row as ``numpy.nanmean`` would."""
    from idexdask.analysis.robust import clipped_prefix_mean

    rng = np.random.default_rng(11)
    n, end = 20_003, 15_001
    x = (rng.normal(size=n) * 0.2).astype(dtype)
    x[rng.random(n) < 0.05] = np.nan
    x[[10, 400, 9000]] = 50.0  # beyond the clip
    x[[11, 12]] = -7.0  # the fill value
    x[end:] = 1e3  # after the baseline: never read
    m, d = 0.01, 0.25  # median and MAD given: the clip is 4 x 1.4826 x d
    got = clipped_prefix_mean(x, end, n, m, d, -7.0)
    head = x[:end].astype(float)
    keep = (head != -7.0) & (np.abs(head - m) <= 4 * max(MAD_TO_SIGMA * d, 0.5))
    row = np.full(n, np.nan)
    row[:end][keep] = head[keep]
    # the same pairwise order as numpy's sum: equal on this machine, within a few
    # ulp wherever NumPy's run-time SIMD dispatch orders its leaf blocks differently
    np.testing.assert_allclose(got, np.nanmean(row), rtol=8 * np.finfo(float).eps)
    assert np.isnan(x[:end]).any() and (~keep & np.isfinite(head)).sum() == 5
    # nothing within the clip: the median
    assert clipped_prefix_mean(np.full(n, 90.0, dtype), end, n, m, d, np.nan) == m


@pytest.mark.numerics
@pytest.mark.parametrize("end", [0, 1, 127, 128, 129, 4096, 20_003])
def test_clipped_prefix_mean_reads_only_the_prefix(end):
    """Prefixes that end inside, at and after a pairwise leaf: the samples from
    ``end`` on (here far outside the clip and NaN) are never read, and the mean
    is that of the kept prefix samples, summed over the row as numpy.nanmean would."""
    from idexdask.analysis.robust import clipped_prefix_mean

    rng = np.random.default_rng(end)
    n = 20_003
    x = np.round(rng.normal(size=n) * 3.0)  # integer DN: ties, some beyond the clip
    x[rng.random(n) < 0.02] = np.nan
    tail = x.copy()
    tail[end:] = np.nan  # what a row without the samples from end on holds
    x[end:] = 1e6 * rng.random(n - end)  # beyond any clip: would move the mean
    m, d = 0.0, 1.5
    got = clipped_prefix_mean(x, end, n, m, d, np.nan)
    assert got == clipped_prefix_mean(tail, end, n, m, d, np.nan)  # same code: exact
    keep = np.abs(tail - m) <= 4 * max(MAD_TO_SIGMA * d, 0.5)
    if not keep.any():
        assert got == m
        return
    row = np.where(keep, tail, np.nan)
    # numpy's pairwise order: equal here, within a few ulp where NumPy's SIMD
    # dispatch orders its leaf blocks differently
    np.testing.assert_allclose(got, np.nanmean(row), rtol=8 * np.finfo(float).eps)
