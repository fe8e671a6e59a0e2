"""Run a campaign: plan, lay out the store, run every unit on the cluster, journal it.

Order of work (everything that can fail cheaply fails before any task runs):

1. the store path is checked writable; the configuration is already validated;
   the cluster starts (or is connected to) in a thread of its own, while the
   next steps run (its workers import their modules meanwhile), unless this
   machine's workers need their kernels compiled first (then it starts after
   step 3, once they are); a failure of steps 2-3 closes it again;
2. the inputs are planned (:func:`~idexdask.pipeline.plan.plan_inputs`): every
   unit's exact event count, hence every unit's store region;
3. an existing store is checked against the plan: the same inputs with the same
   event counts, else :class:`~idexdask.errors.StoreError` (use a new store or
   ``--overwrite``); units the manifest records as done with the same input
   digest and configuration digest are skipped;
4. once the cluster is up, the remaining units are grouped into packs of
   about ``batch_events`` events ending on chunk boundaries
   (:func:`~idexdask.pipeline.plan.pack_units`: short files and lab impacts
   share a task);
5. a new store needs a schema: the processing (decode + analysis, no store
   access) of the first packs, two per worker thread, is submitted at once, and
   the store is laid out from the first processed pack's schema (one event's
   layout, :class:`~idexdask.pipeline.store.StoreSchema`: no per-sample values
   leave the worker; read where the pack is held as soon as it is processed)
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
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr

from idexdask.errors import ConfigError, IdexDaskError, StoreError
from idexdask.kernel_cache import kernels_ready
from idexdask.pipeline.campaign_config import recalibrates
from idexdask.pipeline.cluster import ClusterOptions, StartingClient, check_gpu
from idexdask.pipeline.lock import LOCK_NAME
from idexdask.pipeline.manifest import PIPELINE_DIR, Manifest, UnitRecord, pipeline_dir
from idexdask.pipeline.overrides_store import (
    overrides_in_force,
    read_overrides_file,
    unit_override_digests,
    write_overrides_file,
)
from idexdask.pipeline.plan import (
    Plan,
    Unit,
    batch_sizes,
    heavy_events,
    pack_units,
    plan_inputs,
)
from idexdask.pipeline.progress import PLAN_NAME, done_units
from idexdask.pipeline.recalibrate import campaign_step
from idexdask.pipeline.store import (
    StoreSchema,
    check_writable,
    chunk_rows,
    initialise_store,
    read_store_meta,
)
from idexdask.pipeline.summary import Progress, RunSummary, store_status
from idexdask.pipeline.tasks import (
    PackResult,
    StoreRegion,
    held_schema,
    pack_task,
    process_task,
    schema_task,
    write_task,
)
from idexdask.pipeline.writers import PLUGIN_NAME as WRITERS_PLUGIN
from idexdask.pipeline.writers import RegionWriters

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
    """Whether the manifest record of ``unit`` says it is in the store, as planned now."""
    if record is None:
        return False
    try:
        return UnitRecord.from_json(record).is_done(unit.input_hash, unit.region, chash)
    except (KeyError, TypeError, ValueError):  # a record this version cannot read: redo
        return False


def _for_device(config: Mapping[str, Any], cluster: ClusterOptions) -> Mapping[str, Any]:
    """``config`` with the fits on the GPU when the workers are GPU workers (through CuPy)."""
    if not cluster.gpu:
        return config
    analysis = dict(config.get("analysis", {}))
    analysis["fitting"] = {**analysis.get("fitting", {}), "device": "gpu"}
    return {**config, "analysis": analysis}


def _check_layout(store: Path, meta: Mapping[str, Any] | None, plan: Plan) -> None:
    """Refuse a store made for other inputs (other event counts per input)."""
    layout = _layout(plan)
    if meta is not None and meta.get("layout") != layout:
        raise StoreError(
            f"{store} was made for other inputs ({meta.get('n_events')} events in "
            f"{len(meta.get('layout', []))} inputs; now {plan.n_events} events in "
            f"{len(layout)}): use a new store or --overwrite"
        )


def _units_to_do(store: Path, plan: Plan, latest: Mapping[str, Mapping[str, Any]],
                 overrides: xr.Dataset, chash: str) -> list[Unit]:
    """Units not done before with these digests, and those whose manual overrides changed."""
    done_before = [u for u in plan.units if _is_done(latest.get(u.uid), u, chash)]
    digests = unit_override_digests(store, overrides, {u.uid: u.region for u in done_before})
    redone = {u.uid for u in done_before
              if latest[u.uid].get("overrides_hash", "") != digests[u.uid]}
    if redone:
        logger.info("%d unit(s) redone: their manual overrides changed", len(redone))
    return [u for u in plan.units
            if not _is_done(latest.get(u.uid), u, chash) or u.uid in redone]


def _reset_store(store: Path, overwrite: bool) -> None:
    """Empty the store for ``overwrite``, keeping the manual overrides; create it."""
    # a person's edits are data: they outlive the products they were made on
    kept = read_overrides_file(store) if overwrite else None
    if overwrite and store.exists():
        _clear_store(store)
    store.mkdir(exist_ok=True)
    if kept is not None and kept.sizes.get("override", 0):
        write_overrides_file(store, kept)


@dataclass
class _Run:
    """What the steps of one run share once its cluster is up.

    Attributes
    ----------
    client : distributed.Client
        The run's client.
    config : mapping
        The validated configuration (with the device of the workers).
    target : StoreRegion
        The store and its row layout (``rows`` set once the store is laid out).
    resources : dict or None
        Worker resources every task asks for (``{"GPU": 1}`` on GPU workers).
    retries : int
        Retries of a failed task.
    manifest : Manifest
        The journal (written by this client only).
    chash : str
        :func:`config_hash` of ``config``.
    summary : RunSummary
        Updated as units are journalled.
    started : float
        ``time.perf_counter()`` at the cluster's start.
    on_progress : callable or None
        Told after every pack.
    overrides : distributed.Future or None
        The override rows in force, scattered to every worker (None: none).
    exports : CampaignExports or None
        The run's exports, told of every journalled unit.
    """

    client: Any
    config: Mapping[str, Any]
    target: StoreRegion
    resources: dict[str, float] | None
    retries: int
    manifest: Manifest
    chash: str
    summary: RunSummary
    started: float
    on_progress: Callable[[Progress], None] | None = None
    overrides: Any = None
    exports: Any = None

    @property
    def run_id(self) -> str:
        return self.target.run_id

    def submit_processing(self, packs: Sequence[tuple[Unit, ...]], index: int) -> Any:
        """Submit the processing (no store access) of ``packs[index]``."""
        return self.client.submit(process_task, packs[index], self.config, self.overrides,
                                  resources=self.resources, retries=self.retries, pure=False,
                                  key=f"idexdask-process-{self.run_id}-{index}")


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
        Inputs of any source (:mod:`idexdask.sources`): L0 files, L1a CDFs,
        directories of them, or directories of ``.trc`` captures.
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
    # the cluster starts while the inputs are planned, unless this machine's
    # workers need the kernels compiled first (after planning, below)
    starting = StartingClient(cluster) if cluster.address or kernels_ready() else None
    try:
        prepared = _prepare(inputs, store, config, cluster, overwrite)
    except BaseException:
        if starting is not None:
            starting.close()
        raise
    if starting is None:  # workers on this machine: compile their kernels once, here
        from idexdask.pipeline.warmup import ensure_kernels

        ensure_kernels()
        starting = StartingClient(cluster)
    plan, summary, config, todo = prepared.plan, prepared.summary, prepared.config, prepared.todo
    manifest, overrides, chash = prepared.manifest, prepared.overrides, prepared.chash
    pipeline = config["pipeline"]
    batch_events, chunk_events = batch_sizes(  # lab impacts: smaller packs and chunks
        plan, pipeline["batch_events"], pipeline["chunk_events"],
        pipeline.get("lab_batch_events", pipeline["batch_events"]))
    run_id = uuid.uuid4().hex[:12]
    with starting.client() as client, _writers_registered(client):
        summary.dashboard = getattr(client, "dashboard_link", None)
        summary.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        run = _Run(
            client=client, config=config,
            target=StoreRegion(str(store), 1, plan.n_events, run_id),
            resources={"GPU": 1} if cluster.gpu else None,
            retries=int(pipeline["retries"]), manifest=manifest, chash=chash,
            summary=summary, started=time.perf_counter(), on_progress=on_progress,
        )
        if on_start is not None:
            on_start(summary.dashboard, plan, sum(u.n_events for u in todo))
        packs = pack_units(todo, batch_events, chunk_events)
        if overrides.sizes.get("override", 0):
            run.overrides = client.scatter(overrides, broadcast=True, hash=False)
        processing = _lay_out_store(run, plan, packs, prepared.meta, prepared.need_init,
                                    chunk_events)
        _write_plan(store, plan, chash)
        _journal_start(run, plan, todo)
        from idexdask.pipeline.export import CampaignExports

        # a campaign calibration rewrites every unit's products after the last
        # pack: the exports then wait for it (held), else each input's go out
        # as soon as its units are done
        run.exports = CampaignExports.start(client, store, plan, todo,
                                            config.get("export", {}), export_dir,
                                            hold=recalibrates(config))
        _run_packs(run, packs, processing)
        _finish(run, plan)
    if summary.failures:
        summary.state = "incomplete"
    manifest.append({
        "record": "run_end", "run_id": run_id, "time": _now(),
        "events_done": summary.events_done, "events_this_run": summary.events_this_run,
        "units_done": summary.units_done, "units_failed": len(summary.failures),
        "elapsed_s": summary.elapsed_s,
    })
    return summary


@dataclass
class _Prepared:
    """A run's plan and what it found in the store (:func:`_prepare`).

    Attributes
    ----------
    plan, summary : Plan, RunSummary
        The inputs' units; the run's summary so far (the units done before).
    config, chash : mapping, str
        The configuration with the fits on the workers' device; its :func:`config_hash`.
    manifest, overrides : Manifest, xarray.Dataset
        The store's journal; the override rows in force.
    todo : list of Unit
        The units to do.
    meta, need_init : mapping or None, bool
        The store's metadata (None: a new store); whether it is laid out anew.
    """

    plan: Plan
    summary: RunSummary
    config: Mapping[str, Any]
    manifest: Manifest
    overrides: xr.Dataset
    todo: list[Unit]
    meta: Mapping[str, Any] | None
    need_init: bool
    chash: str


def _prepare(inputs: Sequence[str | os.PathLike], store: Path, config: Mapping[str, Any],
             cluster: ClusterOptions, overwrite: bool) -> _Prepared:
    """Plan the inputs, check the store against the plan, find the units to do, reset the store."""
    config = _for_device(config, cluster)
    pipeline = config["pipeline"]
    # units cut at chunk boundaries (chunk_rows divides chunk_events), so that
    # every unit writes whole chunks except at the ends of its file
    plan = plan_inputs(inputs, int(pipeline["batch_events"]), align=int(pipeline["chunk_events"]))
    chash = config_hash(config)

    meta = None if overwrite else read_store_meta(store)
    _check_layout(store, meta, plan)
    need_init = meta is None or meta.get("config_hash") != chash
    manifest = Manifest(store)
    latest = {} if need_init else manifest.latest_units()
    # the manual overrides: a unit whose rows changed is redone (docs/pipeline.md)
    overrides = overrides_in_force(store)
    todo = _units_to_do(store, plan, latest, overrides, chash)
    skipped = len(plan.units) - len(todo)
    summary = RunSummary(
        store=str(store), events_total=plan.n_events, units_total=len(plan.units),
        units_skipped=skipped, empty_inputs=list(plan.empty),
        events_done=sum(u.n_events for u in plan.units) - sum(u.n_events for u in todo),
    )
    summary.units_done = skipped
    _reset_store(store, overwrite)
    return _Prepared(plan, summary, config, manifest, overrides, todo, meta, need_init, chash)


def _lay_out_store(run: _Run, plan: Plan, packs: list[tuple[Unit, ...]],
                   meta: Mapping[str, Any] | None, need_init: bool,
                   chunk_events: int) -> list[Any]:
    """Create a new store from the first processed pack's schema; the packs processing.

    A new store needs a schema: the first packs' processing (two per worker
    thread) starts now, and their region writes are submitted once the store
    exists, so that the schema and the store's creation overlap with work
    instead of preceding it.  Sets ``run.target.rows``.

    Returns
    -------
    list of distributed.Future
        The processing of ``packs[:len(result)]`` (empty for a resumed store).
    """
    n_leading = (min(len(packs), 2 * _threads(run.client, run.resources))
                 if need_init and plan.units else 0)
    processing = [run.submit_processing(packs, i) for i in range(n_leading)]
    template = None
    if n_leading:
        template = _template(run.client, packs, processing,
                             lambda index: run.submit_processing(packs, index), run.resources)
    rows = (
        chunk_rows(template, chunk_events) if template is not None
        else int(meta["rows"]) if meta else 1
    )
    run.target = replace(run.target, rows=rows)
    if template is not None:
        pipeline = run.config["pipeline"]
        new_meta = {
            "layout": _layout(plan), "inputs": plan.inputs, "n_events": plan.n_events,
            "config_hash": run.chash, "rows": rows, "kind": plan.kind,
            "created": _now(), "idexdask_version": _version(),
        }
        # lab impacts: their int16 codes through the faster lab compressor
        heavy = heavy_events(plan)
        compressor = pipeline.get("lab_compressor") if heavy else None
        initialise_store(
            run.target.store, template, plan.n_events, rows=rows,
            compressor=str(compressor or pipeline["compressor"]),
            level=int(pipeline["compression_level"]),
            uncompressed=tuple(pipeline.get("lab_uncompressed_waveforms") or ()) if heavy else (),
            meta=new_meta,
        )
    return processing


def _journal_start(run: _Run, plan: Plan, todo: Sequence[Unit]) -> None:
    """The ``run_start`` record, and a failed ``unit`` record per input that failed planning."""
    run.manifest.append({
        "record": "run_start", "run_id": run.run_id, "time": _now(),
        "host": socket.gethostname(), "pid": os.getpid(),
        "total_events": plan.n_events, "units": len(plan.units),
        "todo_units": len(todo), "todo_events": sum(u.n_events for u in todo),
        "config_hash": run.chash, "dashboard": run.summary.dashboard,
    })
    for failure in plan.failures:
        run.manifest.append(UnitRecord(
            uid=failure.uid, status="failed", input=failure.path,
            input_index=failure.input_index, region=(0, 0), n_events=0, input_hash="",
            config_hash=run.chash, reason=failure.reason, run_id=run.run_id, time=_now(),
        ).to_json())
        run.summary.failures.append({"uid": failure.uid, "input": failure.path,
                                     "reason": failure.reason, "n_events": 0})


def _finish(run: _Run, plan: Plan) -> None:
    """The campaign calibration over every unit done, then the exports it held."""
    latest_units = run.manifest.latest_units()
    done = [u for u in plan.units if _is_done(latest_units.get(u.uid), u, run.chash)]
    # the reduction over every group's line lists, then the calibration-
    # dependent products of every unit (idexdask.pipeline.recalibrate)
    run.summary.campaign_calibration = campaign_step(
        run.client, Path(run.target.store), done, run.config, run.target.rows,
        run.target.n_events, run.manifest, run.run_id, run.chash, run.resources, run.retries,
    )
    if run.exports is not None:
        run.exports.release()  # held until the campaign step rewrote the products
    run.summary.elapsed_s = time.perf_counter() - run.started
    if run.exports is not None:
        run.summary.export_s = run.exports.wait()
        run.summary.exports = list(run.exports.written)
        run.summary.failures.extend(run.exports.failures)


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


def _schema(client, processing: Any, resources) -> StoreSchema | str:
    """The schema of a processed pack (:func:`~idexdask.pipeline.tasks.schema_task`).

    Read where the pack is held, in the worker's event loop
    (:func:`~idexdask.pipeline.tasks.held_schema`) the moment it is processed,
    while the worker's thread goes on with its next pack; a schema task (which
    would wait for that pack) where that fails (a worker that lost the pack, a
    cluster that runs no functions sent by a client).

    Raises
    ------
    Exception
        The processing's own error, after its retries.
    """
    from distributed import wait

    wait(processing)
    if processing.status != "finished":
        processing.result()  # the task's error
    holders = client.who_has(processing).get(processing.key, ())
    if holders:
        try:
            return next(iter(client.run(held_schema, processing.key,
                                        workers=list(holders)[:1]).values()))
        except Exception as exc:  # noqa: BLE001 - the schema task below is the authority
            logger.debug("schema of %s not read where it is held: %s", processing.key, exc)
    return client.submit(schema_task, processing, resources=resources, pure=False).result()


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
        schema = _schema(client, processing[index], resources)
        if isinstance(schema, StoreSchema):
            return schema.template()
        errors.append(f"{packs[index][0].uid}: {schema}")
    raise IdexDaskError("cannot compute the store schema; the first units fail: "
                        + "; ".join(errors))


def _submit_packs(run: _Run, packs: Sequence[tuple[Unit, ...]],
                  processing: Sequence[Any]) -> dict[Any, int]:
    """The writes of the processed packs, and every other pack as one task: {future: index}."""
    # priority 1: a worker writes what it holds before it processes more packs
    futures = {
        run.client.submit(write_task, processing[i], packs[i], run.target,
                          resources=run.resources, retries=run.retries, pure=False,
                          priority=1, key=f"idexdask-write-{run.run_id}-{i}"): i
        for i in range(len(processing))
    }
    futures.update({
        run.client.submit(pack_task, packs[i], run.config, run.target, run.overrides,
                          resources=run.resources, retries=run.retries, pure=False,
                          key=f"idexdask-pack-{run.run_id}-{i}"): i
        for i in range(len(processing), len(packs))
    })
    return futures


def _unit_records(run: _Run, pack: Sequence[Unit], result: PackResult) -> list[UnitRecord]:
    """The manifest records of a pack's units (its time shared among them by events)."""
    share = round(result.elapsed_s / max(1, sum(u.n_events for u in pack)), 7)
    records = []
    for unit in pack:
        status = result.status.get(unit.uid, "failed")
        records.append(UnitRecord(
            uid=unit.uid, status=status, input=unit.path, input_index=unit.input_index,
            region=unit.region, n_events=unit.n_events, input_hash=unit.input_hash,
            config_hash=run.chash,
            reason=result.reason.get(unit.uid, "" if status == "done" else "not processed"),
            run_id=run.run_id, time=_now(), elapsed_s=round(share * unit.n_events, 4),
            task_units=len(pack), worker=result.worker,
            attrs=result.attrs.get(unit.uid, {}),
            overrides_hash=result.overrides_hash.get(unit.uid, ""),
        ))
    return records


