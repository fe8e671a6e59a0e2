"""Per-source defaults: which calibration preset calibrates which source's data.

IDEX flight telemetry and the dust-accelerator captures of the lab are recorded
by different geometries (drift length, extraction voltage), so one comb search
range cannot serve both: the flight preset searches 1.30-1.65 µs/sqrt(u), the
peridot captures sit at 0.515.  Each source names its preset
(:meth:`~idexdask.sources.Source.defaults`).  The configuration's
``calibration.preset`` is ``auto`` by default: each event dataset is then
calibrated with the preset of its source kind (the dataset's ``source_kind``
attribute, set by the readers), which ``calibration.source_presets`` may
change per source kind.  A preset set explicitly in the configuration (or
``idexdask time2mass --preset``) wins over the per-source default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from idexdask.errors import ConfigError
from idexdask.sources.base import Source
from idexdask.sources.factory import sources
from idexdask.sources.l0 import L0Packets

__all__ = [
    "AUTO_PRESET",
    "DEFAULT_SOURCE_KIND",
    "builtin_source_presets",
    "resolve_preset",
    "source_kind",
]

AUTO_PRESET = "auto"
"""``calibration.preset`` value meaning "the preset of the data's source kind"."""

DEFAULT_SOURCE_KIND = L0Packets.source_kind
"""Source kind of a dataset that does not say (IDEX data: decoded, simulated, CDF)."""


def builtin_source_presets() -> dict[str, str]:
    """``{source_kind: preset}`` of every registered source's defaults (a new dict)."""
    return {s.source_kind: s.defaults().calibration_preset for s in Source.registry.values()}


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
        ``source_kind`` when present; else the kind of the source that
        recognises the dataset (:meth:`~idexdask.sources.Source.is_source_of`);
        else :data:`DEFAULT_SOURCE_KIND`.
    """
    kind = attrs.get("source_kind")
    if isinstance(kind, str) and kind:
        return kind
    source = sources.of_dataset(attrs, variables)
    return source.source_kind if source is not None else DEFAULT_SOURCE_KIND


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
    table = {**builtin_source_presets(), **(section.get("source_presets") or {})}
    kind = source_kind(attrs, variables)
    if kind not in table:
        raise ConfigError(
            f"calibration.preset is auto but calibration.source_presets has no preset "
            f"for source kind {kind!r} (have {sorted(table)})"
        )
    return str(table[kind])
