"""The campaign store: Zarr v3, one variable per product, chunked along events.

Layout
------
The store is created once, at its full size, from a *template*: the variables,
dtypes, dimensions and attributes that the unit function returned for the first
unit (its first event).  xarray lays the template out in a memory store, the
arrays along events are given the planned number of rows, and the metadata
documents (plus the non-event coordinates) are written to disk in one pass.
Every task then writes only its own rows
(:class:`~idexdask.pipeline.region_write.RegionWriter`: the chunk
objects zarr-python would write, encoded and written directly).

Region writes are idempotent (writing a unit again writes the same bytes), so a
unit redone after a crash or a worker's death cannot duplicate or lose events.
Where a unit's rows share a Zarr chunk with its neighbour's (unit boundaries are
not chunk aligned), the partial chunk is read-modified-written under an
exclusive ``flock`` on ``<store>/_pipeline/locks/chunk-<k>.lock``: the operating system
drops the lock of a process that dies, so a killed worker never blocks the run.
(The store must therefore live on a file system all workers share, with working
``flock``: local disks, NFSv4, Lustre, GPFS.)

The store attribute ``idexdask_pipeline`` (JSON) records the inputs, the total
number of events, the configuration digest and the chunking; the manifest
(:mod:`idexdask.pipeline.manifest`) records which units are in it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from idexdask.adccodes import CODE_DTYPE, RECORDED_CODES_KEY, code_scale
from idexdask.compat.zarr_chunks import grown_objects
from idexdask.errors import StoreError
from idexdask.pipeline.manifest import PIPELINE_DIR, pipeline_dir

__all__ = [
    "LOCK_DIR",
    "META_ATTR",
    "StoreSchema",
    "check_writable",
    "chunk_rows",
    "initialise_store",
    "read_store_meta",
]

logger = logging.getLogger(__name__)

META_ATTR = "idexdask_pipeline"
LOCK_DIR = "locks"
_MAX_CHUNK_BYTES = 32 << 20


#: Bytes of one event's values above which a variable's schema keeps no values
_SCHEMA_VALUE_BYTES = 1 << 16


@dataclass(frozen=True)
class _VariableSchema:
    """A variable of the store's schema: its values, or (large) only their layout."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    attrs: dict[str, Any]
    encoding: dict[str, Any]
    values: np.ndarray | None  #: None: a per-sample array, laid out from its shape alone


