"""Per-event, per-channel signal quality: baseline, noise, SNR and saturation.

All quantities are computed for every event at once (arrays of shape
``(n_events, n_samples)``, no per-event Python loop) through the array namespace of
:mod:`idexdask.analysis.xp`, so the same code runs on NumPy or CuPy arrays.

Definitions
-----------
Missing samples
    NaN, or equal to the waveform's ``FILLVAL`` attribute (65535 in the decoded
    telemetry).  They are ignored by every statistic below.
Baseline window
    ``[t0, t1)`` µs relative to the trigger, default ``[-7, -5)``: IDEX high-rate
    records start near -7.5 µs and low-rate ones near -31.5 µs, so the window
    exists for both.  A record "covers" the window when its time axis spans it and
    at least ``min_baseline_samples`` valid samples fall in it; otherwise the
    baseline is taken over the first ``baseline_fallback_fraction`` of the trace
    (status :attr:`QualityStatus.BASELINE_FALLBACK`).  The time axis is the one
    named by the waveform's ``time_variable`` attribute, else the one implied by
    its sample dimension (``time_high_sample_rate_index`` ->
    ``time_high_sample_rate``, ``time_low_sample_rate_index`` ->
    ``time_low_sample_rate``).
Baseline level and noise
    ``baseline`` = median over the window; ``noise`` = 1.4826 x the median absolute
    deviation (MAD) from it, a robust estimate of the Gaussian sigma.  A quiet,
    coarsely quantised baseline can have MAD = 0; the sample standard deviation of
    the window is used then.  The reported noise is floored at the quantisation
    noise ``q / sqrt(12)`` (``q`` below): a perfectly constant quantised baseline
    has noise 1/sqrt(12) DN, never 0, so nothing downstream divides by zero.
SNR
    ``snr = excursion / max(noise, q / sqrt(12))`` where ``excursion`` is the
    largest value of ``polarity * (x - baseline)`` over the whole trace and ``q``
    the quantisation step (1 DN for integer data; the ``vertical_gain`` attribute,
    V, for scope data; else 0).  The floor keeps a perfectly quiet quantised
    baseline from giving an infinite SNR.  ``polarity`` is +1 (positive-going),
    -1 (negative-going) or 0 (either direction, the larger excursion wins); it
    comes from the configuration, else the waveform's ``signal_polarity``
    attribute, else +1.
Saturation
    A sample is saturated if it belongs to

    (a) a run of at least ``saturation_min_run`` (3) consecutive samples at an ADC
        rail: ``>= VALIDMAX`` or ``<= VALIDMIN`` (attributes; else
        ``2**adc_bits - 1`` and 0 from ``adc_bits``; none for scope data in
        volts), or
    (b) a clipped flat top: a run of at least ``flat_top_min_run`` (3) consecutive
        samples all equal to the waveform's extreme value in the signal's
        polarity, when that extreme lies more than ``flat_top_sigma`` (10) noise
        sigmas (with the quantisation floor above) from the baseline.

    Repeated values near the baseline therefore never count: a quiet 10-bit
    baseline repeats the same DN value all the time.  For scope captures the
    ``channel_clipped`` flag (epoch, channel), when present, also marks the
    channel saturated; its saturated samples are then the run(s) at the trace's
    extreme in the direction of the larger excursion.

Quality status
    One :class:`QualityStatus` per event and channel; the highest-valued condition
    that applies is reported.  Bad input never raises.

Examples
--------
>>> import idexdask
>>> from idexdask.analysis.signal_quality import signal_quality
>>> ds = idexdask.read_l0("events.pkts")                         # doctest: +SKIP
>>> q = signal_quality(ds)                                        # doctest: +SKIP
>>> q.tof_high_snr, q.tof_high_saturated                          # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.peaks import _gather_finite, _median_inplace
from idexdask.analysis.xp import errstate, get_namespace, to_numpy
from idexdask.config import load_config, load_yaml
from idexdask.errors import AnalysisError, ConfigError
from idexdask.schema import Settings
from idexdask.timeaxis import SCALE_ATTR, axis_terms, is_formula_axis

__all__ = [
    "MAD_TO_SIGMA",
    "QualityStatus",
    "channel_arrays",
    "find_time_variable",
    "detect_quantum",
    "interpolated_mad",
    "load_quality_config",
    "long_runs",
    "quantisation_step",
    "quality_variables",
    "signal_quality",
    "waveform_variables",
]

_log = get_logger(__name__)

MAD_TO_SIGMA = 1.4826
"""Median absolute deviation -> Gaussian sigma (1 / Phi^-1(3/4))."""

class _Detect:
    """Marker: the quantisation step is to be detected on the samples."""


_DETECT = _Detect()

_DIM_TO_TIME = {
    "time_high_sample_rate_index": "time_high_sample_rate",
    "time_low_sample_rate_index": "time_low_sample_rate",
}


class QualityStatus(IntEnum):
    """Condition of one channel of one event; higher values are worse.

    When several apply, the highest value is reported.
    """

    OK = 0
    """Usable waveform, baseline from the configured window."""
    BASELINE_FALLBACK = 1
    """The record does not cover the baseline window; first part of the trace used."""
    MISSING_SAMPLES = 2
    """Some samples are NaN or fill (``FILLVAL``); the rest were analysed."""
    FLAT = 3
    """All valid samples are equal (not zero, not at a rail): no signal, no noise."""
    ALL_SATURATED = 4
    """All valid samples sit at an ADC rail."""
    ALL_ZERO = 5
    """All valid samples are zero (dead channel or packing error, not saturation)."""
    TOO_SHORT = 6
    """Fewer than ``min_valid_samples`` valid samples."""
    NO_DATA = 7
    """No valid sample at all (every sample NaN or fill)."""


_STATUS_MEANINGS = " ".join(s.name.lower() for s in QualityStatus)

# ----------------------------------------------------------------------------- config

def load_quality_config(config: Mapping[str, Any] | str | Path | None = None) -> Settings:
    """The ``analysis.quality`` settings: defaults from ``configs/default.yaml``, overridden.

    Parameters
    ----------
    config : mapping, str, pathlib.Path or None
        Overrides: a mapping (``{"quality": {...}}`` or the inner ``{...}``), or a
        YAML file holding one.  None: the defaults.

    Returns
    -------
    idexdask.schema.Settings
        The ``quality`` section, validated by the configuration model
        (:mod:`idexdask.schema`) and frozen; windows as ``(start_us, stop_us)``
        tuples.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or value out of range (named by dotted key).
    """
    if isinstance(config, Settings):
        return config
    if isinstance(config, (str, Path)):
        config = load_yaml(config)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"quality config: expected a mapping, got {type(config).__name__}")
    if "quality" in config:
        extra = set(config) - {"quality"}
        if extra:
            raise ConfigError(f"quality config: unknown top-level key(s) {sorted(extra)}")
        config = config["quality"]
    loaded = load_config({"analysis": {"quality": config}})
    return Settings(loaded["analysis"]["quality"], "analysis.quality")


# ----------------------------------------------------------------------------- dataset helpers


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
    time_vars = set(_DIM_TO_TIME.values())
    coords = set(ds.coords)
    out = []
    for name, var in ds.variables.items():  # Variables: no DataArray built per name
        if name in coords:
            continue
        if var.ndim != 2 or var.dims[0] != "epoch" or name in time_vars:
            continue
        if str(name).startswith("time_"):
            continue
        if "time_variable" in var.attrs or var.dims[1] in _DIM_TO_TIME:
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
        tv = _DIM_TO_TIME.get(var.dims[-1])
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
    fill_f = _fill_value(var.attrs)
    if math.isfinite(fill_f):
        valid &= x != fill_f
    if integer:
        if not valid.all():
            x[~valid] = np.nan  # x is a fresh float64 copy of the integers
    else:
        x = xp.where(valid, x, xp.nan)
    return x, valid, _time_axis(ds, name, x.shape, xp)


def _fill_value(attrs: Mapping[str, Any]) -> float:
    """``FILLVAL`` (else ``_FillValue``) as a float; NaN when absent or not a number."""
    fill = attrs.get("FILLVAL", attrs.get("_FillValue"))
    if fill is None:
        return math.nan
    try:
        return float(fill)
    except (TypeError, ValueError):
        return math.nan


def _time_axis(ds: xr.Dataset, name: str, shape: tuple[int, ...], xp: Any) -> Any | None:
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


def long_runs(mask: Any, k: int) -> Any:
    """Samples that belong to a run of at least ``k`` consecutive True values.

    Vectorised along the last axis with two cumulative sums (O(n), no loop).

    Parameters
    ----------
    mask : array of bool, (..., n)
        Condition per sample.
    k : int
        Minimum run length, >= 1.

    Returns
    -------
    array of bool, (..., n)
        True where the sample lies in such a run.
    """
    xp = get_namespace(mask)
    mask = xp.asarray(mask, dtype=bool)
    n = mask.shape[-1]
    if k <= 1:
        return mask.copy()
    if n < k:
        return xp.zeros(mask.shape, dtype=bool)
    if xp is np:  # compiled run-length scan on the host (one pass, no int64 temporaries)
        flat = np.ascontiguousarray(mask).reshape(-1, n)
        return _long_runs_rows(flat, int(k)).reshape(mask.shape)
    lead = mask.shape[:-1]
    zeros = xp.zeros((*lead, 1), dtype=xp.int64)
    cs = xp.concatenate([zeros, xp.cumsum(mask, axis=-1, dtype=xp.int64)], axis=-1)
    full = (cs[..., k:] - cs[..., :-k]) == k  # (..., n-k+1): window from i is all True
    cf = xp.concatenate([zeros, xp.cumsum(full, axis=-1, dtype=xp.int64)], axis=-1)
    j = xp.arange(n)
    hi = xp.minimum(j, n - k) + 1
    lo = xp.maximum(j - k + 1, 0)
    return (cf[..., hi] - cf[..., lo]) > 0


@numba.njit(cache=True, nogil=True)
def _long_runs_rows(mask: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`long_runs` of each row of a 2-D C-contiguous bool array."""
    rows, n = mask.shape
    out = np.zeros((rows, n), dtype=np.bool_)
    for r in range(rows):
        start = 0
        run = 0
        for j in range(n):
            if mask[r, j]:
                if run == 0:
                    start = j
                run += 1
            else:
                if run >= k:
                    out[r, start:j] = True
                run = 0
        if run >= k:
            out[r, start:n] = True
    return out


