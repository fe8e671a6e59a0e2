"""Write an ISTP dataset as a CDF: cdflib's ``xarray_to_cdf``, or the same file faster.

The public path is ``cdflib.xarray.xarray_to_cdf(istp=True)``: its ISTP pass
and NaN conversion index the Dataset by name dozens of times per variable, each
a scan of all variables, and its writer walks each attribute's on-disk list of
entries from the head to append one (O(variables^2) small reads per attribute,
~800,000 per file of ~280 variables).  Together ~10 s a file.

The shortcut writes the same file byte for byte (``tests/unit/pipeline/test_export.py``
compares them) in ~1/10 of the time:

* the NaN conversion and ISTP typing are done here, one NumPy pass per variable
  (:func:`nans_to_fill`, :func:`istp_typed`), with cdflib's own type and fill
  tables (private helpers of ``cdflib.xarray.xarray_to_cdf``);
* the variables are written through :class:`AppendingCDF`, a subclass of cdflib's
  public writer ``cdflib.cdfwrite.CDF`` that remembers the tail of each
  attribute's list and links a new entry after it (overriding the private
  ``_update_aedr_link``), in the order and with the specifications that
  ``xarray_to_cdf`` gives them.

The shortcut is used where :func:`shortcut_available` finds those private names
with the signatures this code was written against, and for datasets without
datetime values (``xarray_to_cdf`` converts those; ours hold TT2000 integers).

Gzip compression: cdflib compresses with libdeflate (the ``deflate`` package, a
dependency of idexdask), whose output carries no time stamp; without it the
standard library's gzip stamps the time of writing, on both paths.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from datetime import datetime
from typing import Any

import numpy as np
import xarray as xr
from cdflib.cdfwrite import CDF

from idexdask.compat import public_api_forced

__all__ = ["AppendingCDF", "istp_typed", "nans_to_fill", "shortcut_available", "write_dataset"]

logger = logging.getLogger(__name__)

_PRIVATE_HELPERS = ("_dtype_to_cdf_type", "_dtype_to_fillval", "_variable_compression",
                    "DATATYPES_TO_STRINGS")
_LINK_PARAMETERS = ["self", "f", "attrNum", "zVar", "varNum", "offset"]
_TIME_TYPES = ("CDF_EPOCH", "CDF_EPOCH16", "CDF_TIME_TT2000")


def _helpers() -> Any:
    """The module ``cdflib.xarray.xarray_to_cdf`` (its package exports a function of
    that name, which an ``import ... as`` would give instead)."""
    return importlib.import_module("cdflib.xarray.xarray_to_cdf")


def shortcut_available() -> bool:
    """Whether this cdflib has the private names the shortcut uses, as expected.

    Returns
    -------
    bool
        False when ``IDEXDASK_PUBLIC_API`` names ``cdf_writer``, or cdflib lacks
        one of its ``xarray_to_cdf`` helpers or the writer's ``_update_aedr_link``
        (with its parameters) and ``_update_offset_value``.
    """
    if public_api_forced("cdf_writer"):
        return False
    try:
        helpers = _helpers()
    except ImportError:  # pragma: no cover - depends on the installed cdflib
        return False
    link = getattr(CDF, "_update_aedr_link", None)
    if link is None or not hasattr(CDF, "_update_offset_value"):
        return False
    try:
        parameters = list(inspect.signature(link).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return parameters == _LINK_PARAMETERS and all(hasattr(helpers, n) for n in _PRIVATE_HELPERS)


class AppendingCDF(CDF):
    """cdflib's CDF writer, linking each new attribute entry in O(1).

    cdflib keeps each attribute's entries (one per variable) in a linked list
    on disk and, to add one, walks that list from its head with a seek and a
    read per entry.  This writer remembers the last entry of each list and
    links the new one after it when cdflib's walk would have ended there (the
    lists are sorted by variable number: when the new number is not below the
    last one's), which is the same file byte for byte; anything else goes to
    cdflib's own walk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tails: dict[tuple[int, bool], tuple[int, int]] = {}

    def _update_aedr_link(self, f, attrNum, zVar, varNum, offset):  # noqa: N803
        key = (attrNum, bool(zVar))
        tail = self._tails.get(key)
        adr = self.attrsinfo[attrNum][2]
        count_at, max_at = (adr + 56, adr + 60) if zVar else (adr + 36, adr + 40)
        f.seek(count_at, 0)
        entries = int.from_bytes(f.read(4), "big", signed=True)
        max_entry = int.from_bytes(f.read(4), "big", signed=True)
        if entries and tail is not None and varNum >= tail[1]:
            self._update_offset_value(f, tail[0] + 12, 8, offset)  # last AEDRnext
            self._update_offset_value(f, count_at, 4, entries + 1)
            if max_entry < varNum:
                self._update_offset_value(f, max_at, 4, varNum)
            self._tails[key] = (offset, varNum)
            return
        super()._update_aedr_link(f, attrNum, zVar, varNum, offset)
        if not entries:
            self._tails[key] = (offset, varNum)  # the list's first entry is its last


