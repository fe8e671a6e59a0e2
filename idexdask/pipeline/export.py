"""Exports of a campaign store: one HDF5 and/or CDF file per input.

Only events of units the manifest records as done are exported; the files are
written by one process (the caller), never by workers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from idexdask.adccodes import decode_code_variables
from idexdask.errors import IdexDaskError, StoreError
from idexdask.pipeline.runner import done_units
from idexdask.timeaxis import expand_axes

__all__ = ["FORMATS", "export_store", "open_campaign"]

logger = logging.getLogger(__name__)

FORMATS = {"hdf5": ".h5", "cdf": ".cdf"}


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


def _names(inputs: list[str]) -> list[str]:
    stems = [Path(p).stem or Path(p).name for p in inputs]
    return [s if stems.count(s) == 1 else f"{i:03d}_{s}" for i, s in enumerate(stems)]


def export_store(
    store: str | os.PathLike,
    formats: Iterable[str],
    output_dir: str | os.PathLike | None = None,
    *,
    cdf_attributes: str = "cdf_attributes.yaml",
) -> list[Path]:
    """Write one file per input and format from the done events of ``store``.

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

    Returns
    -------
    list of pathlib.Path
        Files written, by input then format.

    Raises
    ------
    StoreError
        Unknown format, unreadable store, unwritable output directory.
    """
    from idexdask.io.cdf import load_cdf_attributes, write_cdf
    from idexdask.io.hdf5 import write_hdf5

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise StoreError(f"unknown export format(s) {unknown}; choose from {sorted(FORMATS)}")
    store = Path(store)
    out = Path(output_dir) if output_dir else store.with_name(store.name + ".exports")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the export directory {out}: {exc}") from exc
    inputs, units = done_units(store)
    dataset = open_campaign(store, dask=False)
    # Zarr lists a store's arrays in no fixed order: sorted, the files of one store
    # are the same from one export to the next.
    dataset = dataset[sorted(dataset.data_vars, key=str)]
    table = load_cdf_attributes(cdf_attributes) if "cdf" in formats else None
    written = []
    for index, name in enumerate(_names(inputs)):
        regions = sorted(tuple(u["region"]) for u in units if u["input_index"] == index)
        if not regions:
            continue
        rows = np.concatenate([np.arange(a, b) for a, b in regions])
        if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # the usual single run
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        events = dataset.isel(epoch=rows).load()
        events.attrs = {"source": inputs[index], "store": str(store)}
        # the input's campaign calibration (idexdask.pipeline.recalibrate)
        campaign = json.loads(dataset.attrs.get("campaign_calibration") or "{}").get(str(index))
        if campaign is not None:
            events.attrs["campaign_calibration"] = json.dumps(campaign, sort_keys=True)
        for fmt in formats:
            path = out / f"{name}{FORMATS[fmt]}"
            if fmt == "hdf5":
                written.append(write_hdf5(events, path))
            else:
                written.append(write_cdf(events, path, attributes=table))
    logger.info("exported %d files to %s", len(written), out)
    return written
