"""The compiled ``erfcx``: its table, its agreement with SciPy, its accuracy."""

from __future__ import annotations

import math

import mpmath
import numba
import numpy as np
import pytest
import scipy.special as sp

from idexdask.analysis import _erfcx_table
from idexdask.analysis.special import erfcx_coefficients, erfcx_kernel


@numba.njit
def _evaluate(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = erfcx_kernel(x[i])
    return out


def _ulps(values: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(values - exact) / np.spacing(np.abs(exact))


def _exact(x: np.ndarray) -> np.ndarray:
    with mpmath.workdps(40):
        return np.array([float(mpmath.exp(mpmath.mpf(v) ** 2) * mpmath.erfc(mpmath.mpf(v)))
                         for v in x])


def test_stored_table_is_what_the_builder_computes():
    table = erfcx_coefficients(_erfcx_table.DEGREE)
    assert np.array_equal(table, np.array(_erfcx_table.COEFFICIENTS))


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 4.0), (0.0, 50.0), (50.0, 1e7), (-26.0, 0.0)]
)
@pytest.mark.numerics
def test_within_one_ulp_of_scipy(low, high):
    x = np.random.default_rng(1).uniform(low, high, 400_000)
    got, scipy_values = _evaluate(x), sp.erfcx(x)
    assert _ulps(got, scipy_values).max() <= (1.0 if high <= 50.0 else 4.0)
    if high <= 50.0:  # the table reproduces SciPy's values almost everywhere
        assert np.mean(got != scipy_values) < 1e-3


@pytest.mark.numerics
def test_interval_edges_and_special_values():
    edges = 400.0 / np.arange(8, 101) - 4.0  # y = 400/(4+x) on an integer
    edges = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    edges = edges[edges >= 0.0]
    assert _ulps(_evaluate(edges), sp.erfcx(edges)).max() <= 1.0
    special = _evaluate(np.array([0.0, -0.0, np.inf, np.nan, -30.0, 1e300]))
    assert special[0] == 1.0 and special[1] == 1.0 and special[2] == 0.0
    assert math.isnan(special[3]) and special[4] == np.inf
    assert special[5] == pytest.approx(1.0 / (1e300 * math.sqrt(math.pi)), rel=1e-15)


@pytest.mark.numerics
def test_as_accurate_as_scipy():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(0, 50, 1500), rng.uniform(0, 3, 1500)])
    exact = _exact(x)
    ours, theirs = _ulps(_evaluate(x), exact), _ulps(sp.erfcx(x), exact)
    assert ours.max() <= max(theirs.max(), 8.0)
    assert ours.mean() <= theirs.mean() + 0.05
    big = np.exp(rng.uniform(np.log(50.0), np.log(1e7), 500))  # the asymptotic series
    assert _ulps(_evaluate(big), _exact(big)).max() <= 2.0
