"""Uniform sample-time axes given by formula: a start and a step per event.

A lab capture's time axis is ``(HORIZ_OFFSET + i * HORIZ_INTERVAL) * 1e6`` µs:
500,002 float64 values per event (4 MB) that hold three numbers of information.
Such an axis is kept as those numbers, the *terms*, and computed when indexed,
exactly as it would be materialised (same operations in the same order):

    t[e, i] = (start[e] + i * step[e]) * scale     for i < count[e], else NaN

Contract
--------
* The axis variable (dims ``(epoch, <axis>_index)``) is lazy
  (:func:`idexdask.compat.lazy.lazy_variable` over :class:`UniformAxisArray`,
  xarray's own lazy backend arrays where usable) and carries the attributes
  :data:`FORMULA_ATTR` (the formula above), :data:`TERMS_ATTR`
  (``"start: <var> step: <var> count: <var>"``, as CF's ``formula_terms``) and
  :data:`SCALE_ATTR`.  The term variables run along ``epoch`` only.
* :func:`compact_axes` drops such axes from a set of variables and records each
  axis (name, dims, length, attributes) on its ``start`` term, so that a store
  holds the terms alone; :func:`expand_axes` restores the lazy axes of a dataset
  read back, with the same values and attributes, and removes the record.
* :func:`concat_axis` rebuilds an axis over concatenated terms (no values are
  materialised to concatenate events).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from idexdask.compat.lazy import lazy_variable
from idexdask.errors import IdexDaskError

__all__ = [
    "AXIS_RECORD_ATTR",
    "FORMULA",
    "FORMULA_ATTR",
    "SCALE_ATTR",
    "TERMS_ATTR",
    "AxisTerms",
    "UniformAxisArray",
    "axis_terms",
    "compact_axes",
    "concat_axis",
    "expand_axes",
    "is_formula_axis",
    "uniform_axis_variable",
]

FORMULA = "(start + index * step) * scale"
FORMULA_ATTR = "sample_time_formula"
TERMS_ATTR = "sample_time_terms"
SCALE_ATTR = "sample_time_scale"
AXIS_RECORD_ATTR = "sample_time_axis"
"""Attribute of a stored ``start`` term: JSON of the axis it defines (name, dims,
length, attributes)."""


@dataclass(frozen=True)
class AxisTerms:
    """The names of an axis's term variables."""

    start: str
    step: str
    count: str

    @classmethod
    def for_axis(cls, name: str) -> AxisTerms:
        """The conventional names: ``<axis>_start``, ``<axis>_step``, ``<axis>_count``."""
        return cls(f"{name}_start", f"{name}_step", f"{name}_count")

    def formula_terms(self) -> str:
        """The :data:`TERMS_ATTR` value."""
        return f"start: {self.start} step: {self.step} count: {self.count}"

    @classmethod
    def parse(cls, text: str) -> AxisTerms:
        """Read a :data:`TERMS_ATTR` value.

        Raises
        ------
        IdexDaskError
            If a term is missing.
        """
        words = str(text).split()
        pairs = dict(zip(words[::2], words[1::2], strict=False))
        try:
            return cls(pairs["start:"], pairs["step:"], pairs["count:"])
        except KeyError as exc:
            raise IdexDaskError(f"malformed {TERMS_ATTR} {text!r}") from exc


