"""Run a campaign: plan, lay out the store, run every unit on the cluster, journal it.

Order of work (everything that can fail cheaply fails before a cluster starts):

1. the store path is checked writable; the configuration is already validated;
2. the inputs are planned (:func:`~idexdask.pipeline.plan.plan_inputs`): every
   unit's exact event count, hence every unit's store region;
3. an existing store is checked against the plan: the same inputs with the same
   event counts, else :class:`~idexdask.errors.StoreError` (use a new store or
   ``--overwrite``); units the manifest records as done with the same input
   digest and configuration digest are skipped;
4. the cluster starts (or is connected to); the remaining units are grouped into
   packs of about ``batch_events`` events ending on chunk boundaries
   (:func:`~idexdask.pipeline.plan.pack_units`: short files and lab impacts
   share a task);
5. a new store needs a schema: the processing (decode + analysis, no store
   access) of the first packs, two per worker thread, is submitted at once, and
   the store is laid out from the first processed pack's schema (one event)
   while the workers go on with the others.  Then each of those packs' region
   write is submitted as a second task on the worker that holds its data, at a
   higher priority than further work, and every other pack as one task that
   processes and writes it, so that a worker never holds more than the packs
   it processed while the store was created (a resumed store needs no schema:
   all its packs are single tasks).  Every task has ``retries``; a dead
   worker's tasks, and the processing whose data it held, are rescheduled by
   the scheduler;
6. the client, the only writer of the manifest, journals each unit of a pack as
   the pack's result arrives, then the run's summary.

Exit codes of the CLI: 0 all done, 2 usage/config/store error before any work,
3 partial failure (some inputs or units failed; the rest is in the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr

from idexdask.errors import ConfigError, IdexDaskError, StoreError
from idexdask.pipeline.campaign_config import recalibrates
from idexdask.pipeline.cluster import ClusterOptions, check_gpu, open_client
from idexdask.pipeline.lock import LOCK_NAME
from idexdask.pipeline.manifest import PIPELINE_DIR, Manifest, pipeline_dir
from idexdask.pipeline.overrides_store import (
    overrides_in_force,
    read_overrides_file,
    unit_override_digests,
    write_overrides_file,
)
from idexdask.pipeline.plan import Plan, Unit, batch_sizes, pack_units, plan_inputs
from idexdask.pipeline.progress import PLAN_NAME, done_units, unit_is_done
from idexdask.pipeline.recalibrate import campaign_step
from idexdask.pipeline.store import (
    check_writable,
    chunk_rows,
    initialise_store,
    read_store_meta,
    write_region,
)
from idexdask.pipeline.units import ProcessedUnits, process_units
from idexdask.pipeline.writers import PLUGIN_NAME as WRITERS_PLUGIN
from idexdask.pipeline.writers import RegionWriters, region_writer

__all__ = [
    "Progress", "RunSummary", "config_hash", "done_units", "run_campaign", "store_status",
]

logger = logging.getLogger(__name__)

# packs whose processing may fail before the store's schema is given up
_SCHEMA_TRIES = 5
# configuration sections that do not change the products
_NON_PRODUCT_SECTIONS = ("cluster", "pipeline", "export")


def config_hash(config: Mapping[str, Any]) -> str:
    """Digest of the configuration sections that shape the products.

    ``cluster``, ``pipeline`` and ``export`` (where and how the work runs) are
    left out, except ``pipeline.analyze``: changing them reprocesses nothing.
    So is ``analysis.fitting`` (CPU or GPU, fit engine): every engine reaches the
    same converged fits to ~1e-5 of their standard errors, and a run resumed on
    other hardware must not redo the units already done.
    """
    relevant = {k: v for k, v in config.items() if k not in _NON_PRODUCT_SECTIONS}
    if isinstance(relevant.get("analysis"), Mapping):
        relevant["analysis"] = {k: v for k, v in relevant["analysis"].items() if k != "fitting"}
    relevant["pipeline.analyze"] = bool(config.get("pipeline", {}).get("analyze", True))
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    state : str
        ``finished`` (every unit done), ``incomplete`` (the run ended with
        failed units or inputs), ``running``, ``interrupted`` or ``new``.
    exports : list of str
        Files the run exported (``export.formats``), by input.
    export_s : float
        Seconds from the first export's submission to the last file written.
    campaign_calibration : dict or None
        Joint calibration of every group (input) when this run made it.
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
        return self.events_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0


# --------------------------------------------------------------------------- tasks


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_task(
    pack: tuple[Unit, ...], config: Mapping[str, Any], overrides: xr.Dataset | None = None
) -> dict[str, Any]:
    """Task 1 of a pack: decode and analyse its units (no store access).

    ``overrides``: the store's override rows in force, applied to their events.

    Data errors (:class:`~idexdask.errors.IdexDaskError`) are deterministic and
    reported as failed units; anything else raises, so the scheduler retries it.
    """
    start = time.perf_counter()
    processed = process_units(pack, config, overrides)
    return {"processed": processed, "elapsed_s": time.perf_counter() - start}


def _pack_task(
    pack: tuple[Unit, ...], config: Mapping[str, Any], store: str, rows: int, n_events: int,
    run_id: str, overrides: xr.Dataset | None = None,
) -> dict[str, Any]:
    """A pack's processing and region write in one task (once the store exists).

    Nothing but the small summary of :func:`_write_task` leaves the task, so the
    worker frees the pack's data as soon as it is written, whatever the client
    is doing (a processed pack is ~80 MiB for 512 events).
    """
    return _write_task(_process_task(pack, config, overrides), pack, store, rows, n_events,
                       run_id)


def _schema_task(result: Mapping[str, Any]) -> xr.Dataset | str:
    """The store template (one event) from a processed pack, or why there is none."""
    processed: ProcessedUnits = result["processed"]
    if processed.dataset is None:
        return "; ".join(processed.failures.values()) or "no events"
    return processed.dataset.isel(epoch=slice(0, 1)).load()


def _write_task(
    result: Mapping[str, Any], pack: tuple[Unit, ...], store: str, rows: int, n_events: int,
    run_id: str,
) -> dict[str, Any]:
    """Task 2 of a pack: write the regions of its processed units.

    Only submitted once the store exists.  The processed units are written as
    runs of contiguous rows (a pack whose middle unit failed has two), with the
    worker's region writer of this run (:mod:`~idexdask.pipeline.writers`).

    Returns
    -------
    dict
        ``status`` per unit uid (``done`` or ``failed``), ``reason`` per failed
        uid, the units' decode ``attrs``, ``worker`` and ``elapsed_s``.
    """
    processed: ProcessedUnits = result["processed"]
    start = time.perf_counter() - float(result["elapsed_s"])
    reasons = dict(processed.failures)
    done: list[str] = []
    if processed.dataset is not None:
        writer = region_writer(store, rows, n_events, run_id)
        offset = 0
        runs: list[list[Unit]] = []
        for unit in processed.done:
            if runs and runs[-1][-1].region[1] == unit.region[0]:
                runs[-1].append(unit)
            else:
                runs.append([unit])
        for run in runs:
            count = sum(u.n_events for u in run)
            region = (run[0].region[0], run[-1].region[1])
            part = processed.dataset.isel(epoch=slice(offset, offset + count))
            offset += count
            try:
                write_region(store, part, region, rows=rows, n_events=n_events, writer=writer)
            except IdexDaskError as exc:
                reasons.update({u.uid: str(exc) for u in run})
            else:
                done.extend(u.uid for u in run)
    return {"status": {**{uid: "failed" for uid in reasons}, **{uid: "done" for uid in done}},
            "reason": reasons, "attrs": processed.attrs, "worker": _worker_name(),
            "overrides_hash": processed.overrides_hash,
            "elapsed_s": time.perf_counter() - start}


# --------------------------------------------------------------------------- run


def _layout(plan: Plan) -> list[list[Any]]:
    """Inputs and their event counts: what the store's row layout depends on."""
    counts: dict[int, int] = {}
    for unit in plan.units:
        counts[unit.input_index] = counts.get(unit.input_index, 0) + unit.n_events
    return [[path, counts.get(i, 0)] for i, path in enumerate(plan.inputs)]


