"""Region writes into the campaign store: each task writes only its own rows.

The store is laid out once, at its full size (:mod:`idexdask.pipeline.store`);
:class:`RegionWriter` then writes a unit's rows as the chunk objects
zarr-python would write, encoded and written directly (behind the
:mod:`idexdask.compat.zarr_chunks` adapter).  Where a unit's rows share a Zarr
chunk with its neighbour's, the partial chunk is read-modified-written under an
exclusive ``flock`` on ``<store>/_pipeline/locks/chunk-<k>.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.adccodes import code_scale, recorded_codes
from idexdask.compat.zarr_chunks import ChunkCodec, chunk_codec
from idexdask.errors import StoreError
from idexdask.pipeline.manifest import pipeline_dir
from idexdask.pipeline.store import LOCK_DIR

__all__ = ["RegionWriter", "write_region"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _partial_chunk_locks(
    path: Path, region: tuple[int, int], rows: int, n_events: int
) -> Iterator[None]:
    """Exclusive flocks on the chunks this region shares with other regions."""
    start, stop = region
    shared = []
    for k in sorted({start // rows, (stop - 1) // rows}):
        first, last = k * rows, min((k + 1) * rows, n_events)
        if not (start <= first and last <= stop):
            shared.append(k)
    with contextlib.ExitStack() as stack:
        for k in shared:  # ascending order: no deadlock between neighbours
            lock_file = pipeline_dir(path) / LOCK_DIR / f"chunk-{k}.lock"
            handle = stack.enter_context(open(lock_file, "a+b"))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            stack.callback(fcntl.flock, handle.fileno(), fcntl.LOCK_UN)
        yield



# --------------------------------------------------------------------------- region writes

#: Attributes (and encodings) under which xarray's CF encoding changes the values
#: written; a variable carrying one goes through ``encode_cf_variable``.
_CF_VALUE_ATTRS = frozenset({"scale_factor", "add_offset", "missing_value", "_Unsigned"})
_CF_ENCODING_KEYS = _CF_VALUE_ATTRS | {"_FillValue", "dtype", "units", "calendar"}
_NUMERIC_TYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
})
_FLOAT_NAMES = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


class _ArraySpec:
    """What a region write needs of one stored array, read from its ``zarr.json``."""

    def __init__(
        self,
        directory: str,
        meta: Mapping[str, Any],
        codecs: dict[str, ChunkCodec | None] | None = None,
    ) -> None:
        self.directory = directory
        self.shape = tuple(int(s) for s in meta["shape"])
        self.chunks = tuple(int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.dims = tuple(meta.get("dimension_names") or ())
        #: the codes' scale of an array stored as ADC codes (idexdask.adccodes)
        self.code_scale = code_scale(meta.get("attributes") or {})
        data_type = meta["data_type"]
        self.dtype = np.dtype(object) if data_type == "string" else np.dtype(str(data_type))
        self.fill = meta["fill_value"]
        self.codec: ChunkCodec | None = None
        self.inner: list[tuple[tuple[int, ...], tuple[slice, ...]]] = []
        key_encoding = meta.get("chunk_key_encoding", {})
        self.separator = str((key_encoding.get("configuration") or {}).get("separator", "/"))
        self.prefix = "c" + self.separator if key_encoding.get("name") == "default" else ""
        supported = (
            (data_type in _NUMERIC_TYPES or data_type == "string")
            and meta["chunk_grid"].get("name") == "regular"
            and key_encoding.get("name") in ("default", "v2")
            and len(self.chunks) == len(self.shape)
            and all(c >= 1 for c in self.chunks)
            and not meta.get("storage_transformers")
        )
        if not supported:
            return
        # the chunks along the per-event axes: (their indices, the elements of an
        # event they hold); one, unless an array is chunked along its samples
        # (idexdask.pipeline.store.WINDOW_CHUNK_SAMPLES)
        grid = [range(-(-n // c)) for n, c in zip(self.shape[1:], self.chunks[1:], strict=True)]
        self.inner = [
            (index, tuple(slice(i * c, min((i + 1) * c, n))
                          for i, c, n in zip(index, self.chunks[1:], self.shape[1:], strict=True)))
            for index in itertools.product(*grid)
        ]
        try:
            self.fill = self._parse_fill(self.fill)
            # arrays of one dtype and codec chain share one codec object (or None:
            # written through zarr-python), checked against zarr once
            key = f"{self.dtype.str} {meta['codecs']!r}"
            codecs = {} if codecs is None else codecs
            if key not in codecs:
                codecs[key] = chunk_codec(self.dtype, list(meta["codecs"]), self.shape[1:])
            self.codec = codecs[key]
        except (KeyError, TypeError, ValueError):
            self.codec = None  # written through zarr-python instead

    def _parse_fill(self, fill: Any) -> Any:
        if self.dtype.kind == "O":
            if not isinstance(fill, str):
                raise ValueError(fill)
            return fill
        if self.dtype.kind == "f":
            if isinstance(fill, str):
                if fill in _FLOAT_NAMES:
                    return self.dtype.type(_FLOAT_NAMES[fill])
                if fill.startswith("0x"):  # the value's bytes, big-endian
                    raw = bytes.fromhex(fill[2:])
                    return np.frombuffer(raw, dtype=self.dtype.newbyteorder(">"))[0]
                raise ValueError(fill)
            return self.dtype.type(fill)
        if isinstance(fill, bool) != (self.dtype.kind == "b"):
            raise ValueError(fill)
        return self.dtype.type(fill)

    def chunk_path(self, k: int, inner: tuple[int, ...] | None = None) -> str:
        """File of the chunk ``k`` along ``epoch`` and ``inner`` along the other axes
        (default: their first)."""
        inner = (0,) * (len(self.shape) - 1) if inner is None else inner
        index = self.separator.join([str(int(k)), *(str(int(i)) for i in inner)])
        return os.path.join(self.directory, self.prefix + index)

    def is_fill(self, chunk: np.ndarray) -> bool:
        """Whether every element is the fill value, as zarr-python decides it.

        zarr (``array.write_empty_chunks`` false, its default) stores no object
        for such a chunk and deletes an existing one; reads then give the fill.
        """
        fill = self.fill
        if chunk.dtype.kind == "O":
            return bool(np.all(chunk == fill))
        if chunk.dtype.kind == "f" and fill == 0:  # +0.0 and -0.0 differ here
            bits = np.dtype(f"u{chunk.dtype.itemsize}")
            return not np.any(np.ascontiguousarray(chunk).view(bits)
                              != np.asarray(fill, chunk.dtype).view(bits))
        if chunk.dtype.kind == "f" and np.isnan(fill):
            return bool(np.isnan(chunk.flat[0])) and bool(np.isnan(chunk).all())
        return bool(chunk.flat[0] == fill) and bool(np.all(chunk == fill))


def _store_values(name: str, variable: xr.Variable, spec: _ArraySpec) -> np.ndarray:
    """The values to store for a variable: xarray's CF encoding, in the store's dtype.

    Plain numeric variables (no ``scale_factor``/``add_offset``/non-NaN
    ``_FillValue``/... attributes or encodings) are stored as they are, which is
    what ``encode_cf_variable`` returns for them, without its ~0.2 ms per call.
    """
    if spec.code_scale is not None and spec.dtype.kind in "iu":
        # the codes the reader kept for these very volts (read-only since, or
        # not decoded at all: a lazy waveform), in the store's scale
        codes = recorded_codes(variable, spec.code_scale)
        if codes is not None and codes.dtype == spec.dtype and variable.dtype.kind == "f":
            return codes
    values = np.asarray(variable.values)
    if spec.code_scale is not None and spec.dtype.kind in "iu" and values.dtype.kind == "f":
        # each value's code found again; the store's scale, not the unit's: a
        # unit of another gain cannot be stored
        codes = spec.code_scale.encode(values)
        if codes is None:
            raise StoreError(
                f"variable {name!r}: the values are not ADC codes of the store's scale "
                f"({spec.code_scale.scale} per count, offset {spec.code_scale.offset}): "
                "a capture with other scope settings needs a store of its own"
            )
        return codes.astype(spec.dtype, copy=False)
    attrs, encoding = variable.attrs, variable.encoding
    fill = attrs.get("_FillValue")
    plain = (
        values.dtype.kind in "biufO"
        and not (_CF_VALUE_ATTRS & attrs.keys())
        and not (_CF_ENCODING_KEYS & encoding.keys())
        and (fill is None or (values.dtype.kind == "f" and np.isnan(fill)))
    )
    if not plain:
        from xarray.conventions import encode_cf_variable

        encoded = encode_cf_variable(
            xr.Variable(variable.dims, values, attrs=attrs, encoding=encoding), name=name
        )
        values = np.asarray(encoded.values)
    if spec.dtype.kind == "O":
        if values.dtype.kind not in "OUS":
            raise StoreError(f"variable {name!r}: {values.dtype} values for a string array")
        return values.astype(str).astype(object) if values.dtype.kind in "US" else values
    if values.dtype == spec.dtype:
        return values
    if values.dtype.kind not in "biuf":
        raise StoreError(f"variable {name!r}: {values.dtype} values for a {spec.dtype} array")
    cast = values.astype(spec.dtype)
    if not np.array_equal(cast.astype(values.dtype), values, equal_nan=values.dtype.kind == "f"):
        raise StoreError(
            f"variable {name!r}: {values.dtype} values do not fit the store's {spec.dtype}"
        )
    return cast


class RegionWriter:
    """Writes units' rows into one campaign store.

    The arrays' metadata (``zarr.json``) is read once per writer, when a variable
    is first written, and kept in the writer: create one per task, or keep one
    per worker process for one store (its memory is a few hundred small records,
    never chunk data), but not across a re-initialisation of the store
    (``--overwrite`` creates the arrays anew).  Arrays whose metadata this module does not recognise
    (another codec, chunk grid or data type) are written through zarr-python.

    Each chunk of a unit's region is encoded with the array's codec chain and
    written in a single pass through a temporary file (see :meth:`_put`),
    without zarr-python's per-array open and per-chunk event-loop machinery
    (~1 ms per array against ~0.1 ms).  A chunk shared with a neighbouring unit
    is read, modified and written under the chunk's ``flock``
    (:func:`_partial_chunk_locks`).  The objects are those zarr-python writes
    for the same values, byte for byte, including that an all-fill chunk is
    not stored.

    Parameters
    ----------
    path : path
        Store created by :func:`initialise_store`.
    rows, n_events : int
        Events per chunk and rows of the store (checked against the metadata).
    """

    def __init__(self, path: str | os.PathLike, *, rows: int, n_events: int) -> None:
        self.path = Path(path)
        self.rows = int(rows)
        self.n_events = int(n_events)
        self._specs: dict[str, _ArraySpec] = {}
        self._codecs: dict[str, ChunkCodec | None] = {}
        # temporary files named <chunk>.<this writer's token>.<serial>.partial:
        # unique between writers as zarr-python's uuid4 per file is, without a
        # random draw per chunk (O_EXCL refuses a name in use all the same)
        self._token = uuid.uuid4().hex
        self._serial = itertools.count()

    def spec(self, name: str) -> _ArraySpec:
        """Metadata of the stored array ``name``.

        Raises
        ------
        StoreError
            If the store has no such array or its layout differs from the plan.
        """
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        directory = os.path.join(self.path, name)
        try:
            with open(os.path.join(directory, "zarr.json"), "rb") as handle:
                meta = json.loads(handle.read())
        except FileNotFoundError:
            meta = None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the metadata of {name!r} in {self.path}: {exc}") from exc
        if meta is None or meta.get("node_type") != "array" or "/" in name:
            raise StoreError(
                f"variable {name!r} is not in the store (the unit function's output "
                "changed; use a new store or --overwrite)"
            )
        try:
            spec = _ArraySpec(directory, meta, self._codecs)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"unreadable metadata of {name!r} in {self.path}: {exc}") from exc
        if not spec.shape or spec.shape[0] != self.n_events or spec.chunks[0] != self.rows:
            raise StoreError(
                f"array {name!r} has shape {spec.shape}, chunks {spec.chunks}; the run "
                f"expects {self.n_events} rows in chunks of {self.rows}"
            )
        self._specs[name] = spec
        return spec

    def write(self, dataset: xr.Dataset, region: tuple[int, int]) -> None:
        """Write one unit's events into rows ``[region[0], region[1])``.

        Every variable is checked against the store before anything is written.

        Raises
        ------
        StoreError
            If the unit's variables do not fit the store or the write fails.
        """
        start, stop = (int(r) for r in region)
        if stop - start != dataset.sizes.get("epoch", 0):
            raise StoreError(
                f"unit has {dataset.sizes.get('epoch', 0)} events for store rows {start}-{stop}"
            )
        if stop == start:
            return
        if start < 0 or stop > self.n_events:
            raise StoreError(f"rows {start}-{stop} outside the store's {self.n_events}")
        fast: list[tuple[_ArraySpec, np.ndarray]] = []
        slow: dict[str, tuple[tuple, np.ndarray]] = {}
        for name, variable in dataset.variables.items():
            if "epoch" not in variable.dims:
                continue  # the template wrote what does not run along events
            name = str(name)
            if variable.dims[0] != "epoch":
                raise StoreError(f"variable {name!r}: epoch must be its first dimension")
            spec = self.spec(name)
            if spec.dims and spec.dims != tuple(variable.dims):
                raise StoreError(
                    f"variable {name!r}: dims {variable.dims} but the store has {spec.dims}"
                )
            if tuple(variable.shape[1:]) != spec.shape[1:]:
                raise StoreError(
                    f"variable {name!r}: shape {variable.shape[1:]} per event, "
                    f"store {spec.shape[1:]}"
                )
            values = _store_values(name, variable, spec)
            if spec.codec is None:
                slow[name] = (tuple(variable.dims), values)
            else:
                fast.append((spec, values))
        with _partial_chunk_locks(self.path, (start, stop), self.rows, self.n_events):
            try:
                for spec, values in fast:
                    self._write_chunks(spec, values, start, stop)
                if slow:
                    _write_arrays(self.path, slow, start, stop)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"cannot write rows {start}-{stop} of {self.path}: {exc}") from exc

    def _write_chunks(self, spec: _ArraySpec, values: np.ndarray, start: int, stop: int) -> None:
        if 0 in spec.shape[1:]:
            return  # no elements, no chunk objects
        rows, n_events = self.rows, self.n_events
        shape = (rows, *spec.chunks[1:])
        for k in range(start // rows, (stop - 1) // rows + 1):
            first, last = k * rows, min((k + 1) * rows, n_events)
            lo, hi = max(start, first), min(stop, last)
            shared = not (lo == first and hi == last)
            for inner, elements in spec.inner:
                block = values[(slice(lo - start, hi - start), *elements)]
                target = spec.chunk_path(k, inner)
                if not shared and hi == first + rows and block.shape[1:] == shape[1:]:
                    chunk = block  # a whole chunk of this unit's
                elif not shared and (padded := spec.codec.raw_padded_rows(
                        block, shape, spec.fill)) is not None:
                    # at the store's end, uncompressed: its rows and their fill
                    # written as they are (all fill if and only if the block is)
                    self._put(spec, target, block, shared, padded)
                    continue
                else:
                    if shared:  # with a neighbour: its flock is held
                        chunk = self._read_chunk(spec, target, shape)
                    else:  # at the store's end (last rows, last samples): fill padded
                        chunk = np.full(shape, spec.fill, dtype=spec.dtype)
                    chunk[(slice(lo - first, hi - first),
                           *(slice(0, n) for n in block.shape[1:]))] = block
                self._put(spec, target, chunk, shared)

    @staticmethod
    def _read_chunk(spec: _ArraySpec, target: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            with open(target, "rb") as handle:
                payload = handle.read()
        except FileNotFoundError:
            return np.full(shape, spec.fill, dtype=spec.dtype)
        assert spec.codec is not None
        return spec.codec.decode(payload, spec.dtype, shape)

    def _put(self, spec: _ArraySpec, target: str, chunk: np.ndarray, shared: bool,
             payload: list[memoryview] | None = None) -> None:
        """Store one chunk object (or delete it: all fill), through a temporary file.

        ``payload``: the object's bytes where the caller has them (else encoded
        from ``chunk``, which then decides alone whether it is all fill).

        A chunk shared with a neighbouring unit is renamed over the old one:
        atomic, so the neighbour's rows are never missing.  A chunk of this unit
        alone is unlinked first: ext4 (``auto_da_alloc``) flushes a file renamed
        over an existing one to disk synchronously, measured 0.8 s of waiting per
        rewritten unit; a unit interrupted in between is not journalled as done
        and is written again.
        """
        if spec.is_fill(chunk):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return
        assert spec.codec is not None
        # an uncompressed chunk is written from its rows (no copy of a window)
        if payload is None:
            payload = spec.codec.raw_rows(chunk) or [memoryview(spec.codec.encode(chunk))]
        partial = f"{target}.{self._token}.{next(self._serial)}.partial"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(partial, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(partial), exist_ok=True)
            fd = os.open(partial, flags, 0o666)
        try:
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
            if not shared:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise


#: Buffers per ``writev`` call (POSIX guarantees at least 16; Linux takes 1024).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


def _write_all(fd: int, buffers: list[memoryview]) -> None:
    """Write ``buffers`` one after the other to ``fd`` (``writev``, resumed after a
    short write)."""
    pending = [b.cast("B") if b.format != "B" or b.ndim != 1 else b for b in buffers]
    while pending:
        written = os.writev(fd, pending[:_IOV_MAX])
        if not written and any(len(b) for b in pending):
            raise OSError(f"write of a chunk object wrote nothing ({fd})")
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def write_region(
    path: str | os.PathLike,
    dataset: xr.Dataset,
    region: tuple[int, int],
    *,
    rows: int,
    n_events: int,
    writer: RegionWriter | None = None,
) -> None:
    """Write one unit's events into rows ``[region[0], region[1])`` of the store.

    Parameters
    ----------
    path : path
        Store created by :func:`initialise_store`.
    dataset : xarray.Dataset
        The unit's events (``region[1] - region[0]`` of them), same variables as
        the template.
    region : tuple of int
        Store rows of the unit.
    rows, n_events : int
        Events per chunk and rows of the store (to find the shared chunks).
    writer : RegionWriter, optional
        A writer for this store to reuse (its metadata already read); by
        default a new one, for this write alone.

    Raises
    ------
    StoreError
        If the unit's variables do not fit the store or the write fails.
    """
    if writer is None:
        writer = RegionWriter(path, rows=rows, n_events=n_events)
    elif writer.path != Path(path) or (writer.rows, writer.n_events) != (rows, n_events):
        raise StoreError(f"the writer given is for {writer.path}, not {path}")
    writer.write(dataset, region)


def _write_arrays(
    path: Path, arrays: Mapping[str, tuple[tuple, np.ndarray]], start: int, stop: int
) -> None:
    """Region writes through zarr-python's public API, for the arrays whose chunks
    :class:`RegionWriter` does not encode itself."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for name, (_, values) in arrays.items():
        group[name][start:stop] = values
