"""Exports of a campaign store: per input, SDC-named L1a and L2a CDFs and/or one HDF5 file.

Only events of units the manifest records as done are exported.  Every input is
one :class:`ExportJob`; each of its files (L1a CDF, L2a CDF, HDF5) is written by
one task (:func:`write_exports` with ``files=[kind]``) reading only that file's
variables: on the cluster's workers, one writer per output file and the files
in parallel, either while a campaign runs (:class:`CampaignExports`, as soon as
an input's units are finished, or after the campaign calibration step where a
run makes one) or for a finished store (:func:`export_store`).  The tasks read
the store through :func:`open_campaign` (time axes materialised, scope codes
scaled), so they see what every other reader sees.

CDF names follow the IMAP SDC: ``imap_idex_l1a_sci_<yyyymmdd>_v<NNN>.cdf`` and
``imap_idex_l2a_sci_...``, the date that of the input's first event (UTC).
Inputs whose first events fall on the same date are told apart by the descriptor:
the first of them, in the store's input order, is ``sci``, the next ``sci-2``,
``sci-3``, ... (Logical_source and Logical_file_id follow).  HDF5 files are named
after their input.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.adccodes import decode_code_variables
from idexdask.errors import IdexDaskError, StoreError
from idexdask.pipeline.ragged import SLOT_DIM, peaks_from_event_major
from idexdask.pipeline.units import LEVEL_ATTR
from idexdask.timeaxis import expand_axes

__all__ = [
    "FORMATS", "CampaignExports", "ExportJob", "export_store", "l1a_l2a_datasets",
    "open_campaign", "write_exports",
]

logger = logging.getLogger(__name__)

FORMATS = {"hdf5": ".h5", "cdf": ".cdf"}
LEVELS = ("l1a", "l2a")
PEAK_RECORDS = {"peak": "peak_epoch"}
"""The L2a CDF's second record dimension: one record per TOF line, DEPEND_0 ``peak_epoch``."""


def open_campaign(store: str | os.PathLike, *, dask: bool = True) -> xr.Dataset:
    """Open a campaign store lazily with raw values (no CF decoding of fills/times).

    Uniform time axes that the store holds as their terms (start, step, count
    per event) are restored as lazy variables with the values they had
    (:func:`idexdask.timeaxis.expand_axes`); waveforms stored as ADC codes are
    decoded to the float32 values they were written from
    (:func:`idexdask.adccodes.decode_code_variables`).

    Parameters
    ----------
    store : path
        Campaign store.
    dask : bool
        Dask arrays of the store's chunks (default); False: xarray's own lazy
        arrays, read by NumPy when indexed (what the exports use: loading a
        thousand events of ~280 variables through Dask's threaded scheduler took
        4x as long, its graph of per-chunk tasks costing more than the reads).

    Returns
    -------
    xarray.Dataset
        Every stored variable along ``epoch`` (rows not yet written read as fill).

    Raises
    ------
    StoreError
        If the store cannot be opened.
    """
    try:
        dataset = xr.open_zarr(store, consolidated=False, mask_and_scale=False,
                               decode_times=False, decode_timedelta=False,
                               **({} if dask else {"chunks": None}))
    except Exception as exc:  # zarr raises several types for a bad store
        raise StoreError(f"cannot open store {store}: {exc}") from exc
    try:
        return decode_code_variables(expand_axes(dataset))
    except IdexDaskError as exc:
        raise StoreError(f"cannot open store {store}: {exc}") from exc


