"""The ``analysis.quality`` settings: the configuration model's section, loaded once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idexdask.config import load_config, load_yaml
from idexdask.errors import ConfigError
from idexdask.schema import Settings

__all__ = ["load_quality_config"]


def load_quality_config(config: Mapping[str, Any] | str | Path | None = None) -> Settings:
    """The ``analysis.quality`` settings: defaults from ``configs/default.yaml``, overridden.

    Parameters
    ----------
    config : mapping, str, pathlib.Path or None
        Overrides: a mapping (``{"quality": {...}}`` or the inner ``{...}``), or a
        YAML file holding one.  None: the defaults.

    Returns
    -------
    idexdask.schema.Settings
        The ``quality`` section, validated by the configuration model
        (:mod:`idexdask.schema`) and frozen; windows as ``(start_us, stop_us)``
        tuples.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or value out of range (named by dotted key).
    """
    if isinstance(config, Settings):
        return config
    if isinstance(config, (str, Path)):
        config = load_yaml(config)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"quality config: expected a mapping, got {type(config).__name__}")
    if "quality" in config:
        extra = set(config) - {"quality"}
        if extra:
            raise ConfigError(f"quality config: unknown top-level key(s) {sorted(extra)}")
        config = config["quality"]
    loaded = load_config({"analysis": {"quality": config}})
    return Settings(loaded["analysis"]["quality"], "analysis.quality")