def interpolated_mad(dev: Any, step: float = 1.0) -> Any:
    """Median of absolute deviations on a lattice, interpolated within its cell.

    The plain median of integer data moves in whole (or half) steps, so
    ``1.4826 * MAD`` of a 10-bit baseline can only be 0.74, 1.48, 2.22, ... DN.  The
    grouped-data median treats each lattice value ``c`` as the cell
    ``[c - step/2, c + step/2)`` (``[0, step/2)`` for ``c = 0``: the deviations are
    folded at zero) holding its ``n_c`` samples spread uniformly, and returns
    ``lower + width * (n/2 - n_below) / n_c``.  Rows whose middle falls in an
    empty cell keep the plain median.

    Parameters
    ----------
    dev : array, (n_events, m)
        Absolute deviations from the (plain) median, same units as ``step``; NaN
        for samples to ignore.  Their lattice offset (0 or ``step/2``) is taken per
        row from the smallest deviation.
    step : float
        Quantisation step (1 DN).

    Returns
    -------
    array, (n_events,)
        Interpolated median absolute deviation.
    """
    xp = get_namespace(dev)
    plain = _nan_median(xp, dev, axis=1)
    if dev.shape[-1] == 0:
        return plain
    ok = ~xp.isnan(dev)
    n = ok.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        offset = xp.mod(xp.nanmin(xp.where(ok, dev, xp.inf), axis=1), step)
    with errstate(xp, invalid="ignore"):
        offset = xp.where(xp.isfinite(offset), offset, 0.0)
        centre = offset + step * xp.floor((plain - offset) / step + 0.5)
        lower = xp.maximum(centre - step / 2.0, 0.0)
        upper = centre + step / 2.0
        d = xp.where(ok, dev, xp.inf)
        below = (d < lower[:, None] - step * 1e-6).sum(axis=1)
        inside = (xp.abs(d - centre[:, None]) < step / 4.0).sum(axis=1)
        interp = lower + (upper - lower) * (n / 2.0 - below) / xp.maximum(inside, 1)
    good = (inside > 0) & (n > 0) & xp.isfinite(plain)
    return xp.where(good, interp, plain)


def detect_quantum(values: Any, *, tolerance: float = 0.05) -> float | None:
    """Quantisation step of digitised float data, or None if they look continuous.

    Scope captures in volts are ``gain * code - offset``; their distinct values sit
    on a lattice whose step may be a multiple of the nominal gain (a 12-bit ADC in
    16-bit words steps by 16 codes).  The step is the smallest gap between
    distinct values when every gap is within ``tolerance`` of an integer multiple
    of it.

    Parameters
    ----------
    values : array_like
        Samples (NaN ignored), any shape.
    tolerance : float
        Allowed deviation of gap / step from an integer.

    Returns
    -------
    float or None
        The step (units of ``values``), or None.
    """
    v = to_numpy(values).ravel()
    v = np.unique(v[np.isfinite(v)])
    if v.size < 3:
        return None
    gaps = np.diff(v)
    q = float(gaps.min())
    if not q > 0:
        return None
    ratio = gaps / q
    if np.any(np.abs(ratio - np.round(ratio)) > tolerance):
        return None
    return float(np.median(gaps / np.round(ratio)))


def _first_last(mask: Any) -> tuple[Any, Any, Any]:
    """Index of the first and last True per row, and whether any."""
    xp = get_namespace(mask)
    n = mask.shape[-1]
    anyv = mask.any(axis=-1)
    first = xp.argmax(mask, axis=-1)
    last = n - 1 - xp.argmax(mask[..., ::-1], axis=-1)
    return first, last, anyv


def _times_at(t: Any | None, idx: Any, ok: Any) -> Any:
    xp = get_namespace(idx)
    if t is None:
        return xp.full(idx.shape, xp.nan)
    if isinstance(t, FormulaTimes):
        return np.where(ok, t.at(idx), np.nan)
    if t.ndim == 1:
        vals = t[idx]
    else:
        vals = xp.take_along_axis(t, idx[:, None], axis=1)[:, 0]
    return xp.where(ok, vals, xp.nan)


def _rails(attrs: Mapping[str, Any]) -> tuple[float | None, float | None]:
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


def _clipped_flag(ds: xr.Dataset, name: str, n_events: int) -> np.ndarray | None:
    if "channel_clipped" not in ds.variables:
        return None
    flag = ds["channel_clipped"]
    if flag.dims != ("epoch", "channel") or "channel" not in flag.coords:
        return None
    names = [str(c) for c in flag["channel"].values]
    if name not in names:
        return None
    out = np.asarray(flag.isel(channel=names.index(name)).values, dtype=bool)
    return out if out.shape == (n_events,) else None


