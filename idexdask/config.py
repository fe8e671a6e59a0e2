"""Configuration: YAML under ``configs/``, validated on load.

``configs/default.yaml`` holds every knob with its default value; it is also the
schema.  A user file or mapping may override any subset of its keys.  An unknown
key, a value of the wrong type, or a value outside its allowed range is rejected
with a :class:`~idexdask.errors.ConfigError` naming the dotted key, before any work
starts.

Examples
--------
>>> from idexdask.config import load_config
>>> cfg = load_config({"decode": {"keep_samples_high": 8192}})
>>> cfg["decode"]["keep_samples_high"]
8192
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from idexdask.errors import ConfigError

__all__ = ["config_dir", "load_config", "load_yaml", "merge"]


def config_dir() -> Path:
    """Directory holding the shipped YAML files (``configs/`` of the source tree).

    Returns
    -------
    pathlib.Path
        ``<repo>/configs`` for an editable install, else the copy packaged as
        ``idexdask/_configs`` inside a wheel.
    """
    packaged = resources.files("idexdask") / "_configs"
    if packaged.is_dir():  # installed from a wheel
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parent.parent / "configs"
    if source_tree.is_dir():
        return source_tree
    raise ConfigError("cannot locate the idexdask configs/ directory")


def load_yaml(name_or_path: str | Path) -> Any:
    """Read one YAML file, by path or by name inside :func:`config_dir`.

    Raises
    ------
    ConfigError
        If the file is missing or is not valid YAML.
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = config_dir() / str(name_or_path)
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {name_or_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (override wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Range checks beyond "same type as the default", keyed by dotted name.
_Check = Callable[[Any], bool]
_RANGE_CHECKS: dict[str, tuple[_Check, str]] = {}


def register_check(dotted_key: str, check: _Check, requirement: str) -> None:
    """Add a value check for ``dotted_key`` (used by stage modules at import time).

    The registry only ever grows with static, import-time declarations: it is a
    schema, not run-time state.
    """
    _RANGE_CHECKS[dotted_key] = (check, requirement)


def _validate(value: Any, default: Any, dotted: str) -> None:
    where = dotted.removeprefix("config.")
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        for key, sub in value.items():
            if key not in default:
                known = ", ".join(sorted(map(str, default))) or "(none)"
                name = f"{dotted}.{key}".removeprefix("config.")
                raise ConfigError(f"unknown configuration key {name!r} (known: {known})")
            _validate(sub, default[key], f"{dotted}.{key}")
        return
    if default is None or value is None:
        pass  # optional value: any type accepted, checked by the stage using it
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
    elif isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
    if where in _RANGE_CHECKS and value is not None:
        check, requirement = _RANGE_CHECKS[where]
        if not check(value):
            raise ConfigError(f"{where}: {value!r} is invalid ({requirement})")


def load_config(
    override: Mapping[str, Any] | str | Path | None = None,
) -> dict[str, Any]:
    """Load ``configs/default.yaml`` and apply an override, validating both.

    Parameters
    ----------
    override : mapping, path or None
        Nested mapping with the same keys as ``default.yaml`` (any subset), or a
        path to a YAML file holding one.

    Returns
    -------
    dict
        The complete, validated configuration.

    Raises
    ------
    ConfigError
        On an unknown key, a wrongly typed value or a value out of range.
    """
    defaults = load_yaml("default.yaml")
    if override is None:
        return defaults
    if isinstance(override, str | Path):
        override = load_yaml(override) or {}
    if not isinstance(override, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(override).__name__}")
    _validate(override, defaults, "config")
    merged = merge(defaults, override)
    _validate(merged, defaults, "config")
    return merged
