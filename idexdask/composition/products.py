"""Per-event composition products for the pipeline (vectorised across events).

See ``docs/composition.md`` for every name, unit and convention.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.composition.minerals import expected_fractions, load_mineral_library, rank_minerals
from idexdask.composition.rsf import rsf_values
from idexdask.composition.settings import CompositionSettings, composition_settings
from idexdask.composition.species import (
    assign_peaks,
    element_areas,
    kappa,
    line_tables,
    load_species_library,
)
from idexdask.config import file_key
from idexdask.errors import AnalysisError

__all__ = [
    "CompositionStatus",
    "STATUS_MEANINGS",
    "composition_products",
    "composition_variables",
    "mg_number",
    "molar_fractions",
    "ternary",
]

_log = get_logger(__name__)

_Spec = tuple[Any, ...]  # (dims, values[, attrs]), as xarray.Dataset takes them


class CompositionStatus(enum.IntEnum):
    """``composition_status`` values (CF ``flag_values`` / ``flag_meanings``)."""

    OK = 0  #: at least one quantified element identified
    NO_LINES = 1  #: the event has no peak with a finite, positive area
    UNIDENTIFIED = 2  #: peaks, but none assigned to a quantified element
    UNCALIBRATED = 3  #: no mass scale (calibrated=False, or every peak mass NaN)


#: Space-separated meanings, in value order.
STATUS_MEANINGS = "ok no_lines unidentified uncalibrated"


def molar_fractions(
    element_area: np.ndarray,
    element_area_var: np.ndarray,
    rsf: np.ndarray,
    rsf_rel_err: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Element molar fractions from element areas: ``n = A / RSF``, ``x = n / sum(n)``.

    Parameters
    ----------
    element_area : ndarray, shape (n_events, n_elements)
        Isotope-completed element areas, DN·µs (0: element not seen).
    element_area_var : ndarray, shape (n_events, n_elements)
        Their variances, (DN·µs)^2.
    rsf : ndarray, shape (n_elements,)
        RSF relative to Si (abundance ∝ area / RSF).
    rsf_rel_err : ndarray, optional
        Relative 1-sigma RSF uncertainties, propagated when given.

    Returns
    -------
    x, x_err : ndarray, shape (n_events, n_elements)
        Molar fractions (sum 1 per event) and 1-sigma uncertainties; NaN rows
        where no element has a positive area.
    n, n_var : ndarray, shape (n_events, n_elements)
        RSF-corrected abundances (DN·µs, relative to Si) and their variances.

    Notes
    -----
    Independent ``n_k`` give ``var(x_e) = [(1 - 2 x_e) var(n_e) + x_e**2 sum_k var(n_k)] / N**2``
    with ``N = sum_k n_k`` (first-order propagation through the normalisation).
    """
    area = np.asarray(element_area, dtype=float)
    n = area / rsf
    n_var = np.asarray(element_area_var, dtype=float) / rsf**2
    if rsf_rel_err is not None:
        n_var = n_var + (n * rsf_rel_err) ** 2
    total = n.sum(axis=1, keepdims=True)
    ok = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(ok, n / total, np.nan)
        var = ((1.0 - 2.0 * x) * n_var + x**2 * n_var.sum(axis=1, keepdims=True)) / total**2
    x_err = np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.nan)
    return x, x_err, n, n_var


