"""``idexdask config``, and the run configuration every command builds from its flags.

The configuration of a command is ``configs/default.yaml`` < ``--config FILE``
< ``--set KEY=VALUE`` (repeatable) < the command's own flags, validated once by
:func:`idexdask.config.load_config`: a bad key or value exits with code 2
before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from idexdask.errors import ConfigError

__all__ = ["add_config_options", "add_parser", "cmd_config", "config_from_args"]

# command-line flag -> (configuration section, key)
_FLAG_KEYS = (
    ("workers", "cluster", "workers"),
    ("threads_per_worker", "cluster", "threads_per_worker"),
    ("memory_limit", "cluster", "memory_limit"),
    ("scheduler", "cluster", "address"),
    ("dashboard", "cluster", "dashboard"),
    ("batch_events", "pipeline", "batch_events"),
    ("retries", "pipeline", "retries"),
)


def add_config_options(parser: argparse.ArgumentParser, *, assignments: bool = True) -> None:
    """``--config FILE`` and (with ``assignments``) ``--set KEY=VALUE`` on ``parser``."""
    parser.add_argument("--config", help="YAML file overriding configs/default.yaml")
    if assignments:
        parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                            help="override one key, value read as YAML "
                            "(analysis.peaks.height_sigma=6); repeatable, after --config")


def _file_and_assignments(args: argparse.Namespace) -> dict[str, Any]:
    """``--config FILE`` merged with the ``--set`` assignments (not validated)."""
    from idexdask.config import load_yaml, merge, parse_assignment

    override: dict[str, Any] = {}
    if getattr(args, "config", None):
        override = load_yaml(args.config) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{args.config}: a configuration file must hold a mapping")
    for assignment in getattr(args, "set", None) or []:
        override = merge(override, parse_assignment(assignment))
    return override


def config_from_args(
    args: argparse.Namespace, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run configuration: defaults < --config FILE < --set KEY=VALUE < flags < ``extra``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``config``, ``set`` and the flags of
        :data:`_FLAG_KEYS` are read where present).
    extra : dict, optional
        What the command itself fixes (nested sections), applied last.

    Returns
    -------
    dict
        The validated configuration.

    Raises
    ------
    ConfigError
        An unknown key or a bad value.
    """
    import idexdask.pipeline  # noqa: F401  (registers the pipeline's config checks)
    from idexdask.config import load_config, merge

    override = _file_and_assignments(args)
    flags: dict[str, dict[str, Any]] = {"cluster": {}, "pipeline": {}, "export": {}}
    for flag, section, key in _FLAG_KEYS:
        value = getattr(args, flag, None)
        if value is not None:
            flags[section][key] = value
    if getattr(args, "export", None) is not None:
        flags["export"]["formats"] = [f.strip() for f in args.export.split(",") if f.strip()]
    override = merge(override, {k: v for k, v in flags.items() if v})
    if extra:
        override = merge(override, extra)
    return load_config(override)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the configuration (defaults < --config FILE < --set KEY=VALUE) as YAML."""
    from idexdask.config import dump_config, load_config

    config = load_config(_file_and_assignments(args))  # a bad key or value: exit code 2
    if args.key:  # that key only, still nested: the output is a valid --config file
        parts = args.key.split(".")
        value: Any = config
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"no configuration key {args.key!r}")
            value = value[part]
        for part in reversed(parts):
            value = {part: value}
        config = value
    sys.stdout.write(dump_config(config))
    sys.stdout.flush()
    return 0


def add_parser(sub: Any) -> None:
    """Register ``config`` on the ``idexdask`` sub-command parsers."""
    config = sub.add_parser(
        "config", help="print the merged, validated configuration (every knob) as YAML",
        description="Print configs/default.yaml merged with --config FILE and --set overrides, "
        "after validation (exit code 2 on an unknown key or a bad value).",
    )
    config.add_argument("key", nargs="?", help="dotted key of one section or value "
                        "(analysis.peaks); default everything")
    add_config_options(config)
    config.set_defaults(func=cmd_config)
