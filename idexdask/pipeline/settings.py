"""Rules of the ``cluster:`` and ``export:`` configuration beyond each key's type.

Checked when the configuration is loaded (:data:`idexdask.schema.CROSS_CHECKS`):
Dask settings that Dask does not know, and a CDF attribute file that cannot be
read, stop the run before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idexdask.config import config_dir, read_yaml_cached
from idexdask.errors import ConfigError

__all__ = ["check_pipeline_config"]


def check_pipeline_config(config: Mapping[str, Any]) -> None:
    """Check ``cluster.dask_config`` keys and ``export.cdf_attributes``.

    Only Dask keys not among the shipped defaults are looked up (the lookup
    imports distributed, ~0.5 s; the shipped ones are checked by the tests).

    Raises
    ------
    ConfigError
        Naming the dotted key.
    """
    shipped = read_yaml_cached(config_dir() / "default.yaml")["cluster"]["dask_config"] or {}
    added = {k: v for k, v in config["cluster"]["dask_config"].items() if k not in shipped}
    if added:
        from idexdask.pipeline.cluster import check_dask_settings

        check_dask_settings(added)
    path = config["export"]["cdf_attributes"]
    try:
        table = read_yaml_cached(path)
    except ConfigError as exc:
        raise ConfigError(f"export.cdf_attributes: {exc}") from exc
    if table is not None and not isinstance(table, Mapping):
        raise ConfigError(f"export.cdf_attributes: {path} must hold a mapping")
