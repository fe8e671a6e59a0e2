"""Write an event dataset as an ISTP-compliant CDF (cdflib's xarray writer).

Attributes come from ``configs/cdf_attributes.yaml``: global attributes (Project,
Source_name, Discipline, Data_type, Descriptor, Data_version, Logical_file_id,
PI_name, PI_affiliation, TEXT, Instrument_type, Mission_group, Logical_source,
Logical_source_description), the ``epoch`` variable (CDF_TIME_TT2000), and per
variable CATDESC / FIELDNAM / LABLAXIS.  Everything ISTP requires besides is
derived from the variable: DEPEND_0 (``epoch``), DEPEND_1 and LABL_PTR_1 (index
and label support variables made for every non-record dimension), UNITS, FILLVAL,
VALIDMIN/VALIDMAX (of the dtype unless the variable says), FORMAT, VAR_TYPE and
DISPLAY_TYPE (from the variable's role: waveform, time axis, header field, flags).
Booleans are written as CDF_UINT1 (0/1), strings as CDF_CHAR.

The file is the one cdflib's ``xarray_to_cdf(istp=True)`` writes; where this
cdflib allows it, :mod:`idexdask.compat.cdf_writer` writes it byte for byte in
~1/10 of the time (docs/pipeline.md, "Exports").
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from idexdask.errors import StoreError

__all__ = ["istp_dataset", "load_cdf_attributes", "write_cdf"]

logger = logging.getLogger(__name__)

_FLOAT_FILL = -1.0e31
_KEEP_ATTRS = ("flag_meanings", "sample_rate_msps", "adc_bits", "time_variable",
               "signal_polarity", "channel", "VAR_NOTES")


def load_cdf_attributes(name_or_path: str | os.PathLike = "cdf_attributes.yaml") -> dict:
    """The ISTP attribute definitions (``configs/cdf_attributes.yaml`` by default).

    Parameters
    ----------
    name_or_path : path
        A file of ``configs/`` by name, or any YAML file.

    Returns
    -------
    dict
        ``global``, ``epoch``, ``roles`` and ``variables`` tables (empty where the
        file has none), and any further keys of the file (``levels``,
        ``logical_file_id``).
    """
    from idexdask.config import load_yaml

    table = load_yaml(name_or_path) or {}
    for key in ("global", "epoch", "roles", "variables"):
        table.setdefault(key, {})
    return table


def _role(name: str, variable: xr.Variable, level: str) -> str:
    """What a variable is in ISTP terms: its VAR_TYPE and DISPLAY_TYPE come from this."""
    if variable.dtype.kind in "OUST":
        return "text"
    if variable.ndim == 2 and variable.dims[1] in ("channel", "quality_channel"):
        return "flags"
    if name.startswith("time_") and variable.ndim == 2:
        return "time_axis"
    if level == "l1a" and variable.ndim >= 2:
        return "waveform"
    if "flag" in name or "status" in name:
        return "flags"
    if level != "l1a" and variable.dtype.kind == "f":
        return "product"
    return "header"


def _display_type(variable: xr.Variable, record_dim: str) -> str:
    """``time_series`` for one value per record, ``spectrogram`` for more (as ISTP checks)."""
    return "time_series" if variable.ndim == 1 and variable.dims[0] == record_dim else "spectrogram"


def _format(dtype: np.dtype, values: np.ndarray) -> str:
    if dtype.kind in "iu":
        return f"I{len(str(np.iinfo(dtype).max)) + (dtype.kind == 'i')}"
    if dtype.kind == "f":
        return "E14.6"
    width = max((len(str(v)) for v in values.ravel()), default=1)
    return f"A{max(1, width)}"


def _limits(dtype: np.dtype) -> tuple[Any, Any, Any]:
    """FILLVAL, VALIDMIN, VALIDMAX of a dtype (the fill is outside the valid range)."""
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        return dtype.type(top), dtype.type(0), dtype.type(top - 1)
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        return dtype.type(info.min), dtype.type(info.min + 1), dtype.type(info.max)
    return dtype.type(_FLOAT_FILL), dtype.type(-1.0e30), dtype.type(1.0e30)


def _cast(value: Any, dtype: np.dtype) -> Any:
    return np.asarray(value).astype(dtype)[()] if dtype.kind in "iuf" else value


def istp_dataset(dataset: xr.Dataset, table: Mapping[str, Any], *, level: str = "l1a",
                 ragged: Mapping[str, str] | None = None) -> xr.Dataset:
    """The CDF-ready copy of ``dataset``: ISTP attributes, support variables, dtypes.

    Parameters
    ----------
    dataset : xarray.Dataset
        Event dataset (``epoch`` TT2000 ns int64).
    table : mapping
        :func:`load_cdf_attributes`.
    level : {"l1a", "l2a"}
        Product level: its global attributes (``levels`` of the table) and the
        variable roles (waveforms are L1a data; floating-point products L2a data).
    ragged : mapping of str to str, optional
        Further record dimensions and the TT2000 variable (ns, int64, on that
        dimension) that is the DEPEND_0 of their variables: ``{"peak":
        "peak_epoch"}`` writes one CDF record per TOF line, each tagged with its
        event's time (docs/products.md, "CDF exports").

    Returns
    -------
    xarray.Dataset
        Variables ready for :func:`cdflib.xarray.xarray_to_cdf`.
    """
    roles = table["roles"]
    specific = table["variables"]
    records = {"epoch": "epoch", **dict(ragged or {})}
    epoch_like = set(records.values())
    out: dict[str, xr.Variable] = {}
    support: dict[str, xr.Variable] = {}
    n_events = dataset.sizes.get("epoch", 0)
    for dim, size in dataset.sizes.items():
        if dim in records:
            continue
        labels = dataset[dim].values if dim in dataset.variables else np.arange(size)
        index_name = dim if dim not in dataset.variables else f"{dim}_index"
        support[index_name] = xr.Variable(
            (dim,), np.arange(size, dtype=np.int32),
            attrs={**roles.get("index", {}), "CATDESC": f"Index along {dim}",
                   "FIELDNAM": index_name, "LABLAXIS": "Index", "FORMAT": "I6",
                   "FILLVAL": np.int32(-2147483648), "VALIDMIN": np.int32(0),
                   "VALIDMAX": np.int32(max(size - 1, 0))},
        )
        label_values = np.array([str(v) or " " for v in labels], dtype=str)
        support[f"{dim}_label"] = xr.Variable(
            (dim,), label_values,
            attrs={**roles.get("label", {}), "CATDESC": f"Labels along {dim}",
                   "FIELDNAM": f"{dim}_label", "DEPEND_1": index_name, "FILLVAL": " ",
                   "FORMAT": f"A{max(1, max((len(v) for v in label_values), default=1))}"},
        )
    index_of = {dim: (dim if dim not in dataset.variables else f"{dim}_index")
                for dim in dataset.sizes if dim not in records}

    for name, variable in dataset.variables.items():
        name = str(name)
        if name in epoch_like or not variable.dims or variable.dims[0] not in records:
            continue
        record_dim = variable.dims[0]
        values = np.asarray(variable.values)
        if values.dtype == bool:
            values = values.astype(np.uint8)
        elif values.dtype.kind in "OUT":  # T: numpy StringDType (Zarr v3 strings)
            values = values.astype(object).astype(str)
        attrs = {k: v for k, v in variable.attrs.items() if k in _KEEP_ATTRS}
        role = _role(name, variable, level)
        attrs.update(copy.deepcopy(roles.get(role, {})))
        if "units" in variable.attrs and role != "waveform":
            attrs["UNITS"] = str(variable.attrs["units"]).replace("µs", "microseconds") or " "
        if role == "waveform" and values.dtype.kind == "f":
            attrs["UNITS"] = str(variable.attrs.get("units", "V"))
        attrs.setdefault("CATDESC", str(variable.attrs.get("long_name", name)).capitalize()
                         or name)
        attrs.setdefault("LABLAXIS", name)
        attrs.update(copy.deepcopy(specific.get(name, {})))
        attrs["FIELDNAM"] = name  # ISTP: FIELDNAM is the variable's name
        if attrs.get("VAR_TYPE") == "data":
            attrs["DISPLAY_TYPE"] = _display_type(variable, record_dim)
        else:
            attrs.pop("DISPLAY_TYPE", None)
        attrs["DEPEND_0"] = records[record_dim]
        for axis, dim in enumerate(variable.dims[1:], start=1):
            attrs[f"DEPEND_{axis}"] = index_of[dim]
            attrs[f"LABL_PTR_{axis}"] = f"{dim}_label"
        if variable.ndim > 1:
            attrs.pop("LABLAXIS", None)  # the LABL_PTRs label it
        attrs.setdefault("FORMAT", _format(values.dtype, values[:8]))
        if values.dtype.kind in "iuf":
            fill, vmin, vmax = _limits(values.dtype)
            attrs["FILLVAL"] = _cast(variable.attrs.get("FILLVAL", fill), values.dtype)
            attrs["VALIDMIN"] = _cast(attrs.get("VALIDMIN", variable.attrs.get("VALIDMIN", vmin)),
                                      values.dtype)
            attrs["VALIDMAX"] = _cast(attrs.get("VALIDMAX", variable.attrs.get("VALIDMAX", vmax)),
                                      values.dtype)
        else:
            attrs["FILLVAL"] = " "
            attrs["VAR_TYPE"] = "metadata"
            attrs.pop("UNITS", None)
        out[name] = xr.Variable(variable.dims, values, attrs=attrs)

    epoch_attrs = copy.deepcopy(dict(table["epoch"]))
    for key in ("FILLVAL", "VALIDMIN", "VALIDMAX"):
        if key in epoch_attrs:
            epoch_attrs[key] = np.int64(epoch_attrs[key])
    epoch = xr.Variable(("epoch",), np.asarray(dataset["epoch"].values, dtype=np.int64),
                        attrs=epoch_attrs)
    for dim, name in records.items():
        if dim == "epoch":
            continue
        attrs = {**epoch_attrs, **copy.deepcopy(specific.get(name, {})), "FIELDNAM": name,
                 "CDF_DATA_TYPE": "CDF_TIME_TT2000"}
        attrs.pop("MONOTON", None)  # several records (lines) share one event's time
        support[name] = xr.Variable(
            (dim,), np.asarray(dataset[name].values, dtype=np.int64), attrs=attrs)
    result = xr.Dataset({**out, **support}, coords={"epoch": epoch})
    result.attrs = _global_attrs(table, dataset, n_events, level)
    return result


def cdf_date(epoch_ns: int) -> str:
    """``YYYYMMDD`` (UTC) of a TT2000 time in ns: the date of an SDC file name."""
    import cdflib

    parts = cdflib.cdfepoch.breakdown_tt2000(int(epoch_ns))
    return f"{int(parts[0]):04d}{int(parts[1]):02d}{int(parts[2]):02d}"


def _global_attrs(table: Mapping[str, Any], dataset: xr.Dataset, n_events: int,
                  level: str) -> dict:
    attrs = {k: str(v) for k, v in table["global"].items()}
    attrs.update({k: str(v) for k, v in table.get("levels", {}).get(level, {}).items()})
    for key in ("Logical_source", "Data_version"):  # the writer's choice of name wins
        if key in dataset.attrs:
            attrs[key] = str(dataset.attrs[key])
    date = cdf_date(int(dataset["epoch"].values[0])) if n_events else "00000000"
    pattern = str(table.get("logical_file_id", "{Logical_source}_{date}_v{Data_version}"))
    attrs["Logical_file_id"] = pattern.format(date=date, **attrs)
    attrs["Generation_date"] = datetime.now(UTC).strftime("%Y%m%d")
    for key in ("source", "sources", "inputs", "campaign_calibration"):
        if key in dataset.attrs:
            attrs[f"idexdask_{key}"] = str(dataset.attrs[key]) or " "
    return attrs


def write_istp(istp: xr.Dataset, path: str | os.PathLike, *, compression: int = 0,
               check: bool = False) -> None:
    """Write a dataset of :func:`istp_dataset` with cdflib.

    ``check=False`` (the exports): the file that ``xarray_to_cdf(istp=True)``
    writes, by the faster path of :mod:`idexdask.compat.cdf_writer` where this
    cdflib allows it.  ``check=True``: cdflib's own ISTP pass and NaN conversion,
    warnings raised as errors.  Both write the same file.
    """
    from idexdask.compat.cdf_writer import write_dataset

    write_dataset(istp, path, compression=compression, check=check)


def write_cdf(
    dataset: xr.Dataset,
    path: str | os.PathLike,
    *,
    attributes: str | os.PathLike | Mapping[str, Any] = "cdf_attributes.yaml",
    compression: int = 0,
    level: str = "l1a",
    ragged: Mapping[str, str] | None = None,
) -> Path:
    """Write ``dataset`` as an ISTP CDF file (replaced if it exists).

    Parameters
    ----------
    dataset : xarray.Dataset
        Event dataset (dimension ``epoch``, TT2000 ns).
    path : path
        Output ``.cdf`` file.
    attributes : path or mapping
        Attribute definitions (:func:`load_cdf_attributes`).
    compression : int
        gzip level of the variables (0: none; the SDC's products use 6).
    level : {"l1a", "l2a"}
        Product level (:func:`istp_dataset`).
    ragged : mapping of str to str, optional
        Further record dimensions and their TT2000 variables (:func:`istp_dataset`).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    StoreError
        If the file cannot be written.
    """
    table = (load_cdf_attributes(attributes) if not isinstance(attributes, Mapping)
             else dict(attributes))
    for key in ("global", "epoch", "roles", "variables"):
        table.setdefault(key, {})
    istp = istp_dataset(dataset, table, level=level, ragged=ragged)
    path = Path(path)
    path.unlink(missing_ok=True)  # cdflib refuses to overwrite
    try:
        write_istp(istp, path, compression=compression)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        path.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc
    logger.info("wrote %d events to %s", dataset.sizes.get("epoch", 0), path)
    return path
