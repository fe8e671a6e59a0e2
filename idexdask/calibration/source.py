"""Per-source calibration defaults: which preset calibrates which kind of data.

IDEX flight telemetry and the dust-accelerator captures of the lab are recorded
by different geometries (drift length, extraction voltage), so one comb search
range cannot serve both: the flight preset searches 1.30-1.65 µs/sqrt(u), the
peridot captures sit at 0.515.  The configuration's ``calibration.preset`` is
``auto`` by default: each event dataset is then calibrated with the preset that
``calibration.source_presets`` names for its source kind (the dataset's
``source_kind`` attribute, set by :func:`idexdask.read_l0` and
:func:`idexdask.read_trc`).  A preset set explicitly in the configuration (or
``idexdask time2mass --preset``) wins over the per-source default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from idexdask.errors import ConfigError

__all__ = [
    "AUTO_PRESET",
    "DEFAULT_SOURCE_KIND",
    "builtin_source_presets",
    "resolve_preset",
    "source_kind",
]

AUTO_PRESET = "auto"
"""``calibration.preset`` value meaning "the preset of the data's source kind"."""

DEFAULT_SOURCE_KIND = "idex_l0"
"""Source kind of a dataset that does not say (IDEX data: decoded, simulated, CDF)."""

# the built-in map, used where a configuration has no `source_presets` table
_BUILTIN = {"idex_l0": "flight", "lecroy_trc": "lab_peridot"}


def builtin_source_presets() -> dict[str, str]:
    """The per-source presets used where a configuration names none (a copy)."""
    return dict(_BUILTIN)


def source_kind(attrs: Mapping[str, Any], variables: Collection[str] = ()) -> str:
    """The source kind of an event dataset from its attributes (and variables).

    Parameters
    ----------
    attrs : mapping
        Dataset attributes.
    variables : collection of str
        The dataset's variable names, for datasets whose attributes were not
        kept (a campaign store): scope captures carry ``vertical_gain``.

    Returns
    -------
    str
        ``source_kind`` when present; ``lecroy_trc`` for scope captures
        without it (``source == "lecroy_trc"`` or a ``vertical_gain``
        variable); else :data:`DEFAULT_SOURCE_KIND`.
    """
    kind = attrs.get("source_kind")
    if isinstance(kind, str) and kind:
        return kind
    if attrs.get("source") == "lecroy_trc" or "vertical_gain" in variables:
        return "lecroy_trc"
    return DEFAULT_SOURCE_KIND


def resolve_preset(
    section: Mapping[str, Any] | None,
    attrs: Mapping[str, Any],
    variables: Collection[str] = (),
) -> str:
    """The calibration preset for a dataset: explicit, else by its source kind.

    Parameters
    ----------
    section : mapping or None
        The configuration's ``calibration`` section (``preset``,
        ``source_presets``).
    attrs : mapping
        The dataset's attributes (see :func:`source_kind`).
    variables : collection of str
        The dataset's variable names (see :func:`source_kind`).

    Returns
    -------
    str
        A preset name of ``calibration.yaml``.

    Raises
    ------
    ConfigError
        If ``preset`` is ``auto`` and no preset is configured for the source kind.
    """
    section = section or {}
    preset = str(section.get("preset") or AUTO_PRESET)
    if preset != AUTO_PRESET:
        return preset
    table = {**_BUILTIN, **(section.get("source_presets") or {})}
    kind = source_kind(attrs, variables)
    if kind not in table:
        raise ConfigError(
            f"calibration.preset is auto but calibration.source_presets has no preset "
            f"for source kind {kind!r} (have {sorted(table)})"
        )
    return str(table[kind])
