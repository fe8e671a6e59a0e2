"""Species library and line assignment.

The library (``configs/species.yaml``) lists elements and molecular/cluster ions
by formula.  Every element expands into its isotope lines at least
``isotope_min_abundance_percent`` abundant; masses and natural abundances come
from :mod:`periodictable` through :mod:`idexdask.calibration.ions` (never typed).

Assignment of one peak (mass ``m``, u)
--------------------------------------
1. Candidates: library lines within ``tolerance_u`` of ``m``.
2. Pass 1, *main lines* (main isotope of each element, monoisotopic elements,
   molecules): the candidate with the largest
   ``prior * exp(-0.5 * ((m - m_line) / mass_sigma_u)**2)`` wins.
3. Pass 2, *minor isotopes* (25Mg, 26Mg, 29Si, 41K, 54Fe, ...): a peak left
   unassigned by pass 1 may go to a minor isotope line, but only when the main
   isotope of the same element was assigned in the same event.  A minor isotope
   without its main isotope is not evidence for the element.
4. Several peaks of one event may share a line (a split peak): their areas add.

Labels: ``"24Mg"`` for an isotope of an element with several isotope lines in the
library, the bare symbol (``"Na"``, ``"H"``) for an element with one, the formula
(``"SiO"``) for a molecule, ``""`` for an unassigned peak.

Element area (isotope completion)
---------------------------------
``A_X = sum(A_i over assigned isotopes of X) / sum(a_i over those isotopes)``
with ``a_i`` the natural isotopic fraction: the area the element would show over
all its isotopes if the unobserved ones follow the natural pattern.  With every
isotope observed it is the plain sum (divided by ~1); a missing minor isotope
(below noise, or taken by a molecule) costs precision, not accuracy.

Isotope pattern score
---------------------
For an element with >= 2 assigned isotopes,
``chi2 = sum_i (A_i - A_X a_i)**2 / (sigma_i**2 + (r A_X a_i)**2)`` with ``r`` the
relative scatter ``isotope_rel_sigma``; the score is the chi-square survival
probability with ``n_isotopes - 1`` degrees of freedom, in [0, 1]: ~1 for a
natural pattern, ~0 for a wrong one.  NaN with fewer than two isotopes.

Kappa
-----
Mean signed offset of the event's peak masses from the nearest integer,
``mean(m - round(m))``, u (the IDEX L2a ``tof_peak_kappa`` definition).  It is
not mass-defect corrected: exact 56Fe+ alone gives -0.066 u.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import periodictable
from scipy import special

from idexdask._logging import get_logger
from idexdask.calibration.ions import ion_mass, parse_formula
from idexdask.config import file_key, load_yaml
from idexdask.errors import AnalysisError, ConfigError

__all__ = [
    "AssignmentResult",
    "Line",
    "SpeciesLibrary",
    "assign_lines",
    "isotope_pattern_score",
    "kappa",
    "load_species_library",
]

_log = get_logger(__name__)


@dataclass(frozen=True)
class Line:
    """One line of the library.

    Attributes
    ----------
    label : str
        ``"24Mg"``, ``"Na"``, ``"SiO"`` (see the module docstring).
    formula : str
        Formula as given to :func:`~idexdask.calibration.ions.ion_mass`.
    mass_u : float
        Singly charged ion mass, u.
    element : str
        Element symbol for an atomic ion, ``""`` for a molecule.
    isotope : int
        Mass number of an atomic ion, 0 for a molecule.
    abundance : float
        Natural isotopic fraction (0-1) of an atomic ion; 1 for a molecule.
    prior : float
        Prior weight, 0 < prior <= 1.
    main : bool
        True for a main line (most abundant isotope, or a molecule).
    """

    label: str
    formula: str
    mass_u: float
    element: str
    isotope: int
    abundance: float
    prior: float
    main: bool


@dataclass(frozen=True)
class SpeciesLibrary:
    """Lines sorted by mass, with per-line arrays for vectorised assignment.

    Attributes
    ----------
    lines : tuple of Line
        Sorted by ``mass_u``.
    elements : tuple of str
        Elements of the library, in file order.
    """

    lines: tuple[Line, ...]
    elements: tuple[str, ...]

    @functools.cached_property
    def mass_u(self) -> np.ndarray:
        """Line masses, u (sorted, read-only)."""
        return _frozen(np.array([line.mass_u for line in self.lines], dtype=float))

    @functools.cached_property
    def prior(self) -> np.ndarray:
        """Line prior weights (read-only)."""
        return _frozen(np.array([line.prior for line in self.lines], dtype=float))

    @functools.cached_property
    def main(self) -> np.ndarray:
        """True for main lines (read-only)."""
        return _frozen(np.array([line.main for line in self.lines], dtype=bool))

    @functools.cached_property
    def element_index(self) -> np.ndarray:
        """Index into :attr:`elements` of each line, -1 for molecules (read-only)."""
        lookup = {symbol: k for k, symbol in enumerate(self.elements)}
        return _frozen(np.array([lookup.get(line.element, -1) for line in self.lines]))

    @functools.cached_property
    def abundance(self) -> np.ndarray:
        """Natural isotopic fraction of each line (1 for molecules, read-only)."""
        return _frozen(np.array([line.abundance for line in self.lines], dtype=float))

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """Line labels, str array (read-only)."""
        return _frozen(np.array([line.label for line in self.lines], dtype=str))

    def lines_of(self, element: str) -> list[int]:
        """Indices of the isotope lines of ``element`` (empty if not in the library)."""
        return [k for k, line in enumerate(self.lines) if line.element == element]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _prior(entry: Mapping[str, Any], what: str) -> float:
    prior = entry.get("prior", 1.0)
    if isinstance(prior, bool) or not isinstance(prior, int | float) or not 0 < prior <= 1:
        raise ConfigError(f"species library: {what}: prior must lie in (0, 1], got {prior!r}")
    return float(prior)


def _element_lines(symbol: str, prior: float, min_percent: float) -> list[Line]:
    element = getattr(periodictable, symbol, None)
    if not isinstance(element, periodictable.core.Element) or symbol == "n":
        raise ConfigError(f"species library: unknown element symbol {symbol!r}")
    isotopes = [
        (int(iso), float(element[iso].abundance) / 100.0)
        for iso in element.isotopes
        if float(element[iso].abundance) >= min_percent
    ]
    if not isotopes:
        raise ConfigError(f"species library: {symbol} has no isotope >= {min_percent} % abundant")
    main_iso = max(isotopes, key=lambda pair: pair[1])[0]
    several = len(isotopes) > 1
    lines = []
    for iso, abundance in isotopes:
        formula = f"{iso}{symbol}"
        lines.append(
            Line(
                label=formula if several else symbol,
                formula=formula,
                mass_u=ion_mass(formula),
                element=symbol,
                isotope=iso,
                abundance=abundance,
                prior=prior,
                main=iso == main_iso,
            )
        )
    return lines


def _molecule_line(formula: Any, prior: float) -> Line:
    if not isinstance(formula, str) or not formula.strip():
        raise ConfigError(f"species library: molecule formula must be a string, got {formula!r}")
    text = formula.strip().rstrip("+")
    parts = parse_formula(text)  # ConfigError on a malformed formula / unknown element
    if len(parts) == 1 and parts[0].count == 1:
        raise ConfigError(f"species library: {formula!r} is an atom: list it under elements")
    return Line(text, text, ion_mass(text), "", 0, 1.0, prior, True)


def _build_library(data: Any, source: str) -> SpeciesLibrary:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with 'elements' and 'molecules'")
    unknown = sorted(set(data) - {"isotope_min_abundance_percent", "elements", "molecules"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}")
    min_percent = data.get("isotope_min_abundance_percent", 1.0)
    if isinstance(min_percent, bool) or not isinstance(min_percent, int | float) or min_percent < 0:
        raise ConfigError(f"{source}: isotope_min_abundance_percent must be a number >= 0")
    lines: list[Line] = []
    elements: list[str] = []
    for entry in data.get("elements") or []:
        if not isinstance(entry, Mapping) or "symbol" not in entry:
            raise ConfigError(f"{source}: element entries need a 'symbol', got {entry!r}")
        symbol = entry["symbol"]
        if not isinstance(symbol, str):
            raise ConfigError(f"{source}: element symbol must be a string, got {symbol!r}")
        if symbol in elements:
            raise ConfigError(f"{source}: element {symbol} listed twice")
        elements.append(symbol)
        lines.extend(_element_lines(symbol, _prior(entry, symbol), float(min_percent)))
    seen = set()
    for entry in data.get("molecules") or []:
        if not isinstance(entry, Mapping) or "formula" not in entry:
            raise ConfigError(f"{source}: molecule entries need a 'formula', got {entry!r}")
        line = _molecule_line(entry["formula"], _prior(entry, str(entry["formula"])))
        if line.label in seen:
            raise ConfigError(f"{source}: molecule {line.label} listed twice")
        seen.add(line.label)
        lines.append(line)
    if not lines:
        raise ConfigError(f"{source}: the species library is empty")
    return SpeciesLibrary(tuple(sorted(lines, key=lambda line: line.mass_u)), tuple(elements))


@functools.lru_cache(maxsize=16)
def _cached_library(path: str, mtime_ns: int) -> SpeciesLibrary:
    return _build_library(load_yaml(path), path)


def load_species_library(name_or_path: str | Path = "species.yaml") -> SpeciesLibrary:
    """Load and validate a species library (cached per file path and modification time).

    Parameters
    ----------
    name_or_path : str or Path
        File inside ``configs/`` or a path.

    Returns
    -------
    SpeciesLibrary

    Raises
    ------
    ConfigError
        Missing file, unknown element symbol, malformed formula, bad prior.
    """
    return _cached_library(*file_key(name_or_path))


# --------------------------------------------------------------------------- core


def assign_peaks(
    peak_event: np.ndarray,
    peak_mass: np.ndarray,
    n_events: int,
    library: SpeciesLibrary,
    *,
    tolerance_u: float | np.ndarray,
    mass_sigma_u: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Assign many events' peaks at once (vectorised over peaks).

    Parameters
    ----------
    peak_event : ndarray of int, shape (n_peaks,)
        Event index of each peak, 0 <= index < n_events.
    peak_mass : ndarray of float, shape (n_peaks,)
        Peak masses, u (NaN: not assignable).
    n_events : int
        Number of events.
    library : SpeciesLibrary
    tolerance_u : float or ndarray of float, shape (n_peaks,)
        Largest peak-to-line distance, u, for all peaks or per peak.  A line
        further than this is never assigned, however few candidates there are.
    mass_sigma_u : float
        Closeness scale of the tie-break, u.

    Returns
    -------
    line : ndarray of int, shape (n_peaks,)
        Index into ``library.lines``, -1 when unassigned.
    ambiguous : ndarray of bool, shape (n_peaks,)
        True when another admissible library line lay within the tolerance.
    """
    n_peaks = peak_mass.size
    line = np.full(n_peaks, -1, dtype=np.int64)
    ambiguous = np.zeros(n_peaks, dtype=bool)
    if n_peaks == 0:
        return line, ambiguous
    masses = library.mass_u
    finite = np.isfinite(peak_mass)
    m = np.where(finite, peak_mass, -1.0e9)
    tol = np.broadcast_to(np.asarray(tolerance_u, dtype=float), m.shape)
    tol = np.where(np.isfinite(tol) & (tol >= 0), tol, 0.0)
    lo = np.searchsorted(masses, m - tol, side="left")
    hi = np.searchsorted(masses, m + tol, side="right")
    width = int((hi - lo).max(initial=0))
    if width == 0:
        return line, ambiguous
    idx = lo[:, np.newaxis] + np.arange(width)
    valid = idx < hi[:, np.newaxis]
    idx = np.minimum(idx, masses.size - 1)
    dm = m[:, np.newaxis] - masses[idx]
    score = library.prior[idx] * np.exp(-0.5 * (dm / mass_sigma_u) ** 2)
    rows = np.arange(n_peaks)

    main = valid & library.main[idx]
    s1 = np.where(main, score, -1.0)
    best1 = np.argmax(s1, axis=1)
    ok1 = s1[rows, best1] > 0
    line[ok1] = idx[rows, best1][ok1]

    # Elements whose main isotope is present in each event.
    n_el = len(library.elements)
    present = np.zeros((max(n_events, 1), max(n_el, 1)), dtype=bool)
    el_of_line = library.element_index
    assigned_el = np.where(line >= 0, el_of_line[np.maximum(line, 0)], -1)
    sel = assigned_el >= 0
    present[peak_event[sel], assigned_el[sel]] = True

    el_idx = el_of_line[idx]
    minor_ok = (
        valid
        & ~library.main[idx]
        & (el_idx >= 0)
        & present[peak_event[:, np.newaxis], np.maximum(el_idx, 0)]
    )
    s2 = np.where(minor_ok & ~ok1[:, np.newaxis], score, -1.0)
    best2 = np.argmax(s2, axis=1)
    ok2 = s2[rows, best2] > 0
    line[ok2] = idx[rows, best2][ok2]
    ambiguous[:] = (main | minor_ok).sum(axis=1) > 1
    ambiguous &= line >= 0
    return line, ambiguous


