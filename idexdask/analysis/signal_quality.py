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
from enum import IntEnum
from pathlib import Path
from typing import Any

import numba
import numpy as np
import xarray as xr

from idexdask._logging import get_logger
from idexdask.analysis.robust import MAD_TO_SIGMA, gather_finite, median_inplace, nanmedian_rows
from idexdask.analysis.xp import errstate, get_namespace, to_numpy
from idexdask.config import load_config, load_yaml
from idexdask.errors import AnalysisError, ConfigError
from idexdask.schema import Settings

__all__ = [
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


def _channel_quality(
    ds: xr.Dataset, name: str, cfg: Mapping[str, Any], *, compiled: bool = True
) -> dict[str, np.ndarray]:
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
        res = _channel_quality_host(ds, name, cfg, window, polarity, rails)
        if clipped is not None and clipped.any():
            # the compiled passes know no scope clipping flag: the (few) events the
            # scope flagged clipped are redone by the array code, with the flag
            rows = np.nonzero(clipped)[0]
            redone = _channel_quality_xp(ds.isel(epoch=rows), name, cfg, window, polarity,
                                         rails, clipped[rows])
            for key, values in redone.items():
                if key != "_q":
                    res[key][rows] = values
    else:
        res = _channel_quality_xp(ds, name, cfg, window, polarity, rails, clipped)
    res["_meta"] = {
        "window": window,
        "polarity": polarity,
        "rails": rails,
        "quantum": res.pop("_q"),
    }
    return res


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
        k = gather_finite(xb, r, buf)
        b = median_inplace(buf, k) if k else np.nan
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
        mad[r] = median_inplace(buf, kk) if kk else np.nan
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


def _floor_constant(floor: float, stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with the zero noise of constant (FLAT) traces raised to ``floor``.

    A constant quantised trace is consistent with any noise below half a step;
    its quantisation noise ``q / sqrt(12)`` is the honest figure, and a noise
    of 0 would make any excursion infinitely significant downstream.
    """
    if floor > 0:
        noise = stats["noise"]
        stats["noise"] = np.where(noise == 0, floor, noise)
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
) -> dict[str, Any]:
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

    return {
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
        "_q": quantum,
    }


def _channel_quality_xp(
    ds: xr.Dataset,
    name: str,
    cfg: Mapping[str, Any],
    window: tuple[float, float],
    polarity: int,
    rails: tuple[float | None, float | None],
    clipped: np.ndarray | None,
) -> dict[str, Any]:
    """:func:`_channel_quality` in the array namespace of the samples (NumPy or CuPy)."""
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
) -> dict[str, Any]:
    """:func:`_channel_quality_xp` for NumPy samples, by two compiled passes per channel.

    The samples stay in their native dtype (no float64 copy of the traces); each
    sample is converted as :func:`channel_arrays` would, and every statistic is
    computed with the same floating-point operations, so the results are the
    same.  Only the baseline window (a few hundred columns) is copied to float.
    """
    var = ds.variables[name]
    raw = np.ascontiguousarray(var.data)
    n_events, n = raw.shape
    vmin, vmax = rails
    quantum = quantisation_step(var)
    fill = _fill_value(var.attrs)
    has_fill = math.isfinite(fill)
    t = _time_axis(ds, name, raw.shape, np)
    has_t = t is not None
    tk = np.zeros((1, n)) if t is None else t if t.ndim == 2 else t[None, :]
    tk = np.ascontiguousarray(tk)
    head = max(1, int(math.ceil(cfg["baseline_fallback_fraction"] * n)))
    w0, w1 = (float(v) for v in window)
    vmin_f = math.nan if vmin is None else vmin
    vmax_f = math.nan if vmax is None else vmax
    n_valid, vmax_obs, vmin_obs, n_rail, covered, bfirst, blast, fvalid, lvalid = _scan_rows(
        raw, has_fill, fill, tk, has_t, w0, w1, int(cfg["min_baseline_samples"]), head,
        vmin_f, vmax_f,
    )  # fmt: skip
    used = bfirst >= 0
    lo, hi = (int(bfirst[used].min()), int(blast[used].max()) + 1) if used.any() else (0, 0)
    xb = _window_rows(raw, has_fill, fill, tk, covered, w0, w1, head, lo, hi)
    step = 1.0 if var.dtype.kind in "iu" else detect_quantum(xb) if hi > lo else None
    if step is not None:
        quantum = step
    floor = quantum / math.sqrt(12.0)

    def rows_x(rows: np.ndarray) -> np.ndarray:
        x = raw[rows].astype(np.float64)
        miss = np.isnan(x)
        if has_fill:
            miss |= x == fill
        x[miss] = np.nan
        return x

    baseline, noise = _baseline_noise_host(xb, step, n_events)
    lost = np.isnan(baseline) & (n_valid > 0)
    if lost.any():
        baseline[lost], noise[lost] = _whole_trace_stats(np, rows_x(np.nonzero(lost)[0]))
    noise_eff = np.maximum(noise, floor)
    with np.errstate(invalid="ignore"):
        threshold = cfg["flat_top_sigma"] * noise_eff
    dirs = np.array([1.0, -1.0] if polarity == 0 else [float(polarity)])
    best_exc, best_idx, _, n_sat, first, last = _excursion_rows(
        raw, has_fill, fill, baseline, threshold, dirs, vmin_f, vmax_f,
        int(cfg["saturation_min_run"]), int(cfg["flat_top_min_run"]),
    )  # fmt: skip
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
    sat_any = n_sat > 0
    return _floor_constant(floor, _finish(
        np,
        t=t,
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


# ----------------------------------------------------------------------------- NumPy fast path
#
# On the host, the whole-trace work of :func:`_channel_quality` (missing-sample
# mask, baseline-window bounds, observed extremes, excursion, rail runs and
# clipped flat tops) is done by two compiled passes over the native-dtype samples,
# with no (n_events, n) float64 temporaries.  Every floating-point operation is the
# one the array-namespace path performs, in the same order, so the results are
# identical (checked by ``tests/unit/test_signal_quality.py``).


@numba.njit(cache=True, nogil=True, inline="always")
def _sample(raw, r, j, has_fill, fill):  # pragma: no cover - compiled
    """Sample ``raw[r, j]`` as float64, NaN when missing (NaN or ``fill``)."""
    v = np.float64(raw[r, j])
    if v != v or (has_fill and v == fill):
        return np.nan
    return v


@numba.njit(cache=True, nogil=True)
def _scan_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    t: np.ndarray,
    has_t: bool,
    w0: float,
    w1: float,
    min_samples: int,
    head: int,
    vmin: float,
    vmax: float,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """First pass per row: valid count, extremes, rail count, baseline-window bounds.

    ``vmin``/``vmax`` are NaN for no rail.  Returns ``n_valid``, ``vmax_obs``,
    ``vmin_obs``, ``n_rail``, ``covered``, ``bfirst``, ``blast`` (first and last
    baseline sample, -1 for none), ``first_valid`` and ``last_valid``.
    """
    rows, n = raw.shape
    n_valid = np.zeros(rows, dtype=np.int64)
    vmax_obs = np.full(rows, -np.inf)
    vmin_obs = np.full(rows, np.inf)
    n_rail = np.zeros(rows, dtype=np.int64)
    covered = np.zeros(rows, dtype=np.bool_)
    bfirst = np.full(rows, -1, dtype=np.int64)
    blast = np.full(rows, -1, dtype=np.int64)
    first_valid = np.full(rows, -1, dtype=np.int64)
    last_valid = np.full(rows, -1, dtype=np.int64)
    t_rows = t.shape[0]
    for r in range(rows):
        tr = r if t_rows == rows else 0
        nv = 0
        nr = 0
        hi = -np.inf
        lo = np.inf
        tmin = np.inf
        tmax = -np.inf
        n_win = 0
        wf = -1
        wl = -1
        ff = -1
        fl = -1
        for j in range(n):
            v = _sample(raw, r, j, has_fill, fill)
            ok = v == v
            tj = 0.0
            if has_t:
                tj = t[tr, j]
                if tj < tmin:
                    tmin = tj
                if tj > tmax:
                    tmax = tj
            if ok:
                nv += 1
                if first_valid[r] < 0:
                    first_valid[r] = j
                last_valid[r] = j
                if v > hi:
                    hi = v
                if v < lo:
                    lo = v
                if v >= vmax or v <= vmin:
                    nr += 1
                if j < head:
                    if ff < 0:
                        ff = j
                    fl = j
                if has_t and tj >= w0 and tj < w1:
                    n_win += 1
                    if wf < 0:
                        wf = j
                    wl = j
        n_valid[r] = nv
        vmax_obs[r] = hi
        vmin_obs[r] = lo
        n_rail[r] = nr
        cov = has_t and tmin <= w0 and tmax >= w1 and n_win >= min_samples
        covered[r] = cov
        bfirst[r] = wf if cov else ff
        blast[r] = wl if cov else fl
    return n_valid, vmax_obs, vmin_obs, n_rail, covered, bfirst, blast, first_valid, last_valid


@numba.njit(cache=True, nogil=True)
def _window_rows(
    raw: np.ndarray,
    has_fill: bool,
    fill: float,
    t: np.ndarray,
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
    t_rows = t.shape[0]
    for r in range(rows):
        tr = r if t_rows == rows else 0
        for j in range(lo, hi):
            v = _sample(raw, r, j, has_fill, fill)
            if covered[r]:
                tj = t[tr, j]
                keep = tj >= w0 and tj < w1
            else:
                keep = j < head
            out[r, j - lo] = v if keep else np.nan
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _mark_runs(flag, mask, n, k):  # pragma: no cover - compiled
    """Set ``flag[j]`` for the samples of runs of at least ``k`` True in ``mask[:n]``."""
    run = 0
    for j in range(n):
        if mask[j]:
            run += 1
        else:
            if run >= k:
                flag[j - run : j] = True
            run = 0
    if run >= k:
        flag[n - run : n] = True


@numba.njit(cache=True, nogil=True)
def _excursion_rows(
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
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    """Second pass per row: largest excursion and saturated samples.

    For each direction ``d`` the excursion is ``d * (x - baseline)`` (valid
    samples only); its first maximum (NaN first, as ``numpy.argmax``) is kept
    when larger than the previous direction's.  Saturated: runs of at least
    ``rail_run`` samples at a rail, or of ``top_run`` samples equal to a
    direction's maximum when that exceeds ``threshold``.  Returns ``best_exc``,
    ``best_idx``, ``best_dir``, the saturated count and its first and last index
    (-1 for none).
    """
    rows, n = raw.shape
    best_exc = np.full(rows, -np.inf)
    best_idx = np.zeros(rows, dtype=np.int64)
    best_dir = np.ones(rows)
    n_sat = np.zeros(rows, dtype=np.int64)
    first = np.full(rows, -1, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    x = np.empty(n)
    mask = np.empty(n, dtype=np.bool_)
    sat = np.empty(n, dtype=np.bool_)
    for r in range(rows):
        b = baseline[r]
        for j in range(n):
            x[j] = _sample(raw, r, j, has_fill, fill)
        sat[:] = False
        rails = False
        for j in range(n):
            v = x[j]
            m = v == v and (v >= vmax or v <= vmin)
            mask[j] = m
            rails |= m
        if rails:
            _mark_runs(sat, mask, n, rail_run)
        for d in dirs:
            idx = 0
            exc = -np.inf
            for j in range(n):
                v = x[j]
                s = d * (v - b) if v == v else -np.inf
                if j == 0:
                    exc = s
                    if s != s:
                        break
                elif s != s:
                    idx = j
                    exc = s
                    break
                elif s > exc:
                    idx = j
                    exc = s
            if exc > threshold[r]:
                for j in range(n):
                    v = x[j]
                    mask[j] = v == v and d * (v - b) == exc
                _mark_runs(sat, mask, n, top_run)
            if exc > best_exc[r]:
                best_exc[r] = exc
                best_idx[r] = idx
                best_dir[r] = d
        c = 0
        for j in range(n):
            if sat[j]:
                c += 1
                if first[r] < 0:
                    first[r] = j
                last[r] = j
        n_sat[r] = c
    return best_exc, best_idx, best_dir, n_sat, first, last


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
        res = _channel_quality(ds, name, cfg)
        meta = res.pop("_meta")
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
                attrs["baseline_window_us"] = list(meta["window"])
            if key == "snr":
                attrs["signal_polarity"] = meta["polarity"]
                attrs["noise_floor"] = meta["quantum"] / math.sqrt(12.0)
            if key == "saturated":
                vmin, vmax = meta["rails"]
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
