"""Settings of the composition stage: the ``composition:`` section of the configuration.

The defaults below are the values proposed for ``configs/default.yaml``; a
``config`` mapping given to any public function of :mod:`idexdask.composition`
may be the whole configuration (with a ``composition`` key) or the section
itself, with any subset of the keys.  Unknown keys and invalid values raise
:class:`~idexdask.errors.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import periodictable

from idexdask.config import file_key  # re-exported: the libraries' cache key
from idexdask.errors import ConfigError

__all__ = ["COMPOSITION_DEFAULTS", "CompositionSettings", "composition_settings", "file_key"]

#: Default values of the ``composition:`` configuration section (read-only).
COMPOSITION_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "rsf_preset": "lab",
        "rsf_file": "rsf.yaml",
        "species_file": "species.yaml",
        "minerals_file": "minerals.yaml",
        "mass_tolerance_u": 0.3,
        "mass_sigma_u": 0.1,
        "elements": ["Na", "Mg", "Al", "Si", "K", "Ca", "Ti", "Cr", "Mn", "Fe", "Ni"],
        "isotope_rel_sigma": 0.15,
        "model_sigma": 0.02,
        "olivine_ratio_tolerance": 0.5,
        "include_rsf_uncertainty": False,
    }
)


@dataclass(frozen=True)
class CompositionSettings:
    """Validated settings of the composition stage.

    Attributes
    ----------
    rsf_preset : str
        Name of the RSF preset in ``rsf_file`` (``lab``, ``puma_pia``, ``lama_opx``,
        ``suda_fo87``, ``hyperdust_fo91``, ``tof_sims``, ``none``).
    rsf_file, species_file, minerals_file : str
        YAML files, by name inside ``configs/`` or by path.
    mass_tolerance_u : float
        Largest distance between a peak mass and a library line, u (> 0).
    mass_sigma_u : float
        Scale of the mass-closeness weight ``exp(-0.5 (dm/sigma)^2)``, u (> 0).
    elements : tuple of str
        Quantified elements, the ``element`` axis of the products (order kept).
    isotope_rel_sigma : float
        Relative 1-sigma scatter of isotope line areas about the natural pattern
        (dimensionless, >= 0), added in quadrature to the area uncertainties.
    model_sigma : float
        Absolute 1-sigma floor on a molar fraction used by the mineral ranking
        (fraction, >= 0): RSF systematics, non-stoichiometry.
    olivine_ratio_tolerance : float
        An event is olivine-like when ``|(Mg+Fe)/Si - 2| <=`` this (molar ratio).
    include_rsf_uncertainty : bool
        Propagate the preset's ``relative_uncertainty`` into ``composition_err``.
    """

    rsf_preset: str
    rsf_file: str
    species_file: str
    minerals_file: str
    mass_tolerance_u: float
    mass_sigma_u: float
    elements: tuple[str, ...]
    isotope_rel_sigma: float
    model_sigma: float
    olivine_ratio_tolerance: float
    include_rsf_uncertainty: bool


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"composition.{name}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        relation = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"composition.{name}: must be {relation}, got {value!r}")
    return float(value)


def composition_settings(
    config: Mapping[str, Any] | CompositionSettings | None = None,
) -> CompositionSettings:
    """Build validated :class:`CompositionSettings` from a configuration mapping.

    Parameters
    ----------
    config : mapping, CompositionSettings or None
        The whole configuration (its ``composition`` key is used; a whole
        configuration without one, recognised by its mapping-valued sections,
        gives the defaults), or the ``composition`` section itself; missing keys
        take :data:`COMPOSITION_DEFAULTS`.

    Returns
    -------
    CompositionSettings

    Raises
    ------
    ConfigError
        On an unknown key, a wrongly typed value, an unknown element symbol.
    """
    if isinstance(config, CompositionSettings):
        return config
    section: Mapping[str, Any] = {}
    if config is not None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"composition config must be a mapping, got {type(config).__name__}")
        if "composition" in config:
            section = config["composition"]
        elif any(isinstance(value, Mapping) for value in config.values()):
            section = {}  # a whole configuration without a composition section
        else:
            section = config
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError("composition: expected a mapping")
    unknown = sorted(set(section) - set(COMPOSITION_DEFAULTS))
    if unknown:
        known = ", ".join(sorted(COMPOSITION_DEFAULTS))
        raise ConfigError(f"unknown configuration key composition.{unknown[0]} (known: {known})")
    values = {**COMPOSITION_DEFAULTS, **section}
    for key in ("rsf_preset", "rsf_file", "species_file", "minerals_file"):
        if not isinstance(values[key], str) or not values[key]:
            raise ConfigError(
                f"composition.{key}: expected a non-empty string, got {values[key]!r}"
            )
    elements = values["elements"]
    if isinstance(elements, str) or not isinstance(elements, list | tuple) or not elements:
        raise ConfigError(f"composition.elements: expected a non-empty list, got {elements!r}")
    for symbol in elements:
        if not isinstance(symbol, str) or not isinstance(
            getattr(periodictable, symbol, None), periodictable.core.Element
        ):
            raise ConfigError(f"composition.elements: unknown element symbol {symbol!r}")
    if len(set(elements)) != len(elements):
        raise ConfigError(f"composition.elements: duplicate symbols in {list(elements)}")
    if not isinstance(values["include_rsf_uncertainty"], bool):
        raise ConfigError("composition.include_rsf_uncertainty: expected true/false")
    from idexdask.composition.rsf import load_rsf_presets  # rsf imports this module

    presets = load_rsf_presets(values["rsf_file"])
    if values["rsf_preset"] not in presets:
        raise ConfigError(
            f"composition.rsf_preset: unknown RSF preset {values['rsf_preset']!r} "
            f"(known: {', '.join(sorted(presets))})"
        )
    out = CompositionSettings(
        rsf_preset=values["rsf_preset"],
        rsf_file=values["rsf_file"],
        species_file=values["species_file"],
        minerals_file=values["minerals_file"],
        mass_tolerance_u=_positive("mass_tolerance_u", values["mass_tolerance_u"]),
        mass_sigma_u=_positive("mass_sigma_u", values["mass_sigma_u"]),
        elements=tuple(elements),
        isotope_rel_sigma=_positive(
            "isotope_rel_sigma", values["isotope_rel_sigma"], allow_zero=True
        ),
        model_sigma=_positive("model_sigma", values["model_sigma"], allow_zero=True),
        olivine_ratio_tolerance=_positive(
            "olivine_ratio_tolerance", values["olivine_ratio_tolerance"], allow_zero=True
        ),
        include_rsf_uncertainty=values["include_rsf_uncertainty"],
    )
    return out
