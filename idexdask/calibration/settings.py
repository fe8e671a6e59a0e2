"""Calibration settings: the ``calibration:`` configuration and ``calibration.yaml``.

The ``calibration:`` section of the configuration names a preset of a settings
file (``calibration.preset``, ``calibration.settings_file``, default
``configs/calibration.yaml``): the comb of ions, the fit orders and the search
ranges of each detector geometry.  :func:`load_calibration_settings` validates
the file for one preset into the frozen :class:`CalibrationSettings` (numbers
checked by the configuration model's specs, :mod:`idexdask.schema`; cached per
file version), and :func:`check_calibration_config` runs it whenever a
configuration is loaded (:data:`idexdask.schema.CROSS_CHECKS`), so a bad preset
or file stops a run before any work, not in every unit of it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from idexdask._logging import get_logger
from idexdask.calibration.ions import Ion, build_ion_table, isotopologues, parse_formula
from idexdask.config import file_key, load_yaml, merge, read_yaml_cached
from idexdask.errors import ConfigError
from idexdask.schema import Float, Int, Window

__all__ = [
    "BootstrapSettings",
    "CalibrationSettings",
    "FitSettings",
    "calibration_settings",
    "check_calibration_config",
    "load_calibration_settings",
]

_log = get_logger(__name__)


@dataclass(frozen=True)
class FitSettings:
    """``fit:`` section of ``calibration.yaml``."""

    max_order: int
    min_lines_for_order: tuple[int, ...]
    mass_range_u: tuple[float, float]
    timing_sigma_us: float


@dataclass(frozen=True)
class BootstrapSettings:
    """``bootstrap:`` section merged with one ``presets:`` entry."""

    preset: str
    stretch_range: tuple[float, float]
    t0_range_us: tuple[float, float]
    coarse_tolerance_us: float
    tolerance_us: float
    n_candidates: int
    max_block_elements: int
    max_iterations: int
    min_matches: int
    min_score: float
    min_explained_fraction: float
    ambiguity_ratio: float
    amplitude_power: float


@dataclass(frozen=True)
class CalibrationSettings:
    """Validated content of ``calibration.yaml`` for one preset.

    Attributes
    ----------
    fit : FitSettings
    bootstrap : BootstrapSettings
    comb : tuple of Ion
        Search comb, sorted by mass.
    extended : tuple of Ion
        Comb + isotopes + extra ions for the reassignment stage, sorted by mass.
    """

    fit: FitSettings
    bootstrap: BootstrapSettings
    comb: tuple[Ion, ...]
    extended: tuple[Ion, ...]


def _get(section: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(section, Mapping) or key not in section:
        raise ConfigError(f"calibration.yaml: missing key {where}.{key}")
    return section[key]


def _num(value: Any, key: str, *, lo: float | None = None, hi: float | None = None,
         integer: bool = False, open_lo: bool = False) -> Any:
    """A number of the file, checked by the configuration model's specs."""
    if integer:
        return Int(min=None if lo is None else int(lo), max=None if hi is None else int(hi))(
            value, key)
    return Float(min=lo, max=hi, min_open=open_lo)(value, key)


def _pair(value: Any, key: str, *, positive: bool) -> tuple[float, float]:
    """``[low, high]`` with low < high (both > 0 if ``positive``)."""
    low, high = Window()(value, key)
    if positive and low <= 0:
        raise ConfigError(f"{key}: expected [low, high] with 0 < low < high, got {value!r}")
    return low, high


def _ion_entries(items: Any, key: str) -> list[tuple[str, float]]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{key}: expected a non-empty list of {{ion, weight}}")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"ion", "weight"}:
            raise ConfigError(f"{key}[{n}]: expected {{ion: FORMULA, weight: W}}, got {item!r}")
        formula = str(item["ion"])
        parse_formula(formula)  # raises ConfigError on bad formulas
        weight = _num(item["weight"], f"{key}[{n}].weight", lo=0.0, hi=1.0, open_lo=True)
        out.append((formula, weight))
    return out


def _too_close(m1: float, m2: float, separation: float) -> bool:
    # The time separation of two lines scales as dm/sqrt(m): scale the limit.
    return abs(m1 - m2) < separation * math.sqrt(max(m1, m2) / 56.0)