def _nan_median(xp: Any, a: Any, axis: int = -1) -> Any:
    if xp is np and getattr(a, "ndim", 0) == 2 and axis in (1, -1) and a.shape[1] > 0:
        # compiled selection per row: the same values as numpy.nanmedian, which
        # loops over rows in Python when NaN are present
        from idexdask.analysis.peaks import nanmedian_rows  # noqa: PLC0415

        return nanmedian_rows(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xp.nanmedian(a, axis=axis)


# ----------------------------------------------------------------------------- baseline


def baseline_mask(
    t: Any | None,
    valid: Any,
    window_us: tuple[float, float],
    *,
    fallback_fraction: float = 0.1,
    min_samples: int = 4,
) -> tuple[Any, Any]:
    """Samples of the baseline window per event, with the first-N% fallback.

    Parameters
    ----------
    t : array, (n_events, n) or (n,), or None
        Sample times, µs from the trigger.  None: always the fallback.
    valid : array of bool, (n_events, n)
        Not-missing mask.
    window_us : (float, float)
        ``[start, stop)`` µs.
    fallback_fraction : float
        Fraction of the trace (from its start) used when the window is not covered.
    min_samples : int
        Fewest valid samples in the window for it to count as covered.

    Returns
    -------
    mask : array of bool, (n_events, n)
        Baseline samples (valid ones only).
    covered : array of bool, (n_events,)
        Whether the configured window was used.
    """
    xp = get_namespace(valid)
    n_events, n = valid.shape
    head = max(1, int(math.ceil(fallback_fraction * n)))
    fallback = xp.zeros((n_events, n), dtype=bool)
    fallback[:, :head] = True
    fallback &= valid
    if t is None or n == 0:
        return fallback, xp.zeros(n_events, dtype=bool)
    t2 = t if t.ndim == 2 else xp.broadcast_to(t[None, :], (n_events, n))
    w0, w1 = window_us
    with errstate(xp, invalid="ignore"):
        inwin = (t2 >= w0) & (t2 < w1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tmin = xp.nanmin(t2, axis=1) if n_events else xp.zeros(0)
        tmax = xp.nanmax(t2, axis=1) if n_events else xp.zeros(0)
    spans = (tmin <= w0) & (tmax >= w1)
    win = inwin & valid
    covered = spans & (win.sum(axis=1) >= min_samples)
    return xp.where(covered[:, None], win, fallback), covered


# ----------------------------------------------------------------------------- per channel


@dataclass
class ChannelQuality:
    """The per-event quality products of one channel and the settings they used."""

    products: dict[str, np.ndarray]
    """Host arrays of length n_events, keyed by product (``baseline``, ``snr``, ...)."""
    quantum: float
    """Quantisation step used for the noise floor (units of the samples)."""
    window: tuple[float, float] = (math.nan, math.nan)
    """Baseline window, µs."""
    polarity: int = 1
    """Signal polarity of the excursion (+1, -1, 0 for either)."""
    rails: tuple[float | None, float | None] = (None, None)
    """ADC rails (low, high) of the samples; None where there is none."""


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
        index = np.arange(self.n_samples, dtype=np.float64)[lo:hi]
        values = np.multiply(index, self.step[:, None])
        values += self.start[:, None]
        values *= self.scale
        return np.where(index >= self.count[:, None], np.nan, values)


def _host_time_axis(
    ds: xr.Dataset, name: str, shape: tuple[int, ...]
) -> FormulaTimes | np.ndarray | None:
    """Time axis of waveform ``name``: its terms when given by formula, else as
    :func:`_time_axis` (a float64 array, or None)."""
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
    return _time_axis(ds, name, shape, np)


@dataclass
class _BaselineColumns:
    """Where each event's baseline samples are (see :func:`_baseline_columns`)."""

    covered: np.ndarray  # the window is covered (else the head of the trace is used)
    first: np.ndarray  # first and last baseline sample, -1 for none
    last: np.ndarray
    times: np.ndarray  # (events or 1, m) times of columns times_lo : times_lo + m
    times_lo: int
    a: np.ndarray  # the window's columns [a, b) per event
    b: np.ndarray


def _baseline_columns(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    axis: FormulaTimes | np.ndarray | None,
    window: tuple[float, float],
    min_samples: int,
    head: int,
) -> _BaselineColumns:
    """The baseline window of each event located on its time axis (by bisection on a
    formula axis), and the samples it keeps: those in the window when it is covered
    (see the module's definitions), else the valid ones of the head of the trace."""
    n_events, n = raw.shape
    w0, w1 = window
    if axis is None:
        tmin = np.full(n_events, np.inf)
        tmax = np.full(n_events, -np.inf)
        a = b = np.zeros(n_events, dtype=np.int64)
    elif isinstance(axis, FormulaTimes):
        tmin, tmax, a, b = _formula_window(axis.start, axis.step, axis.count, axis.scale, n,
                                           w0, w1)
    else:
        t = np.ascontiguousarray(axis if axis.ndim == 2 else axis[None, :])
        tmin, tmax, a, b = (np.broadcast_to(v, (n_events,)) for v in _array_window(t, w0, w1))
    span = b > a
    lo, hi = (int(a[span].min()), int(b[span].max())) if span.any() else (0, 0)
    if isinstance(axis, FormulaTimes):
        times = axis.columns(lo, hi)
    elif axis is not None:
        times = np.ascontiguousarray((axis if axis.ndim == 2 else axis[None, :])[:, lo:hi])
    else:
        times = np.zeros((1, 0))
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    n_win, wf, wl, hf, hl = _baseline_bounds(raw, has_fill, fill, times, lo, a, b, w0, w1, head)
    covered = (tmin <= w0) & (tmax >= w1) & (n_win >= min_samples)
    if axis is None:
        covered = np.zeros(n_events, dtype=bool)
    return _BaselineColumns(
        covered=covered,
        first=np.where(covered, wf, hf),
        last=np.where(covered, wl, hl),
        times=times,
        times_lo=lo,
        a=a,
        b=b,
    )


def _channel_quality(
    ds: xr.Dataset, name: str, cfg: Mapping[str, Any], *, compiled: bool = True
) -> ChannelQuality:
    """All per-event quantities of one channel (host NumPy arrays of length n_events).

    ``compiled``: NumPy samples of a numeric dtype go through the compiled passes
    (:func:`_channel_quality_host`); False forces the array-namespace code (the
    one CuPy runs), which gives the same results.
    """
    var = ds.variables[name]
    window = cfg["baseline_window_by_channel"].get(name, cfg["baseline_window_us"])
    polarity = cfg["polarity"].get(name, var.attrs.get("signal_polarity", 1))
    try:
        polarity = int(polarity)
    except (TypeError, ValueError):
        polarity = 1
    if polarity not in (-1, 0, 1):
        polarity = 1 if polarity > 0 else -1
    rails = _rails(var.attrs)
    n_events = var.shape[0] if var.ndim == 2 else 0
    clipped = _clipped_flag(ds, name, n_events)
    raw = var.data
    if (
        compiled
        and isinstance(raw, np.ndarray)
        and raw.ndim == 2
        and raw.dtype.kind in "iuf"
        and raw.size > 0
    ):
        res = _channel_quality_host(ds, name, cfg, window, polarity, rails, clipped)
    else:
        res = _channel_quality_xp(ds, name, cfg, window, polarity, rails, clipped)
    return replace(res, window=window, polarity=polarity, rails=rails)


def _baseline_noise(xp: Any, xb: Any, step: float | None, n_events: int) -> tuple[Any, Any]:
    """Median and noise (1.4826 x MAD, std where that is 0) over the window samples ``xb``."""
    if xb.shape[1] == 0:
        return xp.full(n_events, xp.nan), xp.full(n_events, xp.nan)
    baseline = _nan_median(xp, xb, axis=1)
    with errstate(xp, invalid="ignore"):
        dev_b = xp.abs(xb - baseline[:, None])
        mad = interpolated_mad(dev_b, step) if step is not None else _nan_median(xp, dev_b, axis=1)
        noise = MAD_TO_SIGMA * mad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            std = xp.nanstd(xb, axis=1)
        noise = xp.where(noise == 0, std, noise)
    return baseline, noise


def _baseline_noise_host(xb: np.ndarray, step: float | None, n_events: int) -> tuple[Any, Any]:
    """:func:`_baseline_noise` on NumPy window samples: the per-row selections compiled.

    The median, the median absolute deviation and the counts of
    :func:`interpolated_mad` come from :func:`_window_rows_stats`; the per-event
    arithmetic between them is the same NumPy code, and the standard deviation
    is taken only for the events whose MAD is 0 (the only ones that use it).
    """
    if xb.shape[1] == 0:
        return np.full(n_events, np.nan), np.full(n_events, np.nan)
    xb = np.ascontiguousarray(xb)
    baseline, plain, dmin, n = _window_rows_stats(xb)
    with np.errstate(invalid="ignore"):
        if step is None:
            mad = plain
        else:
            offset = np.mod(dmin, step)
            offset = np.where(np.isfinite(offset), offset, 0.0)
            centre = offset + step * np.floor((plain - offset) / step + 0.5)
            lower = np.maximum(centre - step / 2.0, 0.0)
            upper = centre + step / 2.0
            below, inside = _window_rows_counts(
                xb, baseline, lower - step * 1e-6, centre, step / 4.0
            )
            interp = lower + (upper - lower) * (n / 2.0 - below) / np.maximum(inside, 1)
            good = (inside > 0) & (n > 0) & np.isfinite(plain)
            mad = np.where(good, interp, plain)
        noise = MAD_TO_SIGMA * mad
        zero = np.nonzero(noise == 0)[0]
        if zero.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                noise[zero] = np.nanstd(xb[zero], axis=1)
    return baseline, noise


@numba.njit(cache=True, nogil=True)
def _window_rows_stats(
    xb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row of ``xb`` (NaN ignored): median, median of ``|x - median|`` (NaN
    ignored), smallest such deviation (inf for none) and the number of them."""
    rows, m = xb.shape
    med = np.empty(rows)
    mad = np.empty(rows)
    dmin = np.empty(rows)
    count = np.zeros(rows, dtype=np.int64)
    buf = np.empty(2 * m)
    for r in range(rows):
        k = _gather_finite(xb, r, buf)
        b = _median_inplace(buf, k) if k else np.nan
        med[r] = b
        kk = 0
        lo = np.inf
        for j in range(m):
            d = abs(xb[r, j] - b)
            if not np.isnan(d):
                buf[kk] = d
                kk += 1
                if d < lo:
                    lo = d
        mad[r] = _median_inplace(buf, kk) if kk else np.nan
        dmin[r] = lo
        count[r] = kk
    return med, mad, dmin, count


@numba.njit(cache=True, nogil=True)
def _window_rows_counts(
    xb: np.ndarray, baseline: np.ndarray, below_lim: np.ndarray, centre: np.ndarray, half: float
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Per row, deviations ``|x - baseline|`` below ``below_lim`` and within ``half`` of
    ``centre`` (:func:`interpolated_mad`'s counts; NaN deviations count as +inf)."""
    rows, m = xb.shape
    below = np.zeros(rows, dtype=np.int64)
    inside = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        nb = 0
        ni = 0
        for j in range(m):
            d = abs(xb[r, j] - baseline[r])
            if np.isnan(d):
                d = np.inf
            nb += d < below_lim[r]
            ni += abs(d - centre[r]) < half
        below[r] = nb
        inside[r] = ni
    return below, inside


def _whole_trace_stats(xp: Any, xl: Any) -> tuple[Any, Any]:
    """Median and 1.4826 x MAD of whole rows (events with no baseline sample)."""
    bl = _nan_median(xp, xl, axis=1)
    with errstate(xp, invalid="ignore"):
        nl = MAD_TO_SIGMA * _nan_median(xp, xp.abs(xl - bl[:, None]), axis=1)
    return bl, nl


def _floor_constant(floor: float, stats: ChannelQuality) -> ChannelQuality:
    """``stats`` with the zero noise of constant (FLAT) traces raised to ``floor``.

    A constant quantised trace is consistent with any noise below half a step;
    its quantisation noise ``q / sqrt(12)`` is the honest figure, and a noise
    of 0 would make any excursion infinitely significant downstream.
    """
    if floor > 0:
        noise = stats.products["noise"]
        stats.products["noise"] = np.where(noise == 0, floor, noise)
    return stats


def _status(
    xp: Any,
    covered: Any,
    n_valid: Any,
    n: int,
    vmax_obs: Any,
    vmin_obs: Any,
    all_rail: Any,
    min_valid: int,
) -> Any:
    """:class:`QualityStatus` per event: the highest condition that applies."""
    status = xp.full(n_valid.shape[0], int(QualityStatus.OK), dtype=xp.int8)
    conds = [
        (~covered, QualityStatus.BASELINE_FALLBACK),
        (n_valid < n, QualityStatus.MISSING_SAMPLES),
        (vmax_obs == vmin_obs, QualityStatus.FLAT),
        (all_rail, QualityStatus.ALL_SATURATED),
        ((vmax_obs == 0) & (vmin_obs == 0), QualityStatus.ALL_ZERO),
        (n_valid < min_valid, QualityStatus.TOO_SHORT),
        (n_valid == 0, QualityStatus.NO_DATA),
    ]
    for cond, code in conds:  # fixed, short list of conditions, each over all events
        status = xp.where(cond, xp.int8(int(code)), status)
    return status


def _finish(
    xp: Any,
    *,
    t: Any | None,
    status: Any,
    baseline: Any,
    noise: Any,
    snr: Any,
    best_exc: Any,
    best_idx: Any,
    sat_any: Any,
    n_sat: Any,
    first: Any,
    last: Any,
    n_valid: Any,
    vmax_obs: Any,
    vmin_obs: Any,
    rows_x: Any,
    quantum: float,
) -> ChannelQuality:
    """The per-event products from the statistics (``rows_x(rows)``: float rows, NaN missing)."""
    unusable = status >= int(QualityStatus.FLAT)
    no_stats = status >= int(QualityStatus.TOO_SHORT)
    t_start = _times_at(t, first, sat_any)
    t_stop = _times_at(t, last, sat_any)
    peak_time = _times_at(t, best_idx, xp.isfinite(best_exc) & ~unusable)

    nan = xp.nan
    snr = xp.where(unusable, nan, snr)
    excursion = xp.where(unusable, nan, best_exc)
    baseline = xp.where(no_stats, nan, baseline)
    noise = xp.where(no_stats, nan, noise)
    # flat / zero / all-saturated channels: level is the constant, no noise
    const = unusable & ~no_stats
    use_const = const & (n_valid > 0)
    if bool(use_const.any()):  # median of the whole trace only where it is needed
        rows = xp.nonzero(use_const)[0]
        baseline[rows] = _nan_median(xp, rows_x(rows), axis=1)
    noise = xp.where(const & (vmax_obs == vmin_obs), 0.0, noise)

    return ChannelQuality(products={
        "baseline": to_numpy(baseline),
        "noise": to_numpy(noise),
        "snr": to_numpy(snr),
        "excursion": to_numpy(excursion),
        "peak_time": to_numpy(peak_time),
        "saturated": to_numpy(sat_any),
        "saturated_samples": to_numpy(n_sat).astype(np.int32),
        "saturation_start": to_numpy(t_start),
        "saturation_stop": to_numpy(t_stop),
        "quality_status": to_numpy(status).astype(np.int8),
    }, quantum=quantum)


def _channel_quality_xp(
    ds: xr.Dataset,
    name: str,
    cfg: Mapping[str, Any],
    window: tuple[float, float],
    polarity: int,
    rails: tuple[float | None, float | None],
    clipped: np.ndarray | None,
    *,
    step: float | None | _Detect = _DETECT,
) -> ChannelQuality:
    """:func:`_channel_quality` in the array namespace of the samples (NumPy or CuPy).

    ``step``: the quantisation step, when known (events redone for the compiled
    path use the step detected on all events); by default 1 for integer samples,
    else detected on the baseline samples.
    """
    var = ds.variables[name]
    x, valid, t = channel_arrays(ds, name)
    xp = get_namespace(x)
    n_events, n = x.shape
    vmin, vmax = rails
    quantum = quantisation_step(var)

    n_valid = valid.sum(axis=1)
    bmask, covered = baseline_mask(
        t,
        valid,
        window,
        fallback_fraction=cfg["baseline_fallback_fraction"],
        min_samples=cfg["min_baseline_samples"],
    )
    # restrict the median to the columns any event uses (the window is narrow)
    cols = xp.nonzero(bmask.any(axis=0))[0]
    if cols.size:
        lo, hi = int(cols[0]), int(cols[-1]) + 1
    else:
        lo, hi = 0, 0
    xb = xp.where(bmask[:, lo:hi], x[:, lo:hi], xp.nan)
    # quantisation step: 1 DN for integers, else detected on the baseline samples
    if isinstance(step, _Detect):
        step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if hi > lo else None
    if step is not None:
        quantum = step
    floor = quantum / math.sqrt(12.0)
    baseline, noise = _baseline_noise(xp, xb, step, n_events)
    # no valid sample in the window nor in the fallback head: whole trace
    lost = xp.isnan(baseline) & (n_valid > 0)
    if bool(lost.any()):
        baseline[lost], noise[lost] = _whole_trace_stats(xp, x[lost])
    noise_eff = xp.maximum(noise, floor)

    # excursion in the signal's polarity (0: either direction)
    dirs = (1, -1) if polarity == 0 else (polarity,)
    dev = x - baseline[:, None]
    best_exc = xp.full(n_events, -xp.inf)
    best_idx = xp.zeros(n_events, dtype=xp.int64)
    flat_top = xp.zeros((n_events, n), dtype=bool)
    best_dir = xp.ones(n_events)
    for d in dirs:  # at most two directions, each vectorised over events
        s = xp.where(valid, d * dev, -xp.inf)
        idx = xp.argmax(s, axis=1) if n else xp.zeros(n_events, dtype=xp.int64)
        exc = xp.take_along_axis(s, idx[:, None], axis=1)[:, 0] if n else xp.full(n_events, -xp.inf)
        with errstate(xp, invalid="ignore"):
            far = exc > cfg["flat_top_sigma"] * noise_eff
        at_top = (s == exc[:, None]) & valid & far[:, None]
        flat_top |= long_runs(at_top, cfg["flat_top_min_run"])
        better = exc > best_exc
        best_exc = xp.where(better, exc, best_exc)
        best_idx = xp.where(better, idx, best_idx)
        best_dir = xp.where(better, float(d), best_dir)
    with errstate(xp, divide="ignore", invalid="ignore"):
        snr = best_exc / noise_eff

    # ADC rails
    at_rail = xp.zeros((n_events, n), dtype=bool)
    if vmax is not None:
        at_rail |= valid & (xp.nan_to_num(x, nan=-xp.inf) >= vmax)
    if vmin is not None:
        at_rail |= valid & (xp.nan_to_num(x, nan=xp.inf) <= vmin)
    sat = long_runs(at_rail, cfg["saturation_min_run"]) | flat_top

    # scope clipping flag: the run(s) at the extreme of the larger excursion
    clipped_x = xp.zeros(n_events, dtype=bool)
    if clipped is not None:
        clipped_x = xp.asarray(clipped)
        s = xp.where(valid, best_dir[:, None] * dev, -xp.inf)
        at_ext = (s == best_exc[:, None]) & valid & clipped_x[:, None]
        sat |= at_ext

    # status
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vmax_obs = (
            xp.nanmax(xp.where(valid, x, -xp.inf), axis=1) if n else xp.full(n_events, -xp.inf)
        )
        vmin_obs = xp.nanmin(xp.where(valid, x, xp.inf), axis=1) if n else xp.full(n_events, xp.inf)
    all_rail = (
        (at_rail.sum(axis=1) == n_valid) & (n_valid > 0)
        if (vmax is not None or vmin is not None)
        else xp.zeros(n_events, dtype=bool)
    )
    status = _status(
        xp, covered, n_valid, n, vmax_obs, vmin_obs, all_rail, cfg["min_valid_samples"]
    )

    unusable = status >= int(QualityStatus.FLAT)
    saturated_override = status == int(QualityStatus.ALL_SATURATED)
    sat = xp.where((unusable & ~saturated_override)[:, None], False, sat)
    sat = xp.where(saturated_override[:, None], valid, sat)
    sat_any = sat.any(axis=1) | (clipped_x & ~unusable)
    n_sat = sat.sum(axis=1)
    first, last, anyv = (
        _first_last(sat)
        if n
        else (xp.zeros(n_events, dtype=xp.int64),) * 2 + (xp.zeros(n_events, dtype=bool),)
    )
    return _floor_constant(floor, _finish(
        xp,
        t=t,
        status=status,
        baseline=baseline,
        noise=noise_eff,
        snr=snr,
        best_exc=best_exc,
        best_idx=best_idx,
        sat_any=sat_any,
        n_sat=n_sat,
        first=first,
        last=last,
        n_valid=n_valid,
        vmax_obs=vmax_obs,
        vmin_obs=vmin_obs,
        rows_x=lambda rows: x[rows],
        quantum=quantum,
    ))


def _channel_quality_host(
    ds: xr.Dataset,
    name: str,
    cfg: Mapping[str, Any],
    window: tuple[float, float],
    polarity: int,
    rails: tuple[float | None, float | None],
    clipped: np.ndarray | None,
) -> ChannelQuality:
    """:func:`_channel_quality_xp` for NumPy samples: one compiled pass over each trace.

    The samples stay in their native dtype (no float64 copy of the traces) and a
    time axis given by formula is never materialised: the baseline window's
    columns are found from the axis terms, only the window's columns of the
    samples are read before the baseline is known, and then one pass per trace
    (:func:`_trace_rows`) gives every whole-trace statistic.  Each sample is
    converted as :func:`channel_arrays` would, and every statistic is computed
    with the same floating-point operations, so the results are the same.  The
    rare traces that pass cannot settle exactly (a run at an ADC rail, a
    baseline with no valid sample, a degenerate excursion) are redone by the
    array code.
    """
    var = ds.variables[name]
    raw = np.ascontiguousarray(var.data)
    n_events, n = raw.shape
    vmin, vmax = rails
    quantum = quantisation_step(var)
    fill = _fill_value(var.attrs)
    has_fill = math.isfinite(fill)
    head = max(1, int(math.ceil(cfg["baseline_fallback_fraction"] * n)))
    w0, w1 = (float(v) for v in window)
    axis = _host_time_axis(ds, name, raw.shape)
    cols = _baseline_columns(raw, has_fill, fill, axis, (w0, w1),
                             int(cfg["min_baseline_samples"]), head)
    covered = cols.covered
    used = cols.first >= 0
    lo, hi = (int(cols.first[used].min()), int(cols.last[used].max()) + 1) if used.any() else (0, 0)
    xb = _window_rows(raw, has_fill, fill, cols.times, cols.times_lo, cols.a, cols.b, covered,
                      w0, w1, head, lo, hi)
    step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if hi > lo else None
    if step is not None:
        quantum = step
    floor = quantum / math.sqrt(12.0)
    baseline, noise = _baseline_noise_host(xb, step, n_events)
    dirs = np.array([1.0, -1.0] if polarity == 0 else [float(polarity)])
    flags = np.zeros(n_events, dtype=np.bool_) if clipped is None else clipped.astype(np.bool_)
    vmin_f = math.nan if vmin is None else vmin
    vmax_f = math.nan if vmax is None else vmax

    def trace(rows: np.ndarray | None) -> tuple[np.ndarray, ...]:
        sub = raw if rows is None else raw[rows]
        pick = (lambda v: v) if rows is None else (lambda v: v[rows])
        with np.errstate(invalid="ignore"):
            threshold = cfg["flat_top_sigma"] * np.maximum(pick(noise), floor)
        return _trace_rows(
            sub, has_fill, fill, pick(baseline), threshold, dirs, vmin_f, vmax_f,
            int(cfg["saturation_min_run"]), int(cfg["flat_top_min_run"]), pick(flags),
        )  # fmt: skip

    stats = list(trace(None))
    n_valid = stats[0]
    lost = np.isnan(baseline) & (n_valid > 0)
    if lost.any():
        rows = np.nonzero(lost)[0]
        x = raw[rows].astype(np.float64)
        x[np.isnan(x) | ((x == fill) if has_fill else False)] = np.nan
        baseline[rows], noise[rows] = _whole_trace_stats(np, x)
        for k, values in enumerate(trace(rows)):
            stats[k][rows] = values
    (n_valid, vmax_obs, vmin_obs, n_rail, fvalid, lvalid, best_exc, best_idx, n_sat,
     first, last, unsettled) = stats
    noise_eff = np.maximum(noise, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = best_exc / noise_eff
    all_rail = (
        (n_rail == n_valid) & (n_valid > 0)
        if (vmax is not None or vmin is not None)
        else np.zeros(n_events, dtype=bool)
    )
    status = _status(
        np, covered, n_valid, n, vmax_obs, vmin_obs, all_rail, cfg["min_valid_samples"]
    )
    # unusable channels have no saturated sample, except all-saturated ones: all valid
    unusable = status >= int(QualityStatus.FLAT)
    override = status == int(QualityStatus.ALL_SATURATED)
    n_sat = np.where(override, n_valid, np.where(unusable, 0, n_sat))
    first = np.where(override, fvalid, first)
    last = np.where(override, lvalid, last)
    sat_any = (n_sat > 0) | (flags & ~unusable)

    def rows_x(rows: np.ndarray) -> np.ndarray:
        x = raw[rows].astype(np.float64)
        miss = np.isnan(x)
        if has_fill:
            miss |= x == fill
        x[miss] = np.nan
        return x

    result = _floor_constant(floor, _finish(
        np,
        t=axis,
        status=status,
        baseline=baseline,
        noise=noise_eff,
        snr=snr,
        best_exc=best_exc,
        best_idx=best_idx,
        sat_any=sat_any,
        n_sat=n_sat,
        first=np.maximum(first, 0),
        last=np.maximum(last, 0),
        n_valid=n_valid,
        vmax_obs=vmax_obs,
        vmin_obs=vmin_obs,
        rows_x=rows_x,
        quantum=quantum,
    ))
    redo = np.nonzero(unsettled)[0]
    if redo.size:
        redone = _channel_quality_xp(ds.isel(epoch=redo), name, cfg, window, polarity, rails,
                                     None if clipped is None else clipped[redo], step=step)
        for key, values in redone.products.items():
            result.products[key][redo] = values
    return result


# ----------------------------------------------------------------------------- NumPy fast path
#
# On the host, the whole-trace work of :func:`_channel_quality` (missing-sample
# mask, observed extremes, excursion, rail runs and clipped flat tops) is one
# compiled pass over the native-dtype samples, with no (n_events, n) float64
# temporaries; the baseline window is located on the time axis first (by
# bisection on a formula axis), so the pass already knows the baseline.  Every
# floating-point operation is the one the array-namespace path performs, so the
# results are identical (checked by ``tests/unit/test_signal_quality.py``).


@numba.njit(cache=True, nogil=True, inline="always")
def _sample(raw, r, j, has_fill, fill):  # pragma: no cover - compiled
    """Sample ``raw[r, j]`` as float64, NaN when missing (NaN or ``fill``)."""
    v = np.float64(raw[r, j])
    if v != v or (has_fill and v == fill):
        return np.nan
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _formula_time(start, step, scale, j):  # pragma: no cover - compiled
    """``(start + j * step) * scale``, rounded as :class:`~idexdask.timeaxis.UniformAxisArray`."""
    return (np.float64(j) * step + start) * scale


@numba.njit(cache=True, nogil=True, inline="always")
def _first_time_at(start, step, scale, count, limit, below):  # pragma: no cover - compiled
    """First index ``j < count`` whose time is ``>= limit`` (``< limit`` when ``below``),
    by bisection: the formula's times are monotonic in ``j``."""
    lo = 0
    hi = count
    while lo < hi:
        mid = (lo + hi) // 2
        t = _formula_time(start, step, scale, mid)
        if (t < limit) if below else (t >= limit):
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def _formula_window(
    start: np.ndarray,
    step: np.ndarray,
    count: np.ndarray,
    scale: float,
    n: int,
    w0: float,
    w1: float,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Per row of a formula axis: the smallest and largest time, and the columns
    ``[a, b)`` whose times lie in ``[w0, w1)`` (``a == b`` for none)."""
    rows = start.size
    tmin = np.full(rows, np.inf)
    tmax = np.full(rows, -np.inf)
    a = np.zeros(rows, dtype=np.int64)
    b = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        c = min(count[r], n)
        if c <= 0:
            continue
        t0 = _formula_time(start[r], step[r], scale, 0)
        tl = _formula_time(start[r], step[r], scale, c - 1)
        if t0 != t0 or tl != tl:
            continue
        tmin[r] = min(t0, tl)
        tmax[r] = max(t0, tl)
        if tl >= t0:
            a[r] = _first_time_at(start[r], step[r], scale, c, w0, False)
            b[r] = _first_time_at(start[r], step[r], scale, c, w1, False)
        else:
            a[r] = _first_time_at(start[r], step[r], scale, c, w1, True)
            b[r] = _first_time_at(start[r], step[r], scale, c, w0, True)
        b[r] = max(a[r], b[r])
    return tmin, tmax, a, b


@numba.njit(cache=True, nogil=True)
def _array_window(t: np.ndarray, w0: float, w1: float) -> tuple[np.ndarray, ...]:
    # pragma: no cover - compiled
    """:func:`_formula_window` of a materialised axis: ``[a, b)`` spans the first to
    the last column in the window (columns between need not be in it)."""
    rows, n = t.shape
    tmin = np.full(rows, np.inf)
    tmax = np.full(rows, -np.inf)
    a = np.zeros(rows, dtype=np.int64)
    b = np.zeros(rows, dtype=np.int64)
    for r in range(rows):
        first = -1
        for j in range(n):
            tj = t[r, j]
            if tj < tmin[r]:
                tmin[r] = tj
            if tj > tmax[r]:
                tmax[r] = tj
            if tj >= w0 and tj < w1:
                if first < 0:
                    first = j
                b[r] = j + 1
        a[r] = max(first, 0)
    return tmin, tmax, a, b


@numba.njit(cache=True, nogil=True)
def _baseline_bounds(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    tw: np.ndarray,
    t_lo: int,
    a: np.ndarray,
    b: np.ndarray,
    w0: float,
    w1: float,
    head: int,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Valid samples in the window (count, first, last; columns ``[a, b)`` read, their
    times ``tw[:, j - t_lo]``) and the first and last valid sample of the head."""
    rows, n = raw.shape
    t_rows = tw.shape[0]
    n_win = np.zeros(rows, dtype=np.int64)
    wf = np.full(rows, -1, dtype=np.int64)
    wl = np.full(rows, -1, dtype=np.int64)
    hf = np.full(rows, -1, dtype=np.int64)
    hl = np.full(rows, -1, dtype=np.int64)
    m = min(head, n)
    for r in range(rows):
        tr = r if t_rows == rows else 0
        for j in range(a[r], b[r]):
            v = _sample(raw, r, j, has_fill, fill)
            tj = tw[tr, j - t_lo]
            if v == v and tj >= w0 and tj < w1:
                n_win[r] += 1
                if wf[r] < 0:
                    wf[r] = j
                wl[r] = j
        for j in range(m):
            v = _sample(raw, r, j, has_fill, fill)
            if v == v:
                hf[r] = j
                break
        for j in range(m - 1, -1, -1):
            v = _sample(raw, r, j, has_fill, fill)
            if v == v:
                hl[r] = j
                break
    return n_win, wf, wl, hf, hl


@numba.njit(cache=True, nogil=True)
def _window_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    tw: np.ndarray,
    t_lo: int,
    a: np.ndarray,
    b: np.ndarray,
    covered: np.ndarray,
    w0: float,
    w1: float,
    head: int,
    lo: int,
    hi: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """Samples ``lo:hi`` of each row that lie in its baseline mask, NaN elsewhere."""
    rows = raw.shape[0]
    out = np.empty((rows, hi - lo))
    t_rows = tw.shape[0]
    for r in range(rows):
        tr = r if t_rows == rows else 0
        for j in range(lo, hi):
            v = _sample(raw, r, j, has_fill, fill)
            if covered[r]:
                keep = False
                if j >= a[r] and j < b[r]:
                    tj = tw[tr, j - t_lo]
                    keep = tj >= w0 and tj < w1
            else:
                keep = j < head
            out[r, j - lo] = v if keep else np.nan
    return out


@numba.njit(cache=True, nogil=True)
def _trace_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    baseline: np.ndarray,
    threshold: np.ndarray,
    dirs: np.ndarray,
    vmin: float,
    vmax: float,
    rail_run: int,
    top_run: int,
    clipped: np.ndarray,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Two passes per row: counts and extremes, then the samples at the excursion.

    For each direction ``d`` the excursion is ``d * (x - baseline)`` over the
    valid samples.  Its maximum is that at the largest (d = 1) or smallest
    (d = -1) sample, because each rounded operation is monotonic, so the first
    pass (counts, extremes, rails) gives it; the second finds the samples equal
    to it: the first (the excursion's index, as ``numpy.argmax``), all of them
    (the saturated samples of a row the scope flagged ``clipped``, in the
    direction of the larger excursion) and those in runs of at least ``top_run``
    (a clipped flat top, counted when the maximum exceeds ``threshold``).  The
    larger direction wins, the first on a tie.  ``vmin``/``vmax`` are NaN for no
    rail.

    Returns ``n_valid``, ``vmax_obs``, ``vmin_obs``, ``n_rail``, ``first_valid``,
    ``last_valid``, ``best_exc``, ``best_idx``, the saturated count and its first
    and last index (-1 for none), and ``unsettled``: rows these passes cannot
    settle exactly (a run of ``rail_run`` rail samples, whose union with a flat
    top they do not count; a NaN baseline or an infinite sample; two directions
    whose extremes are the same samples), for the array code to redo.
    """
    rows, n = raw.shape
    nd = dirs.size
    has_rails = vmin == vmin or vmax == vmax
    n_valid = np.zeros(rows, dtype=np.int64)
    vmax_obs = np.full(rows, -np.inf)
    vmin_obs = np.full(rows, np.inf)
    n_rail = np.zeros(rows, dtype=np.int64)
    first_valid = np.full(rows, -1, dtype=np.int64)
    last_valid = np.full(rows, -1, dtype=np.int64)
    best_exc = np.full(rows, -np.inf)
    best_idx = np.zeros(rows, dtype=np.int64)
    n_sat = np.zeros(rows, dtype=np.int64)
    first = np.full(rows, -1, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    unsettled = np.zeros(rows, dtype=np.bool_)
    for r in range(rows):
        # pass 1: valid count, extremes, rails
        nv = 0
        hi = -np.inf
        lo = np.inf
        for j in range(n):
            v = _sample(raw, r, j, has_fill, fill)
            if v == v:
                nv += 1
                hi = max(hi, v)
                lo = min(lo, v)
        n_valid[r] = nv
        vmax_obs[r] = hi
        vmin_obs[r] = lo
        if nv == 0:
            continue  # every excursion -inf at index 0, nothing saturated
        for j in range(n):
            v = _sample(raw, r, j, has_fill, fill)
            if v == v:
                first_valid[r] = j
                break
        for j in range(n - 1, -1, -1):
            v = _sample(raw, r, j, has_fill, fill)
            if v == v:
                last_valid[r] = j
                break
        odd = hi == np.inf or lo == -np.inf
        if has_rails:
            nr = 0
            run = 0
            for j in range(n):
                v = _sample(raw, r, j, has_fill, fill)
                if v == v and (v >= vmax or v <= vmin):
                    nr += 1
                    run += 1
                    odd |= run >= rail_run
                else:
                    run = 0
            n_rail[r] = nr
        b = baseline[r]
        if b != b:
            unsettled[r] = True
            continue
        excs = np.empty(nd)
        best = -np.inf
        kb = -1
        for k in range(nd):
            excs[k] = dirs[k] * ((hi if dirs[k] > 0 else lo) - b)
            if excs[k] > best:
                best = excs[k]
                kb = k
        best_exc[r] = best
        odd |= nd == 2 and excs[0] == -excs[1]
        count = 0
        f = -1
        last_r = -1
        for k in range(nd):
            d = dirs[k]
            exc = excs[k]
            ext = clipped[r] and k == kb
            top = exc > threshold[r]
            # samples at the maximum: first, all (count, first, last), runs >= top_run
            at = -1
            n_ext = 0
            e_last = -1
            n_top = 0
            t_first = -1
            t_last = -1
            run = 0
            for j in range(n):
                v = _sample(raw, r, j, has_fill, fill)
                if v == v and d * (v - b) == exc:
                    if at < 0:
                        at = j
                        if not (ext or top):
                            break
                    n_ext += 1
                    e_last = j
                    run += 1
                else:
                    if run >= top_run:
                        n_top += run
                        if t_first < 0:
                            t_first = j - run
                        t_last = j - 1
                    run = 0
            if run >= top_run:
                n_top += run
                if t_first < 0:
                    t_first = n - run
                t_last = n - 1
            if k == kb:
                best_idx[r] = at
            if ext:
                c, kf, kl = n_ext, at, e_last
            elif top:
                c, kf, kl = n_top, t_first, t_last
            else:
                continue
            if c > 0:
                count += c
                f = kf if f < 0 else min(f, kf)
                last_r = max(last_r, kl)
        n_sat[r] = count
        first[r] = f
        last[r] = last_r
        unsettled[r] = odd
    return (n_valid, vmax_obs, vmin_obs, n_rail, first_valid, last_valid, best_exc, best_idx,
            n_sat, first, last, unsettled)


def signal_quality(
    ds: xr.Dataset,
    config: Mapping[str, Any] | str | Path | None = None,
    *,
    channels: Sequence[str] | None = None,
) -> xr.Dataset:
    """Baseline, noise, SNR and saturation of every waveform of every event.

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset from :func:`idexdask.read_l0` (uint16 DN, fill 65535) or
        :func:`idexdask.io.trc.read_trc` (float32 V, NaN for missing).  NumPy or
        CuPy backed.
    config : mapping, str, pathlib.Path or None
        Overrides of ``analysis.quality`` in ``configs/default.yaml`` (see
        :func:`load_quality_config`).
    channels : sequence of str, optional
        Waveform variables to analyse; default all (:func:`waveform_variables`).

    Returns
    -------
    xarray.Dataset
        Dimension ``epoch`` (and ``channel`` for ``quality_status``).  For each
        channel, with ``<ch>`` its lower-case name (``tof_high``, ``ion_grid``, ...):

        ``<ch>_baseline`` (DN or V)
            Median over the baseline window.
        ``<ch>_noise`` (DN or V)
            1.4826 x MAD over the baseline window (std if the MAD is 0).
        ``<ch>_excursion`` (DN or V)
            Largest ``polarity * (x - baseline)``.
        ``<ch>_snr`` (1)
            ``excursion / max(noise, quantum / sqrt(12))``.
        ``<ch>_peak_time`` (µs)
            Time of that excursion.
        ``<ch>_saturated`` (bool)
            Any saturated sample (rail run or clipped flat top, see module doc).
        ``<ch>_saturated_samples`` (int)
            Number of saturated samples.
        ``<ch>_saturation_start``, ``<ch>_saturation_stop`` (µs)
            Times of the first and last saturated sample (NaN if none).
        ``<ch>_quality_status`` (int8)
            :class:`QualityStatus`.

        plus ``quality_status`` (epoch, channel), the same codes stacked.

    Raises
    ------
    AnalysisError
        If a requested channel is not a waveform of ``ds``.
    ConfigError
        If ``config`` is invalid.

    Notes
    -----
    Never raises on bad waveforms (flat, all zero, all at a rail, NaN or fill,
    too short): these get a :class:`QualityStatus` and NaN statistics.
    """
    cfg = load_quality_config(config)
    names = list(channels) if channels is not None else None
    variables = quality_variables(ds, cfg, names)
    coords = {"epoch": ds["epoch"].values} if "epoch" in ds.coords else {}
    out = xr.Dataset(coords=coords).assign(variables)  # one assign, not 60 merges
    out.attrs["baseline_window_us"] = list(cfg["baseline_window_us"])
    out.attrs["mad_to_sigma"] = MAD_TO_SIGMA
    return out


def quality_variables(
    ds: xr.Dataset,
    cfg: Mapping[str, Any],
    channels: Sequence[str] | None = None,
    *,
    channel_dim: str = "channel",
) -> dict[str, xr.Variable]:
    """The variables of :func:`signal_quality`, without building their Dataset.

    For callers that add them to a dataset of their own (:func:`idexdask.analyze`
    assigns them, with its other products, in one step).

    Parameters
    ----------
    ds : xarray.Dataset
        Event dataset (see :func:`signal_quality`).
    cfg : mapping
        A configuration already validated by :func:`load_quality_config`.
    channels : sequence of str, optional
        Waveform variables to analyse; default all (:func:`waveform_variables`).
    channel_dim : str
        Name of the channel dimension of ``quality_status``.

    Returns
    -------
    dict of str to xarray.Variable
        In the order of :func:`signal_quality`'s variables after ``epoch``: the
        per-channel variables, the ``channel_dim`` coordinate values, then
        ``quality_status``.

    Raises
    ------
    AnalysisError
        If a requested channel is not a waveform of ``ds``.
    """
    available = waveform_variables(ds)
    names = list(channels) if channels is not None else available
    for name in names:
        if name not in ds.data_vars or ds.variables[name].ndim != 2:
            raise AnalysisError(f"{name!r} is not a waveform variable of the dataset")
        if name not in available:
            _log.debug("%s: not recognised as a waveform by its dims/attrs; analysed anyway", name)
    n_events = int(ds.sizes.get("epoch", 0))
    data_vars: dict[str, xr.Variable] = {}
    stacked = []
    for name in names:  # one pass per channel (six at most); events are vectorised
        quality = _channel_quality(ds, name, cfg)
        res = quality.products
        var = ds.variables[name]
        units = str(var.attrs.get("units", "DN" if var.dtype.kind in "iu" else ""))
        label = str(var.attrs.get("long_name", name))
        low = name.lower()
        spec = {
            "baseline": (units, f"{label}: baseline level (median over the baseline window)"),
            "noise": (units, f"{label}: baseline noise (1.4826 x MAD over the baseline window, "
                "floored at the quantisation noise)"),
            "excursion": (
                units,
                f"{label}: largest excursion from the baseline in the signal polarity",
            ),
            "snr": ("1", f"{label}: peak excursion over the baseline noise"),
            "peak_time": ("us", f"{label}: time of the largest excursion from the trigger"),
            "saturated": ("1", f"{label}: ADC rail run or clipped flat top present"),
            "saturated_samples": ("1", f"{label}: number of saturated samples"),
            "saturation_start": ("us", f"{label}: time of the first saturated sample"),
            "saturation_stop": ("us", f"{label}: time of the last saturated sample"),
            "quality_status": ("1", f"{label}: quality status"),
        }
        for key, (unit, long_name) in spec.items():
            attrs: dict[str, Any] = {"units": unit, "long_name": long_name, "channel": name}
            if key == "quality_status":
                attrs["flag_values"] = np.arange(len(QualityStatus), dtype=np.int8)
                attrs["flag_meanings"] = _STATUS_MEANINGS
            if key in ("baseline", "noise", "snr"):
                attrs["baseline_window_us"] = list(quality.window)
            if key == "snr":
                attrs["signal_polarity"] = quality.polarity
                attrs["noise_floor"] = quality.quantum / math.sqrt(12.0)
            if key == "saturated":
                vmin, vmax = quality.rails
                attrs["rail_min"] = "none" if vmin is None else vmin
                attrs["rail_max"] = "none" if vmax is None else vmax
                attrs["saturation_min_run"] = cfg["saturation_min_run"]
                attrs["flat_top_min_run"] = cfg["flat_top_min_run"]
                attrs["flat_top_sigma"] = cfg["flat_top_sigma"]
            data_vars[f"{low}_{key}"] = xr.Variable(("epoch",), res[key], attrs=attrs)
        stacked.append(res["quality_status"])
        bad = res["quality_status"] >= int(QualityStatus.MISSING_SAMPLES)
        if bad.any():
            counts = np.bincount(res["quality_status"], minlength=len(QualityStatus))
            _log.info(
                "%s: quality status counts %s",
                name,
                {QualityStatus(i).name: int(c) for i, c in enumerate(counts) if c},
            )
    status = np.stack(stacked, axis=1) if stacked else np.zeros((n_events, 0), dtype=np.int8)
    data_vars[channel_dim] = xr.Variable((channel_dim,), np.asarray(names, dtype=str))
    data_vars["quality_status"] = xr.Variable(
        ("epoch", channel_dim),
        status.astype(np.int8),
        attrs={
            "long_name": "worst applicable quality condition per event and channel",
            "flag_values": np.arange(len(QualityStatus), dtype=np.int8),
            "flag_meanings": _STATUS_MEANINGS,
        },
    )
    return data_vars
