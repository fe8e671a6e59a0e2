"""Whether a campaign run has its campaign calibration step, and what that implies.

The per-pack analysis (:mod:`idexdask.pipeline.units`), the campaign step
(:mod:`idexdask.pipeline.recalibrate`) and the runner read these two rules of
the configuration from here, below all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idexdask.calibration.campaign import CampaignSettings

__all__ = ["pack_config", "recalibrates"]


def recalibrates(config: Mapping[str, Any]) -> bool:
    """Whether a run with ``config`` rewrites its units' products after the last pack
    (the campaign calibration step), so that exports must wait for it."""
    analysis = config.get("analysis", {})
    cal = analysis.get("calibration", {})
    return (bool(config.get("pipeline", {}).get("analyze", True)) and bool(cal.get("enabled"))
            and bool(config.get("calibration")) and CampaignSettings.from_config(
                cal.get("campaign")).enabled)


def pack_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The configuration of the per-pack analysis when the campaign step runs after it.

    The campaign step (:mod:`idexdask.pipeline.recalibrate`) calibrates each
    input's events together and rewrites every calibration-dependent product,
    so the packs calibrate each event on its own (its comb calibration): no work
    is done twice, and a pack's products are those of its units processed alone.
    """
    if not recalibrates(config):
        return config
    analysis = dict(config["analysis"])
    calibration = dict(analysis["calibration"])
    calibration["campaign"] = {**(calibration.get("campaign") or {}), "enabled": False}
    analysis["calibration"] = calibration
    return {**config, "analysis": analysis}