def nans_to_fill(dataset: xr.Dataset) -> xr.Dataset:
    """What ``xarray_to_cdf(nan_to_fillval=True)`` does to ``dataset``, variable by variable.

    cdflib replaces NaN in the data by the standard fill of the variable's CDF type
    and passes every attribute through ``np.nan_to_num`` with that fill (which also
    turns Python scalars into NumPy ones, and so decides the attribute's CDF type).
    It re-assigns each variable into the Dataset (a merge and a scan of all
    variables per variable); here one NumPy pass per float variable, data copied
    only where NaNs are.  Needs :func:`shortcut_available`.
    """
    fill_of = _helpers()._dtype_to_fillval
    variables = {}
    for name, variable in dataset.variables.items():
        fill = fill_of(xr.DataArray(variable, name=name))
        values = variable.values
        if values.dtype.kind in "fc" and fill.dtype.type != np.datetime64:
            nans = np.isnan(values)
            if nans.any():
                values = np.where(nans, fill, values)
        attrs = {}
        for key, value in variable.attrs.items():
            try:
                attrs[key] = np.nan_to_num(value, nan=fill)
            except Exception:  # noqa: BLE001 - as cdflib: the attribute stays as it is
                attrs[key] = value
        variables[name] = xr.Variable(variable.dims, values, attrs=attrs)
    return xr.Dataset({name: variables[name] for name in dataset.data_vars},
                      coords={name: variables[name] for name in dataset.coords},
                      attrs=dataset.attrs)


