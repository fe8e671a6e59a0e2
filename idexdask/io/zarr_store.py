"""Write event datasets to a Zarr v3 store, chunked along events."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import xarray as xr

from idexdask.errors import StoreError

__all__ = ["open_store", "write_zarr"]

logger = logging.getLogger(__name__)


def chunk_encoding(dataset: xr.Dataset, events_per_chunk: int) -> dict[str, dict]:
    """Zarr chunking: ``events_per_chunk`` events per chunk, whole records per row."""
    encoding: dict[str, dict] = {}
    for name, variable in dataset.variables.items():
        if "epoch" not in variable.dims or variable.ndim == 0:
            continue
        chunks = tuple(
            max(1, min(events_per_chunk, size)) if dim == "epoch" else max(1, size)
            for dim, size in zip(variable.dims, variable.shape, strict=True)
        )
        encoding[name] = {"chunks": chunks}
    return encoding


def write_zarr(
    dataset: xr.Dataset,
    path: str | os.PathLike,
    *,
    events_per_chunk: int = 256,
    overwrite: bool = False,
) -> Path:
    """Write ``dataset`` as a Zarr v3 store.

    Parameters
    ----------
    dataset : xarray.Dataset
        Event dataset (dimension ``epoch``).
    path : path
        Store directory.
    events_per_chunk : int
        Events per chunk along ``epoch``.
    overwrite : bool
        Replace an existing store.

    Raises
    ------
    StoreError
        If the store exists (and ``overwrite`` is false) or cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    parent = path.resolve().parent
    if not parent.exists() or not os.access(parent, os.W_OK):
        raise StoreError(f"cannot write the store: {parent} is missing or not writable")
    try:
        dataset.to_zarr(
            path,
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=chunk_encoding(dataset, events_per_chunk),
        )
    except (OSError, ValueError, TypeError) as exc:
        raise StoreError(f"cannot write {path}: {exc}") from exc
    logger.info("wrote %d events to %s", dataset.sizes.get("epoch", 0), path)
    return path


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a store written by :func:`write_zarr` (lazily)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no store at {path}")
    try:
        return xr.open_zarr(path, consolidated=False)
    except Exception as exc:  # zarr raises a variety of types for a bad store
        raise StoreError(f"cannot open store {path}: {exc}") from exc


def concat_events(datasets: list[xr.Dataset]) -> xr.Dataset:
    """Join event datasets from several inputs along ``epoch``, recording the source.

    Adds ``source_index`` (epoch,) pointing into the attribute ``sources``; an
    event present in several inputs (same epoch and event number) is kept once,
    from the first input, and the duplicates are logged.
    """
    import json

    tagged = []
    for index, dataset in enumerate(datasets):
        tagged.append(
            dataset.assign(
                source_index=("epoch", np.full(dataset.sizes["epoch"], index, dtype=np.int32))
            )
        )
    if not tagged:
        raise StoreError("no datasets to join")
    joined = xr.concat(
        tagged,
        dim="epoch",
        data_vars="all",
        coords="minimal",
        compat="override",
        combine_attrs="drop",
    )
    if "idx__txhdrevtnum" in joined:
        key = np.stack([joined["epoch"].values, joined["idx__txhdrevtnum"].values.astype(np.int64)])
        _, first = np.unique(key, axis=1, return_index=True)
        if first.size < joined.sizes["epoch"]:
            logger.warning(
                "%d event(s) appear in more than one input; kept the first copy",
                joined.sizes["epoch"] - first.size,
            )
            joined = joined.isel(epoch=np.sort(first))
    joined = joined.sortby("epoch")
    joined.attrs["sources"] = json.dumps([d.attrs.get("source", "?") for d in datasets])
    return joined
