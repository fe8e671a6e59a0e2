"""Relative sensitivity factors (RSF): ``configs/rsf.yaml``.

Convention, the only one in idexdask: **abundance ∝ line area / RSF**.  An RSF
is the ion yield per atom relative to Si (RSF_Si = 1, dimensionless); the number
of atoms of element X in an impact is ``n_X ∝ A_X / RSF_X`` with ``A_X`` its
isotope-completed line area (DN·µs).  Nothing is ever multiplied by an RSF.

A preset resolves an element from its own ``values``, then its ``fallback``
preset (recursively), then its ``default``; an element found nowhere has no RSF
and quantifying it raises :class:`~idexdask.errors.ConfigError`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import periodictable

from idexdask.config import file_key, load_yaml
from idexdask.errors import ConfigError

__all__ = ["PRESET_NAMES", "RSFPreset", "load_rsf_presets", "rsf_values"]

#: Preset names shipped in ``configs/rsf.yaml``.
PRESET_NAMES = ("lab", "puma_pia", "lama_opx", "suda_fo87", "hyperdust_fo91", "tof_sims", "none")


@dataclass(frozen=True)
class RSFPreset:
    """One RSF preset.

    Attributes
    ----------
    name : str
    description, provenance : str
    values : Mapping[str, float]
        Element symbol -> RSF relative to Si (dimensionless, > 0).
    fallback : str or None
        Preset consulted for elements not in ``values``.
    default : float or None
        RSF of any element found neither in ``values`` nor the fallback chain.
    relative_uncertainty : float or None
        1-sigma relative uncertainty of every value of this preset.
    """

    name: str
    description: str
    provenance: str
    values: Mapping[str, float]
    fallback: str | None
    default: float | None
    relative_uncertainty: float | None


def _is_element(symbol: Any) -> bool:
    return (
        isinstance(symbol, str)
        and isinstance(getattr(periodictable, symbol, None), periodictable.core.Element)
        and symbol != "n"
    )


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what}: expected a finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{what}: must be > 0, got {value!r}")
    return float(value)


def _parse_presets(data: Any, source: str) -> Mapping[str, RSFPreset]:
    if not isinstance(data, Mapping) or not isinstance(data.get("presets"), Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'presets' mapping")
    reference = data.get("reference", "Si")
    presets: dict[str, RSFPreset] = {}
    allowed = {"description", "provenance", "values", "fallback", "default", "relative_uncertainty"}
    for name, body in data["presets"].items():
        where = f"{source}: preset {name!r}"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        values = body.get("values") or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: 'values' must be a mapping element -> RSF")
        clean = {}
        for symbol, value in values.items():
            if not _is_element(symbol):
                raise ConfigError(f"{where}: unknown element symbol {symbol!r}")
            clean[symbol] = _positive_number(value, f"{where}: RSF of {symbol}")
        if reference in clean and not math.isclose(clean[reference], 1.0):
            raise ConfigError(f"{where}: RSF of the reference {reference} must be 1")
        default = body.get("default")
        rel = body.get("relative_uncertainty")
        presets[str(name)] = RSFPreset(
            name=str(name),
            description=str(body.get("description", "")),
            provenance=str(body.get("provenance", "")),
            values=MappingProxyType(clean),
            fallback=body.get("fallback"),
            default=None if default is None else _positive_number(default, f"{where}: default"),
            relative_uncertainty=None
            if rel is None
            else _positive_number(rel, f"{where}: relative_uncertainty"),
        )
    for preset in presets.values():  # fallback chains: known names, no cycles
        seen = {preset.name}
        current = preset
        while current.fallback is not None:
            if current.fallback not in presets:
                raise ConfigError(
                    f"{source}: preset {current.name!r} falls back to unknown preset "
                    f"{current.fallback!r}"
                )
            if current.fallback in seen:
                raise ConfigError(f"{source}: fallback cycle through preset {current.fallback!r}")
            seen.add(current.fallback)
            current = presets[current.fallback]
    return MappingProxyType(presets)


@functools.lru_cache(maxsize=8)
def _cached_presets(path: str, mtime_ns: int) -> Mapping[str, RSFPreset]:
    return _parse_presets(load_yaml(path), path)


def load_rsf_presets(name_or_path: str | Path = "rsf.yaml") -> Mapping[str, RSFPreset]:
    """Load and validate the RSF presets (cached per file path and modification time).

    Returns
    -------
    Mapping[str, RSFPreset]
        Read-only, preset name -> preset.

    Raises
    ------
    ConfigError
        Unknown element symbol, non-positive RSF, unknown fallback, bad YAML.
    """
    return _cached_presets(*file_key(name_or_path))


def _resolve(
    presets: Mapping[str, RSFPreset], name: str, symbol: str
) -> tuple[float, float] | None:
    preset = presets[name]
    rel = preset.relative_uncertainty or 0.0
    if symbol in preset.values:
        return preset.values[symbol], rel
    if preset.fallback is not None:
        found = _resolve(presets, preset.fallback, symbol)
        if found is not None:
            return found
    if preset.default is not None:
        return preset.default, rel
    return None


def rsf_values(
    preset: str,
    elements: Sequence[str],
    *,
    rsf_file: str | Path = "rsf.yaml",
) -> tuple[np.ndarray, np.ndarray]:
    """RSF of each element for a preset.

    Parameters
    ----------
    preset : str
        Preset name (see :data:`PRESET_NAMES`).
    elements : sequence of str
        Element symbols.
    rsf_file : str or Path
        The presets file.

    Returns
    -------
    rsf : ndarray, shape (n_elements,)
        RSF relative to Si (dimensionless).
    rel_err : ndarray, shape (n_elements,)
        1-sigma relative uncertainty (0 where the preset gives none).

    Raises
    ------
    ConfigError
        Unknown preset, or an element without an RSF in the preset chain.
    """
    presets = load_rsf_presets(rsf_file)
    if preset not in presets:
        raise ConfigError(
            f"composition.rsf_preset: unknown RSF preset {preset!r} (known: {', '.join(presets)})"
        )
    rsf = np.empty(len(elements))
    rel = np.empty(len(elements))
    for k, symbol in enumerate(elements):
        found = _resolve(presets, preset, symbol)
        if found is None:
            raise ConfigError(
                f"RSF preset {preset!r} has no RSF for {symbol} (neither its values, its "
                f"fallback nor a default): drop {symbol} from composition.elements"
            )
        rsf[k], rel[k] = found
    return rsf, rel
