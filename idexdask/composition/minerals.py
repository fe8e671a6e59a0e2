"""Mineral library (``configs/minerals.yaml``) and composition ranking.

Expected composition of a mineral: its formula's atom counts restricted to the
quantified elements (cations; O, S, H, C are not quantified, see
docs/composition.md), normalised to 1 -- a vector of cation molar fractions.
Minerals with identical vectors (magnetite Fe3O4, troilite FeS) are merged into
one candidate labelled ``"magnetite|troilite"``.

Scores (lower is better; ~1 means consistent within the uncertainties)
----------------------------------------------------------------------
With ``x`` the measured molar fractions, ``s`` their 1-sigma uncertainties and
``s0`` the model floor (``composition.model_sigma``), ``w = 1/(s**2 + s0**2)``:

* single mineral ``m``: ``chi2 = sum_e w_e (x_e - m_e)**2``, score ``chi2 / (K-1)``;
* two-mineral mixture ``f a + (1-f) b`` (``f`` in [0, 1], the fraction of the
  quantified cation atoms carried by ``a``), ``f`` fitted in closed form
  (weighted least squares, clipped), score ``chi2 / max(K-2, 1)``;

``K`` is the number of quantified elements.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.calibration.ions import parse_formula
from idexdask.config import file_key, load_yaml
from idexdask.errors import ConfigError

__all__ = [
    "Mineral",
    "MineralLibrary",
    "MineralRanking",
    "expected_fractions",
    "load_mineral_library",
    "rank_minerals",
]

_TIE_RTOL = 1e-9  # mixture chi-squares this close (relative to their sums' size) are tied


@dataclass(frozen=True)
class Mineral:
    """A mineral end-member.

    Attributes
    ----------
    name : str
    formula : str
        Integer formula, e.g. ``"Mg2SiO4"``.
    group : str
        Informative family name (``olivine``, ``feldspar``, ...).
    atoms : Mapping[str, int]
        Atom counts per formula unit.
    """

    name: str
    formula: str
    group: str
    atoms: Mapping[str, int]


@dataclass(frozen=True)
class MineralLibrary:
    """Minerals in file order plus the olivine end-member names.

    Attributes
    ----------
    minerals : tuple of Mineral
    forsterite, fayalite : str
        Names of the olivine end-members.
    mgfe_per_si : float
        (Mg+Fe)/Si of olivine (2).
    """

    minerals: tuple[Mineral, ...]
    forsterite: str
    fayalite: str
    mgfe_per_si: float


def _parse_library(data: Any, source: str) -> MineralLibrary:
    if not isinstance(data, Mapping) or not isinstance(data.get("minerals"), list):
        raise ConfigError(f"{source}: expected a mapping with a 'minerals' list")
    minerals = []
    names = set()
    for entry in data["minerals"]:
        if not isinstance(entry, Mapping) or "name" not in entry or "formula" not in entry:
            raise ConfigError(f"{source}: mineral entries need 'name' and 'formula', got {entry!r}")
        name, formula = str(entry["name"]), entry["formula"]
        if name in names:
            raise ConfigError(f"{source}: mineral {name!r} listed twice")
        if "|" in name:
            raise ConfigError(f"{source}: mineral name {name!r} may not contain '|'")
        if not isinstance(formula, str) or formula.strip().endswith("+"):
            raise ConfigError(f"{source}: mineral {name!r}: malformed formula {formula!r}")
        try:
            parts = parse_formula(formula.strip())
        except ConfigError as exc:
            raise ConfigError(f"{source}: mineral {name!r}: {exc}") from exc
        atoms: dict[str, int] = {}
        for part in parts:
            if part.isotope is not None:
                raise ConfigError(f"{source}: mineral {name!r}: no mass numbers in formulas")
            atoms[part.symbol] = atoms.get(part.symbol, 0) + part.count
        names.add(name)
        minerals.append(Mineral(name, formula.strip(), str(entry.get("group", "")), atoms))
    olivine = data.get("olivine") or {}
    forsterite = str(olivine.get("forsterite", "forsterite"))
    fayalite = str(olivine.get("fayalite", "fayalite"))
    for end_member in (forsterite, fayalite):
        if end_member not in names:
            raise ConfigError(f"{source}: olivine end-member {end_member!r} not in minerals")
    ratio = olivine.get("mgfe_per_si", 2.0)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
        raise ConfigError(f"{source}: olivine.mgfe_per_si must be a number > 0")
    return MineralLibrary(tuple(minerals), forsterite, fayalite, float(ratio))


@functools.lru_cache(maxsize=8)
def _cached_library(path: str, mtime_ns: int) -> MineralLibrary:
    return _parse_library(load_yaml(path), path)


def load_mineral_library(name_or_path: str | Path = "minerals.yaml") -> MineralLibrary:
    """Load and validate the mineral library (cached per file path and modification time).

    Raises
    ------
    ConfigError
        Malformed formula, unknown element, duplicate name, bad olivine section.
    """
    return _cached_library(*file_key(name_or_path))


def expected_fractions(
    library: MineralLibrary, elements: Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Expected molar fractions over ``elements``, identical minerals merged.

    Parameters
    ----------
    library : MineralLibrary
    elements : sequence of str
        Quantified elements.

    Returns
    -------
    names : tuple of str
        Candidate labels (``"magnetite|troilite"`` for merged minerals).
    fractions : ndarray, shape (n_candidates, n_elements)
        Rows sum to 1.

    Raises
    ------
    ConfigError
        When a mineral contains none of the quantified elements.
    """
    rows: list[np.ndarray] = []
    names: list[list[str]] = []
    for mineral in library.minerals:
        row = np.array([float(mineral.atoms.get(e, 0)) for e in elements])
        if row.sum() <= 0:
            raise ConfigError(
                f"mineral {mineral.name!r} ({mineral.formula}) contains none of the quantified "
                f"elements {list(elements)}"
            )
        row /= row.sum()
        for k, other in enumerate(rows):
            if np.allclose(other, row, atol=1e-12):
                names[k].append(mineral.name)
                break
        else:
            rows.append(row)
            names.append([mineral.name])
    return tuple("|".join(group) for group in names), np.array(rows)