@dataclass(frozen=True)
class ExportJob:
    """The files of one input: which store rows, under which names.

    Attributes
    ----------
    input_index : int
        Position of the input in the store's ``inputs``.
    source : str
        The input's path.
    regions : tuple of (int, int)
        ``[start, stop)`` store rows of its done units, in order.
    date : str
        ``YYYYMMDD`` of its first event (UTC).
    descriptor : str
        SDC descriptor of its CDFs (``sci``, or ``sci-2``... for a date shared
        with earlier inputs).
    stem : str
        Name of its HDF5 file without the suffix.
    """

    input_index: int
    source: str
    regions: tuple[tuple[int, int], ...]
    date: str
    descriptor: str = "sci"
    stem: str = ""

    def cdf_name(self, level: str, version: str) -> str:
        """The SDC file name of the ``level`` product (``imap_idex_l1a_sci_..._v001.cdf``)."""
        return f"{self.logical_source(level)}_{self.date}_v{version}.cdf"

    def logical_source(self, level: str) -> str:
        return f"imap_idex_{level}_{self.descriptor}"


def _stems(inputs: Sequence[str]) -> list[str]:
    stems = [Path(p).stem or Path(p).name for p in inputs]
    return [s if stems.count(s) == 1 else f"{i:03d}_{s}" for i, s in enumerate(stems)]


def plan_exports(inputs: Sequence[str], regions: Mapping[int, Sequence[tuple[int, int]]],
                 first_epochs: Mapping[int, int]) -> list[ExportJob]:
    """One :class:`ExportJob` per input with done rows, named as the module says.

    Parameters
    ----------
    inputs : sequence of str
        The store's inputs.
    regions : mapping of int to sequence of (int, int)
        Done store rows per input index.
    first_epochs : mapping of int to int
        TT2000 (ns) of each of those inputs' first event.
    """
    from idexdask.io.cdf import cdf_date

    stems = _stems(list(inputs))
    seen: dict[str, int] = {}
    jobs = []
    for index in sorted(regions):
        rows = tuple(sorted((int(a), int(b)) for a, b in regions[index] if b > a))
        if not rows:
            continue
        date = cdf_date(first_epochs[index])
        seen[date] = seen.get(date, 0) + 1
        descriptor = "sci" if seen[date] == 1 else f"sci-{seen[date]}"
        jobs.append(ExportJob(index, str(inputs[index]), rows, date, descriptor, stems[index]))
    return jobs


def l1a_l2a_datasets(events: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset | None]:
    """Split stored events into the L1a and L2a products of the CDF exports.

    The store's attribute ``product_level`` of each variable says where it goes
    (:data:`idexdask.pipeline.units.LEVEL_ATTR`); a store without it (written
    before the split) is all L1a.  In the L2a product the per-line variables are
    ragged again (``peak`` dimension, :func:`~idexdask.pipeline.ragged.peaks_from_event_major`)
    with ``peak_epoch``, the time of each line's event, and ``peak_event``, its
    row in the file; ``peak_count`` and ``peak_overflow`` stay per event.

    Returns
    -------
    (xarray.Dataset, xarray.Dataset or None)
        L1a and L2a datasets (None if the store holds no analysis products).
    """
    levels = {str(n): v.attrs.get(LEVEL_ATTR) for n, v in events.data_vars.items()}
    if not any(levels.values()):
        return events, None
    l1a_names = [n for n, level in levels.items() if level != "l2a"]
    l2a_names = [n for n, level in levels.items() if level == "l2a"]
    l1a = events[l1a_names]
    if not l2a_names:
        return l1a, None
    l2a = events[l2a_names]
    counts = l2a["peak_count"] if "peak_count" in l2a else None
    if counts is not None and SLOT_DIM in l2a.dims:
        overflow = l2a["peak_overflow"] if "peak_overflow" in l2a else None
        ragged = peaks_from_event_major(l2a)
        event = ragged["peak_event"].values.astype(np.int32)
        extra = {
            "peak_event": xr.Variable(("peak",), event, attrs={
                "long_name": "row (epoch record) of this file holding the line's event"}),
            "peak_epoch": xr.Variable(("peak",), l2a["epoch"].values[event]),
            "peak_count": counts.variable,
        }
        if overflow is not None:
            extra["peak_overflow"] = overflow.variable
        l2a = ragged.assign(extra)
    return l1a, l2a


