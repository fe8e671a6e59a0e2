"""Configuration: YAML under ``configs/``, validated on load.

``configs/default.yaml`` holds every knob with its default value (decode,
calibration, analysis, cluster, pipeline, export, composition); it is also the
schema.  A user file or mapping may override any subset of its keys.  An unknown
key, a value of the wrong type, or a value outside its allowed range is rejected
with a :class:`~idexdask.errors.ConfigError` naming the dotted key, before any work
starts.  Reference data (calibration presets, RSF, species and mineral tables,
CDF attributes, the lab scope setup) stay in their own files, named by keys of
``default.yaml``.

Beyond "same type as the default", stage modules declare range checks
(:func:`register_check`) and per-channel tables with free keys
(:func:`register_table`); :func:`load_config` imports those modules
(``_SCHEMA_MODULES``) before validating, so no check is ever skipped.

Examples
--------
>>> from idexdask.config import load_config
>>> cfg = load_config({"decode": {"keep_samples_high": 8192}})
>>> cfg["decode"]["keep_samples_high"]
8192
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from idexdask.errors import ConfigError

__all__ = [
    "config_dir",
    "dump_config",
    "file_key",
    "load_config",
    "load_yaml",
    "merge",
    "parse_assignment",
    "register_check",
    "register_table",
]

# Modules whose import registers checks and tables of the schema (see register_check).
_SCHEMA_MODULES = ("idexdask.pipeline", "idexdask.analysis.analyze")


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


# libyaml's parser where PyYAML was built with it (~10x faster: analyze() reads the
# calibration presets on every call); same safe constructor and resolver.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
            return yaml.load(stream, Loader=_SAFE_LOADER)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {name_or_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def file_key(name_or_path: str | Path) -> tuple[str, int]:
    """Cache key of a YAML file: its resolved path and modification time (ns).

    Resolved as :func:`load_yaml` does (a path, else a name inside
    :func:`config_dir`).  A file edited during a session therefore gets a new key
    and is re-read; a missing file gives mtime -1 (the loader then raises
    ConfigError).
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = config_dir() / str(name_or_path)
    # an absolute path, not a resolved one: resolve() costs a system call per path
    # component, and a file reached by two spellings only gets two cache entries
    try:
        return os.path.abspath(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), -1


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
# Tables: mappings whose keys are free (channel names, Dask settings), with
# their value check, its requirement, and whether values share the defaults' type.
_TABLES: dict[str, tuple[_Check | None, str, bool]] = {}


def register_check(dotted_key: str, check: _Check, requirement: str) -> None:
    """Add a value check for ``dotted_key`` (used by stage modules at import time).

    ``check(value)`` returns whether the value is valid (else a ConfigError
    quotes ``requirement``), or raises :class:`~idexdask.errors.ConfigError` with
    its own message.  A check of a mapping (a whole section) runs on the complete,
    merged configuration, after its keys and types are checked.

    The registry only ever grows with static, import-time declarations: it is a
    schema, not run-time state.
    """
    _RANGE_CHECKS[dotted_key] = (check, requirement)


def register_table(
    dotted_key: str, check: _Check | None = None, requirement: str = "", *, typed: bool = True
) -> None:
    """Declare the mapping at ``dotted_key`` a table with free keys (channel names).

    Each value is checked against the type of the table's default values (when it
    has any, and ``typed``) and by ``check``, as :func:`register_check` does.
    Static, import-time declarations only.
    """
    _TABLES[dotted_key] = (check, requirement, typed)


def _apply_check(where: str, value: Any, entry: tuple[_Check | None, str] | None) -> None:
    if entry is None or entry[0] is None or value is None:
        return
    check, requirement = entry
    if not check(value):
        raise ConfigError(f"{where}: {value!r} is invalid ({requirement})")


def _validate(value: Any, default: Any, dotted: str, *, complete: bool = True) -> None:
    """Check ``value`` against the schema ``default``; ``complete``: not a partial override."""
    where = dotted.removeprefix("config.")
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        table = _TABLES.get(where)
        for key, sub in value.items():
            if key in default:
                _validate(sub, default[key], f"{dotted}.{key}", complete=complete)
            elif table is not None:
                # None: any type
                exemplar = next(iter(default.values()), None) if table[2] else None
                _validate(sub, exemplar, f"{dotted}.{key}", complete=complete)
            else:
                known = ", ".join(sorted(map(str, default))) or "(none)"
                name = f"{dotted}.{key}".removeprefix("config.")
                raise ConfigError(f"unknown configuration key {name!r} (known: {known})")
            if table is not None:
                _apply_check(f"{where}.{key}", sub, table[:2])
        if complete:
            _apply_check(where, value, _RANGE_CHECKS.get(where))
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
    _apply_check(where, value, _RANGE_CHECKS.get(where))


_DEFAULTS_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def _defaults() -> dict[str, Any]:
    """A fresh copy of ``default.yaml`` (parsed once per file version)."""
    path = config_dir() / "default.yaml"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    if key not in _DEFAULTS_CACHE:
        loaded = load_yaml(path)
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping")
        _DEFAULTS_CACHE.clear()
        _DEFAULTS_CACHE[key] = loaded
    return copy.deepcopy(_DEFAULTS_CACHE[key])


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
        The complete, validated configuration (a fresh copy).

    Raises
    ------
    ConfigError
        On an unknown key, a wrongly typed value or a value out of range.
    """
    defaults = _defaults()
    if override is None:
        return defaults
    if isinstance(override, str | Path):
        override = load_yaml(override) or {}
    if not isinstance(override, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(override).__name__}")
    for module in _SCHEMA_MODULES:  # their import registers the schema's checks
        importlib.import_module(module)
    _validate(override, defaults, "config", complete=False)
    merged = merge(defaults, override)
    _validate(merged, defaults, "config")
    return merged


def parse_assignment(assignment: str) -> dict[str, Any]:
    """``"analysis.peaks.height_sigma=6"`` -> ``{"analysis": {"peaks": {"height_sigma": 6}}}``.

    The value is read as YAML (``6``, ``true``, ``null``, ``[1, 2]``, ``{a: 1}``,
    a bare string); the result is an override for :func:`load_config`.

    Raises
    ------
    ConfigError
        Without ``=``, with an empty key part, or with a value that is not YAML.
    """
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise ConfigError(f"expected KEY=VALUE with a dotted KEY (a.b.c=1), got {assignment!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key.strip()}: value {text!r} is not valid YAML: {exc}") from exc
    out: dict[str, Any] = {parts[-1].strip(): value}
    for part in reversed(parts[:-1]):
        out = {part.strip(): out}
    return out


def dump_config(config: Mapping[str, Any]) -> str:
    """A configuration as YAML text, in the key order of ``default.yaml``."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    class Dumper(yaml.SafeDumper):
        pass

    def flow_scalars(dumper: yaml.SafeDumper, data: list) -> yaml.Node:  # [-7.0, -5.0]
        flow = all(not isinstance(v, dict | list) for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, flow_scalars)
    return yaml.dump(
        plain(config), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100
    )