def isotope_pattern_score(
    areas: np.ndarray,
    abundances: np.ndarray,
    area_err: np.ndarray | None = None,
    *,
    rel_sigma: float = 0.15,
) -> np.ndarray:
    """Chi-square probability that isotope areas follow the natural pattern.

    Parameters
    ----------
    areas : ndarray, shape (..., n_isotopes)
        Observed isotope line areas, DN·µs; NaN marks an isotope not observed.
    abundances : ndarray, shape (n_isotopes,)
        Natural isotopic fractions (0-1).
    area_err : ndarray, optional
        1-sigma area uncertainties, DN·µs (same shape as ``areas``); 0 if None.
    rel_sigma : float
        Relative scatter about the pattern (dimensionless), in quadrature.

    Returns
    -------
    ndarray, shape (...)
        Survival probability in [0, 1]; NaN with fewer than two observed isotopes.
    """
    areas = np.asarray(areas, dtype=float)
    abundances = np.broadcast_to(np.asarray(abundances, dtype=float), areas.shape)
    err = np.zeros_like(areas) if area_err is None else np.asarray(area_err, dtype=float)
    seen = np.isfinite(areas)
    err = np.where(np.isfinite(err), err, 0.0)
    a_obs = np.where(seen, abundances, 0.0).sum(axis=-1)
    total = np.where(seen, areas, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = total / a_obs
        expected = scale[..., np.newaxis] * abundances
        var = err**2 + (rel_sigma * expected) ** 2
        diff2 = (np.where(seen, areas, 0.0) - expected) ** 2
        term = np.where(var > 0, diff2 / var, np.where(diff2 > 0, np.inf, 0.0))
        term = np.where(seen, term, 0.0)
    chi2 = np.where(np.isnan(term), np.inf, term).sum(axis=-1)
    dof = seen.sum(axis=-1) - 1
    # the chi-square survival function (scipy.stats.chi2.sf is this function
    # behind argument checks, and importing scipy.stats costs a worker ~0.4 s)
    out = np.where(dof >= 1, special.chdtrc(np.maximum(dof, 1), chi2), np.nan)
    return np.where(scale > 0, out, np.where(dof >= 1, 0.0, np.nan))


def kappa(
    peak_mass_u: np.ndarray, peak_event: np.ndarray | None = None, n_events: int = 1
) -> np.ndarray:
    """Mean signed offset of peak masses from the nearest integer, per event.

    Parameters
    ----------
    peak_mass_u : ndarray, shape (n_peaks,)
        Peak masses, u (NaN ignored).
    peak_event : ndarray of int, optional
        Event of each peak; all peaks in event 0 if None.
    n_events : int
        Number of events.

    Returns
    -------
    ndarray, shape (n_events,)
        ``mean(m - round(m))``, u; NaN for an event without finite masses.
    """
    mass = np.asarray(peak_mass_u, dtype=float)
    event = np.zeros(mass.size, dtype=np.int64) if peak_event is None else np.asarray(peak_event)
    finite = np.isfinite(mass)
    offset = mass[finite] - np.round(mass[finite])
    total = np.bincount(event[finite], weights=offset, minlength=n_events)
    count = np.bincount(event[finite], minlength=n_events)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class AssignmentResult:
    """Lines of one spectrum assigned to library species (see :func:`assign_lines`).

    Attributes
    ----------
    peak_species : ndarray of str, shape (n_peaks,)
        Line label per peak (``"24Mg"``, ``"Na"``, ``"SiO"``; ``""`` unassigned).
    peak_element : ndarray of str, shape (n_peaks,)
        Element symbol of an atomic line, ``""`` for molecules / unassigned.
    peak_line_mass : ndarray of float, shape (n_peaks,)
        Library mass of the assigned line, u (NaN unassigned).
    peak_ambiguous : ndarray of bool, shape (n_peaks,)
        Another admissible line lay within the tolerance.
    element_area : dict of str to float
        Isotope-completed element area, DN·µs (see the module docstring).
    element_area_err : dict of str to float
        Its 1-sigma uncertainty, DN·µs (NaN when no area errors were given).
    isotope_score : dict of str to float
        Isotope pattern score per identified element with several isotope lines
        (NaN with fewer than two assigned isotopes).
    kappa : float
        Mean offset of the peak masses from the nearest integer, u.
    """

    peak_species: np.ndarray
    peak_element: np.ndarray
    peak_line_mass: np.ndarray
    peak_ambiguous: np.ndarray
    element_area: dict[str, float]
    element_area_err: dict[str, float]
    isotope_score: dict[str, float]
    kappa: float


def line_tables(
    peak_event: np.ndarray,
    line: np.ndarray,
    peak_area: np.ndarray,
    peak_area_err: np.ndarray,
    n_events: int,
    n_lines: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-event, per-line area sums, variance sums and presence.

    Peaks with a non-finite or non-positive area are left out.

    Returns
    -------
    area, var : ndarray, shape (n_events, n_lines)
        Summed areas (DN·µs) and summed variances (DN·µs)^2.
    seen : ndarray of bool, shape (n_events, n_lines)
    """
    use = (line >= 0) & np.isfinite(peak_area) & (peak_area > 0)
    key = peak_event[use] * n_lines + line[use]
    size = n_events * n_lines
    err = np.where(np.isfinite(peak_area_err[use]), peak_area_err[use], 0.0)
    area = np.bincount(key, weights=peak_area[use], minlength=size).reshape(n_events, n_lines)
    var = np.bincount(key, weights=err**2, minlength=size).reshape(n_events, n_lines)
    seen = np.bincount(key, minlength=size).reshape(n_events, n_lines) > 0
    return area, var, seen


def element_areas(
    area: np.ndarray,
    var: np.ndarray,
    seen: np.ndarray,
    library: SpeciesLibrary,
    elements: Sequence[str],
    *,
    rel_sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotope-completed element areas and isotope pattern scores.

    Parameters
    ----------
    area, var, seen : ndarray, shape (n_events, n_lines)
        From :func:`line_tables`.
    library : SpeciesLibrary
    elements : sequence of str
        Elements wanted (an element absent from the library gives zeros).
    rel_sigma : float
        Isotope pattern relative scatter.

    Returns
    -------
    element_area, element_var, score : ndarray, shape (n_events, n_elements)
        DN·µs, (DN·µs)^2, and the pattern score (NaN: < 2 isotopes).
    """
    n_events = area.shape[0]
    out_area = np.zeros((n_events, len(elements)))
    out_var = np.zeros((n_events, len(elements)))
    score = np.full((n_events, len(elements)), np.nan)
    abundance = library.abundance
    for k, symbol in enumerate(elements):
        cols = library.lines_of(symbol)
        if not cols:
            continue
        a_obs = (seen[:, cols] * abundance[cols]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out_area[:, k] = np.where(a_obs > 0, area[:, cols].sum(axis=1) / a_obs, 0.0)
            out_var[:, k] = np.where(a_obs > 0, var[:, cols].sum(axis=1) / a_obs**2, 0.0)
        if len(cols) > 1:
            observed = np.where(seen[:, cols], area[:, cols], np.nan)
            score[:, k] = isotope_pattern_score(
                observed, abundance[cols], np.sqrt(var[:, cols]), rel_sigma=rel_sigma
            )
    return out_area, out_var, score


def assign_lines(
    peak_mass_u: Sequence[float] | np.ndarray,
    peak_area: Sequence[float] | np.ndarray,
    peak_area_err: Sequence[float] | np.ndarray | None = None,
    *,
    tolerance_u: float = 0.3,
    mass_sigma_u: float = 0.1,
    isotope_rel_sigma: float = 0.15,
    library: SpeciesLibrary | str | Path | None = None,
) -> AssignmentResult:
    """Assign the peaks of one spectrum to library species.

    Parameters
    ----------
    peak_mass_u : array_like, shape (n_peaks,)
        Peak masses, u (NaN: unassigned).
    peak_area : array_like, shape (n_peaks,)
        Peak areas, DN·µs.
    peak_area_err : array_like, optional
        1-sigma area uncertainties, DN·µs.
    tolerance_u : float
        Largest peak-to-line distance, u.
    mass_sigma_u : float
        Closeness scale of the tie-break, u.
    isotope_rel_sigma : float
        Relative scatter of isotope areas about the natural pattern.
    library : SpeciesLibrary, str or Path, optional
        Library or YAML file; default ``configs/species.yaml``.

    Returns
    -------
    AssignmentResult
    """
    lib = (
        library
        if isinstance(library, SpeciesLibrary)
        else load_species_library(library or "species.yaml")
    )
    mass = np.atleast_1d(np.asarray(peak_mass_u, dtype=float))
    area = np.atleast_1d(np.asarray(peak_area, dtype=float))
    if area.shape != mass.shape:
        raise AnalysisError(f"peak_area shape {area.shape} != peak_mass_u shape {mass.shape}")
    has_err = peak_area_err is not None
    err = np.zeros_like(area) if not has_err else np.atleast_1d(np.asarray(peak_area_err, float))
    if err.shape != mass.shape:
        raise AnalysisError(f"peak_area_err shape {err.shape} != peak_mass_u shape {mass.shape}")
    event = np.zeros(mass.size, dtype=np.int64)
    line, ambiguous = assign_peaks(
        event, mass, 1, lib, tolerance_u=tolerance_u, mass_sigma_u=mass_sigma_u
    )
    assigned = line >= 0
    safe = np.maximum(line, 0)
    species = np.where(assigned, lib.labels[safe], "")
    element = np.where(assigned, np.array([ln.element for ln in lib.lines], dtype=str)[safe], "")
    line_mass = np.where(assigned, lib.mass_u[safe], np.nan)
    tab_area, tab_var, seen = line_tables(event, line, area, err, 1, len(lib.lines))
    found = sorted({str(e) for e in element if e}, key=lib.elements.index)
    el_area, el_var, score = element_areas(
        tab_area, tab_var, seen, lib, found, rel_sigma=isotope_rel_sigma
    )
    return AssignmentResult(
        peak_species=species.astype(str),
        peak_element=element.astype(str),
        peak_line_mass=line_mass,
        peak_ambiguous=ambiguous,
        element_area={s: float(el_area[0, k]) for k, s in enumerate(found)},
        element_area_err={
            s: float(np.sqrt(el_var[0, k])) if has_err else float("nan")
            for k, s in enumerate(found)
        },
        isotope_score={s: float(score[0, k]) for k, s in enumerate(found)},
        kappa=float(kappa(mass)[0]),
    )