def _parse_settings(raw: Mapping[str, Any], preset: str) -> CalibrationSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError("calibration.yaml: expected a mapping at top level")
    known = {"fit", "comb", "extended", "min_line_separation_u", "bootstrap", "presets"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"calibration.yaml: unknown keys {sorted(unknown)}")
    f = _get(raw, "fit", "")
    orders = _get(f, "min_lines_for_order", "fit")
    if not isinstance(orders, list) or not orders:
        raise ConfigError("fit.min_lines_for_order: expected a non-empty list")
    orders_t = tuple(_num(v, "fit.min_lines_for_order", lo=2, integer=True) for v in orders)
    if list(orders_t) != sorted(orders_t) or any(
        need < k + 1 for k, need in enumerate(orders_t, start=1)
    ):
        raise ConfigError(
            "fit.min_lines_for_order: must be non-decreasing with at least K+1 lines for order K"
        )
    fit = FitSettings(
        max_order=_num(_get(f, "max_order", "fit"), "fit.max_order", lo=1, hi=6, integer=True),
        min_lines_for_order=orders_t,
        mass_range_u=_pair(_get(f, "mass_range_u", "fit"), "fit.mass_range_u", positive=True),
        timing_sigma_us=_num(_get(f, "timing_sigma_us", "fit"), "fit.timing_sigma_us",
                             lo=0.0, open_lo=True),
    )
    sep = _num(_get(raw, "min_line_separation_u", ""), "min_line_separation_u", lo=0.0)
    comb_entries = _ion_entries(_get(raw, "comb", ""), "comb")
    comb = build_ion_table(comb_entries)
    for lo_ion, hi_ion in zip(comb[:-1], comb[1:], strict=True):
        if _too_close(lo_ion.mass_u, hi_ion.mass_u, sep):
            raise ConfigError(
                f"comb: {lo_ion.label} and {hi_ion.label} are closer than the line separation"
            )
    m_lo, m_hi = fit.mass_range_u
    outside = [ion.label for ion in comb if not m_lo <= ion.mass_u <= m_hi]
    if outside:
        raise ConfigError(f"comb: ions {outside} lie outside fit.mass_range_u")

    ext = _get(raw, "extended", "")
    min_ab = _num(_get(ext, "isotope_min_abundance_percent", "extended"),
                  "extended.isotope_min_abundance_percent", lo=0.0, hi=100.0, open_lo=True)
    extra = _ion_entries(_get(ext, "ions", "extended"), "extended.ions")
    candidates = list(comb_entries)
    for formula, weight in comb_entries:
        candidates += [(iso, weight * ratio) for iso, ratio in isotopologues(formula, min_ab)]
    candidates += extra
    # Keep the stronger of any two coinciding lines (comb lines first on ties).
    ranked = sorted(
        build_ion_table(candidates), key=lambda ion: -ion.weight
    )
    kept: list[Ion] = []
    for ion in ranked:
        if not m_lo <= ion.mass_u <= m_hi:
            continue
        if any(_too_close(ion.mass_u, k.mass_u, sep) for k in kept):
            _log.debug("extended line %s dropped: coincides with a stronger line", ion.label)
            continue
        kept.append(ion)
    extended = tuple(sorted(kept, key=lambda ion: ion.mass_u))

    presets = _get(raw, "presets", "")
    if not isinstance(presets, Mapping) or preset not in presets:
        raise ConfigError(f"calibration.yaml: no preset {preset!r} (have {list(presets)})")
    p = presets[preset]
    where = f"presets.{preset}"
    b = _get(raw, "bootstrap", "")
    if not isinstance(p, Mapping) or not isinstance(b, Mapping):
        raise ConfigError(f"calibration.yaml: {where} and bootstrap must be mappings")
    # A preset may override any bootstrap key (e.g. stricter gates for a wide search).
    extra = set(p) - {"stretch_range", "t0_range_us"}
    unknown_b = extra - set(b)
    if unknown_b:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown_b)}")
    b = {**b, **{k: p[k] for k in extra}}
    coarse = _num(_get(b, "coarse_tolerance_us", "bootstrap"), "bootstrap.coarse_tolerance_us",
                  lo=0.0, open_lo=True)
    tol = _num(_get(b, "tolerance_us", "bootstrap"), "bootstrap.tolerance_us",
               lo=0.0, open_lo=True)
    if tol > coarse:
        raise ConfigError("bootstrap.tolerance_us must not exceed bootstrap.coarse_tolerance_us")
    boot = BootstrapSettings(
        preset=preset,
        stretch_range=_pair(_get(p, "stretch_range", where), f"{where}.stretch_range",
                            positive=True),
        t0_range_us=_pair(_get(p, "t0_range_us", where), f"{where}.t0_range_us",
                          positive=False),
        coarse_tolerance_us=coarse,
        tolerance_us=tol,
        n_candidates=_num(_get(b, "n_candidates", "bootstrap"), "bootstrap.n_candidates",
                          lo=1, integer=True),
        max_block_elements=_num(_get(b, "max_block_elements", "bootstrap"),
                                "bootstrap.max_block_elements", lo=10_000, integer=True),
        max_iterations=_num(_get(b, "max_iterations", "bootstrap"), "bootstrap.max_iterations",
                            lo=1, integer=True),
        min_matches=_num(_get(b, "min_matches", "bootstrap"), "bootstrap.min_matches",
                         lo=2, integer=True),
        min_score=_num(_get(b, "min_score", "bootstrap"), "bootstrap.min_score", lo=0.0),
        min_explained_fraction=_num(_get(b, "min_explained_fraction", "bootstrap"),
                                    "bootstrap.min_explained_fraction", lo=0.0, hi=1.0),
        ambiguity_ratio=_num(_get(b, "ambiguity_ratio", "bootstrap"), "bootstrap.ambiguity_ratio",
                             lo=0.0, hi=1.0, open_lo=True),
        amplitude_power=_num(_get(b, "amplitude_power", "bootstrap"), "bootstrap.amplitude_power",
                             lo=0.0, hi=2.0),
    )
    return CalibrationSettings(fit=fit, bootstrap=boot, comb=comb, extended=extended)


