"""Rules of the ``analysis:`` configuration that involve several keys.

Each key's type and range is declared in :data:`idexdask.schema.SCHEMA`; what
needs more than one key, or the stage's own code (a calibration curve that must
be invertible), is checked here, when the configuration is loaded
(:data:`idexdask.schema.CROSS_CHECKS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idexdask.analysis.velocity import PowerLawCurve
from idexdask.errors import ConfigError

__all__ = ["check_analysis_config"]


def check_analysis_config(config: Mapping[str, Any]) -> None:
    """Check the ``analysis`` section of a complete, per-key validated configuration.

    Raises
    ------
    ConfigError
        Naming the dotted key: the impact rise-time bounds out of order, a
        velocity curve that cannot be built or (the rise-time curve) inverted.
    """
    analysis = config["analysis"]
    impact = analysis["impact"]
    if not impact["tau_min_us"] < impact["tau_max_us"]:
        raise ConfigError(
            f"analysis.impact.tau_min_us: {impact['tau_min_us']!r} must be less than "
            f"analysis.impact.tau_max_us ({impact['tau_max_us']!r})"
        )
    for name in ("rise_time_curve", "yield_curve"):
        try:
            curve = PowerLawCurve.from_config(analysis["velocity"][name])
            if name == "rise_time_curve":  # inverted: must be monotonic over its range
                curve.monotonic_range()
        except ConfigError as exc:
            raise ConfigError(f"analysis.velocity.{name}: {exc}") from exc
