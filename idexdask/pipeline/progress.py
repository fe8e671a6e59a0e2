"""What a campaign store holds: its plan and the units the manifest says are done.

The runner writes the plan (``plan.json`` in the store's pipeline directory)
and journals each unit in the manifest (:mod:`idexdask.pipeline.manifest`);
the exports, the override store and the status report read back which units
are complete from here, below the runner that imports them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idexdask.errors import StoreError
from idexdask.pipeline.manifest import Manifest, UnitRecord, pipeline_dir

__all__ = ["PLAN_NAME", "done_units", "unit_is_done"]

#: File name of the plan inside the store's pipeline directory.
PLAN_NAME = "plan.json"


def unit_is_done(record: Mapping[str, Any] | None, unit: Mapping[str, Any], chash: str) -> bool:
    """Whether a unit's latest manifest ``record`` says it is done as ``unit`` is planned.

    Done, with the planned unit's input digest and region and the configuration
    hash ``chash`` of the plan.  A record this version cannot read is not done
    (the unit is redone).
    """
    if record is None:
        return False
    try:
        return UnitRecord.from_json(record).is_done(unit["input_hash"], unit["region"], chash)
    except (KeyError, TypeError, ValueError):
        return False


def done_units(store: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """The store's inputs and its units that are complete (as planned, in the manifest).

    Returns
    -------
    inputs : list of str
        Input paths (``input_index`` points here).
    units : list of dict
        Planned units (``uid``, ``input``, ``input_index``, ``region``, ...) whose
        latest manifest record says done with the current digests.
    """
    store = Path(store)
    if not (pipeline_dir(store) / PLAN_NAME).exists():
        raise StoreError(f"{store} is not a campaign store (no plan; run `idexdask submit`)")
    plan = json.loads((pipeline_dir(store) / PLAN_NAME).read_text())
    latest = Manifest(store).latest_units()
    done = [u for u in plan["units"]
            if unit_is_done(latest.get(u["uid"]), u, plan["config_hash"])]
    return plan["inputs"], done