class UniformAxisArray:
    """(events, samples) times ``(start + i * step) * scale``, computed when indexed.

    NaN at ``i >= count`` of an event (a shorter record, or none).  Indexing
    returns exactly what materialising the whole axis and indexing it would.
    """

    def __init__(self, start: Any, step: Any, count: Any, n_samples: int, scale: float) -> None:
        self.start = np.asarray(start, dtype=np.float64)
        self.step = np.asarray(step, dtype=np.float64)
        self.count = np.asarray(count, dtype=np.int64)
        if not (self.start.shape == self.step.shape == self.count.shape) or self.start.ndim != 1:
            raise IdexDaskError("time axis terms must be 1-D arrays of one length")
        self.n_samples = int(n_samples)
        self.scale = float(scale)
        self.shape = (self.start.size, self.n_samples)
        self.dtype = np.dtype(np.float64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_whole": None}  # the terms travel, never the values

    def compute(self, key: tuple) -> np.ndarray:
        """Times at the outer-indexing ``key`` (rows, columns), in the axis's unit."""
        rows, columns = key
        whole = all(isinstance(k, slice) and k == slice(None) for k in key)
        if whole and getattr(self, "_whole", None) is not None:
            return self._whole  # read-only: every reader of the axis shares it
        index = np.arange(self.n_samples, dtype=np.float64)[columns]
        start, step, count = self.start[rows], self.step[rows], self.count[rows]
        if np.ndim(start) and np.ndim(index):
            start, step, count = start[:, None], step[:, None], count[:, None]
        # in place, in the order of (start + index * step) * scale: the same roundings
        values = np.multiply(index, step)
        values += start
        values *= self.scale
        short = index >= count
        if np.any(short):
            values = np.where(short, np.nan, values)
        if whole:
            # the analysis reads an axis once per channel and stage: computed once
            values.flags.writeable = False
            self._whole = values
        return values


def uniform_axis_variable(
    dims: tuple[str, str],
    start: Any,
    step: Any,
    count: Any,
    n_samples: int,
    *,
    scale: float = 1.0,
    terms: AxisTerms,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Variable:
    """A lazy axis variable (see the module contract).

    Parameters
    ----------
    dims : (str, str)
        ``("epoch", "<axis>_index")``.
    start, step : array_like, (events,)
        Terms, in the units that ``scale`` converts to the axis's units.
    count : array_like of int, (events,)
        Samples of each event's record (NaN beyond).
    n_samples : int
        Length of the axis.
    scale : float
        Factor applied last (1e6: s -> µs).
    terms : AxisTerms
        Names of the term variables (recorded in the attributes).
    attrs : mapping, optional
        Further attributes (units, long_name, ...).
    """
    array = UniformAxisArray(start, step, count, n_samples, scale)
    return lazy_variable(dims, array, attrs={
        **(attrs or {}),
        FORMULA_ATTR: FORMULA,
        TERMS_ATTR: terms.formula_terms(),
        SCALE_ATTR: float(scale),
    })


def is_formula_axis(variable: xr.Variable) -> bool:
    """Whether ``variable`` is an axis given by :data:`FORMULA`."""
    return variable.attrs.get(FORMULA_ATTR) == FORMULA and TERMS_ATTR in variable.attrs


def axis_terms(variable: xr.Variable) -> AxisTerms:
    """The term names of a formula axis."""
    return AxisTerms.parse(variable.attrs[TERMS_ATTR])


def _rebuilt(
    variable: xr.Variable, variables: Mapping[str, xr.Variable]
) -> xr.Variable:
    terms = axis_terms(variable)
    attrs = {k: v for k, v in variable.attrs.items()
             if k not in (FORMULA_ATTR, TERMS_ATTR, SCALE_ATTR)}
    return uniform_axis_variable(
        tuple(variable.dims),  # type: ignore[arg-type]
        np.asarray(variables[terms.start].values),
        np.asarray(variables[terms.step].values),
        np.asarray(variables[terms.count].values),
        variable.shape[1],
        scale=float(variable.attrs[SCALE_ATTR]),
        terms=terms,
        attrs=attrs,
    )


def concat_axis(
    variable: xr.Variable, variables: Mapping[str, xr.Variable]
) -> xr.Variable:
    """The formula axis ``variable`` over the (already concatenated) terms in ``variables``.

    Raises
    ------
    IdexDaskError
        If a term variable is missing.
    """
    terms = axis_terms(variable)
    missing = [n for n in (terms.start, terms.step, terms.count) if n not in variables]
    if missing:
        raise IdexDaskError(f"time axis terms {missing} missing")
    return _rebuilt(variable, variables)


def compact_axes(variables: Mapping[str, xr.Variable]) -> dict[str, xr.Variable]:
    """``variables`` without their formula axes, each recorded on its ``start`` term.

    An axis whose terms are not all present is kept as it is.
    """
    out = dict(variables)
    for name, variable in variables.items():
        if not is_formula_axis(variable):
            continue
        terms = axis_terms(variable)
        if not all(n in variables for n in (terms.start, terms.step, terms.count)):
            continue
        record = {"name": str(name), "dims": list(variable.dims),
                  "n_samples": int(variable.shape[1]), "attrs": _json_attrs(variable.attrs)}
        start = variables[terms.start]
        out[terms.start] = xr.Variable(
            start.dims, start.data,
            attrs={**start.attrs, AXIS_RECORD_ATTR: json.dumps(record, sort_keys=True)},
            encoding=start.encoding,
        )
        del out[name]
    return out


def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[str(key)] = value
    return out


def expand_axes(dataset: xr.Dataset) -> xr.Dataset:
    """Restore the formula axes that :func:`compact_axes` recorded (lazy, exact).

    With Dask-backed term variables the axes are chunked like their ``start``
    term along ``epoch``.

    Raises
    ------
    IdexDaskError
        If an axis record is unreadable.
    """
    records = {}
    for name, variable in dataset.variables.items():
        text = variable.attrs.get(AXIS_RECORD_ATTR)
        if text is not None:
            try:
                records[str(name)] = json.loads(text)
            except ValueError as exc:
                raise IdexDaskError(f"{name}: unreadable {AXIS_RECORD_ATTR}: {exc}") from exc
    if not records:
        return dataset
    new: dict[str, xr.Variable] = {}
    for start_name, record in records.items():
        start = dataset.variables[start_name]
        attrs = dict(record["attrs"])
        terms = axis_terms(xr.Variable((), 0, attrs=attrs))
        axis = uniform_axis_variable(
            tuple(record["dims"]),  # type: ignore[arg-type]
            np.asarray(start.values),
            np.asarray(dataset.variables[terms.step].values),
            np.asarray(dataset.variables[terms.count].values),
            int(record["n_samples"]),
            scale=float(attrs[SCALE_ATTR]),
            terms=terms,
            attrs={k: v for k, v in attrs.items()
                   if k not in (FORMULA_ATTR, TERMS_ATTR, SCALE_ATTR)},
        )
        chunks = getattr(start, "chunks", None)
        if chunks:
            axis = axis.chunk({record["dims"][0]: chunks[0], record["dims"][1]: -1})
        new[str(record["name"])] = axis
        new[start_name] = xr.Variable(
            start.dims, start.data,
            attrs={k: v for k, v in start.attrs.items() if k != AXIS_RECORD_ATTR},
            encoding=start.encoding,
        )
    variables = {str(k): new.get(str(k), v) for k, v in dataset.variables.items()}
    for name, axis in new.items():
        variables.setdefault(name, axis)
    out = xr.Dataset(variables, attrs=dataset.attrs)
    coords = [k for k in dataset.coords if k not in dataset.dims]
    return out.set_coords(coords) if coords else out