def _write_plan(store: Path, plan: Plan, chash: str) -> None:
    units = [
        {"uid": u.uid, "input": u.path, "input_index": u.input_index, "region": list(u.region),
         "n_events": u.n_events, "input_hash": u.input_hash}
        for u in plan.units
    ]
    failures = [asdict(f) for f in plan.failures]
    payload = {"config_hash": chash, "inputs": plan.inputs, "units": units,
               "plan_failures": failures, "empty_inputs": plan.empty}
    directory = pipeline_dir(store, create=True)
    tmp = directory / (PLAN_NAME + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / PLAN_NAME)


def _is_done(record: Mapping[str, Any] | None, unit: Unit, chash: str) -> bool:
    return (
        record is not None
        and record.get("status") == "done"
        and record.get("input_hash") == unit.input_hash
        and record.get("config_hash") == chash
        and list(record.get("region", ())) == list(unit.region)
    )


def run_campaign(
    inputs: Sequence[str | os.PathLike],
    store: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    cluster: ClusterOptions | None = None,
    overwrite: bool = False,
    on_start: Callable[[str | None, Plan, int], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    export_dir: str | os.PathLike | None = None,
) -> RunSummary:
    """Process a campaign into a Zarr store, resuming what an earlier run left.

    Parameters
    ----------
    inputs : sequence of path
        L0 files, directories of them, or directories of ``.trc`` captures.
    store : path
        Output store (created, or resumed).
    config : mapping
        Validated configuration (:func:`idexdask.config.load_config`).
    cluster : ClusterOptions, optional
        Where to run; default from ``config["cluster"]``.
    overwrite : bool
        Replace an existing store (and its manifest) instead of resuming it.
    on_start : callable, optional
        ``on_start(dashboard_address, plan, events_to_do)`` once the cluster runs.
    on_progress : callable, optional
        Called with a :class:`Progress` after every unit.
    export_dir : path, optional
        Directory of the exports of ``config["export"]["formats"]`` (default
        ``<store>.exports``): written on the cluster, each input's files as soon
        as its units are done (:class:`~idexdask.pipeline.export.CampaignExports`).

    Returns
    -------
    RunSummary
        Events done, failures with reasons, throughput.

    Raises
    ------
    StoreError
        Unwritable store, or a store whose layout does not fit the inputs.
    IdexDaskError
        Bad inputs, unreachable scheduler, ``--gpu`` impossible.
    """
    store = check_writable(store)
    cluster = cluster or ClusterOptions.from_config(dict(config))
    check_gpu(cluster)
    if cluster.gpu:  # GPU workers: the fits run through CuPy
        analysis = dict(config.get("analysis", {}))
        analysis["fitting"] = {**analysis.get("fitting", {}), "device": "gpu"}
        config = {**config, "analysis": analysis}
    pipeline = config["pipeline"]
    # units cut at chunk boundaries (chunk_rows divides chunk_events), so that
    # every unit writes whole chunks except at the ends of its file
    plan = plan_inputs(inputs, int(pipeline["batch_events"]), align=int(pipeline["chunk_events"]))
    batch_events, chunk_events = batch_sizes(  # lab impacts: smaller packs and chunks
        plan, pipeline["batch_events"], pipeline["chunk_events"],
        pipeline.get("lab_batch_events", pipeline["batch_events"]))
    chash = config_hash(config)

    meta = None if overwrite else read_store_meta(store)
    layout = _layout(plan)
    if meta is not None and meta.get("layout") != layout:
        raise StoreError(
            f"{store} was made for other inputs ({meta.get('n_events')} events in "
            f"{len(meta.get('layout', []))} inputs; now {plan.n_events} events in "
            f"{len(layout)}): use a new store or --overwrite"
        )
    need_init = meta is None or meta.get("config_hash") != chash
    manifest = Manifest(store)
    latest = {} if need_init else manifest.latest_units()
    # the manual overrides: a unit whose rows changed is redone (docs/pipeline.md)
    overrides = overrides_in_force(store)
    done_before = [u for u in plan.units if _is_done(latest.get(u.uid), u, chash)]
    digests = unit_override_digests(store, overrides, {u.uid: u.region for u in done_before})
    redone = {u.uid for u in done_before
              if latest[u.uid].get("overrides_hash", "") != digests[u.uid]}
    if redone:
        logger.info("%d unit(s) redone: their manual overrides changed", len(redone))
    todo = [u for u in plan.units
            if not _is_done(latest.get(u.uid), u, chash) or u.uid in redone]
    skipped = len(plan.units) - len(todo)
    summary = RunSummary(
        store=str(store), events_total=plan.n_events, units_total=len(plan.units),
        units_skipped=skipped, empty_inputs=list(plan.empty),
        events_done=sum(u.n_events for u in plan.units) - sum(u.n_events for u in todo),
    )
    summary.units_done = skipped
    # a person's edits are data: they outlive the products they were made on
    kept = read_overrides_file(store) if overwrite else None
    if overwrite and store.exists():
        _clear_store(store)
    store.mkdir(exist_ok=True)
    if kept is not None and kept.sizes.get("override", 0):
        write_overrides_file(store, kept)
    run_id = uuid.uuid4().hex[:12]

    if not cluster.address:  # workers on this machine: compile their kernels once, here
        from idexdask.pipeline.warmup import ensure_kernels

        ensure_kernels()
    with open_client(cluster) as client, _writers_registered(client):
        summary.dashboard = getattr(client, "dashboard_link", None)
        summary.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        resources = {"GPU": 1} if cluster.gpu else None
        retries = int(pipeline["retries"])
        started = time.perf_counter()
        if on_start is not None:
            on_start(summary.dashboard, plan, sum(u.n_events for u in todo))
        packs = pack_units(todo, batch_events, chunk_events)
        # A new store needs a schema: the first packs' processing starts now and
        # their region writes are submitted once the store exists, so the schema
        # and the store's creation overlap with work instead of preceding it.
        shared_overrides = (client.scatter(overrides, broadcast=True, hash=False)
                            if overrides.sizes.get("override", 0) else None)

        def submit_processing(index: int):
            return client.submit(_process_task, packs[index], config, shared_overrides,
                                 resources=resources,
                                 retries=retries, pure=False,
                                 key=f"idexdask-process-{run_id}-{index}")

        n_leading = (min(len(packs), 2 * _threads(client, resources))
                     if need_init and plan.units else 0)
        processing = [submit_processing(i) for i in range(n_leading)]
        template = None
        if n_leading:
            template = _template(client, packs, processing, submit_processing, resources)
        rows = (
            chunk_rows(template, chunk_events) if template is not None
            else int(meta["rows"]) if meta else 1
        )
        if template is not None:
            new_meta = {
                "layout": layout, "inputs": plan.inputs, "n_events": plan.n_events,
                "config_hash": chash, "rows": rows, "kind": plan.kind,
                "created": _now(), "idexdask_version": _version(),
            }
            initialise_store(
                store, template, plan.n_events, rows=rows,
                compressor=str(pipeline["compressor"]),
                level=int(pipeline["compression_level"]), meta=new_meta,
            )
        _write_plan(store, plan, chash)
        manifest.append({
            "record": "run_start", "run_id": run_id, "time": _now(),
            "host": socket.gethostname(), "pid": os.getpid(),
            "total_events": plan.n_events, "units": len(plan.units),
            "todo_units": len(todo), "todo_events": sum(u.n_events for u in todo),
            "config_hash": chash, "dashboard": summary.dashboard,
        })
        for failure in plan.failures:
            manifest.append({
                "record": "unit", "uid": failure.uid, "status": "failed",
                "input": failure.path, "input_index": failure.input_index,
                "region": [0, 0], "n_events": 0, "input_hash": "", "config_hash": chash,
                "reason": failure.reason, "run_id": run_id, "time": _now(),
            })
            summary.failures.append({"uid": failure.uid, "input": failure.path,
                                     "reason": failure.reason, "n_events": 0})
        from idexdask.pipeline.export import CampaignExports

        # a campaign calibration rewrites every unit's products after the last
        # pack: the exports then wait for it (held), else each input's go out
        # as soon as its units are done
        exports = CampaignExports.start(client, store, plan, todo, config.get("export", {}),
                                        export_dir, hold=recalibrates(config))
        _run_packs(client, packs, processing, config, store, rows, plan.n_events, resources,
                   retries, manifest, run_id, chash, summary, started, on_progress,
                   shared_overrides, exports)
        # the reduction over every group's line lists, then the calibration-
        # dependent products of every unit (idexdask.pipeline.recalibrate)
        latest_units = manifest.latest_units()
        done = [u for u in plan.units if _is_done(latest_units.get(u.uid), u, chash)]
        summary.campaign_calibration = campaign_step(
            client, store, done, config, rows, plan.n_events, manifest, run_id, chash,
            resources, retries,
        )
        if exports is not None:
            exports.release()  # held until the campaign step rewrote the products
        summary.elapsed_s = time.perf_counter() - started
        if exports is not None:
            summary.export_s = exports.wait()
            summary.exports = list(exports.written)
            summary.failures.extend(exports.failures)
    if summary.failures:
        summary.state = "incomplete"
    manifest.append({
        "record": "run_end", "run_id": run_id, "time": _now(),
        "events_done": summary.events_done, "events_this_run": summary.events_this_run,
        "units_done": summary.units_done, "units_failed": len(summary.failures),
        "elapsed_s": summary.elapsed_s,
    })
    return summary


@contextlib.contextmanager
def _writers_registered(client) -> Iterator[None]:
    """The :class:`~idexdask.pipeline.writers.RegionWriters` plugin on every worker, for a run.

    Removed at the end, so that a cluster the run connected to is left as it was.
    """
    client.register_plugin(RegionWriters(), name=WRITERS_PLUGIN)
    try:
        yield
    finally:
        try:
            client.unregister_worker_plugin(WRITERS_PLUGIN)
        except Exception as exc:  # noqa: BLE001 - a vanished worker must not fail the run
            logger.debug("could not remove the writer plugin: %s", exc)


def _version() -> str:
    from idexdask import __version__

    return __version__


def _threads(client, resources: Mapping[str, float] | None) -> int:
    """Threads of the workers that can run the tasks (those offering ``resources``), >= 1."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    able = [w for w in workers
            if all(w.get("resources", {}).get(k, 0) >= v for k, v in (resources or {}).items())]
    return max(1, sum(int(w.get("nthreads", 1)) for w in able))


def _template(client, packs: list[tuple[Unit, ...]], processing: list[Any],
              submit: Callable[[int], Any], resources) -> xr.Dataset:
    """Schema of the unit function's output, from the first of the first packs that succeeds.

    Up to :data:`_SCHEMA_TRIES` packs are tried, in order; those beyond the ones
    already in ``processing`` are submitted (``submit(index)``) and appended to it.
    """
    errors = []
    for index in range(min(_SCHEMA_TRIES, len(packs))):
        if index == len(processing):
            processing.append(submit(index))
        schema = client.submit(_schema_task, processing[index], resources=resources,
                               pure=False).result()
        if isinstance(schema, xr.Dataset):
            return schema
        errors.append(f"{packs[index][0].uid}: {schema}")
    raise IdexDaskError("cannot compute the store schema; the first units fail: "
                        + "; ".join(errors))


def _run_packs(client, packs, processing, config, store, rows, n_events, resources, retries,
               manifest, run_id, chash, summary, started, on_progress,
               overrides=None, exports=None) -> None:
    """Submit the writes of the processed packs and the other packs whole; journal them.

    ``exports`` (:class:`~idexdask.pipeline.export.CampaignExports`) hears of every
    journalled unit, to export each input once its units are done.
    """
    from distributed import as_completed

    # priority 1: a worker writes what it holds before it processes more packs
    futures = {
        client.submit(_write_task, processing[i], packs[i], str(store), rows, n_events, run_id,
                      resources=resources, retries=retries, pure=False, priority=1,
                      key=f"idexdask-write-{run_id}-{i}"): i
        for i in range(len(processing))
    }
    futures.update({
        client.submit(_pack_task, packs[i], config, str(store), rows, n_events, run_id,
                      overrides, resources=resources, retries=retries, pure=False,
                      key=f"idexdask-pack-{run_id}-{i}"): i
        for i in range(len(processing), len(packs))
    })
    n_units = sum(len(p) for p in packs)
    n_done_run = 0
    for future in as_completed(futures):
        index = futures.pop(future)
        pack = packs[index]
        try:
            result = future.result()
        except ConfigError:
            raise  # every pack would fail alike: stop the run (units.process_units)
        except Exception as exc:  # the task's own error after its retries, or KilledWorker
            reason = f"{type(exc).__name__}: {exc}"
            result = {"status": {u.uid: "failed" for u in pack},
                      "reason": {u.uid: reason for u in pack},
                      "worker": "", "elapsed_s": 0.0, "attrs": {}, "overrides_hash": {}}
        future.release()
        if index < len(processing):
            processing[index].release()  # the pack's data leave the worker
        share = round(result["elapsed_s"] / max(1, sum(u.n_events for u in pack)), 7)
        records = []
        for unit in pack:
            status = result["status"].get(unit.uid, "failed")
            reason = result["reason"].get(unit.uid, "" if status == "done" else "not processed")
            records.append({
                "record": "unit", "uid": unit.uid, "status": status,
                "input": unit.path, "input_index": unit.input_index, "region": list(unit.region),
                "n_events": unit.n_events, "input_hash": unit.input_hash, "config_hash": chash,
                "reason": reason, "elapsed_s": round(share * unit.n_events, 4),
                "task_units": len(pack), "worker": result["worker"], "run_id": run_id,
                "time": _now(), "attrs": result["attrs"].get(unit.uid, {}),
                "overrides_hash": result.get("overrides_hash", {}).get(unit.uid, ""),
            })
            if status == "done":
                summary.events_done += unit.n_events
                summary.events_this_run += unit.n_events
                summary.units_done += 1
                n_done_run += 1
            else:
                logger.warning("unit %s failed: %s", unit.uid, reason)
                summary.failures.append({"uid": unit.uid, "input": unit.path,
                                         "reason": reason, "n_events": unit.n_events})
        manifest.extend(records)
        if exports is not None:
            for unit, record in zip(pack, records, strict=True):
                exports.unit_finished(unit, record["status"])
        if on_progress is not None:
            on_progress(Progress(
                events_done=summary.events_done, events_total=summary.events_total,
                events_this_run=summary.events_this_run, units_done=n_done_run,
                units_todo=n_units, units_failed=len(summary.failures),
                elapsed_s=time.perf_counter() - started,
            ))


# --------------------------------------------------------------------------- status


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
        alive = start.get("host") == socket.gethostname() and _pid_alive(int(start["pid"]))
        summary.state = "running" if alive else "interrupted"
        begun = datetime.fromisoformat(start["time"])
        summary.elapsed_s = (datetime.now(UTC) - begun).total_seconds()
    return summary


def _clear_store(store: Path) -> None:
    """Empty a store for ``--overwrite``, all but its lock (held by this run)."""
    for child in store.iterdir():
        if child.name == PIPELINE_DIR:
            for item in child.iterdir():
                if item.name != LOCK_NAME:
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