def istp_typed(dataset: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """What cdflib's ISTP pass would hand its writer: typed limits, the record variables.

    With ``istp=True`` xarray_to_cdf writes FILLVAL, VALIDMIN and VALIDMAX with the
    CDF type of their variable (``[value, "CDF_UINT2"]``; for a TT2000 variable only
    integer values) and makes record-varying the variables whose DEPEND_0 is a
    variable of the file, and ``epoch``.  Both are set here.  The datasets of
    :func:`idexdask.io.cdf.istp_dataset` pass cdflib's pass with no warning (and
    no correction), so the file is the same.  Needs :func:`shortcut_available`.

    Returns
    -------
    typed : xarray.Dataset
        The dataset with typed limits.
    records : list of str
        The record-varying variables.
    """
    helpers = _helpers()
    records = [str(name) for name in dataset.variables
               if str(name).lower() == "epoch"
               or dataset.variables[name].attrs.get("CDF_DATA_TYPE") in _TIME_TYPES
               or dataset.variables[name].attrs.get("DEPEND_0") in dataset.variables]
    variables = {}
    for name, variable in dataset.variables.items():
        datatype, _ = helpers._dtype_to_cdf_type(xr.DataArray(variable, name=name))
        type_name = helpers.DATATYPES_TO_STRINGS[datatype]
        attrs = dict(variable.attrs)
        for key in ("VALIDMIN", "VALIDMAX", "FILLVAL"):
            if key in attrs and (type_name not in _TIME_TYPES
                                 or np.issubdtype(np.asarray(attrs[key]).dtype, np.integer)):
                attrs[key] = [attrs[key], type_name]
        variables[name] = xr.Variable(variable.dims, variable.data, attrs=attrs)
    typed = xr.Dataset({name: variables[name] for name in dataset.data_vars},
                       coords={name: variables[name] for name in dataset.coords},
                       attrs=dataset.attrs)
    return typed, records


def _has_datetimes(dataset: xr.Dataset) -> bool:
    """Whether any variable or attribute holds dates (xarray_to_cdf converts those)."""
    for variable in dataset.variables.values():
        if variable.dtype.kind == "M" or (
            variable.dtype.kind == "O" and variable.size
            and isinstance(variable.values.flat[0], datetime)
        ):
            return True
        if any(isinstance(v, datetime | np.datetime64)
               or np.asarray(v).dtype.kind == "M" for v in variable.attrs.values()):
            return True
    return False


def _write_typed(typed: xr.Dataset, path: str, records: list[str], compression: int) -> None:
    """``xarray_to_cdf(istp=False, record_dimensions=records)``'s writing, through
    :class:`AppendingCDF`: the same global attributes, variables (data variables,
    then coordinates), specifications and attributes in the same order."""
    helpers = _helpers()
    global_attrs: dict[str, dict[int, Any]] = {}
    for key, value in typed.attrs.items():
        if hasattr(value, "__iter__") and not isinstance(value, str):
            global_attrs[key] = dict(enumerate(value))
        else:
            global_attrs[key] = {0: value}
    writer = AppendingCDF(path)
    writer.write_globalattrs(global_attrs)
    for group in (typed, typed.coords):
        for name in group:
            name = str(name)
            array = group[name]
            data_type, elements = helpers._dtype_to_cdf_type(array)
            if data_type is None or elements is None:
                continue
            if not array.dims:
                dim_sizes, record_vary = [], True
            elif name in records:
                dim_sizes, record_vary = list(array.shape[1:]), True
            else:
                dim_sizes, record_vary = list(array.shape), False
            spec = {
                "Variable": name,
                "Data_Type": data_type,
                "Num_Elements": elements,
                "Rec_Vary": record_vary,
                "Dim_Sizes": dim_sizes,
                "Compress": helpers._variable_compression(
                    name, data_type, array.dims, dim_sizes, record_vary, compression, []),
            }
            writer.write_var(spec, var_attrs=dict(array.attrs), var_data=array.data)
    writer.close()


def write_dataset(dataset: xr.Dataset, path: str | os.PathLike, *, compression: int = 0,
                  check: bool = False) -> None:
    """Write an ISTP-ready dataset as the CDF file ``path`` (which must not exist).

    Parameters
    ----------
    dataset : xarray.Dataset
        Variables and attributes as :func:`idexdask.io.cdf.istp_dataset` makes them.
    path : path
        The new file.
    compression : int
        gzip level of the variables (0: none).
    check : bool
        Run cdflib's own ISTP checks with warnings raised as errors
        (``xarray_to_cdf(istp=True, terminate_on_warning=True)``, the public path).

    Notes
    -----
    Without ``check``: the shortcut where :func:`shortcut_available`, else
    ``xarray_to_cdf(istp=True)`` (warnings logged by cdflib); the same file.
    """
    path = str(path)
    compression = int(compression)
    if not check and shortcut_available() and not _has_datetimes(dataset):
        typed, records = istp_typed(nans_to_fill(dataset))
        _write_typed(typed, path, records, compression)
        return
    if not check:
        logger.debug("cdflib's own xarray_to_cdf writes %s", path)
    from cdflib.xarray import xarray_to_cdf  # noqa: PLC0415

    xarray_to_cdf(dataset, path, istp=True, terminate_on_warning=check, compression=compression)