def mg_number(
    n_mg: np.ndarray, n_fe: np.ndarray, var_mg: np.ndarray, var_fe: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mg# = Mg/(Mg+Fe) (molar) with its first-order 1-sigma uncertainty.

    Returns NaN where Mg + Fe = 0.
    """
    total = n_mg + n_fe
    ok = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(ok, n_mg / total, np.nan)
        var = (n_fe**2 * var_mg + n_mg**2 * var_fe) / total**4
    return value, np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.nan)


def ternary(parts: np.ndarray) -> np.ndarray:
    """Normalise three molar amounts to ternary coordinates (sum 1; NaN if all 0).

    Parameters
    ----------
    parts : ndarray, shape (..., 3)

    Returns
    -------
    ndarray, shape (..., 3)
    """
    parts = np.asarray(parts, dtype=float)
    total = parts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, parts / total, np.nan)


def _peak_arrays(peaks: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str]:
    get = peaks.__getitem__
    names = peaks.data_vars if isinstance(peaks, xr.Dataset) else peaks
    missing = [k for k in ("peak_event", "peak_mass", "peak_area") if k not in names]
    if missing:
        raise AnalysisError(f"composition_products: peaks lack {missing}")
    dim = "peak"
    if isinstance(peaks, xr.Dataset) or isinstance(get("peak_mass"), xr.Variable):
        dims = get("peak_mass").dims  # a Dataset, or bare Variables (from analyze)
        if len(dims) != 1:
            raise AnalysisError(f"peak_mass must be 1-D, has dims {dims}")
        dim = str(dims[0])
    event = np.asarray(get("peak_event")).astype(np.int64).ravel()
    mass = np.asarray(get("peak_mass"), dtype=float).ravel()
    area = np.asarray(get("peak_area"), dtype=float).ravel()
    err = (
        np.asarray(get("peak_area_err"), dtype=float).ravel() if "peak_area_err" in names else None
    )
    sizes = {event.size, mass.size, area.size} | ({err.size} if err is not None else set())
    if len(sizes) != 1:
        raise AnalysisError("peak_event, peak_mass, peak_area(_err) differ in length")
    return event, mass, area, err, dim


@functools.lru_cache(maxsize=8)
def _candidates(
    path: str, mtime_ns: int, elements: tuple[str, ...]
) -> tuple[tuple[str, ...], np.ndarray]:
    """:func:`expected_fractions` of a mineral file version (read-only result).

    Keyed, like the libraries themselves, by the file's path and modification
    time and by the (immutable) element tuple: the candidates depend on nothing
    else, and deduplicating them costs ~1600 ``numpy.allclose`` calls (~5 ms), a
    fixed cost of every batch otherwise.
    """
    names, expected = expected_fractions(load_mineral_library(path), elements)
    expected.setflags(write=False)
    return names, expected


def _manual_species(peaks: Any, n_peaks: int) -> np.ndarray | None:
    """``peak_species_by_hand`` of the peaks (species assigned by hand), if given.

    Labels per peak: ``""`` automatic, ``"none"`` assigned to no species.  From a
    stored dataset: ``where(peak_species_manual, where(peak_species == "", "none",
    peak_species), "")``.
    """
    names = peaks.data_vars if isinstance(peaks, xr.Dataset) else peaks
    if "peak_species_by_hand" not in names:
        return None
    manual = np.asarray(peaks["peak_species_by_hand"]).astype(str).ravel()
    if manual.size != n_peaks:
        raise AnalysisError("peak_species_by_hand differs in length from peak_event")
    return manual if (manual != "").any() else None


def _assign_by_hand(
    event: np.ndarray,
    line: np.ndarray,
    ambiguous: np.ndarray,
    manual: np.ndarray,
    library: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The automatic assignment with the hand-assigned species put in.

    A peak given a library label takes that line (not ambiguous); any other peak
    of the event the automatic assignment gave the same line loses it (the
    person's choice wins).  ``"none"`` unassigns the peak.  A label not in the
    library is kept as the peak's species but quantifies nothing.

    Returns
    -------
    line, ambiguous, unlisted : numpy.ndarray
        Library line per peak (-1 none), ambiguity, and the peaks whose hand
        label is not in the library.
    """
    line = line.copy()
    ambiguous = np.asarray(ambiguous, dtype=bool).copy()
    by_hand = manual != ""
    lookup = {str(label): i for i, label in enumerate(library.labels)}
    for i, ln in enumerate(library.lines):  # "Mg" names the main line of Mg (24Mg)
        if ln.element and ln.main:
            lookup.setdefault(ln.element, i)
    unlisted = np.zeros(line.size, bool)
    for k in np.nonzero(by_hand)[0]:
        label = str(manual[k])
        idx = lookup.get(label, -1)
        if idx >= 0:
            line[(event == event[k]) & (line == idx) & ~by_hand] = -1
        elif label != "none":
            unlisted[k] = True
            _log.info("peak %d: species %r assigned by hand is not in the species library; "
                      "it is kept but quantifies no element", k, label)
        line[k] = idx
        ambiguous[k] = False
    return line, ambiguous, unlisted


def _index(elements: tuple[str, ...], symbol: str) -> int | None:
    return elements.index(symbol) if symbol in elements else None


def composition_products(
    peaks: xr.Dataset | Mapping[str, Any],
    n_events: int,
    config: Mapping[str, Any] | CompositionSettings | None = None,
    *,
    calibrated: np.ndarray | None = None,
) -> xr.Dataset:
    """Composition products of many events from their calibrated peak lists.

    Parameters
    ----------
    peaks : xarray.Dataset or mapping of arrays
        ``peak_event`` (int, event index 0..n_events-1), ``peak_mass`` (u; NaN for
        an uncalibrated event), ``peak_area`` (DN·µs) and optionally
        ``peak_area_err`` (DN·µs, 1-sigma), ``peak_mass_tolerance`` (u: the
        calibration's time tolerance at the line; a line is named only within
        it and within ``mass_tolerance_u``) and ``peak_species_by_hand`` (str:
        species a person assigned, ``""`` automatic, ``"none"`` no species; it
        replaces the automatic assignment), all along one ``peak`` dimension.
    n_events : int
        Number of events (length of ``epoch``).
    config : mapping or CompositionSettings, optional
        Whole configuration or its ``composition`` section (defaults otherwise).
    calibrated : ndarray of bool, shape (n_events,), optional
        False marks an event without a usable mass scale (status UNCALIBRATED).

    Returns
    -------
    xarray.Dataset
        Dimensions ``epoch``, the peak dimension of the input, ``element``,
        ``mg_si_fe``, ``mg_fe_ca``, ``mixture_member``; variables listed in
        docs/composition.md.

    Raises
    ------
    AnalysisError
        Missing or misshapen peak arrays, event index out of range.
    ConfigError
        Invalid settings, unknown RSF preset, element without an RSF.
    """
    data_vars, coords, attrs = _composition_parts(peaks, n_events, config, calibrated)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def composition_variables(
    peaks: xr.Dataset | Mapping[str, Any],
    n_events: int,
    config: Mapping[str, Any] | CompositionSettings | None = None,
    *,
    calibrated: np.ndarray | None = None,
) -> tuple[dict[str, xr.Variable], frozenset[str]]:
    """The variables of :func:`composition_products`, without building their Dataset.

    For callers that add them to a dataset of their own (:func:`idexdask.analyze`):
    one ``assign`` of bare Variables there is much cheaper than merging a Dataset.

    Parameters
    ----------
    peaks, n_events, config, calibrated
        As for :func:`composition_products`; ``peaks`` may also map names to
        :class:`xarray.Variable` objects (their dimension is the peak dimension).

    Returns
    -------
    variables : dict of str to xarray.Variable
        In the order of the variables of :func:`composition_products`'s Dataset:
        data variables, then coordinates.
    coordinates : frozenset of str
        Which of them are coordinates (``element``, ``rsf``, ``mg_si_fe``,
        ``mg_fe_ca``, ``mixture_member``).

    Raises
    ------
    AnalysisError, ConfigError
        As :func:`composition_products`.
    """
    data_vars, coords, _ = _composition_parts(peaks, n_events, config, calibrated)
    variables = {name: xr.Variable(*spec) for name, spec in data_vars.items()}
    variables.update((name, xr.Variable(*spec)) for name, spec in coords.items())
    return variables, frozenset(coords)


def _composition_parts(
    peaks: xr.Dataset | Mapping[str, Any],
    n_events: int,
    config: Mapping[str, Any] | CompositionSettings | None,
    calibrated: np.ndarray | None,
) -> tuple[dict[str, _Spec], dict[str, _Spec], dict[str, Any]]:
    """Data variables, coordinates and attributes of :func:`composition_products`."""
    settings = composition_settings(config)
    event, mass, area, err, peak_dim = _peak_arrays(peaks)
    n_events = int(n_events)
    if n_events < 0:
        raise AnalysisError(f"n_events must be >= 0, got {n_events}")
    if event.size and (event.min() < 0 or event.max() >= n_events):
        raise AnalysisError(f"peak_event outside 0..{n_events - 1}")
    has_err = err is not None
    err_arr = err if err is not None else np.zeros_like(area)

    library = load_species_library(settings.species_file)
    elements = settings.elements
    rsf, rsf_rel = rsf_values(settings.rsf_preset, elements, rsf_file=settings.rsf_file)
    minerals = load_mineral_library(settings.minerals_file)
    cand_names, cand_expected = _candidates(*file_key(settings.minerals_file), elements)

    # Assignment: within mass_tolerance_u, and within the calibration's time
    # tolerance expressed in u at the line where the calibration gives it (at
    # low mass a fixed 0.3 u spans far more than the calibration's accuracy)
    tolerance = np.full(event.size, settings.mass_tolerance_u)
    names = peaks.data_vars if isinstance(peaks, xr.Dataset) else peaks
    if "peak_mass_tolerance" in names:
        own = np.asarray(peaks["peak_mass_tolerance"], dtype=float).ravel()
        if own.size != event.size:
            raise AnalysisError("peak_mass_tolerance and peak_mass differ in length")
        tolerance = np.fmin(tolerance, own)
    line, ambiguous = assign_peaks(
        event,
        mass,
        n_events,
        library,
        tolerance_u=tolerance,
        mass_sigma_u=settings.mass_sigma_u,
    )
    manual = _manual_species(peaks, event.size)
    unlisted = np.zeros(event.size, bool)
    if manual is not None:
        line, ambiguous, unlisted = _assign_by_hand(event, line, ambiguous, manual, library)
    safe = np.maximum(line, 0)
    assigned = line >= 0
    peak_species = np.where(assigned, library.labels[safe], "").astype(object)
    peak_species[unlisted] = manual[unlisted] if manual is not None else ""
    peak_species = peak_species.astype(str)
    line_element = np.array([ln.element for ln in library.lines], dtype=str)
    peak_element = np.where(assigned, line_element[safe], "").astype(str)

    # Element areas and fractions.
    tab_area, tab_var, seen = line_tables(event, line, area, err_arr, n_events, len(library.lines))
    el_area, el_var, iso_score = element_areas(
        tab_area, tab_var, seen, library, elements, rel_sigma=settings.isotope_rel_sigma
    )
    x, x_err, n, n_var = molar_fractions(
        el_area, el_var, rsf, rsf_rel if settings.include_rsf_uncertainty else None
    )
    if not has_err and not settings.include_rsf_uncertainty:
        x_err = np.full_like(x, np.nan)

    # Status.
    usable_area = np.isfinite(area) & (area > 0)
    n_usable = np.bincount(event[usable_area], minlength=n_events)
    n_finite_mass = np.bincount(event[usable_area & np.isfinite(mass)], minlength=n_events)
    status = np.full(n_events, CompositionStatus.OK, dtype=np.int8)
    status[~np.isfinite(x).all(axis=1)] = CompositionStatus.UNIDENTIFIED
    status[n_usable == 0] = CompositionStatus.NO_LINES
    uncal = (n_usable > 0) & (n_finite_mass == 0)
    if calibrated is not None:
        cal = np.asarray(calibrated, dtype=bool).ravel()
        if cal.size != n_events:
            raise AnalysisError(f"calibrated has {cal.size} values for {n_events} events")
        uncal |= ~cal
    status[uncal] = CompositionStatus.UNCALIBRATED
    bad = status != CompositionStatus.OK
    x[bad] = np.nan
    x_err[bad] = np.nan
    iso_score[bad] = np.nan

    # Mg#, ternaries, olivine Fo.
    i_mg, i_fe, i_si, i_ca = (_index(elements, s) for s in ("Mg", "Fe", "Si", "Ca"))
    nan = np.full(n_events, np.nan)

    def col(array: np.ndarray, i: int | None) -> np.ndarray:
        return nan.copy() if i is None else np.where(bad, np.nan, array[:, i])

    mg, mg_err = mg_number(col(n, i_mg), col(n, i_fe), col(n_var, i_mg), col(n_var, i_fe))
    if not has_err and not settings.include_rsf_uncertainty:
        mg_err = np.full_like(mg, np.nan)
    tern_msf = ternary(np.stack([col(x, i_mg), col(x, i_si), col(x, i_fe)], axis=-1))
    tern_mfc = ternary(np.stack([col(x, i_mg), col(x, i_fe), col(x, i_ca)], axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (col(x, i_mg) + col(x, i_fe)) / col(x, i_si)
    olivine_like = np.abs(ratio - minerals.mgfe_per_si) <= settings.olivine_ratio_tolerance
    fo = np.where(olivine_like, 100.0 * mg, np.nan)
    fo_err = np.where(olivine_like, 100.0 * mg_err, np.nan)

    ranking = rank_minerals(x, x_err, cand_names, cand_expected, model_sigma=settings.model_sigma)

    k = kappa(mass, event, n_events)
    n_bad = int(bad.sum())
    if n_bad:
        _log.info(
            "composition: %d of %d events without composition (%s)",
            n_bad,
            n_events,
            ", ".join(
                f"{s.name.lower()}={int((status == s).sum())}"
                for s in CompositionStatus
                if s and (status == s).any()
            ),
        )

    ep, el = "epoch", "element"
    fraction_attrs = {
        "units": "1",
        "convention": "abundance ∝ line area / RSF (RSF relative to Si)",
    }
    data_vars = {
        "peak_species": (peak_dim, peak_species, {"long_name": "assigned line label ('' none)"}),
        "peak_element": (peak_dim, peak_element, {"long_name": "element of an atomic line"}),
        "peak_ambiguous": (
            peak_dim,
            ambiguous,
            {"long_name": "another library line lay within the mass tolerance"},
        ),
        "element_area": (
            (ep, el),
            np.where(bad[:, None], np.nan, el_area),
            {"units": "DN us", "long_name": "isotope-completed element line area"},
        ),
        "composition": ((ep, el), x, {**fraction_attrs, "long_name": "element molar fraction"}),
        "composition_err": (
            (ep, el),
            x_err,
            {"units": "1", "long_name": "1-sigma uncertainty of the molar fraction"},
        ),
        "isotope_score": (
            (ep, el),
            iso_score,
            {"units": "1", "long_name": "isotope pattern chi-square probability"},
        ),
        "mg_number": (ep, mg, {"units": "1", "long_name": "Mg/(Mg+Fe), molar"}),
        "mg_number_err": (ep, mg_err, {"units": "1"}),
        "ternary_mg_si_fe": ((ep, "mg_si_fe"), tern_msf, {"units": "1"}),
        "ternary_mg_fe_ca": ((ep, "mg_fe_ca"), tern_mfc, {"units": "1"}),
        "fo_number": (ep, fo, {"units": "1", "long_name": "olivine Fo = 100 Mg/(Mg+Fe)"}),
        "fo_number_err": (ep, fo_err, {"units": "1"}),
        "best_mineral": (ep, ranking.best_mineral, {"long_name": "best single mineral"}),
        "best_mineral_score": (
            ep,
            ranking.best_mineral_score,
            {"units": "1", "long_name": "reduced chi-square of the best mineral"},
        ),
        "best_mixture": ((ep, "mixture_member"), ranking.best_mixture, {}),
        "best_mixture_fraction": (
            ep,
            ranking.best_mixture_fraction,
            {"units": "1", "long_name": "cation-mole fraction of best_mixture[:, 0]"},
        ),
        "best_mixture_score": (ep, ranking.best_mixture_score, {"units": "1"}),
        "kappa": (ep, k, {"units": "u", "long_name": "mean offset of peak masses from integers"}),
        "composition_status": (
            ep,
            status,
            {
                "flag_values": np.arange(len(CompositionStatus), dtype=np.int8),
                "flag_meanings": STATUS_MEANINGS,
            },
        ),
    }
    coords = {
        el: (el, list(elements)),
        "rsf": (el, rsf, {"units": "1", "long_name": "RSF relative to Si"}),
        "mg_si_fe": ("mg_si_fe", ["Mg", "Si", "Fe"]),
        "mg_fe_ca": ("mg_fe_ca", ["Mg", "Fe", "Ca"]),
        "mixture_member": ("mixture_member", [0, 1]),
    }
    attrs = {
        "rsf_preset": settings.rsf_preset,
        "rsf_convention": "abundance = line area / RSF",
        "mass_tolerance_u": settings.mass_tolerance_u,
    }
    return data_vars, coords, attrs
