"""Configuration: YAML under ``configs/``, validated on load.

``configs/default.yaml`` holds every knob with its default value (decode,
calibration, analysis, cluster, pipeline, export, composition).  A user file or
mapping may override any subset of its keys.  The configuration model,
:mod:`idexdask.schema`, declares every key's type and range in one table and the
rules that need a reference file (calibration and RSF preset names, the species
and mineral libraries): :func:`load_config` checks the override and the merged
result against it, so an unknown key, a wrongly typed value, a value out of
range or an unknown preset raises :class:`~idexdask.errors.ConfigError` naming
the dotted key and what it allows, before any work starts.
:func:`load_settings` returns the same configuration frozen
(:class:`~idexdask.schema.Settings`).  Reference data (calibration presets,
RSF, species and mineral tables, CDF attributes, the lab scope setup) stay in
their own files, named by keys of ``default.yaml``.

Examples
--------
>>> from idexdask.config import load_config
>>> cfg = load_config({"decode": {"keep_samples_high": 8192}})
>>> cfg["decode"]["keep_samples_high"]
8192
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from idexdask.errors import ConfigError

__all__ = [
    "config_dir",
    "default_config",
    "dump_config",
    "file_key",
    "load_config",
    "load_settings",
    "load_yaml",
    "merge",
    "parse_assignment",
    "read_yaml_cached",
]

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


@functools.lru_cache(maxsize=32)
def _cached_yaml(path: str, mtime_ns: int) -> Any:
    return load_yaml(path)


def read_yaml_cached(name_or_path: str | Path) -> Any:
    """:func:`load_yaml`, parsed once per file version (:func:`file_key`); read only.

    For checks run on every configuration load: the caller must not modify the
    result (it is shared).
    """
    path, mtime_ns = file_key(name_or_path)
    if mtime_ns < 0:
        return load_yaml(name_or_path)  # raises the not-found ConfigError
    return _cached_yaml(path, mtime_ns)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (override wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def default_config() -> dict[str, Any]:
    """``configs/default.yaml`` as written (a fresh copy, not validated)."""
    return _defaults()


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
    from idexdask import schema

    defaults = _defaults()
    if override is None:
        override = {}
    if isinstance(override, str | Path):
        source = str(override)
        override = load_yaml(override) or {}
        if not isinstance(override, Mapping):
            raise ConfigError(f"{source}: a configuration file must hold a mapping, "
                              f"got {type(override).__name__}")
    if not isinstance(override, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(override).__name__}")
    # the override alone first: its own mistakes (a null for a section, a typo)
    # are named as written, before the merge could hide them
    schema.validate(override, defaults, complete=False)
    merged = schema.validate(merge(defaults, override), defaults)
    return merged


def load_settings(override: Mapping[str, Any] | str | Path | None = None) -> Any:
    """:func:`load_config`, frozen: :class:`idexdask.schema.Settings` for the stages."""
    from idexdask.schema import freeze

    return freeze(load_config(override))


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