def _rows(regions: Sequence[tuple[int, int]]) -> slice | np.ndarray:
    rows = np.concatenate([np.arange(a, b) for a, b in regions])
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # the usual single run
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def file_kinds(formats: Sequence[str]) -> list[str]:
    """The files of an input the formats ask for, in order: ``l1a``, ``l2a``, ``hdf5``."""
    return [*(LEVELS if "cdf" in formats else ()), *(("hdf5",) if "hdf5" in formats else ())]


def write_exports(store: str | os.PathLike, job: ExportJob, formats: Sequence[str],
                  output_dir: str | os.PathLike, attributes: Mapping[str, Any] | str,
                  compression: int = 6, files: Sequence[str] | None = None) -> list[str]:
    """Write the files of one input (a cluster task, or called in-process).

    Parameters
    ----------
    store : path
        Campaign store (read through :func:`open_campaign`).
    job : ExportJob
        The input's rows and names.
    formats : sequence of {"hdf5", "cdf"}
        Formats to write.
    output_dir : path
        Directory of the files (exists).
    attributes : mapping or str
        ISTP attribute table (:func:`idexdask.io.cdf.load_cdf_attributes`) or its file.
    compression : int
        gzip level of the CDF variables (0-9).
    files : sequence of {"l1a", "l2a", "hdf5"}, optional
        Which of the input's files to write (default all the formats ask for:
        :func:`file_kinds`); a task per file is one writer per file, and reads
        only the variables of its file.

    Returns
    -------
    list of str
        Paths written: the L1a CDF, the L2a CDF (if the store holds analysis
        products), the HDF5 file, as asked.

    Raises
    ------
    StoreError
        If the store cannot be read or a file cannot be written.
    """
    from idexdask.io.cdf import load_cdf_attributes, write_cdf
    from idexdask.io.hdf5 import write_hdf5

    table = dict(attributes) if isinstance(attributes, Mapping) else load_cdf_attributes(
        attributes)
    out = Path(output_dir)
    kinds = [k for k in (files if files is not None else file_kinds(formats))
             if k in file_kinds(formats)]
    dataset = open_campaign(store, dask=False)
    # Zarr lists a store's arrays in no fixed order: sorted, the files of one store
    # are the same from one export to the next.
    names = sorted(dataset.data_vars, key=str)
    if "hdf5" not in kinds:  # only the variables of the CDF products asked for
        levels = {str(n): dataset[n].attrs.get(LEVEL_ATTR) for n in names}
        if any(levels.values()):
            names = [n for n in names if (levels[str(n)] or "l1a") in kinds]
    if not names:  # an L2a file of a store without analysis products
        dataset.close()
        return []
    dataset = dataset[names]
    events = dataset.isel(epoch=_rows(job.regions)).load()
    events.attrs = {"source": job.source, "store": str(store)}
    # the input's campaign calibration (idexdask.pipeline.recalibrate)
    campaign = json.loads(dataset.attrs.get("campaign_calibration") or "{}").get(
        str(job.input_index))
    if campaign is not None:
        events.attrs["campaign_calibration"] = json.dumps(campaign, sort_keys=True)
    dataset.close()
    written = []
    if "l1a" in kinds or "l2a" in kinds:
        version = str(table.get("global", {}).get("Data_version", "001"))
        for level, product in zip(LEVELS, l1a_l2a_datasets(events), strict=True):
            if product is None or level not in kinds or not product.data_vars:
                continue
            product.attrs = {**events.attrs, "Logical_source": job.logical_source(level),
                             "Data_version": version}
            path = out / job.cdf_name(level, version)
            written.append(str(write_cdf(
                product, path, attributes=table, compression=compression, level=level,
                ragged=PEAK_RECORDS if "peak" in product.dims else None)))
    if "hdf5" in kinds:
        written.append(str(write_hdf5(events, out / f"{job.stem}{FORMATS['hdf5']}")))
    return written


