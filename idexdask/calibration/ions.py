"""Ion masses for the time-of-flight calibration, built from chemical formulas.

Every mass comes from :mod:`periodictable` (isotope masses, IUPAC abundances);
none is typed by hand.  A singly charged cation weighs its neutral formula less
one electron mass (``periodictable.constants.electron_mass``, 0.000548579909 u).

Formula syntax (a deliberately small grammar)
---------------------------------------------
A formula is a sequence of ``[mass number]Symbol[count]`` groups, optionally
followed by a charge suffix ``+`` (one or more; ``++`` is doubly charged)::

    "Na", "SiO", "H3O", "C2", "24Mg", "56FeO", "Ca++"

An element written without a mass number contributes its *most abundant*
isotope (the monoisotopic convention of mass spectrometry), so ``"FeO"`` means
56Fe16O.  Parentheses, hydrates and ``-`` charges are not supported.

Examples
--------
>>> round(ion_mass("Na"), 6)
22.989221
>>> ion_label("24Mg")
'24Mg+'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import periodictable
from periodictable import constants as _pt_constants

from idexdask.errors import ConfigError

__all__ = [
    "ELECTRON_MASS_U",
    "Ion",
    "FormulaPart",
    "parse_formula",
    "ion_mass",
    "ion_label",
    "isotopologues",
    "build_ion_table",
]

#: Electron rest mass, u (CODATA, via periodictable).
ELECTRON_MASS_U: float = float(_pt_constants.electron_mass)

_GROUP = re.compile(r"(\d*)([A-Z][a-z]?)(\d*)")
_CHARGE = re.compile(r"\+*$")


@dataclass(frozen=True)
class FormulaPart:
    """One ``[A]Symbol[n]`` group of a formula.

    Attributes
    ----------
    symbol : str
        Element symbol, e.g. ``"Fe"``.
    isotope : int or None
        Mass number, or None for the most abundant isotope.
    count : int
        Number of atoms (>= 1).
    """

    symbol: str
    isotope: int | None
    count: int


@dataclass(frozen=True)
class Ion:
    """A comb or reference ion.

    Attributes
    ----------
    label : str
        Display label, e.g. ``"Fe+"``, ``"54Fe+"``, ``"SiO+"``.
    formula : str
        Formula as parsed (charge suffix removed).
    mass_u : float
        Mass-to-charge ratio, u per elementary charge (u for singly charged).
    weight : float
        Expected relative prominence (dimensionless, > 0), used to score matches.
    """

    label: str
    formula: str
    mass_u: float
    weight: float


def _split_charge(formula: str) -> tuple[str, int]:
    text = formula.strip()
    suffix = _CHARGE.search(text)
    charge = len(suffix.group(0)) if suffix else 0
    return text[: len(text) - charge], max(charge, 1)


@functools.lru_cache(maxsize=512)
def parse_formula(formula: str) -> tuple[FormulaPart, ...]:
    """Parse a formula such as ``"SiO"``, ``"H3O"``, ``"24Mg"`` or ``"C2"``.

    Parameters
    ----------
    formula : str
        Formula, optionally with a trailing charge suffix (``"+"``) that is ignored
        here (see :func:`ion_mass`).

    Returns
    -------
    tuple of FormulaPart
        The groups in order of appearance.

    Raises
    ------
    ConfigError
        On an empty formula, an unknown element, an isotope that does not exist,
        a zero count or unparsable text.
    """
    body, _ = _split_charge(formula)
    if not body:
        raise ConfigError(f"empty ion formula {formula!r}")
    parts: list[FormulaPart] = []
    pos = 0
    while pos < len(body):
        match = _GROUP.match(body, pos)
        if match is None or match.end() == pos:
            raise ConfigError(f"cannot parse ion formula {formula!r} at {body[pos:]!r}")
        iso_text, symbol, count_text = match.groups()
        element = getattr(periodictable, symbol, None)
        if not isinstance(element, periodictable.core.Element):
            raise ConfigError(f"ion formula {formula!r}: unknown element {symbol!r}")
        isotope = int(iso_text) if iso_text else None
        if isotope is not None and isotope not in element.isotopes:
            raise ConfigError(f"ion formula {formula!r}: no isotope {isotope}{symbol}")
        count = int(count_text) if count_text else 1
        if count < 1:
            raise ConfigError(f"ion formula {formula!r}: zero atom count for {symbol}")
        parts.append(FormulaPart(symbol, isotope, count))
        pos = match.end()
    return tuple(parts)


def _main_isotope(symbol: str) -> int:
    element = getattr(periodictable, symbol)
    best = max(element.isotopes, key=lambda iso: element[iso].abundance)
    if element[best].abundance <= 0:
        raise ConfigError(f"{symbol} has no stable isotope: give a mass number")
    return int(best)


def _isotope_mass(symbol: str, isotope: int | None) -> float:
    element = getattr(periodictable, symbol)
    iso = _main_isotope(symbol) if isotope is None else isotope
    return float(element[iso].mass)


@functools.lru_cache(maxsize=512)
def ion_mass(formula: str, charge: int | None = None) -> float:
    """Mass-to-charge ratio of a cation, u per elementary charge.

    Parameters
    ----------
    formula : str
        Formula (see module docstring); a trailing ``+``/``++`` sets the charge.
    charge : int, optional
        Charge state (>= 1); overrides the suffix.  Default: suffix, else 1.

    Returns
    -------
    float
        ``(sum of isotope masses - charge * m_e) / charge``, u.
    """
    _, suffix_charge = _split_charge(formula)
    z = suffix_charge if charge is None else int(charge)
    if z < 1:
        raise ConfigError(f"ion {formula!r}: charge must be >= 1, got {z}")
    neutral = sum(_isotope_mass(p.symbol, p.isotope) * p.count for p in parse_formula(formula))
    return (neutral - z * ELECTRON_MASS_U) / z


def ion_label(formula: str) -> str:
    """Canonical display label: the formula with its charge suffix, e.g. ``"H3O+"``."""
    body, z = _split_charge(formula)
    return body + "+" * z


def isotopologues(formula: str, min_abundance_percent: float) -> list[tuple[str, float]]:
    """Minor isotopes of a single-element ion, with their abundance ratios.

    Parameters
    ----------
    formula : str
        A single-atom formula without mass number (``"Mg"``); anything else
        (molecules, explicit isotopes) yields no isotopologues.
    min_abundance_percent : float
        Keep isotopes at least this abundant, % (natural abundance).

    Returns
    -------
    list of (str, float)
        ``("25Mg", 0.1268)``: formula and abundance relative to the main isotope.
    """
    body, z = _split_charge(formula)
    parts = parse_formula(body)
    if len(parts) != 1 or parts[0].count != 1 or parts[0].isotope is not None:
        return []
    symbol = parts[0].symbol
    element = getattr(periodictable, symbol)
    main = _main_isotope(symbol)
    main_abundance = float(element[main].abundance)
    out = []
    for iso in sorted(element.isotopes):
        abundance = float(element[iso].abundance)
        if iso != main and abundance >= min_abundance_percent:
            out.append((f"{iso}{symbol}" + "+" * (z if z > 1 else 0), abundance / main_abundance))
    return out


@functools.lru_cache(maxsize=64)
def _cached_table(entries: tuple[tuple[str, float], ...]) -> tuple[Ion, ...]:
    ions = []
    for formula, weight in entries:
        if not weight > 0:
            raise ConfigError(f"ion {formula!r}: weight must be > 0, got {weight!r}")
        body, _ = _split_charge(formula)
        ions.append(Ion(ion_label(formula), body, ion_mass(formula), float(weight)))
    return tuple(sorted(ions, key=lambda ion: ion.mass_u))


def build_ion_table(entries: Iterable[tuple[str, float]] | Sequence[Ion]) -> tuple[Ion, ...]:
    """Turn ``(formula, weight)`` pairs into :class:`Ion` records sorted by mass.

    Parameters
    ----------
    entries : iterable of (str, float)
        Formula and relative prominence weight (> 0).

    Returns
    -------
    tuple of Ion
        Cached, immutable, sorted by ``mass_u``.
    """
    key = tuple((str(f), float(w)) for f, w in entries)
    return _cached_table(key)