@functools.lru_cache(maxsize=8)
def _cached_settings(preset: str) -> CalibrationSettings:
    return _parse_settings(load_yaml("calibration.yaml"), preset)


@functools.lru_cache(maxsize=8)
def _cached_file_settings(path: str, mtime_ns: int, preset: str) -> CalibrationSettings:
    """Settings of a file identified by :func:`~idexdask.config.file_key` (path, mtime)."""
    return _parse_settings(load_yaml(path), preset)


def load_calibration_settings(
    preset: str = "flight",
    override: Mapping[str, Any] | None = None,
    *,
    path: str | None = None,
) -> CalibrationSettings:
    """Load and validate ``configs/calibration.yaml`` for one preset.

    Parameters
    ----------
    preset : str
        ``"flight"`` (IDEX flight geometry) or ``"lab"`` (dust-accelerator
        captures), or any preset the file defines.
    override : mapping, optional
        Nested keys deep-merged over the file (e.g.
        ``{"bootstrap": {"tolerance_us": 0.02}}``).
    path : str, optional
        Another YAML file instead of the shipped one.

    Returns
    -------
    CalibrationSettings
        Immutable; the shipped file is parsed once per preset and cached, a file
        given by ``path`` once per preset and file version (path and mtime).

    Raises
    ------
    ConfigError
        On a missing key, a value out of range, an unparsable ion formula or two
        comb lines closer than ``min_line_separation_u``.
    """
    if override is None and path is None:
        return _cached_settings(preset)
    if override is None:  # a named file: parsed once per file version (path, mtime)
        return _cached_file_settings(*file_key(path), preset)
    raw = load_yaml(path or "calibration.yaml")
    if override is not None:
        raw = merge(raw, override)
    return _parse_settings(raw, preset)



def calibration_settings(
    config: Mapping[str, Any], attrs: Mapping[str, Any] | None = None
) -> CalibrationSettings:
    """The calibration settings a validated configuration selects (its preset and file).

    ``attrs`` are the attributes of the dataset to calibrate: a ``preset`` of
    ``auto`` picks the preset of its source kind
    (:func:`idexdask.sources.defaults.resolve_preset`).
    """
    from idexdask.sources.defaults import resolve_preset

    section = config["calibration"]
    path = section["settings_file"]
    # the shipped file by name: its parsed settings are cached per preset
    return load_calibration_settings(
        resolve_preset(section, attrs or {}), path=None if path == "calibration.yaml" else path
    )


def check_calibration_config(config: Mapping[str, Any]) -> None:
    """Check ``calibration.preset`` against the presets of ``calibration.settings_file``.

    Raises
    ------
    ConfigError
        ``calibration.preset`` not a preset of the file (the message lists them),
        or ``calibration.settings_file`` missing or invalid.
    """
    from idexdask.sources.defaults import AUTO_PRESET, builtin_source_presets

    section = config["calibration"]
    path, preset = section["settings_file"], section["preset"]
    try:
        raw = read_yaml_cached(path)
    except ConfigError as exc:
        raise ConfigError(f"calibration.settings_file: {exc}") from exc
    presets = raw.get("presets") if isinstance(raw, Mapping) else None
    if not isinstance(presets, Mapping) or not presets:
        raise ConfigError(f"calibration.settings_file: {path} has no presets: mapping")
    # `auto`: every per-source preset must exist (calibration.source_presets)
    by_source = {**builtin_source_presets(), **dict(section.get("source_presets") or {})}
    wanted = (
        [(f"calibration.source_presets.{kind}", name) for kind, name in by_source.items()]
        if preset == AUTO_PRESET else [("calibration.preset", preset)]
    )
    for key, name in wanted:
        if name not in presets:
            allowed = [*map(str, presets), *([AUTO_PRESET] if key == "calibration.preset" else [])]
            raise ConfigError(
                f"{key}: unknown preset {name!r} of {path} (allowed: {', '.join(allowed)})"
            )
        try:
            load_calibration_settings(name, path=None if path == "calibration.yaml" else path)
        except ConfigError as exc:
            raise ConfigError(f"calibration.settings_file ({path}, preset {name}): {exc}") from exc