def _submit(client: Any, store: Path, job: ExportJob, formats: Sequence[str], out: Path,
            table: Mapping[str, Any], compression: int, priority: int = 0) -> list[Any]:
    """One task per file of the input (one writer per file), in :func:`file_kinds` order."""
    return [client.submit(write_exports, str(store), job, list(formats), str(out), table,
                          compression, [kind], pure=False, priority=priority,
                          key=f"idexdask-export-{job.input_index}-{kind}-{time.time_ns()}")
            for kind in file_kinds(formats)]


def _check_formats(formats: Iterable[str]) -> list[str]:
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise StoreError(f"unknown export format(s) {unknown}; choose from {sorted(FORMATS)}")
    return formats


def _output_dir(store: Path, output_dir: str | os.PathLike | None) -> Path:
    out = Path(output_dir) if output_dir else store.with_name(store.name + ".exports")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the export directory {out}: {exc}") from exc
    return out


def _first_epochs(store: Path, first_rows: Mapping[int, int]) -> dict[int, int]:
    """TT2000 of the given store rows, read through :func:`open_campaign`."""
    if not first_rows:
        return {}
    dataset = open_campaign(store, dask=False)
    rows = sorted(set(first_rows.values()))
    values = dict(zip(rows, dataset["epoch"].values[rows].tolist(), strict=True))
    dataset.close()
    return {index: int(values[row]) for index, row in first_rows.items()}


def export_store(
    store: str | os.PathLike,
    formats: Iterable[str],
    output_dir: str | os.PathLike | None = None,
    *,
    cdf_attributes: str = "cdf_attributes.yaml",
    compression: int = 6,
    client: Any = None,
) -> list[Path]:
    """Write the files of every input from the done events of ``store``.

    Parameters
    ----------
    store : path
        Campaign store.
    formats : iterable of {"hdf5", "cdf"}
        Formats to write.
    output_dir : path, optional
        Directory of the files (default: ``<store>.exports`` beside the store).
    cdf_attributes : str
        ISTP attribute file for the CDF exports.
    compression : int
        gzip level of the CDF variables.
    client : distributed.Client, optional
        Write the inputs' files as tasks on this cluster, in parallel; without
        one, one after the other in this process.

    Returns
    -------
    list of pathlib.Path
        Files written, by input then format (L1a, L2a, HDF5).

    Raises
    ------
    StoreError
        Unknown format, unreadable store, unwritable output directory, a file
        that cannot be written.
    """
    from idexdask.io.cdf import load_cdf_attributes
    from idexdask.pipeline.progress import done_units

    formats = _check_formats(formats)
    store = Path(store)
    out = _output_dir(store, output_dir)
    inputs, units = done_units(store)
    regions: dict[int, list[tuple[int, int]]] = {}
    for unit in units:
        regions.setdefault(int(unit["input_index"]), []).append(tuple(unit["region"]))
    first_rows = {i: min(a for a, _ in r) for i, r in regions.items()}
    jobs = plan_exports(inputs, regions, _first_epochs(store, first_rows))
    table = load_cdf_attributes(cdf_attributes) if "cdf" in formats else {}
    if client is None:
        written = [p for job in jobs
                   for p in write_exports(store, job, formats, out, table, compression)]
    else:
        futures = [f for job in jobs
                   for f in _submit(client, store, job, formats, out, table, compression)]
        written = [p for future in futures for p in future.result()]
    logger.info("exported %d files to %s", len(written), out)
    return [Path(p) for p in written]