@dataclass(frozen=True)
class StoreSchema:
    """What laying a store out needs of the unit function's output for one event.

    :func:`initialise_store` uses a template's variables' dimensions, shapes,
    data types, attributes and encodings, and the values of those not along
    ``epoch``; a per-sample variable's one-event values (a lab impact: 10 MB of
    waveforms) are not needed and stay on the worker that made them.

    Attributes
    ----------
    variables : dict
        Per variable name, in the dataset's order.
    coords : tuple of str
        Names of the coordinates.
    attrs : dict
        The dataset's attributes.
    """

    variables: dict[str, _VariableSchema]
    coords: tuple[str, ...]
    attrs: dict[str, Any]

    @classmethod
    def of(cls, dataset: xr.Dataset) -> StoreSchema:
        """The schema of ``dataset``'s first event (its values, up to 64 KiB a variable)."""
        first = dataset.isel(epoch=slice(0, 1)) if "epoch" in dataset.dims else dataset
        variables = {}
        for name, variable in first.variables.items():
            keep = "epoch" not in variable.dims or variable.nbytes <= _SCHEMA_VALUE_BYTES
            variables[str(name)] = _VariableSchema(
                dims=tuple(str(d) for d in variable.dims), shape=tuple(variable.shape),
                dtype=variable.dtype, attrs=dict(variable.attrs),
                # a reader's kept codes (idexdask.adccodes) stay in the worker
                encoding={k: v for k, v in variable.encoding.items()
                          if k != RECORDED_CODES_KEY},
                values=np.array(variable.values) if keep else None)
        return cls(variables, tuple(str(c) for c in dataset.coords), dict(dataset.attrs))

    def template(self) -> xr.Dataset:
        """The one-event template: a variable without values reads as zeros
        (a read-only view of one zero, no memory per sample)."""
        variables = {}
        for name, v in self.variables.items():
            values = (v.values if v.values is not None
                      else np.broadcast_to(np.zeros((), dtype=v.dtype), v.shape))
            variables[name] = xr.Variable(v.dims, values, attrs=v.attrs, encoding=v.encoding)
        coords = {k: variables.pop(k) for k in self.coords}
        return xr.Dataset(variables, coords=coords, attrs=self.attrs)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any work) if the store cannot be created or written.

    Raises
    ------
    StoreError
        If the store's parent is missing or read-only, or the path is a file.
    """
    path = Path(path).absolute()
    if path.exists():
        if not path.is_dir():
            raise StoreError(f"cannot write the store: {path} exists and is not a directory")
        target = path
    else:
        target = path.parent
        if not target.is_dir():
            raise StoreError(f"cannot write the store {path}: {target} does not exist")
    if not os.access(target, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write the store {path}: {target} is not writable")
    return path


def read_store_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The pipeline metadata of an existing store, or None if there is no store.

    Raises
    ------
    StoreError
        If ``path`` holds something that is not a pipeline store.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        return None
    if not (path / "zarr.json").exists():
        if pipeline_dir(path).is_dir():  # a run's directory, or an interrupted creation
            return None
        if any(path.iterdir()):
            raise StoreError(f"{path} exists and is not a Zarr store; choose another path")
        return None
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as exc:  # zarr raises several types for a damaged store
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    if META_ATTR not in attrs:
        raise StoreError(
            f"{path} is a Zarr store not written by `idexdask submit`; "
            "use a new store path or --overwrite"
        )
    return json.loads(attrs[META_ATTR])


def chunk_rows(template: xr.Dataset, chunk_events: int) -> int:
    """Events per chunk: ``chunk_events``, fewer if a chunk would exceed 32 MiB.

    One event grid for all variables, so that chunk boundaries (and the locks on
    partial chunks) are the same for every variable.  The cap keeps the largest
    per-event product (the float64 high-rate time axis, 64 KiB per event) at
    512-event chunks (32 MiB), one chunk per variable per default task (an
    8 MiB cap would have each unit write several chunks of each of ~270 arrays).
    Where the cap cuts, the result is the largest divisor of ``chunk_events``
    under it, so that units planned at multiples of ``chunk_events``
    (:func:`idexdask.pipeline.plan.plan_inputs`) write whole chunks.
    """
    chunk_events = max(1, int(chunk_events))
    rows = chunk_events
    for variable in template.variables.values():
        if "epoch" not in variable.dims:
            continue
        stored = CODE_DTYPE if code_scale(variable.encoding) is not None else variable.dtype
        per_event = stored.itemsize * int(
            np.prod([s for d, s in zip(variable.dims, variable.shape, strict=True) if d != "epoch"])
        )
        if per_event > 0:
            rows = min(rows, max(1, _MAX_CHUNK_BYTES // per_event))
    while chunk_events % rows:
        rows -= 1
    return rows


def _compressors(name: str, level: int, dtype: np.dtype | None = None) -> list | None:
    """The Zarr v3 compressors of an array of ``dtype`` for the configured name.

    ``zstd-bitshuffle``: integer and boolean arrays through Blosc (zstd,
    bit shuffle, clevel 1), the others zstd at ``level``.  The bit planes of the
    10- and 12-bit ADC waveforms compress as well as with plain zstd at level 3
    (3.3x against 3.6x) in a third of the time; floats (the combined TOF, which
    holds few distinct values, and the time axes) keep plain zstd, which finds
    their repeats.  Measured on a 256-event unit: 80 ms against 110 ms to
    compress everything, store 4 % larger.

    ``lz4-bitshuffle``: the same with Blosc lz4 (clevel 5) for the integer and
    boolean arrays.  On the int16 codes of lab captures (4 x 500,002 samples
    per impact) it compresses in half the time of zstd-bitshuffle (2.5 against
    4.8 ms per impact) and decodes in half (1.4 against 3.0 ms), for 5 % more
    bytes (1.40 against 1.34 MB per impact).

    ``lz4-bitshuffle-f32``: ``lz4-bitshuffle`` with the float32 arrays through
    the same Blosc lz4 and bit shuffle: ``pipeline.lab_compressor``.  The
    float32 arrays of a lab store are its per-sample ones (the combined TOF,
    2 MB per impact; the waveforms are int16 codes, the per-event products
    float64).  zstd takes 4.4 ms of CPU per impact to shrink the combined TOF
    5.4x, Blosc lz4 with bit shuffle 1.2 ms for 1.2x (docs/performance.md,
    "Lab campaigns"), within the store's budget of 1.2x the captures' bytes;
    stored uncompressed it would cost ~1 ms less to write, but the rows of a
    chunk that no impact fills (a campaign's last chunk) would take their full
    2 MB each where Blosc stores next to nothing.

    ``lz4-bitshuffle-raw-f32``: ``lz4-bitshuffle`` with the float32 arrays
    stored without compression: ``pipeline.lab_compressor``.  Blosc lz4 with
    bit shuffle shrinks the combined TOF only to 0.83x (1.67 of 2.00 MB per
    impact) for ~1.3 ms of CPU per impact, and the region writer writes an
    uncompressed chunk from the array's rows without a copy; the store grows
    from 0.77x to ~0.86x the captures' bytes.  Lab campaigns are cut into
    chunks as full as their impact count allows
    (:func:`idexdask.pipeline.plan.balanced_rows`: at most one fill row per
    chunk), so that a store's unfilled rows stay small.
    """
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name == "none":
        return None
    if name == "zstd-bitshuffle":
        if dtype is not None and np.dtype(dtype).kind in "biu":
            return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")]
        return [ZstdCodec(level=int(level))]
    if name in ("lz4-bitshuffle", "lz4-bitshuffle-f32", "lz4-bitshuffle-raw-f32"):
        single = dtype is not None and np.dtype(dtype) == np.float32
        if name == "lz4-bitshuffle-raw-f32" and single:
            return None
        blosc = dtype is not None and (
            np.dtype(dtype).kind in "biu" or (name == "lz4-bitshuffle-f32" and single))
        if blosc:
            return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]
        return [ZstdCodec(level=int(level))]
    if name == "zstd":
        return [ZstdCodec(level=int(level))]
    if name == "gzip":
        return [GzipCodec(level=int(level))]
    if name == "blosc-lz4":
        return [BloscCodec(cname="lz4", clevel=int(level), shuffle="shuffle")]
    raise StoreError(f"unknown compressor {name!r}")


#: Chunk files named ``c.<k>.0`` in the array's directory (Zarr v3 default
#: encoding, "." separator), not ``c/<k>/0``: a 2-D array's every chunk would
#: otherwise need a directory of its own, one ``mkdir`` per variable and chunk
#: (~50 per unit write, each a journalled metadata update).
CHUNK_KEY_ENCODING = MappingProxyType({"name": "default", "separator": "."})


#: Samples per chunk of the per-event spectra that the campaign step
#: (:mod:`idexdask.pipeline.recalibrate`) reads in windows: its targeted search
#: reads ~2,500 samples of a 500,002-sample lab row, and whole-row chunks made it
#: decode 16 MB per 8 impacts for them (1.8 ms per impact; 0.23 in chunks of
#: 131,072, and the pack's write no slower).  Flight rows (8,192) stay whole.
#: The most samples per chunk: a row is cut into the fewest windows under it,
#: equal but for rounding (500,002 samples: 4 of 125,001).
WINDOW_CHUNK_SAMPLES = MappingProxyType({"tof_combined": 131072})


def _encoding(template: xr.Dataset, rows: int, compressor: str, level: int,
              uncompressed: Collection[str] = ()) -> dict[str, dict]:
    encoding: dict[str, dict] = {}
    for name, variable in template.variables.items():
        if "epoch" not in variable.dims:
            continue
        chunks = tuple(rows if d == "epoch" else max(1, s)
                       for d, s in zip(variable.dims, variable.shape, strict=True))
        if name in WINDOW_CHUNK_SAMPLES and len(chunks) == 2:
            # the fewest windows of at most that many samples, as equal as the
            # row allows: 500,002 samples in 4 x 125,001, where 131,072 left the
            # last window 106,786 samples and 24,286 fill, stored as written by
            # an uncompressed array (lz4-bitshuffle-raw-f32)
            windows = -(-chunks[1] // max(1, WINDOW_CHUNK_SAMPLES[name]))
            chunks = (rows, max(1, -(-chunks[1] // windows)))
        codecs = None if name in uncompressed else _compressors(compressor, level, variable.dtype)
        encoding[name] = {"chunks": chunks,
                          "compressors": codecs,
                          "chunk_key_encoding": dict(CHUNK_KEY_ENCODING)}
    return encoding


def initialise_store(
    path: str | os.PathLike,
    template: xr.Dataset,
    n_events: int,
    *,
    rows: int,
    compressor: str = "zstd-bitshuffle",
    level: int = 3,
    uncompressed: Collection[str] = (),
    meta: Mapping[str, Any],
) -> None:
    """Create the store at full size from a one-event template (metadata only).

    Parameters
    ----------
    path : path
        Store directory (replaced if it exists; its manifest is kept).
    template : xarray.Dataset
        What the unit function returns, for one event (only its schema is used).
    n_events : int
        Rows of the store.
    rows : int
        Events per chunk (:func:`chunk_rows`).
    compressor, level : str, int
        Chunk compressor (zstd, zstd-bitshuffle, gzip, blosc-lz4, none) and its
        level (see :func:`_compressors`); the default is the configured one.
    uncompressed : collection of str
        Variables stored without a compressor whatever ``compressor`` says
        (``pipeline.lab_uncompressed_waveforms``); names the template lacks are
        ignored.  The region writer writes their chunks from the rows as they
        are.
    meta : mapping
        Pipeline metadata stored as the ``idexdask_pipeline`` attribute.

    Raises
    ------
    StoreError
        If the store cannot be written.
    """
    path = Path(path)
    variables = {}
    strings = {}  # per-event string variables, created directly as Zarr v3 strings below
    resized = []  # arrays along epoch: laid out without rows, then given their full size
    for name, variable in template.variables.items():
        if "epoch" in variable.dims:
            if variable.dims[0] != "epoch":
                raise StoreError(f"variable {name!r}: epoch must be its first dimension")
            shape = (n_events, *variable.shape[1:])
            if variable.dtype == object:
                chunks = (rows, *variable.shape[1:])
                strings[str(name)] = (variable.dims, shape, chunks, dict(variable.attrs))
                continue
            # no template row to write and drop again (each write is a round trip
            # to zarr's event-loop thread and a chunk encoded), except for times,
            # whose CF units xarray infers from the values
            laid_rows = 1 if variable.dtype.kind in "mM" else 0
            scale = code_scale(variable.encoding)
            if scale is not None and variable.dtype.kind == "f":
                # stored as its ADC codes, decoded on read (idexdask.adccodes)
                data = np.zeros((laid_rows, *variable.shape[1:]), dtype=CODE_DTYPE)
                attrs = {**variable.attrs, "scale_factor": scale.scale,
                         "add_offset": scale.offset, "_FillValue": scale.fill}
                variables[name] = xr.Variable(variable.dims, data, attrs=attrs)
            else:
                data = np.zeros((laid_rows, *variable.shape[1:]), dtype=variable.dtype)
                variables[name] = xr.Variable(variable.dims, data, attrs=variable.attrs)
            resized.append(str(name))
        else:
            variables[name] = xr.Variable(variable.dims, variable.values, attrs=variable.attrs)
    coords = {k: variables.pop(k) for k in list(variables) if k in template.coords}
    full = xr.Dataset(variables, coords=coords)
    full.attrs = {"title": "IDEX events, idexdask campaign store"}
    full.attrs[META_ATTR] = json.dumps(dict(meta), sort_keys=True)
    try:
        objects = _layout_in_memory(full, strings,
                                    _encoding(full, rows, compressor, level, uncompressed),
                                    _compressors(compressor, level, np.dtype(object)),
                                    resized, n_events)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"cannot create the store {path}: {exc}") from exc
    try:
        _write_objects(path, objects)
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc}") from exc
    logger.info("initialised %s: %d events, %d per chunk", path, n_events, rows)


def _layout_in_memory(
    full: xr.Dataset, strings: Mapping[str, tuple], encoding: Mapping[str, dict],
    string_compressors: list | None, resized: list[str], n_events: int,
) -> dict[str, bytes]:
    """The store's objects (key -> bytes), laid out by xarray and zarr in memory.

    xarray writes the metadata (its CF encoding, Zarr v3 ``dimension_names``)
    and zarr-python serialises it; in a memory store each of the ~800 calls this
    takes is a round trip to zarr's event-loop thread, but none touches a disk
    (on disk they cost the client 1.3-1.6 s of CPU, up to 5 s of wall time while
    two workers keep the cores busy).

    The arrays along events (``resized``) are laid out for the one-event
    template and then given ``n_events`` rows without their template chunk
    (:func:`idexdask.compat.zarr_chunks.grown_objects`), so that every row reads
    as the fill value until its unit is written; rows of ADC codes read as
    missing samples (their ``_FillValue``), not as a code.  Creating the
    full-size arrays directly needs a lazy (Dask) template, whose write graph
    cost the client ~1.3 s of CPU per run.
    """
    import zarr

    objects: dict[str, Any] = {}
    memory = zarr.storage.MemoryStore(store_dict=objects)
    full.to_zarr(memory, mode="w", zarr_format=3, consolidated=False, encoding=dict(encoding))
    group = zarr.open_group(memory, mode="r+", zarr_format=3)
    for name, (dims, shape, chunks, attrs) in strings.items():
        # variable-length UTF-8 (a type Zarr v3 specifies), empty-string filled
        group.create_array(
            name, shape=shape, chunks=chunks, dtype=str, fill_value="",
            dimension_names=tuple(dims), attributes=attrs,
            compressors=string_compressors if string_compressors is not None else None,
            chunk_key_encoding=dict(CHUNK_KEY_ENCODING),
        )
    grow = {}
    for name in resized:
        attributes = _stored_attributes(objects, group, name)
        coded = code_scale(attributes) is not None and "_FillValue" in attributes
        grow[name] = int(attributes["_FillValue"]) if coded else None
    return grown_objects(group, objects, grow, n_events)


def _stored_attributes(objects: Mapping[str, Any], group: Any, name: str) -> dict[str, Any]:
    """The attributes xarray stored for array ``name`` of the group laid out in memory.

    Parsed from its ``zarr.json`` in the memory store's dictionary (``objects``):
    opening the array through ``group`` is a round trip to zarr's event-loop
    thread per array (~170 of them for a lab store).
    """
    document = objects.get(f"{name}/zarr.json")
    if document is not None:
        meta = json.loads(document.to_bytes())
        if meta.get("node_type") == "array" and isinstance(meta.get("attributes"), dict):
            return meta["attributes"]
    return dict(group[name].attrs)


def _write_objects(path: Path, objects: Mapping[str, bytes]) -> None:
    """Replace the store at ``path`` by ``objects``, keeping its journal.

    The group's own ``zarr.json`` (which holds the pipeline metadata) is written
    last: a store whose creation was interrupted has none, and
    :func:`read_store_meta` reports it as not created yet.
    """
    if path.is_dir():
        # the journal's files (manifest, plan, the store lock) stay in place: a
        # lock file removed even for a moment could be taken by another run
        for child in path.iterdir():
            if child.name != PIPELINE_DIR:
                _remove(child)
        if pipeline_dir(path).is_dir():
            for child in pipeline_dir(path).iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
    journal = pipeline_dir(path, create=True)
    (journal / LOCK_DIR).mkdir(exist_ok=True)
    root = "zarr.json"
    for key in sorted(objects, key=lambda k: k == root):
        target = path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(objects[key])


def _remove(path: Path) -> None:
    """Remove a file or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