@dataclass(frozen=True)
class MineralRanking:
    """Best single mineral and best two-mineral mixture per event.

    Attributes
    ----------
    best_mineral : ndarray of str, shape (n_events,)
        ``""`` where the composition is NaN.
    best_mineral_score : ndarray, shape (n_events,)
        Reduced chi-square of the best mineral.
    best_mixture : ndarray of str, shape (n_events, 2)
        Major component first.
    best_mixture_fraction : ndarray, shape (n_events,)
        Cation-mole fraction of the first component (0.5-1).
    best_mixture_score : ndarray, shape (n_events,)
        Reduced chi-square of the best mixture.
    chi2 : ndarray, shape (n_events, n_candidates)
        Chi-square of every single candidate.
    """

    best_mineral: np.ndarray
    best_mineral_score: np.ndarray
    best_mixture: np.ndarray
    best_mixture_fraction: np.ndarray
    best_mixture_score: np.ndarray
    chi2: np.ndarray


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` with every element summed over the last axis in a fixed order.

    A matrix product's rounding depends on how many rows it is given (BLAS
    blocks the work by shape), so an event's scores would change in the last
    bit with the events it is ranked with; here each element is the same
    NumPy reduction of its own row whatever the batch.
    """
    return (a[:, np.newaxis, :] * b[np.newaxis, :, :]).sum(axis=-1)


def rank_minerals(
    fractions: np.ndarray,
    fractions_err: np.ndarray | None,
    names: Sequence[str],
    expected: np.ndarray,
    *,
    model_sigma: float = 0.02,
    block: int = 512,
) -> MineralRanking:
    """Rank candidate minerals and two-mineral mixtures (vectorised over events).

    Parameters
    ----------
    fractions : ndarray, shape (n_events, n_elements)
        Measured molar fractions (rows with NaN are skipped).
    fractions_err : ndarray or None
        1-sigma uncertainties (NaN/None -> 0).
    names : sequence of str
        Candidate labels.
    expected : ndarray, shape (n_candidates, n_elements)
        Expected molar fractions (see :func:`expected_fractions`).
    model_sigma : float
        Absolute 1-sigma floor per fraction.
    block : int
        Events per block (bounds memory: block x n_pairs x n_elements floats,
        ~9 MB for the default library); the results do not depend on it.

    Returns
    -------
    MineralRanking
    """
    x = np.asarray(fractions, dtype=float)
    n_events, n_el = x.shape
    err = np.zeros_like(x) if fractions_err is None else np.asarray(fractions_err, dtype=float)
    err = np.where(np.isfinite(err), err, 0.0)
    names_arr = np.array(list(names), dtype=object)
    n_cand = expected.shape[0]
    ia, ib = np.triu_indices(n_cand, k=1)
    diff = expected[ia] - expected[ib]  # (n_pairs, K)

    best = np.full(n_events, "", dtype=object)
    best_score = np.full(n_events, np.nan)
    mix = np.full((n_events, 2), "", dtype=object)
    mix_f = np.full(n_events, np.nan)
    mix_score = np.full(n_events, np.nan)
    chi2_all = np.full((n_events, n_cand), np.nan)
    good = np.all(np.isfinite(x), axis=1)
    dof1 = max(n_el - 1, 1)
    dof2 = max(n_el - 2, 1)
    rows_all = np.flatnonzero(good)
    for start in range(0, rows_all.size, block):
        rows = rows_all[start : start + block]
        xb = x[rows]
        w = 1.0 / np.maximum(err[rows] ** 2 + model_sigma**2, 1e-30)
        # chi2 of single candidates: sum w x^2 - 2 (w x) M^T + w (M^2)^T
        wxx = (w * xb**2).sum(1)[:, None]
        chi2 = wxx - 2 * _row_dots(w * xb, expected) + _row_dots(w, expected**2)
        chi2 = np.maximum(chi2, 0.0)
        chi2_all[rows] = chi2
        k = np.argmin(chi2, axis=1)
        best[rows] = names_arr[k]
        best_score[rows] = chi2[np.arange(rows.size), k] / dof1
        if ia.size == 0:
            continue
        # mixture f a + (1-f) b: r = x - b, f = sum w r d / sum w d^2
        num = _row_dots(w * xb, diff) - _row_dots(w, expected[ib] * diff)
        den = _row_dots(w, diff**2)
        f = np.clip(num / np.maximum(den, 1e-30), 0.0, 1.0)
        chi2_mix = chi2[:, ib] - 2 * f * num + f**2 * den
        chi2_mix = np.maximum(chi2_mix, 0.0)
        # Mixtures on the same join (fayalite + silica and ferrosilite +
        # magnetite|troilite both span Fe-Si) fit equally well when the measured
        # point projects inside both: their chi-squares differ by rounding only,
        # of the expanded sums above (~1e-16 of sum w x^2).  Such ties go to the
        # first pair in library order, so rounding never picks the mixture.
        lowest = chi2_mix.min(axis=1, keepdims=True)
        slack = _TIE_RTOL * (lowest + wxx)
        p = np.argmax(chi2_mix <= lowest + slack, axis=1)
        fp = f[np.arange(rows.size), p]
        first_is_a = fp >= 0.5
        mix[rows, 0] = np.where(first_is_a, names_arr[ia[p]], names_arr[ib[p]])
        mix[rows, 1] = np.where(first_is_a, names_arr[ib[p]], names_arr[ia[p]])
        mix_f[rows] = np.where(first_is_a, fp, 1.0 - fp)
        mix_score[rows] = chi2_mix[np.arange(rows.size), p] / dof2
    return MineralRanking(
        best_mineral=best.astype(str),
        best_mineral_score=best_score,
        best_mixture=mix.astype(str),
        best_mixture_fraction=mix_f,
        best_mixture_score=mix_score,
        chi2=chi2_all,
    )