@dataclass
class CampaignExports:
    """The exports of a running campaign, each submitted once its input is finished.

    The runner reports every unit it journals (:meth:`unit_finished`); the job of
    input ``i`` is submitted as soon as every unit of inputs ``0..i`` is finished
    (done or failed): its name depends on the dates of the inputs before it.  Its
    rows are those of its done units, of this run and earlier ones.

    Attributes
    ----------
    written : list of str
        Files written so far.
    failures : list of dict
        ``{"uid", "input", "reason", "n_events"}`` of the inputs whose export failed.
    """

    client: Any
    store: Path
    inputs: list[str]
    formats: list[str]
    output_dir: Path
    table: Mapping[str, Any]
    compression: int
    pending: dict[int, int] = field(default_factory=dict)
    regions: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    first_rows: dict[int, int] = field(default_factory=dict)
    first_epochs: dict[int, int] = field(default_factory=dict)
    next_input: int = 0
    futures: list[tuple[ExportJob, Any]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    held: bool = False

    @classmethod
    def start(cls, client: Any, store: Path, plan: Any, todo: Sequence[Any],
              export: Mapping[str, Any], output_dir: str | os.PathLike | None,
              *, hold: bool = False) -> CampaignExports | None:
        """The exports of a run (None if ``export.formats`` is empty).

        ``plan`` is the run's :class:`~idexdask.pipeline.plan.Plan` and ``todo``
        its units to process; the others are done from earlier runs.  ``hold``:
        submit nothing before :meth:`release` (a campaign calibration rewrites
        the products after the last unit).
        """
        from idexdask.io.cdf import load_cdf_attributes

        formats = _check_formats(export.get("formats") or [])
        if not formats:
            return None
        table = (load_cdf_attributes(export.get("cdf_attributes", "cdf_attributes.yaml"))
                 if "cdf" in formats else {})
        exports = cls(client, Path(store), list(plan.inputs), formats,
                      _output_dir(Path(store), output_dir), table,
                      int(export.get("cdf_compression", 6)), held=hold)
        todo_ids = {u.uid for u in todo}
        for unit in plan.units:
            exports.pending.setdefault(unit.input_index, 0)
            if unit.uid in todo_ids:
                exports.pending[unit.input_index] += 1
            else:
                exports.unit_finished(unit, "done", submit=False)
        exports.submit_ready()
        return exports

    def unit_finished(self, unit: Any, status: str, *, submit: bool = True) -> None:
        """Record a journalled unit (``status`` done or failed); submit what is ready."""
        if status == "done":
            self.regions.setdefault(unit.input_index, []).append(tuple(unit.region))
            row = int(unit.region[0])
            self.first_rows[unit.input_index] = min(self.first_rows.get(unit.input_index, row),
                                                    row)
        if submit:
            self.pending[unit.input_index] -= 1
            self.submit_ready()

    def submit_ready(self) -> None:
        """Submit the jobs of the inputs whose units, and those of every input before, are done."""
        if self.held:
            return
        ready = []
        while self.next_input < len(self.inputs) and self.pending.get(self.next_input, 0) == 0:
            ready.append(self.next_input)
            self.next_input += 1
        if not ready:
            return
        self.first_epochs.update(_first_epochs(
            self.store, {i: self.first_rows[i] for i in ready if i in self.first_rows}))
        jobs = plan_exports(self.inputs, {i: self.regions[i] for i in self.first_epochs},
                            self.first_epochs)
        for job in jobs:
            if job.input_index in ready:
                # priority 1, as the region writes: a finished input's files are
                # written before more packs are processed, not after all of them
                for future in _submit(self.client, self.store, job, self.formats,
                                      self.output_dir, self.table, self.compression,
                                      priority=1):
                    self.futures.append((job, future))

    def release(self) -> None:
        """Stop holding the exports back; submit every input ready by now."""
        self.held = False
        self.submit_ready()

    def wait(self) -> float:
        """Wait for every submitted job; returns the seconds since the exports were set up."""
        for job, future in self.futures:
            try:
                self.written.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - one input's export must not lose the run
                logger.warning("export of %s failed: %s", job.source, exc)
                self.failures.append({"uid": f"{job.source}@export", "input": job.source,
                                      "reason": f"export failed: {exc}", "n_events": 0})
            finally:
                future.release()
        self.futures = []
        return time.perf_counter() - self.started
