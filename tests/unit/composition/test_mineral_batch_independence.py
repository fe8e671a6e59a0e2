"""An event's mineral ranking does not depend on the events it is ranked with."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.composition.minerals import rank_minerals


@pytest.mark.numerics
def test_scores_are_bitwise_independent_of_the_batch():
    rng = np.random.default_rng(4)
    n_events, n_el, n_cand = 300, 11, 21
    expected = rng.dirichlet(np.ones(n_el), size=n_cand)
    fractions = rng.dirichlet(np.ones(n_el), size=n_events)
    errors = rng.uniform(0.0, 0.05, size=fractions.shape)
    names = [f"m{i}" for i in range(n_cand)]
    batch = rank_minerals(fractions, errors, names, expected, block=64)
    for i in (0, 17, 299):
        alone = rank_minerals(fractions[i : i + 1], errors[i : i + 1], names, expected)
        assert alone.best_mineral[0] == batch.best_mineral[i]
        assert alone.best_mineral_score[0] == batch.best_mineral_score[i]
        assert alone.best_mixture_fraction[0] == batch.best_mixture_fraction[i]
        assert alone.best_mixture_score[0] == batch.best_mixture_score[i]
        assert np.array_equal(alone.chi2[0], batch.chi2[i])
    # and they are the scores: chi-square of the best candidate, from its definition
    w = 1.0 / (errors**2 + 0.02**2)
    chi2 = (w[:, None, :] * (fractions[:, None, :] - expected[None]) ** 2).sum(-1)
    np.testing.assert_allclose(batch.chi2, np.maximum(chi2, 0), rtol=1e-9, atol=1e-9)
    assert np.array_equal(np.argmin(batch.chi2, axis=1),
                          [names.index(n) for n in batch.best_mineral])