def _count(summary: RunSummary, unit: Unit, record: UnitRecord) -> None:
    """Add a journalled unit to the run's summary."""
    if record.status == "done":
        summary.events_done += unit.n_events
        summary.events_this_run += unit.n_events
        summary.units_done += 1
    else:
        logger.warning("unit %s failed: %s", unit.uid, record.reason)
        summary.failures.append({"uid": unit.uid, "input": unit.path,
                                 "reason": record.reason, "n_events": unit.n_events})


def _run_packs(run: _Run, packs: list[tuple[Unit, ...]], processing: list[Any]) -> None:
    """Submit the writes of the processed packs and the other packs whole; journal them.

    ``run.exports`` (:class:`~idexdask.pipeline.export.CampaignExports`) hears of
    every journalled unit, to export each input once its units are done.
    """
    from distributed import as_completed

    futures = _submit_packs(run, packs, processing)
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
            result = PackResult.failed(pack, f"{type(exc).__name__}: {exc}")
        future.release()
        if index < len(processing):
            processing[index].release()  # the pack's data leave the worker
        records = _unit_records(run, pack, result)
        for unit, record in zip(pack, records, strict=True):
            _count(run.summary, unit, record)
            n_done_run += record.status == "done"
        run.manifest.extend([r.to_json() for r in records])
        if run.exports is not None:
            for unit, record in zip(pack, records, strict=True):
                run.exports.unit_finished(unit, record.status)
        if run.on_progress is not None:
            run.on_progress(Progress(
                events_done=run.summary.events_done, events_total=run.summary.events_total,
                events_this_run=run.summary.events_this_run, units_done=n_done_run,
                units_todo=n_units, units_failed=len(run.summary.failures),
                elapsed_s=time.perf_counter() - run.started,
            ))


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
