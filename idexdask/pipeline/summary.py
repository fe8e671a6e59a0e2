"""What a run did and what a store holds: the progress callback's payload, the
run summary, and the summary of a store read from its plan and manifest."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idexdask.errors import StoreError
from idexdask.pipeline.lock import pid_alive
from idexdask.pipeline.manifest import Manifest, pipeline_dir
from idexdask.pipeline.progress import PLAN_NAME, unit_is_done
from idexdask.pipeline.store import read_store_meta

__all__ = ["Progress", "RunSummary", "store_status"]


@dataclass
class Progress:
    """Where a run stands (passed to the progress callback after each unit)."""

    events_done: int
    events_total: int
    events_this_run: int
    units_done: int
    units_todo: int
    units_failed: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Events per second in this run."""
        return self.events_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first unit)."""
        left = self.events_total - self.events_done
        return left / self.rate if self.rate > 0 else None


@dataclass
class RunSummary:
    """What a run did (or, from :func:`store_status`, what a store holds).

    Attributes
    ----------
    store : str
        Store path.
    events_total : int
        Rows of the store (events planned).
    events_done : int
        Events in the store, from this and earlier runs.
    events_this_run : int
        Events written by this run.
    units_total, units_done, units_skipped : int
        Units planned, done (ever), and skipped in this run because done before.
    failures : list of dict
        ``{"uid", "input", "reason", "n_events"}`` of every failed unit or input.
    empty_inputs : list of str
        Valid inputs without science events.
    elapsed_s : float
        Wall time of the run (from the cluster start).
    dashboard : str or None
        Dashboard address of the cluster.
    workers : int
        Workers of the cluster the run used (0 from :func:`store_status`).
    state : str
        ``finished`` (every unit done), ``incomplete`` (the run ended with
        failed units or inputs), ``running``, ``interrupted`` or ``new``.
    exports : list of str
        Files the run exported (``export.formats``), by input.
    export_s : float
        Seconds from the first export's submission to the last file written.
    campaign_calibration : dict or None
        Joint calibration of every group (input) when this run made it; from
        :func:`store_status`, the last campaign step's (None where none ran).
    """

    store: str
    events_total: int = 0
    events_done: int = 0
    events_this_run: int = 0
    units_total: int = 0
    units_done: int = 0
    units_skipped: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    empty_inputs: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    dashboard: str | None = None
    state: str = "finished"
    workers: int = 0
    exports: list[str] = field(default_factory=list)
    export_s: float = 0.0
    campaign_calibration: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """0 if everything is in the store, 3 if something failed."""
        return 3 if self.failures else 0

    @property
    def rate(self) -> float:
        """Events per second written by this run."""
        return self.events_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0


def store_status(store: str | os.PathLike) -> RunSummary:
    """Summary of a store from its plan and manifest (finished or still running).

    Raises
    ------
    StoreError
        If ``store`` is not a pipeline store.
    """
    store = Path(store)
    meta = read_store_meta(store)
    if meta is None or not (pipeline_dir(store) / PLAN_NAME).exists():
        raise StoreError(f"{store} is not a campaign store (no plan; run `idexdask submit`)")
    plan = json.loads((pipeline_dir(store) / PLAN_NAME).read_text())
    chash = plan["config_hash"]
    records = list(Manifest(store).records())
    latest: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    for record in records:
        if record.get("record") == "unit":
            latest[record["uid"]] = record
        elif record.get("record") in ("run_start", "run_end"):
            runs.setdefault(record["run_id"], {})[record["record"]] = record
    summary = RunSummary(store=str(store), events_total=int(meta["n_events"]),
                         units_total=len(plan["units"]),
                         empty_inputs=list(plan.get("empty_inputs", [])))
    for unit in plan["units"]:
        record = latest.get(unit["uid"])
        if unit_is_done(record, unit, chash):
            summary.events_done += unit["n_events"]
            summary.units_done += 1
        elif record is not None and record.get("status") == "failed":
            summary.failures.append({"uid": unit["uid"], "input": unit["input"],
                                     "reason": record.get("reason", ""),
                                     "n_events": unit["n_events"]})
    steps = [r for r in records if r.get("record") == "campaign" and r.get("status") == "done"]
    if steps:  # the campaign calibration step's last run (pipeline.recalibrate)
        summary.campaign_calibration = dict(steps[-1].get("groups") or {})
    for failure in plan.get("plan_failures", []):
        summary.failures.append({"uid": f"{failure['path']}@plan", "input": failure["path"],
                                 "reason": failure["reason"], "n_events": 0})
    if not runs:
        summary.state = "new"
        return summary
    last_id = next(r["run_id"] for r in reversed(records) if r.get("record") == "run_start")
    last = runs[last_id]
    start = last["run_start"]
    summary.dashboard = start.get("dashboard")
    this_run = [r for r in latest.values() if r.get("run_id") == last_id and r["status"] == "done"]
    summary.events_this_run = sum(r["n_events"] for r in this_run)
    if "run_end" in last:
        summary.state = "incomplete" if summary.failures else "finished"
        summary.elapsed_s = float(last["run_end"]["elapsed_s"])
    else:
        alive = start.get("host") == socket.gethostname() and pid_alive(int(start["pid"]))
        summary.state = "running" if alive else "interrupted"
        begun = datetime.fromisoformat(start["time"])
        summary.elapsed_s = (datetime.now(UTC) - begun).total_seconds()
    return summary
