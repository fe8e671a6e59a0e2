"""Mineral library and ranking of cation molar fractions."""

from __future__ import annotations

import numpy as np
import pytest

from idexdask.composition import (
    expected_fractions,
    load_mineral_library,
    rank_minerals,
)
from idexdask.config import load_config
from idexdask.errors import ConfigError

ELEMENTS = tuple(load_config()["composition"]["elements"])


@pytest.fixture(scope="module")
def table():
    return expected_fractions(load_mineral_library(), ELEMENTS)


def test_library_loads_with_required_minerals():
    lib = load_mineral_library()
    names = {m.name for m in lib.minerals}
    required = {
        "forsterite", "fayalite", "enstatite", "ferrosilite", "diopside", "hedenbergite",
        "wollastonite", "albite", "anorthite", "orthoclase", "spinel", "silica", "magnetite",
        "troilite",
    }  # fmt: skip
    assert required <= names
    assert lib.forsterite == "forsterite" and lib.fayalite == "fayalite"
    assert dict(next(m for m in lib.minerals if m.name == "anorthite").atoms) == {
        "Ca": 1, "Al": 2, "Si": 2, "O": 8,
    }  # fmt: skip


def test_expected_cation_fractions(table):
    names, expected = table
    assert np.allclose(expected.sum(axis=1), 1.0)
    row = dict(zip(ELEMENTS, expected[names.index("forsterite")], strict=True))
    assert row["Mg"] == pytest.approx(2 / 3) and row["Si"] == pytest.approx(1 / 3)
    row = dict(zip(ELEMENTS, expected[names.index("albite")], strict=True))
    assert (row["Na"], row["Al"], row["Si"]) == pytest.approx((0.2, 0.2, 0.6))
    # O and S are not quantified: magnetite and troilite are both pure Fe, merged
    assert "magnetite|troilite" in names
    assert "magnetite" not in names and "troilite" not in names


def test_each_mineral_ranks_itself_first(table):
    names, expected = table
    ranking = rank_minerals(expected, None, names, expected, model_sigma=0.02)
    assert list(ranking.best_mineral) == list(names)
    assert np.allclose(ranking.best_mineral_score, 0.0, atol=1e-9)


def test_mixture_fit_recovers_fraction(table):
    names, expected = table
    a, b = names.index("forsterite"), names.index("anorthite")
    for f in (0.5, 0.7, 0.9):
        x = f * expected[a] + (1 - f) * expected[b]
        r = rank_minerals(x[None], None, names, expected)
        assert set(r.best_mixture[0]) == {"forsterite", "anorthite"}
        assert r.best_mixture[0][0] == ("forsterite" if f >= 0.5 else "anorthite")
        assert r.best_mixture_fraction[0] == pytest.approx(max(f, 1 - f), abs=1e-9)
        assert r.best_mixture_score[0] == pytest.approx(0.0, abs=1e-9)
    # the olivine series as a mixture of its end-members: Fo90
    fo, fa = names.index("forsterite"), names.index("fayalite")
    x = 0.9 * expected[fo] + 0.1 * expected[fa]
    r = rank_minerals(x[None], None, names, expected)
    assert list(r.best_mixture[0]) == ["forsterite", "fayalite"]
    assert r.best_mixture_fraction[0] == pytest.approx(0.9)


def test_equivalent_mixtures_tie_to_library_order(table):
    """On the Fe-Si join several mixtures (fayalite + ferrosilite, fayalite + silica,
    ferrosilite + magnetite|troilite, ...) fit a point exactly: rounding must not
    choose between them; the first such pair in library order is reported."""
    names, expected = table
    fs, fa = expected[names.index("ferrosilite")], expected[names.index("fayalite")]
    rng = np.random.default_rng(0)
    for f in (0.3, 0.5, 0.8):
        x = f * fs + (1 - f) * fa
        exact = []  # pairs whose segment holds x, in library order (independent geometry)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                d = expected[a] - expected[b]
                t = np.dot(x - expected[b], d) / np.dot(d, d)
                if 0 <= t <= 1 and np.allclose(t * d + expected[b], x, atol=1e-12):
                    exact.append({names[a], names[b]})
        assert len(exact) >= 3  # the tie is real
        jitter = x * (1 + rng.uniform(-1e-13, 1e-13, (64, x.size)))  # rounding-level noise
        ranking = rank_minerals(np.vstack([x, jitter]), None, names, expected)
        assert np.all(ranking.best_mixture_score < 1e-9)
        assert all(set(m) == exact[0] for m in ranking.best_mixture)


def test_uncertainties_weight_the_ranking(table):
    names, expected = table
    x = np.array([np.where(np.array(ELEMENTS) == "Si", 1.0, 0.0)])
    small = rank_minerals(x, np.full_like(x, 0.001), names, expected, model_sigma=0.0)
    large = rank_minerals(x, np.full_like(x, 0.1), names, expected, model_sigma=0.0)
    assert small.best_mineral[0] == "silica" == large.best_mineral[0]
    assert small.chi2[0].max() > 100 * large.chi2[0].max()


def test_nan_rows_are_skipped(table):
    names, expected = table
    x = np.vstack([expected[0], np.full(len(ELEMENTS), np.nan)])
    r = rank_minerals(x, None, names, expected)
    assert r.best_mineral[1] == "" and np.isnan(r.best_mineral_score[1])
    assert np.isnan(r.best_mixture_fraction[1]) and list(r.best_mixture[1]) == ["", ""]


def _write(tmp_path, text):
    path = tmp_path / "minerals.yaml"
    path.write_text(text)
    return str(path)


OLIVINE = "  - {name: forsterite, formula: Mg2SiO4}\n  - {name: fayalite, formula: Fe2SiO4}\n"


def _load(tmp_path, body):
    return load_mineral_library(_write(tmp_path, "minerals:\n" + body))


def test_minerals_yaml_validation(tmp_path):
    with pytest.raises(ConfigError, match="cannot parse"):
        _load(tmp_path, OLIVINE + "  - {name: x, formula: '(Mg,Fe)2SiO4'}\n")
    with pytest.raises(ConfigError, match="unknown element"):
        _load(tmp_path, OLIVINE + "  - {name: x, formula: XqO2}\n")
    with pytest.raises(ConfigError, match="olivine end-member"):
        _load(tmp_path, "  - {name: enstatite, formula: MgSiO3}\n")
    with pytest.raises(ConfigError, match="twice"):
        _load(tmp_path, OLIVINE + OLIVINE)
    lib = _load(tmp_path, OLIVINE + "  - {name: ice, formula: H2O}\n")
    with pytest.raises(ConfigError, match="none of the quantified"):
        expected_fractions(lib, ELEMENTS)
