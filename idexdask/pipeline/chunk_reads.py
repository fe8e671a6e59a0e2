"""Per-event arrays of a campaign store read from their chunk files.

The campaign step (:mod:`idexdask.pipeline.recalibrate`) reads ~20 per-event
arrays of a span of store rows, and the targeted search's window of the merged
spectrum.  Through xarray, zarr-python reads each array on its event loop: ~2 ms
of CPU for the 12 chunks of a line variable of 96 lab impacts, ~55 ms for the
window of 384 lab impacts' merged spectra (whole 8 MB chunks).  Decoding the
chunk files here (:class:`~idexdask.compat.zarr_chunks.ChunkCodec`, the codecs
zarr-python runs) costs ~0.2 ms and ~2 ms.  Only the layouts the campaign store
gives its arrays are read here; :func:`read_chunks` returns None for any other,
and the caller reads it through xarray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["CF_VALUE_ATTRS", "read_chunks"]

#: Attributes under which xarray's CF decoding changes an array's values on read.
CF_VALUE_ATTRS = frozenset({"scale_factor", "add_offset", "missing_value", "_Unsigned",
                             "calendar", "dtype"})


def read_chunks(store: str, name: str, runs: Sequence[tuple[int, int]],
                 columns: slice | None = None) -> xr.Variable | None:
    """Rows ``runs`` of the store array ``name``, decoded from its chunk files.

    xarray reads an array through zarr-python's event loop: ~2 ms of CPU for the
    12 chunks of a line variable of 96 lab impacts, against ~0.2 ms decoding
    the same files here (:class:`~idexdask.compat.zarr_chunks.ChunkCodec`, the
    codecs zarr-python runs) -- and a task reads ~20 such arrays.  Only the
    layout the campaign store gives a per-event product is read here: Zarr v3,
    a regular grid of whole rows, numeric or string data, no storage
    transformer, no CF value encoding but a NaN ``_FillValue`` (which xarray
    decodes to the same NaN); a missing chunk file reads as the fill value.
    None for any other array (the caller reads it through xarray) or a
    metadata document this code does not know.

    ``columns`` (a 2-D array, step 1) reads those columns of the rows only,
    from the chunks that hold them (the merged spectrum is chunked along its
    samples too): where the chunks are stored without compression in the
    machine's byte order, only each row's bytes of those columns are read
    from the file (the targeted search's window: ~10 kB of a lab row's 2 MB).
    """
    import base64

    from idexdask.compat.zarr_chunks import ChunkCodec, shortcut_allowed

    directory = os.path.join(store, name)
    try:
        with open(os.path.join(directory, "zarr.json"), "rb") as handle:
            meta = json.loads(handle.read())
        shape = tuple(int(n) for n in meta["shape"])
        grid = meta["chunk_grid"]
        chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
        data_type = meta["data_type"]
        dtype = np.dtype(object) if data_type == "string" else np.dtype(str(data_type))
        attrs = dict(meta.get("attributes") or {})
        key_encoding = meta["chunk_key_encoding"]
        separator = str((key_encoding.get("configuration") or {}).get("separator", "/"))
        fill = meta["fill_value"]
        codec = ChunkCodec(dtype, list(meta["codecs"]))
        encoded_fill = attrs.pop("_FillValue", None)
        if encoded_fill is not None:  # xarray's CF fill: only NaN, which decodes to itself
            if dtype.kind != "f":
                return None
            encoded = base64.b64decode(encoded_fill)
            # written in the array's type, or as a float64 (a float32 array's NaN)
            width = dtype.itemsize if len(encoded) == dtype.itemsize else 8
            mask = np.frombuffer(encoded, dtype=np.dtype(f"<f{width}"))
            if mask.size != 1 or not np.isnan(mask[0]):
                return None
        if dtype.kind == "f":
            fill = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(fill, fill)
            if isinstance(fill, str):
                return None
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError):
        return None
    if (not shortcut_allowed() or meta.get("node_type") != "array" or meta.get("zarr_format") != 3
            or grid.get("name") != "regular" or key_encoding.get("name") != "default"
            or (chunks[1:] != shape[1:] if columns is None else len(shape) != 2)
            or meta.get("storage_transformers")
            or CF_VALUE_ATTRS.intersection(attrs) or dtype.kind not in "biufO"
            or " since " in str(attrs.get("units", ""))):  # a CF time axis
        return None
    if columns is not None:
        out = _window(directory, separator, codec, dtype, fill, shape, chunks, runs, columns)
        return None if out is None else xr.Variable(
            tuple(meta.get("dimension_names") or ()), out, attrs=attrs)
    rows = chunks[0]
    out = np.full((sum(b - a for a, b in runs), *shape[1:]), fill, dtype=dtype)
    at = 0
    for a, b in runs:
        for k in range(a // rows, (b - 1) // rows + 1):
            first = k * rows
            lo, hi = max(a, first), min(b, first + rows)
            key = separator.join([str(k)] + ["0"] * (len(shape) - 1))
            try:
                with open(os.path.join(directory, "c" + separator + key), "rb") as handle:
                    payload = handle.read()
            except FileNotFoundError:
                at += hi - lo  # never written: the fill value
                continue
            except OSError:
                return None
            chunk = codec.decode(payload, dtype, (rows, *shape[1:]))
            out[at:at + hi - lo] = chunk[lo - first:hi - first]
            at += hi - lo
    return xr.Variable(tuple(meta.get("dimension_names") or ()), out, attrs=attrs)


def _window(directory: str, separator: str, codec: Any, dtype: np.dtype, fill: Any,
            shape: tuple[int, ...], chunks: tuple[int, ...], runs: Sequence[tuple[int, int]],
            columns: slice) -> np.ndarray | None:
    """Columns ``columns`` of the rows ``runs`` of a 2-D chunked array (see :func:`_read_chunks`).

    None where ``columns`` has a step or a chunk file cannot be read.
    """
    first_col, stop_col, step = columns.indices(shape[1])
    if step != 1:
        return None
    stop_col = max(first_col, stop_col)
    rows, width = chunks
    # chunks stored as their elements in C order (no compressor, this byte order):
    # each row's columns are one contiguous range of the file
    raw = (not codec.compressors and codec.strings is None
           and codec.stored_dtype == dtype and dtype.isnative)
    out = np.full((sum(b - a for a, b in runs), stop_col - first_col), fill, dtype=dtype)
    if stop_col == first_col:
        return out
    at = 0
    for a, b in runs:
        for k in range(a // rows, (b - 1) // rows + 1):
            first = k * rows
            lo, hi = max(a, first), min(b, first + rows)
            for c in range(first_col // width, (stop_col - 1) // width + 1):
                c_lo, c_hi = max(first_col, c * width), min(stop_col, (c + 1) * width)
                path = os.path.join(directory, "c" + separator + f"{k}{separator}{c}")
                target = out[at:at + hi - lo, c_lo - first_col:c_hi - first_col]
                try:
                    if raw:
                        _read_raw_window(path, target, lo - first, c_lo - c * width, width)
                    else:
                        with open(path, "rb") as handle:
                            chunk = codec.decode(handle.read(), dtype, (rows, width))
                        target[...] = chunk[lo - first:hi - first, c_lo - c * width:
                                            c_hi - c * width]
                except FileNotFoundError:
                    continue  # never written: the fill value
                except (OSError, ValueError):
                    return None
            at += hi - lo
    return out


def _read_raw_window(path: str, target: np.ndarray, row: int, column: int, width: int) -> None:
    """``target``'s rows from an uncompressed chunk file, row ``row`` and column ``column`` on.

    Raises
    ------
    ValueError
        If the file is shorter than the chunk (not a chunk this code knows).
    """
    itemsize = target.dtype.itemsize
    n = target.shape[1] * itemsize
    fd = os.open(path, os.O_RDONLY)
    try:
        for r in range(target.shape[0]):
            data = os.pread(fd, n, ((row + r) * width + column) * itemsize)
            if len(data) != n:
                raise ValueError(f"{path}: short chunk")
            target[r] = np.frombuffer(data, dtype=target.dtype)
    finally:
        os.close(fd)
