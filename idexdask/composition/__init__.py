"""Dust composition from assigned mass lines.

* :mod:`~idexdask.composition.species` -- line library (``configs/species.yaml``,
  masses and abundances from periodictable), :func:`assign_lines`, isotope
  pattern scores, kappa.
* :mod:`~idexdask.composition.rsf` -- relative sensitivity factors
  (``configs/rsf.yaml``); convention: **abundance ∝ line area / RSF**.
* :mod:`~idexdask.composition.minerals` -- mineral library
  (``configs/minerals.yaml``), single-mineral and two-mineral-mixture ranking.
* :func:`composition_products` -- the batch interface of the pipeline.
* :func:`plot_ternary` -- ternary diagrams (matplotlib, optional).

Settings: the ``composition:`` configuration section (declared in
:mod:`idexdask.schema`, defaults in ``configs/default.yaml``).  See
``docs/composition.md``.
"""

from idexdask.composition.minerals import (
    Mineral,
    MineralLibrary,
    MineralRanking,
    expected_fractions,
    load_mineral_library,
    rank_minerals,
)
from idexdask.composition.plot import plot_ternary, ternary_xy
from idexdask.composition.products import (
    STATUS_MEANINGS,
    CompositionStatus,
    composition_products,
    mg_number,
    molar_fractions,
    ternary,
)
from idexdask.composition.rsf import PRESET_NAMES, RSFPreset, load_rsf_presets, rsf_values
from idexdask.composition.settings import (
    CompositionSettings,
    composition_settings,
)
from idexdask.composition.species import (
    AssignmentResult,
    Line,
    SpeciesLibrary,
    assign_lines,
    isotope_pattern_score,
    kappa,
    load_species_library,
)

__all__ = [
    "AssignmentResult",
    "CompositionSettings",
    "CompositionStatus",
    "Line",
    "Mineral",
    "MineralLibrary",
    "MineralRanking",
    "PRESET_NAMES",
    "RSFPreset",
    "STATUS_MEANINGS",
    "SpeciesLibrary",
    "assign_lines",
    "composition_products",
    "composition_settings",
    "expected_fractions",
    "isotope_pattern_score",
    "kappa",
    "load_mineral_library",
    "load_rsf_presets",
    "load_species_library",
    "mg_number",
    "molar_fractions",
    "plot_ternary",
    "rank_minerals",
    "rsf_values",
    "ternary",
    "ternary_xy",
]
