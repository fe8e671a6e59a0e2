"""Zarr v3 chunk objects written directly, or through zarr-python's public API.

The campaign store (:mod:`idexdask.pipeline.store`) writes every unit's rows.
zarr-python's ``Array.__setitem__`` costs ~1 ms per array (an open and a round
trip to its event-loop thread per chunk) against ~0.1 ms for encoding the chunk
here and writing its file, for ~270 arrays per unit.  Two shortcuts below
zarr-python's API serve that:

* :class:`ChunkCodec` runs an array's codec chain (Zarr v3 spec names, read
  from its ``zarr.json``) on the numcodecs codecs that zarr-python itself runs
  for them, so a chunk object is the one zarr-python writes, byte for byte
  (gzip: the header's time stamp is 0 here).  :func:`chunk_codec` builds one
  only for a chain it knows, and only when a round trip through zarr-python
  (:func:`agrees_with_zarr`: zarr reads what it encodes, it reads what zarr
  writes, the same bytes) passes for this zarr release (run once per process
  for each data type and chain); otherwise it returns None and the store
  writes that array with ``Array.__setitem__``.
* :func:`grown_objects` gives arrays laid out for a one-event template their
  full number of rows by editing their ``zarr.json`` (and dropping the
  template's chunks); the public path re-creates them at full size with
  ``Group.create_array`` from the template's metadata.  Both give the same
  metadata (``tests/unit/pipeline/test_region_write.py``).

``IDEXDASK_PUBLIC_API=zarr_chunks`` forces the public path for both.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from idexdask.compat import public_api_forced

__all__ = ["ChunkCodec", "agrees_with_zarr", "chunk_codec", "forget_zarr_checks",
           "grown_objects", "shortcut_allowed"]

logger = logging.getLogger(__name__)


def shortcut_allowed() -> bool:
    """False when ``IDEXDASK_PUBLIC_API`` names ``zarr_chunks``."""
    return not public_api_forced("zarr_chunks")


class _Gzip:
    """numcodecs' ``GZip`` with a zero header time: the same chunk, the same bytes.

    (zarr-python writes the current time into each gzip chunk's header, so a
    unit written twice would differ there; the data stream is identical.)
    """

    def __init__(self, level: int) -> None:
        import numcodecs

        self.level = level
        self._decoder = numcodecs.GZip(level=level)

    def encode(self, buf: Any) -> bytes:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=self.level, mtime=0) as f:
            f.write(buf)
        return out.getvalue()

    def decode(self, buf: Any) -> Any:
        return self._decoder.decode(buf)


class ChunkCodec:
    """The codec chain of one array (Zarr v3 spec names), run synchronously.

    Supports the chains :func:`idexdask.pipeline.store.initialise_store`
    creates: ``bytes`` (any endian) or ``vlen-utf8``, followed by any of
    ``zstd``, ``gzip``, ``blosc``.  Each compressor is the numcodecs codec that
    zarr-python runs for that name and configuration.

    Raises
    ------
    NotImplementedError
        For any other chain (the array is then written through zarr-python).
    """

    def __init__(self, dtype: np.dtype, codecs: list[dict[str, Any]]) -> None:
        import numcodecs

        first, *rest = codecs
        name = first.get("name")
        config = first.get("configuration") or {}
        if name == "bytes" and dtype.kind != "O":
            endian = config.get("endian", "little")
            self.stored_dtype: np.dtype | None = dtype.newbyteorder(
                "<" if endian == "little" else ">"
            )
            self.strings = None
        elif name == "vlen-utf8" and dtype.kind == "O":
            self.stored_dtype = None
            self.strings = numcodecs.VLenUTF8()
        else:
            raise NotImplementedError(name)
        self.compressors = []
        for codec in rest:
            name, config = codec.get("name"), dict(codec.get("configuration") or {})
            if name == "zstd":
                self.compressors.append(numcodecs.Zstd.from_config(
                    {"level": int(config.get("level", 0)),
                     "checksum": bool(config.get("checksum", False))}))
            elif name == "gzip":
                self.compressors.append(_Gzip(int(config.get("level", 5))))
            elif name == "blosc":
                shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[config["shuffle"]]
                self.compressors.append(numcodecs.Blosc.from_config(
                    {"cname": config["cname"], "clevel": int(config["clevel"]),
                     "shuffle": shuffle, "blocksize": int(config.get("blocksize", 0)),
                     "typesize": int(config["typesize"])}))
            else:
                raise NotImplementedError(name)
        self.gzip = any(isinstance(c, _Gzip) for c in self.compressors)

    def encode(self, chunk: np.ndarray) -> Any:
        """Chunk array (C order) -> the bytes of its chunk object."""
        if self.strings is not None:
            payload: Any = self.strings.encode(np.ascontiguousarray(chunk).ravel())
        else:
            payload = np.ascontiguousarray(chunk, dtype=self.stored_dtype).reshape(-1).view("B")
        for codec in self.compressors:
            payload = codec.encode(payload)
        return payload

    def raw_rows(self, chunk: np.ndarray) -> list[memoryview] | None:
        """The bytes of ``chunk``'s object as buffers over its rows, or None.

        Only for a chain without compressor (``bytes`` alone) whose byte order is
        the chunk's: the object is then the chunk's elements in C order, which
        the rows of a 2-D chunk with contiguous rows (a window of a wider array's
        rows) give without the copy :meth:`encode` makes of them.
        """
        if self.compressors or self.strings is not None or chunk.dtype != self.stored_dtype:
            return None
        if chunk.flags.c_contiguous:
            return [memoryview(chunk.reshape(-1).view("B"))]
        if chunk.ndim == 2 and chunk.strides[1] == chunk.itemsize:
            return [memoryview(row.view("B")) for row in chunk]
        return None

    def raw_padded_rows(self, block: np.ndarray, shape: tuple[int, ...],
                        fill: Any) -> list[memoryview] | None:
        """The bytes of a chunk of ``shape`` holding ``block`` at its start and
        ``fill`` elsewhere (a store's last rows or samples), as buffers over
        ``block``'s rows and a few of fill, or None.

        For the chains :meth:`raw_rows` serves, and a 2-D ``block`` with
        contiguous rows: the object is each row of ``block`` followed by its
        fill, then rows of fill, in C order, without the chunk-sized array
        that filling and copying would write.
        """
        if (self.compressors or self.strings is not None or block.dtype != self.stored_dtype
                or block.ndim != 2 or len(shape) != 2
                or block.shape[0] > shape[0] or block.shape[1] > shape[1]
                or (block.size and block.strides[1] != block.itemsize)):
            return None
        rows, columns = shape
        filled, width = block.shape
        buffers: list[memoryview] = []
        pad = memoryview(np.full(columns - width, fill, block.dtype).view("B"))
        for row in block:
            buffers.append(memoryview(row.view("B")))
            if columns > width:
                buffers.append(pad)
        if rows > filled:
            blank = memoryview(np.full(columns, fill, block.dtype).view("B"))
            buffers.extend([blank] * (rows - filled))
        return buffers

    def decode(self, payload: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Bytes of a chunk object -> a writable chunk array."""
        for codec in reversed(self.compressors):
            payload = codec.decode(payload)
        if self.strings is not None:
            return np.asarray(self.strings.decode(payload), dtype=object).reshape(shape)
        values = np.frombuffer(payload, dtype=self.stored_dtype)
        return values.astype(dtype).reshape(shape)  # astype copies: writable, native order


def _sample(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic values of every kind a chunk holds (no fill-only chunk)."""
    size = int(np.prod(shape))
    if dtype.kind == "O":
        words = np.array(["", "Mg", "Fe²⁺", "émission", "x" * 40], dtype=object)
        return words[np.arange(size) % words.size].reshape(shape)
    if dtype.kind == "b":
        return (np.arange(size) % 3 == 1).reshape(shape)
    values = (np.arange(size) * 37 % 251).astype(dtype).reshape(shape)
    if dtype.kind == "f":
        values.flat[0] = np.nan
        values.flat[-1] = -0.0
    return values


def agrees_with_zarr(codec: ChunkCodec, dtype: np.dtype, codecs: list[dict[str, Any]],
                     inner_shape: tuple[int, ...]) -> bool:
    """Whether zarr-python encodes a chunk of this chain as ``codec`` does.

    A two-row array of the same data type and codecs is written with zarr's
    public API in memory; its chunk object must be ``codec``'s encoding of the
    same values (gzip: but for the header's time) and decode to them.

    Returns
    -------
    bool
        True when they agree; False (with a debug log) when zarr writes other
        bytes or fails to create such an array.
    """
    import zarr

    # two rows of at most 64 elements per axis: the codecs' behaviour does not
    # depend on the chunk's shape (blosc's typesize is the element's size)
    shape = (2, *(min(max(1, int(n)), 64) for n in inner_shape))
    values = _sample(dtype, shape)
    objects: dict[str, Any] = {}
    try:
        array = zarr.create_array(
            zarr.storage.MemoryStore(store_dict=objects), shape=shape, chunks=shape,
            dtype=str if dtype.kind == "O" else dtype, serializer=codecs[0],
            compressors=codecs[1:] or None, fill_value="" if dtype.kind == "O" else None,
        )
        array[...] = values
        (theirs,) = [buffer.to_bytes() for key, buffer in objects.items()
                     if not key.endswith("zarr.json")]
        ours = bytes(codec.encode(values))
        back = codec.decode(theirs, dtype, shape)
    except Exception as exc:  # noqa: BLE001 - any failure means: do not take the shortcut
        logger.debug("zarr round trip of %s failed: %s", codecs, exc)
        return False
    if codec.gzip and len(ours) > 8 and len(theirs) > 8:
        theirs = theirs[:4] + ours[4:8] + theirs[8:]  # the header's time stamp
    same_values = (np.array_equal(back, values) if dtype.kind == "O"
                   else back.tobytes() == values.tobytes())
    if ours != theirs or not same_values:
        logger.debug("zarr encodes %s otherwise: chunks written through zarr", codecs)
        return False
    return True


def chunk_codec(dtype: np.dtype, codecs: list[dict[str, Any]],
                inner_shape: tuple[int, ...]) -> ChunkCodec | None:
    """The codec to write this array's chunks with, or None (zarr-python writes them).

    Parameters
    ----------
    dtype : numpy.dtype
        The array's data type (object for Zarr v3 strings).
    codecs : list of dict
        The ``codecs`` of its ``zarr.json``.
    inner_shape : tuple of int
        Its shape after the first (chunked) axis.

    Returns
    -------
    ChunkCodec or None
        None when :func:`shortcut_allowed` is false, the chain is not one
        :class:`ChunkCodec` runs, or :func:`agrees_with_zarr` fails (run once
        per process for a data type, chain and sample shape:
        :func:`forget_zarr_checks`).
    """
    if not shortcut_allowed():
        return None
    try:
        codec = ChunkCodec(dtype, codecs)
    except (NotImplementedError, KeyError, TypeError, ValueError):
        return None
    try:
        chain = json.dumps(codecs, sort_keys=True)
    except (TypeError, ValueError):
        return codec if agrees_with_zarr(codec, dtype, codecs, inner_shape) else None
    # the round trip's sample has at most 64 elements per axis (agrees_with_zarr)
    sample = tuple(min(max(1, int(n)), 64) for n in inner_shape)
    return codec if _agrees_once(np.dtype(dtype).str, chain, sample) else None


@functools.lru_cache(maxsize=256)
def _agrees_once(dtype: str, chain: str, sample: tuple[int, ...]) -> bool:
    """:func:`agrees_with_zarr` for one data type, chain (JSON) and sample shape,
    run once per process.

    Its answer depends on nothing else (the zarr-python and numcodecs releases
    loaded, fixed for a process's life), and each round trip costs ~2 ms of CPU:
    without this, a writer made per task (the campaign step's map tasks) would
    check its ~9 chains again each time, ~20 ms per task.
    """
    dtype_ = np.dtype(dtype)
    codecs = json.loads(chain)
    return agrees_with_zarr(ChunkCodec(dtype_, codecs), dtype_, codecs, sample)


def forget_zarr_checks() -> None:
    """Forget the round trips :func:`chunk_codec` remembers (for tests that change
    how a chain encodes within one process)."""
    _agrees_once.cache_clear()


def _resized_document(document: bytes, n_events: int, fill: Any) -> bytes | None:
    """An array's ``zarr.json`` with ``n_events`` rows (and ``fill``), or None."""
    meta = json.loads(document)
    if (meta.get("zarr_format") != 3 or meta.get("node_type") != "array"
            or not meta.get("shape") or "fill_value" not in meta):
        return None
    meta["shape"][0] = int(n_events)
    if fill is not None:
        meta["fill_value"] = fill
    return json.dumps(meta, indent=2).encode()


def grown_objects(group: Any, objects: Mapping[str, Any], grow: Mapping[str, Any],
                  n_events: int) -> dict[str, bytes]:
    """The store's objects (key -> bytes) with the arrays of ``grow`` at full size.

    Parameters
    ----------
    group : zarr.Group
        The group laid out in memory, over ``objects``.
    objects : mapping
        Its memory store's dictionary (key -> zarr buffer).
    grow : mapping of str to fill value or None
        The arrays to give ``n_events`` rows, and a fill value to set (None:
        keep theirs).  Their template chunks are dropped: every row reads as
        the fill value until written.
    n_events : int
        Rows of the grown arrays.

    Returns
    -------
    dict of str to bytes
        Every object of the store.
    """
    if shortcut_allowed():
        out: dict[str, bytes] = {}
        for key, buffer in objects.items():
            name, _, leaf = key.rpartition("/")
            if name not in grow:
                out[key] = buffer.to_bytes()
            elif leaf == "zarr.json":
                document = _resized_document(buffer.to_bytes(), n_events, grow[name])
                if document is None:
                    break  # not the metadata this edit knows: the public path below
                out[key] = document
        else:
            return out
    for name, fill in grow.items():
        old = group[name]
        group.create_array(
            name, shape=(int(n_events), *old.shape[1:]), chunks=old.chunks, dtype=old.dtype,
            fill_value=old.fill_value if fill is None else fill, serializer=old.serializer,
            filters=old.filters or None, compressors=old.compressors or None,
            attributes=dict(old.attrs), dimension_names=old.metadata.dimension_names,
            chunk_key_encoding=old.metadata.chunk_key_encoding, overwrite=True,
        )
    return {key: buffer.to_bytes() for key, buffer in objects.items()}
