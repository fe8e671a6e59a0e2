"""Settings of the composition stage: the ``composition:`` section of the configuration.

The section's keys, types and ranges are declared in :data:`idexdask.schema.SCHEMA`
and its defaults in ``configs/default.yaml``; :func:`check_composition_config`
adds what needs the reference files (the RSF preset names of ``rsf_file``, the
species and mineral libraries, element symbols) and runs whenever a
configuration is loaded.  :func:`composition_settings` turns a configuration (or
the section alone) into the frozen :class:`CompositionSettings` the stage uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import periodictable

from idexdask.composition.minerals import load_mineral_library
from idexdask.composition.rsf import load_rsf_presets
from idexdask.composition.species import load_species_library
from idexdask.config import load_config
from idexdask.errors import ConfigError
from idexdask.schema import Settings

__all__ = [
    "CompositionSettings",
    "check_composition_config",
    "composition_settings",
]


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
    targeted_species : tuple of str
        Ions searched for at their calibrated times in every calibrated event
        (:mod:`idexdask.composition.targeted`; formulas such as ``Na``, ``24Mg``).
    targeted_min_significance : float
        Threshold of a targeted detection, sigmas of the measured filter noise.
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
    targeted_species: tuple[str, ...]
    targeted_min_significance: float


def _section(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The ``composition`` override in ``config`` (whole configuration or the section)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"composition config must be a mapping, got {type(config).__name__}")
    if "composition" in config:
        section = config["composition"]
    elif any(isinstance(value, Mapping) for value in config.values()):
        section = {}  # a whole configuration without a composition section
    else:
        section = config
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"composition: expected a mapping, got {section!r}")
    return section


def composition_settings(
    config: Mapping[str, Any] | CompositionSettings | None = None,
) -> CompositionSettings:
    """Build :class:`CompositionSettings` from a configuration, validated by the model.

    Parameters
    ----------
    config : mapping, CompositionSettings or None
        The whole configuration (its ``composition`` key is used; a whole
        configuration without one, recognised by its mapping-valued sections,
        gives the defaults), or the ``composition`` section itself; missing keys
        take their ``configs/default.yaml`` values.

    Returns
    -------
    CompositionSettings

    Raises
    ------
    ConfigError
        On an unknown key, a wrongly typed value, an unknown element symbol or
        RSF preset, an invalid library file (:func:`idexdask.config.load_config`).
    """
    if isinstance(config, CompositionSettings):
        return config
    if isinstance(config, Settings) and "composition" in config:
        values = config["composition"]  # validated when it was loaded (load_settings)
    else:
        values = load_config({"composition": dict(_section(config))})["composition"]
    return CompositionSettings(
        rsf_preset=values["rsf_preset"],
        rsf_file=values["rsf_file"],
        species_file=values["species_file"],
        minerals_file=values["minerals_file"],
        mass_tolerance_u=float(values["mass_tolerance_u"]),
        mass_sigma_u=float(values["mass_sigma_u"]),
        elements=tuple(values["elements"]),
        isotope_rel_sigma=float(values["isotope_rel_sigma"]),
        model_sigma=float(values["model_sigma"]),
        olivine_ratio_tolerance=float(values["olivine_ratio_tolerance"]),
        include_rsf_uncertainty=bool(values["include_rsf_uncertainty"]),
        targeted_species=tuple(values["targeted_species"]),
        targeted_min_significance=float(values["targeted_min_significance"]),
    )


def check_composition_config(config: Mapping[str, Any]) -> None:
    """Check the ``composition`` section against the reference files it names.

    Raises
    ------
    ConfigError
        ``composition.elements`` with a symbol that is not an element,
        ``composition.rsf_preset`` not a preset of ``composition.rsf_file``
        (the message lists them), or a library file (``rsf_file``,
        ``species_file``, ``minerals_file``) missing or invalid.
    """
    section = config["composition"]
    for symbol in section["elements"]:
        if not isinstance(getattr(periodictable, symbol, None), periodictable.core.Element):
            raise ConfigError(f"composition.elements: {symbol!r} is not an element symbol "
                              "(allowed: symbols such as Na, Mg, Si, Fe)")
    from idexdask.calibration.ions import ion_mass

    for formula in section["targeted_species"]:
        try:
            ion_mass(formula if formula.endswith("+") else formula + "+")
        except ConfigError as exc:
            raise ConfigError(f"composition.targeted_species: {formula!r} is not an ion "
                              f"formula ({exc})") from exc
    loaded: dict[str, Any] = {}
    for key, loader in (("rsf_file", load_rsf_presets), ("species_file", load_species_library),
                        ("minerals_file", load_mineral_library)):
        try:
            loaded[key] = loader(section[key])
        except ConfigError as exc:
            raise ConfigError(f"composition.{key}: {exc}") from exc
    presets = loaded["rsf_file"]
    if section["rsf_preset"] not in presets:
        raise ConfigError(
            f"composition.rsf_preset: unknown RSF preset {section['rsf_preset']!r} "
            f"(allowed: {', '.join(sorted(presets))})"
        )
