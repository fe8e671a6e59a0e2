"""Reading an event dataset for signal quality: waveforms, time axes, ADC attributes.

The waveforms of a dataset, the time axis of each (materialised, or its formula
terms for the compiled path), missing-sample values, ADC rails, quantisation
step and the scope's clipping flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.xp import get_namespace
from idexdask.errors import AnalysisError
from idexdask.timeaxis import SCALE_ATTR, axis_terms, is_formula_axis

__all__ = [
    "DIM_TO_TIME",
    "FormulaTimes",
    "adc_rails",
    "channel_arrays",
    "clipped_flag",
    "fill_value",
    "find_time_variable",
    "host_time_axis",
    "quantisation_step",
    "time_axis",
    "waveform_variables",
]

_log = get_logger(__name__)


DIM_TO_TIME = {
    "time_high_sample_rate_index": "time_high_sample_rate",
    "time_low_sample_rate_index": "time_low_sample_rate",
}


def waveform_variables(ds: xr.Dataset) -> list[str]:
    """Names of the waveform variables of an event dataset.

    A waveform is a 2-D ``(epoch, <sample dim>)`` variable carrying a
    ``time_variable`` attribute or sampled on ``time_high_sample_rate_index`` /
    ``time_low_sample_rate_index``; the time axes themselves are excluded.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`idexdask.read_l0` or :func:`idexdask.io.trc.read_trc`.

    Returns
    -------
    list of str
    """
    time_vars = set(DIM_TO_TIME.values())
    coords = set(ds.coords)
    out = []
    for name, var in ds.variables.items():  # Variables: no DataArray built per name
        if name in coords:
            continue
        if var.ndim != 2 or var.dims[0] != "epoch" or name in time_vars:
            continue
        if str(name).startswith("time_"):
            continue
        if "time_variable" in var.attrs or var.dims[1] in DIM_TO_TIME:
            out.append(str(name))
    return out


def find_time_variable(ds: xr.Dataset, name: str) -> str | None:
    """Name of the time axis (µs from the trigger) of waveform ``name``, or None.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset.
    name : str
        Waveform variable.

    Returns
    -------
    str or None
        The ``time_variable`` attribute if it names a variable of ``ds``, else the
        axis implied by the sample dimension, else None.
    """
    var = ds.variables[name]
    tv = var.attrs.get("time_variable")
    if tv is not None and tv in ds.variables:
        return str(tv)
    if var.ndim >= 2:
        tv = DIM_TO_TIME.get(var.dims[-1])
        if tv is not None and tv in ds.variables:
            return tv
    return None


def channel_arrays(ds: xr.Dataset, name: str) -> tuple[Any, Any, Any | None]:
    """Waveform as float64 with missing samples NaN, its valid mask and time axis.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset.
    name : str
        Waveform variable, ``(epoch, n)``.

    Returns
    -------
    x : array, (n_events, n), float64
        Samples (DN or V); NaN where missing (NaN or ``FILLVAL``).
    valid : array, (n_events, n), bool
        Not missing.
    t : array, (n_events, n) or (n,), float64, or None
        Sample times, µs from the trigger; None if the dataset has no time axis
        for this waveform.

    Raises
    ------
    AnalysisError
        If ``name`` is not a 2-D waveform variable.
    """
    if name not in ds.data_vars:
        raise AnalysisError(f"no waveform variable {name!r} in the dataset")
    var = ds.variables[name]
    if var.ndim != 2:
        raise AnalysisError(f"{name}: expected (epoch, sample) dimensions, got {var.dims}")
    raw = var.data
    xp = get_namespace(raw)
    x = xp.asarray(raw, dtype=xp.float64)
    integer = xp is np and np.asarray(raw).dtype.kind in "iu"
    # integer samples are never NaN: skip that test, and mask fill in place on the copy
    valid = xp.ones(x.shape, dtype=bool) if integer else ~xp.isnan(x)
    fill_f = fill_value(var.attrs)
    if math.isfinite(fill_f):
        valid &= x != fill_f
    if integer:
        if not valid.all():
            x[~valid] = np.nan  # x is a fresh float64 copy of the integers
    else:
        x = xp.where(valid, x, xp.nan)
    return x, valid, time_axis(ds, name, x.shape, xp)


def fill_value(attrs: Mapping[str, Any]) -> float:
    """``FILLVAL`` (else ``_FillValue``) as a float; NaN when absent or not a number."""
    fill = attrs.get("FILLVAL", attrs.get("_FillValue"))
    if fill is None:
        return math.nan
    try:
        return float(fill)
    except (TypeError, ValueError):
        return math.nan


def time_axis(ds: xr.Dataset, name: str, shape: tuple[int, ...], xp: Any) -> Any | None:
    """Time axis of waveform ``name`` (float64, µs) if its shape fits ``shape``, else None."""
    tname = find_time_variable(ds, name)
    if tname is None:
        return None
    t = xp.asarray(ds.variables[tname].data, dtype=xp.float64)
    if (
        t.ndim == 2
        and t.shape != tuple(shape)
        or t.ndim == 1
        and t.shape[0] != shape[1]
        or t.ndim > 2
    ):
        _log.warning(
            "%s: time axis %s has shape %s, waveform %s; ignored", name, tname, t.shape, shape
        )
        return None
    return t


@dataclass(frozen=True)
class FormulaTimes:
    """A time axis given by formula (:mod:`idexdask.timeaxis`), read without
    materialising it: ``t[e, i] = (start[e] + i * step[e]) * scale``, NaN at
    ``i >= count[e]``, computed with the roundings of
    :class:`~idexdask.timeaxis.UniformAxisArray`."""

    start: np.ndarray
    step: np.ndarray
    count: np.ndarray
    scale: float
    n_samples: int

    def at(self, idx: np.ndarray) -> np.ndarray:
        """Times of sample ``idx[e]`` of each event e, µs."""
        values = np.multiply(idx.astype(np.float64), self.step)
        values += self.start
        values *= self.scale
        return np.where(idx >= self.count, np.nan, values)

    def columns(self, lo: int, hi: int) -> np.ndarray:
        """Times of samples ``lo:hi`` of every event, (n_events, hi - lo)."""
        lo, hi, _ = slice(lo, hi).indices(self.n_samples)  # as a slice of the full axis
        index = np.arange(lo, max(hi, lo), dtype=np.float64)
        values = np.multiply(index, self.step[:, None])
        values += self.start[:, None]
        values *= self.scale
        return np.where(index >= self.count[:, None], np.nan, values)


def host_time_axis(
    ds: xr.Dataset, name: str, shape: tuple[int, ...]
) -> FormulaTimes | np.ndarray | None:
    """Time axis of waveform ``name``: its terms when given by formula, else as
    :func:`time_axis` (a float64 array, or None)."""
    tname = find_time_variable(ds, name)
    if tname is None:
        return None
    var = ds.variables[tname]
    if is_formula_axis(var) and var.shape == tuple(shape):
        terms = axis_terms(var)
        if all(v in ds.variables for v in (terms.start, terms.step, terms.count)):
            return FormulaTimes(
                start=np.asarray(ds.variables[terms.start].values, dtype=np.float64),
                step=np.asarray(ds.variables[terms.step].values, dtype=np.float64),
                count=np.asarray(ds.variables[terms.count].values, dtype=np.int64),
                scale=float(var.attrs[SCALE_ATTR]),
                n_samples=int(shape[1]),
            )
    return time_axis(ds, name, shape, np)


def adc_rails(attrs: Mapping[str, Any]) -> tuple[float | None, float | None]:
    vmin = attrs.get("VALIDMIN")
    vmax = attrs.get("VALIDMAX")
    bits = attrs.get("adc_bits")
    if vmax is None and bits is not None:
        vmax = 2 ** int(bits) - 1
    if vmin is None and bits is not None:
        vmin = 0
    return (None if vmin is None else float(vmin), None if vmax is None else float(vmax))


def quantisation_step(var: xr.Variable | xr.DataArray) -> float:
    """Nominal quantisation step of a waveform, in its units (0 when unknown).

    1 for integer data or data in DN; the ``vertical_gain`` attribute (V per ADC
    code) of LeCroy captures; else 0.  Data whose stored lattice is coarser
    (a 12-bit ADC in 16-bit words) are detected on their samples by
    :func:`detect_quantum`.
    """
    if var.dtype.kind in "iu" or str(var.attrs.get("units", "")).upper() == "DN":
        return 1.0
    gain = var.attrs.get("vertical_gain")
    try:
        g = abs(float(gain)) if gain is not None else 0.0
    except (TypeError, ValueError):
        g = 0.0
    return g if math.isfinite(g) else 0.0


def clipped_flag(ds: xr.Dataset, name: str, n_events: int) -> np.ndarray | None:
    """The scope's ``channel_clipped`` flag of channel ``name`` per event, if the
    dataset has one (an (epoch, channel) variable and its ``channel`` coordinate)."""
    flag = ds.variables.get("channel_clipped")
    channel = ds.variables.get("channel") if "channel" in ds.coords else None
    if flag is None or flag.dims != ("epoch", "channel") or channel is None:
        return None
    if channel.dims != ("channel",):
        return None
    names = [str(c) for c in channel.values]
    if name not in names:
        return None
    out = np.asarray(flag.values[:, names.index(name)], dtype=bool)
    return out if out.shape == (n_events,) else None
