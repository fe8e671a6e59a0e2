"""The unit function: one planned unit of input -> one event dataset.

:func:`process_unit` is what every pipeline task runs.  It decodes the unit's
input (an L0 byte range with :func:`~idexdask.packets.reader.read_l0`, or one lab
impact with :func:`~idexdask.io.trc.read_trc`) and, once the science analysis
exists, applies it:

* the analysis hook is :func:`_resolve_analyze`; it returns
  ``idexdask.analysis.analyze`` when that function is importable and ``None``
  before it is written.  Its absence is decided by an explicit attribute lookup
  on the ``idexdask.analysis`` package, not by swallowing errors: an analysis
  module that exists but fails to import raises, as it should.
* ``analyze(dataset, config) -> dataset`` receives the full configuration and may
  add any variables along ``epoch``; the store takes whatever variables the first
  unit returns as its schema.

The dataset returned is normalised for the store (:func:`normalise_for_store`):
fixed-width strings become variable-length strings, and ``input_index`` records
which input each event came from.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.errors import IdexDaskError
from idexdask.pipeline.plan import Unit
from idexdask.pipeline.ragged import peaks_to_event_major

__all__ = ["AnalyzeFn", "normalise_for_store", "process_unit"]

logger = logging.getLogger(__name__)

AnalyzeFn = Callable[[xr.Dataset, Mapping[str, Any]], xr.Dataset]


def _resolve_analyze() -> AnalyzeFn | None:
    """The science analysis step, or None while it does not exist.

    Returns
    -------
    callable or None
        ``idexdask.analysis.analyze`` if the ``idexdask.analysis`` package defines
        it, else None (the pipeline then stores the decoded L1a variables only).
    """
    package = importlib.import_module("idexdask.analysis")
    analyze = getattr(package, "analyze", None)
    if analyze is None:
        return None
    if not callable(analyze):
        raise IdexDaskError("idexdask.analysis.analyze exists but is not callable")
    return analyze


def _decode_trc(unit: Unit) -> xr.Dataset:
    """Read one impact's captures (its files alone, with the directory's settings)."""
    from idexdask.io.trc import read_trc

    directory = Path(unit.path)
    with tempfile.TemporaryDirectory(prefix="idexdask-trc-") as tmp:
        for file in (*unit.files, *map(str, sorted(directory.glob("*settings*.txt")))):
            os.symlink(file, Path(tmp) / Path(file).name)
        dataset = read_trc(tmp)
        dataset.load()
    dataset.attrs["source_path"] = str(directory)
    return dataset


def decode_unit(unit: Unit) -> xr.Dataset:
    """Decode the unit's input (no analysis).

    Raises
    ------
    IdexDaskError
        If the input cannot be read or decoded.
    """
    if unit.kind == "l0":
        from idexdask.packets.reader import read_l0

        dataset = read_l0(unit.read_input())
        dataset.attrs["source"] = Path(unit.path).name
        return dataset
    if unit.kind == "trc":
        return _decode_trc(unit)
    raise IdexDaskError(f"{unit.uid}: unknown unit kind {unit.kind!r}")


def process_unit(unit: Unit, config: Mapping[str, Any]) -> xr.Dataset:
    """Decode one unit and apply the science analysis when it exists.

    The analysis runs when ``idexdask.analysis.analyze`` exists and
    ``pipeline.analyze`` is true (the default).

    Parameters
    ----------
    unit : Unit
        A planned unit (byte range of an L0 file, or one lab impact).
    config : mapping
        The validated run configuration (:func:`idexdask.config.load_config`).

    Returns
    -------
    xarray.Dataset
        ``unit.n_events`` events along ``epoch``, ready for the store.

    Raises
    ------
    IdexDaskError
        If the input cannot be decoded or the event count differs from the plan.
    """
    dataset = decode_unit(unit)
    wanted = bool(config.get("pipeline", {}).get("analyze", True))
    analyze = _resolve_analyze() if wanted else None
    if analyze is not None:
        dataset = analyze(dataset, config)
    if dataset.sizes.get("epoch", 0) != unit.n_events:
        raise IdexDaskError(
            f"{unit.uid}: decoded {dataset.sizes.get('epoch', 0)} events where the plan "
            f"counted {unit.n_events}"
        )
    max_peaks = int(config.get("pipeline", {}).get("max_peaks_per_event", 64))
    return normalise_for_store(dataset, unit.input_index, max_peaks=max_peaks)


def normalise_for_store(
    dataset: xr.Dataset, input_index: int, *, max_peaks: int = 64
) -> xr.Dataset:
    """Make a unit's dataset storable by region: variable-length strings, input index.

    Parameters
    ----------
    dataset : xarray.Dataset
        Event dataset (dimension ``epoch``).
    input_index : int
        Index of the input the events come from.
    max_peaks : int
        ``peak_slot`` capacity per event (config ``pipeline.max_peaks_per_event``).

    Returns
    -------
    xarray.Dataset
        The same data; ``U``/``S`` variables as object (variable-length UTF-8 in
        Zarr v3, so units with longer strings fit the store), the ragged
        ``peak`` products event-major (:mod:`idexdask.pipeline.ragged`), plus
        ``input_index`` (epoch,) int32.
    """
    dataset = peaks_to_event_major(dataset, max_peaks)
    converted = {}
    for name, variable in dataset.variables.items():
        if variable.dtype.kind in "US":
            values = variable.values.astype(str).astype(object)
            converted[name] = xr.Variable(variable.dims, values, attrs=variable.attrs)
    coords = {k: v for k, v in converted.items() if k in dataset.coords}
    if coords:
        dataset = dataset.assign_coords(coords)
    n_events = dataset.sizes.get("epoch", 0)
    data = {k: v for k, v in converted.items() if k not in dataset.coords}
    data["input_index"] = xr.Variable(
        ("epoch",),
        np.full(n_events, input_index, dtype=np.int32),
        attrs={"long_name": "index of the input file in the store attribute 'inputs'"},
    )
    return dataset.assign(data)  # one assign: each re-merges all ~270 variables
